"""Security tier: hostile guests against the real chain in real namespaces, and a raw fuzzer."""
