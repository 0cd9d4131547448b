"""W4A8 / W4A4 in QSM form, Y = delta * (X_int . W_int^T) (+ bias): dispatch over three kernels.

W4A4 is the same op with activation values in [-8, 7] stored as int8. Kernel (`w4a8_linear_triton`, `kernel=`
overrides):
  * "gemv": one row on CUDA (decode; grouped weights: up to GEMV_MAX_M rows): integer dot products (dp4a) over
    the int4 words (int8/gemv.py; with activation zero points the W4A16 decode GEMV, int4/gemv.py);
  * "unpack": M >= UNPACK_MIN_M on CUDA (prefill): the int4 weight unpacked to int8 once per call (one HBM pass,
    int4/dequant.py), then the int8 GEMM: cheaper than sign-extending the nibbles of every tile in registers;
  * "mma": otherwise (and whenever a config is given), the int8 GEMM with the in-register int4 unpack (W_INT4);
  * "tc": grouped weights at TC_ROWS rows on CUDA without activation zero points (and on request): W4A16's split-K
    tensor-core tile (int4/tc.py, `TC_CONFIGS`) on the int8 codes as exact fp16 values, each row scaled by its step
    after the dot;
  * "dequant": per-group weight steps at M >= gemm.DEQUANT_MIN_M on CUDA: the weight dequantized once, then cuBLAS
    (int8/dequant_mm.py; the tiled GEMM's per-group epilogue does not pipeline at large M);
  * with integer group steps (`w_step`: each group's step an integer multiple of the row's, numerics.
    integer_group_steps), "unpack" from DEQUANT_MIN_M rows: the int8 values (q - z) * u unpacked once, then the
    int8 GEMM with one step per row over all of K (H100, benchmarks/gemm.py `w4a8_g64_int`: 1.21-1.28x bf16 at
    4,096 rows where "dequant" is 0.70-0.82x).
"""
from __future__ import annotations

import torch

from ..checks import check_int_linear
from ..formats import norm_group
from ..int4.dequant import dequantize_int4_plan, dequantize_int4_triton
from ..int4.gemv import w4a16_gemv4
from ..int4.tc import w4a16_tc, w4a16_tc_plan
from ..launch import output_plan
from ..tiling import pick, rows, rows_plan
from .dequant_mm import dequant_mm
from .gemv import dp4a_bind, dp4a_tensors, w4a8_gemv_dp4a
from .gemm import DEQUANT_MIN_M, int_mm, int_mm_plan

UNPACK_MIN_M = 512
GEMV_MAX_M = 4  # grouped weights, ROWS rows per program (int8/gemv.py); H100 (.gpu/dp4a_rows_probe.py), Llama-3-8B's
# four GEMMs (g64 + zero points) summed: 2 rows 77.3 us (each row re-reading W: 84.2), 4 rows 102.4 against the int8
# tile's 148.3; at 8 rows the dp4a issue rate binds (199.9 vs 148.5)
KERNELS = ("gemv", "unpack", "mma", "dequant", "tc")
# Grouped weights at 17-32 rows: the int8 tile's 16-row tiles run twice over W there, W4A16's split-K tile on the
# codes ("tc") once (H100, .gpu/w4a8_tc_probe.py, asymmetric g64 + bias, Llama-3-8B's four GEMMs at 32 rows: 262.7 ->
# 195.6 us, bf16 183.7; at 4-16 rows its interleaved unpack lost: 170-176 vs 154). TC_CONFIGS by rows: to 16 the
# nibble-plane K step (int4/tc.py PLANES, 64-wide groups too), on request only (`kernel="tc"`) until it is timed
# against the int8 tile (.gpu/w4a8_b8_probe.py).
TC_CONFIGS = [
    (16, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, SPLIT_K=8, SWAP=True, PLANES=True, num_warps=4, num_stages=3)),
    (32, dict(BLOCK_M=32, BLOCK_N=128, BLOCK_K=128, SPLIT_K=8, SWAP=True, num_warps=4, num_stages=3)),
]
TC_ROWS = (17, 32)


def w4a8_linear_triton(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size: int = 0, x_zero=None,
                       config=None, kernel=None, w_zero=None, w_step=None):
    """kernel: one of KERNELS (None: see the module docstring); config: the int8 GEMM's launch config (with
    kernel "tc": int4/tc.py's);
    group_size > 0: w_scale [N, ceil(K / group_size)], one step per (row, group); x_zero [K]: the activation codes'
    zero point per column (Y uses x_int8 - x_zero); w_zero (w_scale's shape): the weight codes' zero points, the
    codes then plain nibbles [0, 15] (Y uses W - w_zero); w_step [N]: w_scale / w_step is an integer per group."""
    check_int_linear(x_int8, qweight, w_scale, x_scale, bias, out_dtype, True, "w4a8_linear_triton", group_size,
                     x_zero, w_zero, w_step)
    torch._check_value(kernel is None or kernel in KERNELS, lambda: f"w4a8_linear_triton: kernel must be one of "
                                                                    f"{KERNELS}, got {kernel!r}")
    return run_w4a8(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero, config, kernel, w_zero,
                    w_step)


