"""GPU check of the ops' per-signature plans (kernels/checks.py `planned`, kernels/launch.py `bind`): every hot op,
three calls of one signature with fresh inputs (the first through Triton's own launch, the rest through the
driver launcher directly), each against the op's pure-torch reference on the same inputs; then a misaligned x
(another specialization). Prints one line per case and exits non-zero on a mismatch."""
import sys

import torch

sys.path.insert(0, ".")
from qpass.kernels import formats as F  # noqa: E402
from qpass.kernels import ops as _ops  # noqa: E402,F401
from qpass.kernels.int4.reference import w4a16_linear_ref  # noqa: E402
from qpass.kernels.int8 import reference as R8  # noqa: E402
from qpass.kernels.ternary.reference import ternary_linear_ref  # noqa: E402

dev, bf = "cuda", torch.bfloat16
ops = torch.ops.qpass
N, K = 4096, 4096
failed = []


def rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def check(name, make_x, call, ref, tol):
    errs = []
    for _ in range(3):
        x = make_x()
        y, r = call(x), ref(x)
        if isinstance(y, tuple):
            errs.append(max(rel(y[0], r[0]), rel(y[1], r[1])))
        else:
            errs.append(rel(y, r))
    ok = all(e < tol for e in errs)
    print(f"{name:<40} rel err {', '.join(f'{e:.2e}' for e in errs)}  {'ok' if ok else 'FAILED'}", flush=True)
    if not ok:
        failed.append(name)


for G, sym, bias in ((64, True, False), (128, False, True), (-1, True, True)):
    q, s, z = F.quantize_int4(torch.randn(N, K, device=dev) * 0.02, G, sym)
    p, s = F.pack_int4(q), s.to(bf)
    z = z.to(bf) if z is not None else None
    b = torch.randn(N, device=dev, dtype=bf) if bias else None
    check(f"w4a16 G={G} sym={sym} bias={bias}", lambda: torch.randn(1, 1, K, device=dev, dtype=bf),
          lambda x: ops.w4a16_linear(x, p, s, z, b, G), lambda x: w4a16_linear_ref(x, p, s, z, b, G), 1e-2)
    check(f"w4a16 misaligned x G={G}", lambda: torch.randn(1, K + 1, device=dev, dtype=bf)[:, 1:],
          lambda x: ops.w4a16_linear(x, p, s, z, b, G), lambda x: w4a16_linear_ref(x, p, s, z, b, G), 1e-2)

for M in (16, 64, 200):  # the tile (planes at 16 rows with g128), the tile, the dequantize pass
    for G, sym in ((128, True), (64, False)):
        q, s, z = F.quantize_int4(torch.randn(N, K, device=dev) * 0.02, G, sym)
        p, s = F.pack_int4(q), s.to(bf)
        z = z.to(bf) if z is not None else None
        b = torch.randn(N, device=dev, dtype=bf)
        check(f"w4a16 {M} rows G={G} sym={sym}", lambda: torch.randn(1, M, K, device=dev, dtype=bf),
              lambda x: ops.w4a16_linear(x, p, s, z, b, G), lambda x: w4a16_linear_ref(x, p, s, z, b, G), 1e-2)

t1, t2, a1, a2 = F.quantize_ternary(torch.randn(N, K, device=dev), 64)
t1, t2, a1, a2 = F.pack_trits(t1), F.pack_trits(t2), a1.to(bf), a2.to(bf)
check("ternary g64", lambda: torch.randn(1, 1, K, device=dev, dtype=bf),
      lambda x: ops.ternary_linear(x, t1, t2, a1, a2, None, 64),
      lambda x: ternary_linear_ref(x, t1, t2, a1, a2, None, 64), 1e-2)
check("ternary g64 8 rows (tile)", lambda: torch.randn(1, 8, K, device=dev, dtype=bf),
      lambda x: ops.ternary_linear(x, t1, t2, a1, a2, None, 64),
      lambda x: ternary_linear_ref(x, t1, t2, a1, a2, None, 64), 1e-2)

