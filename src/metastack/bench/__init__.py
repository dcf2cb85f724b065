"""Every benchmark, one `metastack bench` subcommand each (see `bench/cli.py`)."""