def choose_kernel(x_int8, group_size: int, config=None, w_step=None, x_zero=None) -> str:
    """The default kernel (see the module docstring)."""
    K = x_int8.shape[-1]
    rows = x_int8.numel() // K if K else 0
    if (rows == 1 or rows <= GEMV_MAX_M and 0 < group_size < K and x_zero is None) and config is None \
            and x_int8.is_cuda:
        return "gemv"
    if TC_ROWS[0] <= rows <= TC_ROWS[1] and 0 < group_size < K and group_size % 16 == 0 and x_zero is None \
            and config is None and x_int8.is_cuda:
        return "tc"
    if rows >= DEQUANT_MIN_M and 0 < group_size < K and x_int8.is_cuda and config is None:
        return "dequant" if w_step is None else "unpack"
    if rows >= UNPACK_MIN_M and x_int8.is_cuda and config is None:
        return "unpack"
    return "mma"


def plan(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size=0, x_zero=None, w_zero=None, w_step=None):
    """The shipped call for checked arguments of this signature, in the op's argument order (the op's plan,
    kernels/checks.py `planned`): the dp4a decode GEMV bound once where its arguments go to the kernel as they are
    (`_dp4a_plan`), the in-register-unpack GEMM ("mma") through `int_mm_plan`, the others through `run_w4a8`."""
    kernel = choose_kernel(x_int8, group_size, None, w_step, x_zero)
    if kernel == "gemv" and x_zero is None and x_int8.is_contiguous() \
            and (x_scale is None or x_scale.dtype == torch.float32 and x_scale.is_contiguous()):
        return _dp4a_plan(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, w_zero)
    if kernel == "mma":
        mm = int_mm_plan(x_int8, qweight, w_scale, x_scale, bias, out_dtype, True, None, group_size, x_zero, w_zero)
        return lambda x, q, ws, xs, b, dt, g, xz, wz, w_step: mm(x, q, ws, xs, b, dt, True, None, g, xz, wz)
    if kernel == "unpack":
        return _unpack_plan(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero, w_step)
    if kernel == "tc":
        return _tc_plan(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, w_zero)
    return _run_op_args


def _unpack_plan(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero, w_step):
    """"unpack" (see `run_w4a8`) for this signature: the unpack pass and the int8 GEMM each bound once."""
    K, N = x_int8.shape[-1], qweight.shape[0]
    dense_int8 = torch.empty(N, K, dtype=torch.int8, device="meta")  # the unpacked weight's metadata
    if w_step is not None and 0 < group_size < K:  # (q - z) * u: one step per row over all of K
        unpack = dequantize_int4_plan(qweight, w_scale, w_zero, group_size, K, torch.int8, True, row_steps=w_step)
        mm = int_mm_plan(x_int8, dense_int8, w_step, x_scale, bias, out_dtype, False, None, 0, x_zero)
        return lambda x, q, ws, xs, b, dt, g, xz, wz, w_step: mm(x, unpack(q, ws, wz, w_step), w_step, xs, b, dt,
                                                                  False, None, 0, xz)
    unpack = dequantize_int4_plan(qweight, None, w_zero, -1, K, torch.int8, True)  # plain nibbles when zeros given
    mm = int_mm_plan(x_int8, dense_int8, w_scale, x_scale, bias, out_dtype, False, None, group_size, x_zero, w_zero)
    return lambda x, q, ws, xs, b, dt, g, xz, wz, w_step: mm(x, unpack(q, None, wz, None), ws, xs, b, dt, False,
                                                              None, g, xz, wz)


def _tc_plan(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, w_zero):
    """"tc" (`_w4a8_tc`, grouped weights) for this signature: W4A16's tile on the codes, bound once."""
    K, N = x_int8.shape[-1], qweight.shape[0]
    x2, as_rows = rows_plan(x_int8)
    xs_as_is = x_scale is None or (x_scale.dtype == torch.float32 and x_scale.is_contiguous())
    xs = x_scale if xs_as_is else x_scale.reshape(-1).float()
    tile = w4a16_tc_plan(x2, qweight, w_scale, w_zero, bias, norm_group(K, group_size), N,
                         pick(TC_CONFIGS, x2.shape[0]), x_scale=xs)
    out_shape, device = (*x_int8.shape[:-1], N), x_int8.device

    def call(x, q, ws, xs, b, dt, g, xz, wz, w_step):
        y = torch.empty(out_shape, dtype=out_dtype, device=device)  # [M, N] in memory
        if xs is not None and not xs_as_is:
            xs = xs.reshape(-1).float()
        return tile(as_rows(x), q, ws, wz, b, y, xs)
    return call


def _run_op_args(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size=0, x_zero=None, w_zero=None,
                 w_step=None):
    return run_w4a8(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero, None, None, w_zero, w_step)


