"""Issue 18, decode batch 8: a W4A8 GEMV over R rows of x at once (dp4a), against the shipped path at 4-16 rows.

The shipped grouped tile ("mma", int8/gemm.py) runs ~10 instructions per weight at 8 rows on sm_90 (117-170 per
16 weights per K step, compiled here), several times the HBM time of its 0.5 bytes per weight. This candidate
unpacks each int4 word once for all R <= 8 rows: words [BLOCK_N, NV, 4] (4 consecutive words per thread) against
each row's x words of the same shape (broadcast over the weight rows: no layout change), two dp4a per (word, row),
K walked in chunks with one fp32 accumulator per row, reduced across threads once at the end (the previous
rows-in-registers prototype reduced per row block, and a row axis built by `tl.join` cost layout conversions). x is
prepared once per call by torch: its bytes reordered to the nibbles' even/odd halves ([M, 2, KW] int32) and the
sum of each 4-word chunk ([M, KW/4], for the zero points / the +8 offset of signed nibbles).

    python .gpu/w4a8_rows_probe.py          # GPU: correctness + CUDA-graph timings, table last
    python .gpu/w4a8_rows_probe.py --cpu    # interpreter: correctness on small awkward shapes only
"""
import os
import sys

CPU = "--cpu" in sys.argv
os.environ["TRITON_INTERPRET"] = "1" if CPU else "0"
sys.path.insert(0, "benchmarks")
sys.path.insert(0, ".")

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from qpass.kernels import formats as fmt  # noqa: E402
from qpass.kernels.int8 import reference as ref8  # noqa: E402
from qpass.kernels.int8.gemv import _LOW4, _XOR8, _dp4a  # noqa: E402
from qpass.kernels.int8.w4a8 import w4a8_linear_triton  # noqa: E402
from qpass.kernels.tiling import cdiv  # noqa: E402


@triton.jit
def _prmt(a, b, SEL: tl.constexpr, HW: tl.constexpr):
    """Bytes of (a, b) picked by the selector: 0x6420 -> (a0, a2, b0, b2), 0x7531 -> (a1, a3, b1, b3)."""
    if HW:
        out = tl.inline_asm_elementwise(f"prmt.b32 $0, $1, $2, {SEL};", "=r,r,r", [a, b], dtype=tl.int32,
                                        is_pure=True, pack=1)
    elif SEL == 0x6420:
        out = (a & 0xFF) | ((a >> 8) & 0xFF00) | ((b & 0xFF) << 16) | ((b << 8) & -16777216)
    else:
        out = ((a >> 8) & 0xFF) | ((a >> 16) & 0xFF00) | ((b << 8) & 0xFF0000) | (b & -16777216)
    return out


@triton.jit
def _row_step(acc, lo, hi, s, z, xp_ptr, xc_ptr, m, M, KW, KC, widx, cidx, IN_PREP: tl.constexpr, HW: tl.constexpr):
    """acc [BLOCK_N, NV] += the scaled dp4a partials of row m of x against the unpacked words lo / hi
    [BLOCK_N, NV, 4] (rows past M: zeros). IN_PREP: x read as it is (xp_ptr: x as int32 [M, K / 4]), its bytes
    reordered (prmt) and summed (dp4a with ones) here instead of by `prepare_x`."""
    kw_lim = tl.where(m < M, KW, 0)
    if IN_PREP:
        pair = tl.load(xp_ptr + m * 2 * KW + (2 * widx)[:, :, :, None] + tl.arange(0, 2)[None, None, None, :],
                       mask=(widx < kw_lim)[:, :, :, None], other=0)  # [1, NV, 4, 2]: x's 8 bytes per word
        a, b = tl.split(pair)
        even = _prmt(a, b, 0x6420, HW)
        odd = _prmt(a, b, 0x7531, HW)
        xsum = tl.sum(_dp4a(even * 0 + 0x01010101, even, _dp4a(even * 0 + 0x01010101, odd, even * 0, HW), HW),
                      axis=2).to(tl.float32)
    else:
        kc_lim = tl.where(m < M, KC, 0)
        base = xp_ptr + m * 2 * KW
        even = tl.load(base + widx, mask=widx < kw_lim, other=0)  # [1, NV, 4]
        odd = tl.load(base + KW + widx, mask=widx < kw_lim, other=0)
        xsum = tl.load(xc_ptr + m * KC + cidx, mask=cidx < kc_lim, other=0).to(tl.float32)  # [1, NV]
    d = tl.sum(_dp4a(lo, even, _dp4a(hi, odd, lo * 0, HW), HW), axis=2).to(tl.float32)  # [BLOCK_N, NV]
    return acc + s * (d - z * xsum)


