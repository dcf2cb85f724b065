"""metastack: an instance metadata service wire-compatible with OpenStack."""

__version__ = "0.1.0"
