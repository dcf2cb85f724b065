"""Client side of the control API: an async HTTP client and the resource commands of the CLI."""
