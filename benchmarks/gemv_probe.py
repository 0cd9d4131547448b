"""Is `_w4a16_gemv4` bound by its nibble arithmetic or by its memory access? (GPU, diagnostic)

Times the shipped kernel against two copies built from its source: `half` decodes 4 of each word's 8 nibbles,
`none` does one multiply per word instead of the decode (wrong results: timing only). Same loads, grid and
configs. If `none` is barely faster, the arithmetic is not the limit. CUDA-graph medians, rotating weight copies
(> L2). docs/benchmarks.md "End to end" has the H100 result.

    python benchmarks/gemv_probe.py
"""
from __future__ import annotations

import importlib.util
import math
import os
import sys
import tempfile

import torch

from cuda_timing import graph_time_us  # benchmarks/ is the script's folder
import gemm  # noqa: F401  (loads kernels/ as qpass.kernels without installing qpass)
import qpass.kernels.int4.gemv as G  # noqa: E402
from qpass.kernels import formats as F  # noqa: E402

SHAPES = [(28672, 4096), (4096, 4096), (6144, 4096), (4096, 14336)]


def variants() -> dict:
    src = open(G.__file__).read().replace("from .formats import", "from qpass.kernels.formats import")
    start = src.index("def _wdot(")
    full = src[start:src.index("    return p\n", start) + len("    return p\n")]
    half = full[:full.index("    p += (t2 & _A15)")] + "    return p\n"
    none = full[:full.index("    t1 =")] + "    p = words.to(tl.float32) * x0 - c\n    return p\n"
    mods = {}
    for name, body in (("full", full), ("half", half), ("none", none)):
        path = os.path.join(tempfile.mkdtemp(), f"gemv_probe_{name}.py")  # @triton.jit reads its source file
        with open(path, "w") as f:
            f.write(src.replace(full, body))
        spec = importlib.util.spec_from_file_location(f"gemv_probe_{name}", path)
        mods[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mods[name])
    return mods


def main():
    mods = variants()
    print(f"{torch.cuda.get_device_name()}: µs per call (int4 + fp32 group-scale bytes / time)")
    for N, K in SHAPES:
        q, s, _ = F.quantize_int4(torch.randn(N, K, device="cuda") * 0.02, 128, True)
        p = F.pack_int4(q)
        ps = [p] + [p.clone() for _ in range(max(1, math.ceil((256 << 20) / p.numel())) - 1)]
        x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
        y = torch.empty(1, N, device="cuda", dtype=torch.bfloat16)
        nbytes = p.numel() + s.numel() * s.element_size()
        row = [f"{N}x{K}"]
        for name, m in mods.items():
            us = graph_time_us([lambda pi=pi, m=m: m.w4a16_gemv4(x, pi, s, None, None, 128, y) for pi in ps])
            row.append(f"{name} {us:.2f} µs ({nbytes / us / 1e6:.2f} TB/s)")
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    sys.exit(main())
