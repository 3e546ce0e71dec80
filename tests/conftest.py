"""Settings for the whole suite.

hypothesis' default deadline (200 ms an example) fails tests that touch MariaDB, SQLite or
sockets on a loaded 2-core machine ("Unreliable test timings"); what a test must finish within
is bounded by its own timeouts instead. HYPOTHESIS_PROFILE=dev keeps the default for a quick
local run that wants to hear about slow examples.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
