"""The benchmark harness of chatserver: ``python -m benchmarks SCENARIO`` (see ``--help``).

One load-generator process (asyncio + uvloop, raw Protocols) drives a server process started
by the harness; CPU and memory of the server come from /proc, the load generator's own CPU
from os.times(). docs/performance.md holds the figures and how they were produced.
"""