q4 = torch.randint(-8, 8, (N, K), device=dev, dtype=torch.int8)
p4 = F.pack_int4(q4)
ws_g = torch.rand(N, K // 64, device=dev) * 1e-3 + 1e-4
ws = torch.rand(N, device=dev) * 1e-3 + 1e-4
xs = torch.rand(1, device=dev) * 1e-2
x8 = lambda: torch.randint(-127, 128, (1, K), device=dev, dtype=torch.int8)  # noqa: E731
check("w4a8 g64 (dp4a GEMV)", x8, lambda x: ops.w4a8_linear(x, p4, ws_g, xs, None, bf, 64),
      lambda x: R8.w4a8_linear_ref(x, p4, ws_g, xs, None, bf, 64), 1e-2)
check("w4a8 per-row, no x step", x8, lambda x: ops.w4a8_linear(x, p4, ws, None, None, torch.float32, 0),
      lambda x: R8.w4a8_linear_ref(x, p4, ws, None, None, torch.float32, 0), 1e-5)
x8m = lambda: torch.randint(-127, 128, (8, K), device=dev, dtype=torch.int8)  # noqa: E731
xs8 = torch.rand(8, device=dev) * 1e-2
check("w4a8 g64 8 rows (int_mm plan)", x8m, lambda x: ops.w4a8_linear(x, p4, ws_g, xs8, None, bf, 64),
      lambda x: R8.w4a8_linear_ref(x, p4, ws_g, xs8, None, bf, 64), 1e-2)
wz_g = torch.randint(0, 16, (N, K // 64), device=dev).float()
bias_n = torch.randn(N, device=dev, dtype=bf)
check("w4a8 g64 asym + bias 8 rows (int_mm plan)", x8m,
      lambda x: ops.w4a8_linear(x, p4, ws_g, xs8, bias_n, bf, 64, None, wz_g),
      lambda x: R8.w4a8_linear_ref(x, p4, ws_g, xs8, bias_n, bf, 64, None, wz_g), 1e-2)
x8r = lambda: torch.randint(-127, 128, (100, K), device=dev, dtype=torch.int8)  # noqa: E731
xs100 = torch.rand(100, 2, device=dev)[:, :1] * 1e-2  # strided: the plan copies it per call
check("w4a8 per-row 100 rows, strided x step", x8r, lambda x: ops.w4a8_linear(x, p4, ws, xs100, None, bf, 0),
      lambda x: R8.w4a8_linear_ref(x, p4, ws, xs100, None, bf, 0), 1e-2)
r_step = torch.rand(N, device=dev) * 1e-3 + 1e-4  # integer group steps (QSM): each group's step u * the row's
ws_int = r_step[:, None] * torch.randint(1, 4, (N, K // 64), device=dev)
for M in (20, 128, 2100):  # W4A8's tile on the codes; its unpack + int8 GEMM (the tile; the persistent kernel)
    xsM = torch.rand(1, M, 1, device=dev) * 1e-2
    check(f"w4a8 integer steps asym + bias {M} rows", lambda: torch.randint(-127, 128, (1, M, K), device=dev,
                                                                              dtype=torch.int8),
          lambda x: ops.w4a8_linear(x, p4, ws_int, xsM, bias_n, bf, 64, None, wz_g, r_step),
          lambda x: R8.w4a8_linear_ref(x, p4, ws_int, xsM, bias_n, bf, 64, None, wz_g), 1e-2)
q8 = torch.randint(-127, 128, (N, K), device=dev, dtype=torch.int8)
check("int8 per-row 100 rows, strided x step", x8r, lambda x: ops.int8_linear(x, q8, ws, xs100, None, bf),
      lambda x: R8.int8_linear_ref(x, q8, ws, xs100, None, bf), 1e-2)
check("int8 per-row", x8, lambda x: ops.int8_linear(x, q8, ws, xs, None, bf),
      lambda x: R8.int8_linear_ref(x, q8, ws, xs, None, bf), 1e-2)
xs2k = torch.rand(2100, device=dev) * 1e-2
# the persistent TMA kernel; then x 8 bytes off the 16-byte rule in every call (the plan's tile instead)
check("int8 per-row 2100 rows + bias (persistent)", lambda: torch.randint(-127, 128, (2100, K), device=dev,
                                                                          dtype=torch.int8),
      lambda x: ops.int8_linear(x, q8, ws, xs2k, bias_n, bf), lambda x: R8.int8_linear_ref(x, q8, ws, xs2k, bias_n, bf),
      1e-2)
check("int8 per-row 2100 rows, x off 16 bytes", lambda: torch.randint(-127, 128, (2100 * K + 8,), device=dev,
                                                                      dtype=torch.int8)[8:].view(2100, K),
      lambda x: ops.int8_linear(x, q8, ws, xs2k, bias_n, bf), lambda x: R8.int8_linear_ref(x, q8, ws, xs2k, bias_n, bf),
      1e-2)
step = torch.rand(1, device=dev) * 1e-2 + 1e-3
xf = lambda: torch.randn(1, 1, K, device=dev, dtype=bf)  # noqa: E731
check("quantize dynamic", xf, lambda x: ops.quantize_activation_int8(x, None, 127),
      lambda x: R8.quantize_activation_int8_ref(x, None, 127), 1e-2)
check("quantize static", xf, lambda x: ops.quantize_activation_int8(x, step, 127),
      lambda x: R8.quantize_activation_int8_ref(x, step, 127), 1e-2)
print("FAILED: " + ", ".join(failed) if failed else "all plan checks ok")
sys.exit(1 if failed else 0)
