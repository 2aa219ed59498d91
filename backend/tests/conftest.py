"""Settings for the whole suite: property tests are bounded by examples, never by the wall clock.

Hypothesis fails an example that runs longer than its deadline (200 ms by default), and a test
whose data generation is slow (the too_slow health check); on a machine busy with other work
both say the machine is slow, not that the code is wrong. The profile loaded here drops both; a
test's own `@settings` inherits that unless it sets them again.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")
