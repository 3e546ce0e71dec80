"""The pure core: users, friends, groups, messages, their rules, and the ports it needs."""
