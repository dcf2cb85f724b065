"""End-to-end tier: the real chain in real namespaces, read by curl and cloud-init."""
