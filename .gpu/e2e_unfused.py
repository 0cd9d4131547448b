"""benchmarks/e2e.py with the static quantizer's inductor decomposition not installed (the quantizer stays its
Triton kernel): the before of the fusion, on the same machine. Run with TORCHINDUCTOR_FORCE_DISABLE_CACHES=1."""
import runpy
import sys

import qpass.kernels.define as define

define.install_inductor_decompositions = lambda: None
sys.argv = ["benchmarks/e2e.py", *sys.argv[1:]]
runpy.run_path("benchmarks/e2e.py", run_name="__main__")
