"""Hypothesis profiles for the property suite (tests/property/).

`ci` (the default) is reproducible: derandomized, no example database, no deadline (2 shared CPU cores make
per-example timings meaningless; hangs are caught by each test's own alarm instead). Case counts are set per
test; QPASS_PROP_SCALE (a float, default 1) multiplies them, e.g. QPASS_PROP_SCALE=10 for a long local run.
`HYPOTHESIS_PROFILE=dev` keeps the counts but randomizes (new examples every run, database on).
"""
import os
import sys

from hypothesis import HealthCheck, settings

# tests/ holds tiny_models.py; in 'prepend' mode pytest only puts this folder on sys.path for our modules.
_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
             HealthCheck.function_scoped_fixture, HealthCheck.large_base_example]
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True,
                          suppress_health_check=_SUPPRESS)
settings.register_profile("dev", deadline=None, derandomize=False, print_blob=True, suppress_health_check=_SUPPRESS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
