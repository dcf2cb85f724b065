"""The namespace metadata proxy: one process, a listener per namespace, forwarding to the agent."""
