"""Passes: each a function over (PassContext, options), registered by name in `registry`."""
from . import registry, trit_planes  # noqa: F401  (importing a pass module registers it)
from . import qsm, smoothquant  # noqa: F401
from . import sale  # noqa: F401
