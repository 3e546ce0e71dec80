"""Use cases: what a user can do, and the router that takes each message to its recipient."""
