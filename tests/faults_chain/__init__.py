"""Faults of the chain processes under a steady load from guests."""
