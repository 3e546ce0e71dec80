"""One contract suite for the persistence ports, run against every adapter."""
