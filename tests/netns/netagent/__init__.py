"""Root tier: the network agent reconciling real namespaces, dnsmasq and the proxy."""
