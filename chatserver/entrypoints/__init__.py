"""Entry points: the command line, the composition root, and the terminal client."""
