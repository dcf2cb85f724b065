"""The network agent: reconcile DHCP and router namespaces with the control API."""
