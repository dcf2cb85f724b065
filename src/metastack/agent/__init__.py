"""The metadata agent: unix-socket server, instance lookup and cache, upstream forwarding."""