def _dp4a_plan(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, w_zero):
    """`_w4a8_gemv`'s dp4a launch for this signature, bound once (x, x_scale, w_scale and w_zero are passed as they
    are: the kernel reads a per-row step at `xs_ptr + m` and NG steps per weight row)."""
    K, N = x_int8.shape[-1], qweight.shape[0]
    M = x_int8.numel() // K
    G = group_size if 0 < group_size < K else 0
    bound = dp4a_bind(x_int8.view(M, K), qweight, w_scale, w_zero, bias, G, torch.empty(M, N, device="meta"),
                      x_scale)
    return output_plan(bound, (*x_int8.shape[:-1], N), out_dtype, x_int8.device,
                       lambda x, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero, w_step, y:
                       dp4a_tensors(x, qweight, w_scale, w_zero, bias, x_scale, y))


def run_w4a8(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size: int = 0, x_zero=None, config=None,
             kernel=None, w_zero=None, w_step=None):
    """`w4a8_linear_triton` on checked arguments (the op checks once per signature)."""
    K = x_int8.shape[-1]
    kernel = kernel or choose_kernel(x_int8, group_size, config, w_step, x_zero)
    if kernel == "gemv":
        return _w4a8_gemv(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero)
    if kernel == "tc":
        return _w4a8_tc(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero,
                        config or pick(TC_CONFIGS, x_int8.numel() // K))
    if kernel == "dequant":
        return dequant_mm(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero, True, w_zero)
    if kernel == "unpack" and w_step is not None and 0 < group_size < K:  # (q - z) * u: one step per row
        w = dequantize_int4_triton(qweight, w_scale, w_zero, group_size, K, torch.int8, int_out=True, row_steps=w_step)
        return int_mm(x_int8, w, w_step, x_scale, bias, out_dtype, False, config, 0, x_zero)
    if kernel == "unpack":  # zeros given: plain nibbles (the dequant kernel's HAS_ZERO reading; zeros not read)
        w = dequantize_int4_triton(qweight, None, w_zero, -1, K, torch.int8, int_out=True)
        return int_mm(x_int8, w, w_scale, x_scale, bias, out_dtype, False, config, group_size, x_zero, w_zero)
    return int_mm(x_int8, qweight, w_scale, x_scale, bias, out_dtype, True, config, group_size, x_zero, w_zero)


def _w4a8_gemv(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero=None):
    """A few rows (decode) are bound by reading W, where an MMA tile of 16+ rows wastes its work: a GEMV (rows past
    the first re-read W from L2). Integer dot products (int8/gemv.py, dp4a) when the codes are used as they are;
    with activation zero points the W4A16 GEMV on the centred rows, (x - z) as fp16 (integers up to 255: exact),
    accumulating in fp32. Both scale by the (row, group) weight step and each row's activation step; weight zero
    points are plain nibbles minus the zero, as for asymmetric W4A16."""
    K, N = x_int8.shape[-1], qweight.shape[0]
    x = x_int8.reshape(-1, K)
    M = x.shape[0]
    if x_zero is not None:
        x = (x.float() - x_zero).to(torch.float16)
    if x.stride(-1) != 1:
        x = x.contiguous()
    xs = x_scale.reshape(-1).float() if x_scale is not None else None  # one per row (checked); no copy when fp32
    y = torch.empty(M, N, dtype=out_dtype, device=x_int8.device)
    grouped = 0 < group_size < K
    scales, zeros = _steps_by_group(w_scale, w_zero, grouped)
    if x_zero is None:
        w4a8_gemv_dp4a(x, qweight, scales, zeros, bias, group_size if grouped else 0, y, x_scale=xs)
    else:
        w4a16_gemv4(x, qweight, scales.float(), None if zeros is None else zeros.float(), bias,
                    group_size if grouped else 0, y, x_scale=xs)
    return y.reshape(*x_int8.shape[:-1], N)


def _w4a8_tc(x_int8, qweight, w_scale, x_scale, bias, out_dtype, group_size, x_zero, w_zero=None, config=None):
    """W4A16's tensor-core tile on the codes (int4/tc.py takes int8 x as codes): per-(row, group) steps and zero
    points as W4A16 reads them, each x row's step applied after the dot; config: int4/tc.py TC_CONFIGS' keys."""
    K, N = x_int8.shape[-1], qweight.shape[0]
    torch._check_value(x_zero is None, lambda: "w4a8_linear_triton: kernel 'tc' takes no x_zero")
    G = norm_group(K, group_size)
    torch._check_value(G >= K or G % 16 == 0, lambda: f"w4a8_linear_triton: kernel 'tc' needs a group size that is "
                                                       f"a multiple of 16, got {group_size}")
    x = rows(x_int8)
    scales, zeros = _steps_by_group(w_scale, w_zero, 0 < group_size < K)
    xs = x_scale.reshape(-1).float() if x_scale is not None else None
    y = torch.empty(x.shape[0], N, dtype=out_dtype, device=x.device)
    w4a16_tc(x, qweight, scales, zeros, bias, G, y, config, x_scale=xs)
    return y.reshape(*x_int8.shape[:-1], N)


def _steps_by_group(w_scale, w_zero, grouped: bool):
    """The weight steps (and zero points) as [N, groups] (per-row ones as [N, 1]), as the GEMV and tile kernels
    read them."""
    if grouped:
        return w_scale, w_zero
    return w_scale.reshape(-1, 1), None if w_zero is None else w_zero.reshape(-1, 1)
