"""Controller side: the control API and the metadata API."""