@triton.jit
def _store_rows(acc, m, M, offs_n, n_mask, b_ptr, xs_ptr, y_ptr, stride_ym, HAS_BIAS: tl.constexpr,
                HAS_XS: tl.constexpr):
    """Row m's outputs (the sum over the word axis), times its activation step, plus the bias."""
    y = tl.sum(acc, axis=1)
    mask = n_mask & (offs_n * 0 + m < M)  # (a vector: the interpreter takes no scalar mask here)
    if HAS_XS:
        y *= tl.load(xs_ptr + m + offs_n * 0, mask=mask, other=0.0)
    if HAS_BIAS:
        y += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + offs_n, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _w4a8_rows(xp_ptr, xc_ptr, w_ptr, s_ptr, z_ptr, b_ptr, xs_ptr, y_ptr, M, N, KW, KC, NG, stride_ym,
               GW: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_XS: tl.constexpr,
               IN_PREP: tl.constexpr, HW: tl.constexpr, R: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_KW: tl.constexpr):
    # R <= 8 rows per program, one accumulator each (explicit: loop-carried values are named variables)
    NV: tl.constexpr = BLOCK_KW // 4
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    m0 = tl.program_id(1) * R
    wv = tl.arange(0, NV)
    acc0 = tl.zeros([BLOCK_N, NV], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_N, NV], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_N, NV], dtype=tl.float32)
    acc3 = tl.zeros([BLOCK_N, NV], dtype=tl.float32)
    acc4 = tl.zeros([BLOCK_N, NV], dtype=tl.float32)
    acc5 = tl.zeros([BLOCK_N, NV], dtype=tl.float32)
    acc6 = tl.zeros([BLOCK_N, NV], dtype=tl.float32)
    acc7 = tl.zeros([BLOCK_N, NV], dtype=tl.float32)
    for kw0 in range(0, KW, BLOCK_KW):
        widx = (kw0 + wv[:, None] * 4 + tl.arange(0, 4)[None, :])[None, :, :]  # [1, NV, 4]
        cidx = (kw0 // 4 + wv)[None, :]  # [1, NV]: the 4-word chunks
        words = tl.load(w_ptr + offs_n[:, None, None] * KW + widx, mask=n_mask[:, None, None] & (widx < KW), other=0)
        if GW == 0:
            g = wv * 0
        else:
            g = (kw0 + wv * 4) // GW
        smask = n_mask[:, None] & (kw0 + wv * 4 < KW)[None, :]
        s = tl.load(s_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
        if HAS_ZERO:
            z = tl.load(z_ptr + offs_n[:, None] * NG + g[None, :], mask=smask, other=0.0).to(tl.float32)
        else:
            words = words ^ _XOR8
            z = tl.full([BLOCK_N, NV], 8.0, tl.float32)
        lo = words & _LOW4
        hi = (words >> 4) & _LOW4
        acc0 = _row_step(acc0, lo, hi, s, z, xp_ptr, xc_ptr, m0, M, KW, KC, widx, cidx, IN_PREP, HW)
        if R > 1:
            acc1 = _row_step(acc1, lo, hi, s, z, xp_ptr, xc_ptr, m0 + 1, M, KW, KC, widx, cidx, IN_PREP, HW)
        if R > 2:
            acc2 = _row_step(acc2, lo, hi, s, z, xp_ptr, xc_ptr, m0 + 2, M, KW, KC, widx, cidx, IN_PREP, HW)
            acc3 = _row_step(acc3, lo, hi, s, z, xp_ptr, xc_ptr, m0 + 3, M, KW, KC, widx, cidx, IN_PREP, HW)
        if R > 4:
            acc4 = _row_step(acc4, lo, hi, s, z, xp_ptr, xc_ptr, m0 + 4, M, KW, KC, widx, cidx, IN_PREP, HW)
            acc5 = _row_step(acc5, lo, hi, s, z, xp_ptr, xc_ptr, m0 + 5, M, KW, KC, widx, cidx, IN_PREP, HW)
            acc6 = _row_step(acc6, lo, hi, s, z, xp_ptr, xc_ptr, m0 + 6, M, KW, KC, widx, cidx, IN_PREP, HW)
            acc7 = _row_step(acc7, lo, hi, s, z, xp_ptr, xc_ptr, m0 + 7, M, KW, KC, widx, cidx, IN_PREP, HW)
    _store_rows(acc0, m0, M, offs_n, n_mask, b_ptr, xs_ptr, y_ptr, stride_ym, HAS_BIAS, HAS_XS)
    if R > 1:
        _store_rows(acc1, m0 + 1, M, offs_n, n_mask, b_ptr, xs_ptr, y_ptr, stride_ym, HAS_BIAS, HAS_XS)
    if R > 2:
        _store_rows(acc2, m0 + 2, M, offs_n, n_mask, b_ptr, xs_ptr, y_ptr, stride_ym, HAS_BIAS, HAS_XS)
        _store_rows(acc3, m0 + 3, M, offs_n, n_mask, b_ptr, xs_ptr, y_ptr, stride_ym, HAS_BIAS, HAS_XS)
    if R > 4:
        _store_rows(acc4, m0 + 4, M, offs_n, n_mask, b_ptr, xs_ptr, y_ptr, stride_ym, HAS_BIAS, HAS_XS)
        _store_rows(acc5, m0 + 5, M, offs_n, n_mask, b_ptr, xs_ptr, y_ptr, stride_ym, HAS_BIAS, HAS_XS)
        _store_rows(acc6, m0 + 6, M, offs_n, n_mask, b_ptr, xs_ptr, y_ptr, stride_ym, HAS_BIAS, HAS_XS)
        _store_rows(acc7, m0 + 7, M, offs_n, n_mask, b_ptr, xs_ptr, y_ptr, stride_ym, HAS_BIAS, HAS_XS)


def prepare_x(x):
    """x int8 [M, K] -> (even / odd words [M, 2, KW] int32, sums of each 4-word chunk [M, KC] int32)."""
    M, K = x.shape
    KW = cdiv(K, 8)
    KC = cdiv(KW, 4)
    xpad = torch.zeros(M, KC * 32, dtype=torch.int8, device=x.device)
    xpad[:, :K] = x
    words = xpad[:, :KW * 8].reshape(M, KW, 4, 2).permute(0, 3, 1, 2).contiguous().view(torch.int32)  # [M, 2, KW]
    return words, xpad.view(M, KC, 32).sum(-1, dtype=torch.int32)


def w4a8_rows(x, qweight, w_scale, x_scale, bias, out_dtype, group_size, w_zero=None, R=8, BLOCK_N=16, BLOCK_KW=32,
              num_warps=4, prepared=None, in_prep=False):
    """The candidate for x int8 [M, K] (the shipped op's arguments: per-row steps [N] or per-group [N, NG]);
    `prepared`: `prepare_x(x)` made beforehand (the kernel alone: a shipped form would have the activation
    quantizer write x in this layout); `in_prep`: the kernel reorders and sums x itself (K % 8 == 0)."""
    M, K = x.shape
    words = fmt.as_words(qweight)
    N, KW = words.shape
    if in_prep:
        assert K % 8 == 0 and x.is_contiguous()
        xp, xc = x.view(torch.int32), x.new_zeros(1, dtype=torch.int32)
    else:
        xp, xc = prepared if prepared is not None else prepare_x(x)
    grouped = 0 < group_size < K
    s = w_scale if grouped else w_scale.reshape(N, 1)
    z = w_zero if w_zero is None or grouped else w_zero.reshape(N, 1)
    y = torch.empty(M, N, dtype=out_dtype, device=x.device)
    _w4a8_rows[(cdiv(N, BLOCK_N), cdiv(M, R))](
        xp, xc, words, s, z if z is not None else s, bias if bias is not None else s,
        x_scale if x_scale is not None else s, y, M, N, KW, xc.shape[-1], s.shape[1], y.stride(0),
        GW=group_size // 8 if grouped else 0, HAS_ZERO=z is not None, HAS_BIAS=bias is not None,
        HAS_XS=x_scale is not None, IN_PREP=in_prep, HW=not CPU, R=R, BLOCK_N=BLOCK_N, BLOCK_KW=BLOCK_KW, num_warps=num_warps)
    return y


def case(M, N, K, G, zeros, dev, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    groups = 1 if G <= 0 else cdiv(K, G)
    ws = (torch.rand(N, groups, generator=g) * 1e-3 + 1e-4).to(dev)
    if G <= 0:
        ws = ws.reshape(-1)
    q = torch.randint(0 if zeros else -8, 16 if zeros else 8, (N, K), generator=g).to(torch.int8)
    wz = (torch.randint(0, 16, ws.shape, generator=g).float().to(dev)) if zeros else None
    x = torch.randint(-127, 128, (M, K), generator=g).to(torch.int8).to(dev)
    xs = (torch.rand(M, generator=g) * 0.01 + 0.001).to(dev)
    return x, fmt.pack_int4(q.to(dev)), ws, wz, xs


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def check_cpu():
    for M, N, K, G, zeros, R, bn, bkw in [(3, 37, 200, 64, True, 4, 8, 8), (8, 20, 520, 32, False, 8, 4, 16),
                                          (5, 9, 64, 0, True, 2, 4, 4), (1, 33, 1000, 0, False, 8, 16, 32), (6, 24, 512, 64, False, 8, 8, 16),
                                          (9, 16, 256, 128, True, 8, 8, 8)]:
        x, p, ws, wz, xs = case(M, N, K, G, zeros, "cpu", seed=M + N + K)
        b = torch.randn(N)
        r = ref8.w4a8_linear_ref(x, p, ws, xs, b, torch.float32, G, None, w_zero=wz)
        for in_prep in ((False, True) if K % 8 == 0 else (False,)):
            y = w4a8_rows(x, p, ws, xs, b, torch.float32, G, wz, R=R, BLOCK_N=bn, BLOCK_KW=bkw, num_warps=1,
                          in_prep=in_prep)
            e = rel(y, r)
            print(f"M={M} N={N} K={K} G={G} zeros={zeros} R={R} in_prep={in_prep}: rel err {e:.2e}", flush=True)
            assert e < 1e-5, e
    print("cpu check ok")


def time_gpu():
    from cuda_timing import graph_time_us
    print(torch.cuda.get_device_name(), flush=True)
    quick = "--quick" in sys.argv  # asymmetric weights (w4a8-qsm's) at 8 and 16 rows, three configs
    cfgs = {"R8 n16 kw32 w4": dict(R=8, BLOCK_N=16, BLOCK_KW=32, num_warps=4),
            "R8 n32 kw32 w4": dict(R=8, BLOCK_N=32, BLOCK_KW=32, num_warps=4),
            "R8 n16 kw64 w4": dict(R=8, BLOCK_N=16, BLOCK_KW=64, num_warps=4),
            "R8 n8 kw32 w2": dict(R=8, BLOCK_N=8, BLOCK_KW=32, num_warps=2),
            "R4 n16 kw32 w4": dict(R=4, BLOCK_N=16, BLOCK_KW=32, num_warps=4),
            "R8 n64 kw32 w8": dict(R=8, BLOCK_N=64, BLOCK_KW=32, num_warps=8)}
    if quick:
        cfgs = {k: cfgs[k] for k in ("R8 n16 kw32 w4", "R8 n32 kw32 w4", "R8 n64 kw32 w8")}
    table = []
    for N, K in ((4096, 4096), (14336, 4096), (4096, 14336)):
        for zeros in ((True,) if quick else (True, False)):
            x, p, ws, wz, xs = case(16, N, K, 64, zeros, "cuda")
            ps = [p] + [p.clone() for _ in range(max(2, -(-150_000_000 // p.numel())) - 1)]
            wb = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
            wbs = [wb] + [wb.clone() for _ in range(max(2, -(-150_000_000 // wb.numel() // 2)) - 1)]
            for M in ((8, 16) if quick else (4, 8, 16)):
                xm, xsm = x[:M].contiguous(), xs[:M].contiguous()
                xb = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
                ref = ref8.w4a8_linear_ref(xm, p, ws, xsm, None, torch.float32, 64, None, w_zero=wz)
                row = dict(N=N, K=K, M=M, zeros=zeros)
                row["bf16"] = graph_time_us([lambda w=w: torch.nn.functional.linear(xb, w) for w in wbs])
                row["shipped"] = graph_time_us([lambda a=a: w4a8_linear_triton(xm, a, ws, xsm, None, torch.bfloat16, 64,
                                                                              w_zero=wz) for a in ps])
                prep = prepare_x(xm)
                for name, cfg in cfgs.items():
                    try:
                        y = w4a8_rows(xm, p, ws, xsm, None, torch.bfloat16, 64, wz, **cfg)
                        e = rel(y, ref)
                        if e > 1e-2:
                            raise AssertionError(f"rel err {e:.2e}")
                        row[name] = graph_time_us([lambda a=a, c=cfg: w4a8_rows(xm, a, ws, xsm, None, torch.bfloat16,
                                                                               64, wz, prepared=prep, **c) for a in ps])
                    except Exception as exc:  # noqa: BLE001
                        row[name] = float("nan")
                        print(name, type(exc).__name__, str(exc)[:300], flush=True)
                best = min((v, k) for k, v in row.items() if k in cfgs and v == v)
                c = cfgs[best[1]]
                row["best_with_x_prep"] = graph_time_us([lambda a=a: w4a8_rows(xm, a, ws, xsm, None, torch.bfloat16,
                                                                              64, wz, **c) for a in ps])
                y = w4a8_rows(xm, p, ws, xsm, None, torch.bfloat16, 64, wz, in_prep=True, **c)
                assert rel(y, ref) < 1e-2, rel(y, ref)
                row["best_in_kernel_prep"] = graph_time_us([lambda a=a: w4a8_rows(
                    xm, a, ws, xsm, None, torch.bfloat16, 64, wz, in_prep=True, **c) for a in ps])
                table.append(row)
                print(f"N={N:5d} K={K:5d} M={M:2d} zeros={zeros!s:5}: bf16 {row['bf16']:6.1f}  shipped "
                      f"{row['shipped']:6.1f}  rows kernel {best[0]:6.1f} ({best[1]}), with x prep "
                      f"{row['best_with_x_prep']:6.1f}, x prepared in the kernel {row['best_in_kernel_prep']:6.1f}  | " + " | ".join(f"{k} {row[k]:.1f}" for k in cfgs), flush=True)
            del ps, wbs
    if os.environ.get("OUT"):
        import json
        with open(os.path.join(os.environ["OUT"], "w4a8_rows_probe.json"), "w") as f:
            json.dump(dict(gpu=torch.cuda.get_device_name(), rows=table), f, indent=1)


if __name__ == "__main__":
    check_cpu() if CPU else time_gpu()
