"""`python -m metastack`: the same command as the `metastack` console script."""

from metastack.cli import main

main()
