"""Root tier: the proxy in real network namespaces."""
