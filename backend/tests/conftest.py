"""Settings for the whole suite: property tests are bounded by examples, never by the wall clock.

Hypothesis fails an example that runs longer than its deadline (200 ms by default) and warns of
slow data generation; on a machine busy with other work both say the machine is slow, not that
the code is wrong. The profile loaded here drops both; a test's own `@settings` keeps it unless
it sets them again.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")
