"""The hypothesis settings of every property test, one profile per use, chosen by
OCI_SYSTEMD_HYPOTHESIS_PROFILE:

    dev   (default)  100 examples a test: make test stays fast
    ci               3,000 examples a test (CI)
    fuzz             50,000 examples a test (make fuzz)

No example database (a run does not depend on earlier runs) and no deadline (a loaded
2-core machine is slow, not wrong).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE_VARIABLE = "OCI_SYSTEMD_HYPOTHESIS_PROFILE"
EXAMPLES = {"dev": 100, "ci": 3000, "fuzz": 50_000}

_common = dict(deadline=None, database=None, derandomize=False,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                      HealthCheck.filter_too_much, HealthCheck.data_too_large])
for _name, _count in EXAMPLES.items():
    settings.register_profile(f"oci-systemd-{_name}", max_examples=_count, **_common)

PROFILE = os.environ.get(PROFILE_VARIABLE, "dev")
if PROFILE not in EXAMPLES:
    raise RuntimeError(f"{PROFILE_VARIABLE}={PROFILE!r}: expected one of {', '.join(EXAMPLES)}")
SETTINGS = settings(settings.get_profile(f"oci-systemd-{PROFILE}"))
