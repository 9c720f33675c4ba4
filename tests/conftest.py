"""Shared test configuration: hypothesis profiles and float64 comparison helpers.

Profiles
--------
``ci`` (the default): deterministic (``derandomize=True``), a bounded number of examples, no
deadline (timings on a shared 2-core machine are noisy). ``thorough``: many more random examples,
for local runs: ``HYPOTHESIS_PROFILE=thorough pytest``.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=25,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
