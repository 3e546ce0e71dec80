"""Presence and the bus between nodes, on Redis: keys with a node lease, pub/sub channels."""
