"""Argument checks of the qpass:: custom ops and their Triton entry points.

Each `check_*` runs in an op's real implementation *and* its fake (meta) implementation, so a bad call fails
the same way eagerly, under FakeTensor / torch.compile, and at the kernel entry. Only metadata is read (shapes,
dtypes, devices, int arguments): no data-dependent check, no `.item()`, no device sync. Shape comparisons go
through `torch._check`, so symbolic (dynamic) sizes trace instead of failing. Every message starts with the op
and names the bad argument: `qpass::w4a16_linear: qweight has 100 bytes per row; ...`.

Eager calls check once per signature (`check_once`): the checks read only metadata, so a call whose shapes,
strides, dtypes, devices and plain arguments were checked before passes again; the host cost of a decode step's op
is the key, not the checks (issue 20: ≤ 20 µs of host time per op). `planned` keeps, with the signature, what the op
decided from that metadata (its plan: kernel, config, bound launch). Fakes always check (symbolic sizes differ per
trace).

Exceptions: a wrong shape or device raises RuntimeError (`torch._check`); a wrong dtype, argument type or int
argument (group size, qmax, block sizes) ValueError (`torch._check_value`). Callers catch (RuntimeError,
ValueError) for every refusal.
"""
from __future__ import annotations

import functools
import operator
from typing import Optional

import torch
from torch import Tensor

FLOATS = (torch.float16, torch.bfloat16, torch.float32)
INT4_BYTES_PER_8 = 4  # formats.pack_int4: 8 values -> one int32 word (4 bytes)
TRIT_BYTES_PER_16 = 4  # formats.pack_trits: 16 trits -> one int32 word


_PASSED: dict = {}  # signature -> plan (`planned`)
_MISSING = object()
_PASSED_MAX = 4096  # signatures remembered; a process that sees more starts over (prompt lengths vary)


def _signature(a):
    return (a.shape, a.stride(), a.dtype, a.device) if isinstance(a, Tensor) else a


def check_once(check, *args) -> None:
    """`check(*args)` unless the same check passed before on arguments with this metadata (eager calls only:
    the metadata of real tensors is concrete and hashable)."""
    planned(check, _no_plan, *args)


def planned(check, make_plan, *args):
    """The plan of arguments with this metadata (shapes, strides, dtypes, devices, plain values): the first call
    of a signature runs `check(*args)`, then `make_plan(*args)` (what an op decides from metadata alone: its
    kernel, launch config, output shape — usually the callable that runs it) and remembers the result; later
    calls return it at the cost of one key. Eager calls only (the metadata of real tensors is concrete)."""
    key = (check, make_plan, *map(_signature, args))
    plan = _PASSED.get(key, _MISSING)
    if plan is _MISSING:
        check(*args)
        plan = make_plan(*args)
        if len(_PASSED) >= _PASSED_MAX:
            _PASSED.clear()
        _PASSED[key] = plan
    return plan


def _no_plan(*args) -> None:
    return None


def _shape(t) -> list:
    return list(t.shape)


def _type(cond: bool, op: str, msg: str) -> None:
    torch._check_value(cond, lambda: f"{op}: {msg}")  # ValueError, like every non-shape refusal


def _value(cond: bool, op: str, msg: str) -> None:
    torch._check_value(cond, lambda: f"{op}: {msg}")


def _check(cond, op: str, msg) -> None:
    torch._check(cond, (lambda: f"{op}: {msg()}") if callable(msg) else (lambda: f"{op}: {msg}"))


def float_tensor(op: str, name: str, t: Tensor, dtypes=FLOATS) -> None:
    _type(t.dtype in dtypes, op, f"{name} must be one of {[str(d) for d in dtypes]}, got {t.dtype}")


def dtype_is(op: str, name: str, t: Tensor, dtype: torch.dtype, what: str = "") -> None:
    _type(t.dtype == dtype, op, f"{name} must be {dtype}{what}, got {t.dtype}")


def ndim(op: str, name: str, t: Tensor, n: int, layout: str) -> None:
    _check(t.dim() == n, op, lambda: f"{name} must be {n}-D {layout}, got shape {_shape(t)}")


def shape_is(op: str, name: str, t: Tensor, expected, layout: str) -> None:
    """`t.shape == expected`, one torch._check per dim (symbolic sizes allowed)."""
    _check(t.dim() == len(expected), op, lambda: f"{name} must be {layout} = {list(expected)}, got {_shape(t)}")
    for a, e in zip(t.shape, expected):
        _check(a == e, op, lambda: f"{name} must be {layout} = {list(expected)}, got {_shape(t)}")


def same_device(op: str, ref_name: str, ref: Tensor, **others: Optional[Tensor]) -> None:
    for name, t in others.items():
        if t is not None:
            _check(t.device == ref.device, op,
                   f"{name} is on {t.device} but {ref_name} is on {ref.device}: all tensors must share one device")


def int_arg(op: str, name: str, v) -> None:
    """An int argument (a SymInt when Dynamo traces with dynamic=True)."""
    _type(isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool), op,
          f"{name} must be an int, got {type(v).__name__}")


def rows_of(x: Tensor):
    return functools.reduce(operator.mul, x.shape[:-1], 1)


def last_dim(op: str, name: str, x: Tensor):
    _check(x.dim() >= 1, op, f"{name} must have at least one dim (its last is K), got a 0-d tensor")
    return x.shape[-1]


def num_groups(op: str, K, group_size: int) -> int:
    """Scale columns per row: 1 for group_size <= 0 (per-channel) or >= K, else ceil(K / group_size)."""
    int_arg(op, "group_size", group_size)
    if group_size <= 0 or group_size >= K:
        return 1
    return (K + group_size - 1) // group_size


def packed_width(op: str, name: str, w: Tensor, K, per_word: int, fmt: str) -> None:
    """`w` uint8 [N, ceil(K / per_word) * 4]: the packing of formats.pack_int4 / pack_trits for K values."""
    dtype_is(op, name, w, torch.uint8, f" ({fmt})")
    ndim(op, name, w, 2, f"[N, ceil(K/{per_word})*4] ({fmt})")
    want = (K + per_word - 1) // per_word * 4
    _check(w.shape[1] == want, op, lambda: (
        f"{name} has {w.shape[1]} bytes per row but x's last dim K={K} packs into ceil(K/{per_word})*4 = {want} "
        f"({fmt}): x's K does not match the packed weight"))
    _check(w.is_contiguous(), op, lambda: f"{name} must be contiguous ({fmt}'s row-major layout), got strides "
                                          f"{list(w.stride())}")


def group_scales(op: str, name: str, s: Optional[Tensor], N, ng, group_size: int) -> None:
    if s is None:
        return
    float_tensor(op, name, s)
    shape_is(op, name, s, (N, ng), f"[N, groups] for group_size={group_size}")


def row_vector(op: str, name: str, t: Optional[Tensor], N, dtypes=FLOATS) -> None:
    if t is None:
        return
    float_tensor(op, name, t, dtypes)
    shape_is(op, name, t, (N,), "[N] (one per output row)")


# ------------------------------------------------------------------ linears
def check_w4a16(x, qweight, scales, zeros, bias, group_size, op="qpass::w4a16_linear") -> None:
    float_tensor(op, "x", x)
    K = last_dim(op, "x", x)
    packed_width(op, "qweight", qweight, K, 8, "formats.pack_int4")
    N = qweight.shape[0]
    ng = num_groups(op, K, group_size)
    group_scales(op, "scales", scales, N, ng, group_size)
    group_scales(op, "zeros", zeros, N, ng, group_size)
    row_vector(op, "bias", bias, N)
    same_device(op, "x", x, qweight=qweight, scales=scales, zeros=zeros, bias=bias)


def check_w8a16(x, w_int8, scales, bias, group_size, op="qpass::w8a16_linear") -> None:
    float_tensor(op, "x", x)
    K = last_dim(op, "x", x)
    dtype_is(op, "w_int8", w_int8, torch.int8)
    ndim(op, "w_int8", w_int8, 2, "[N, K]")
    _check(w_int8.shape[1] == K, op, lambda: f"w_int8 is {_shape(w_int8)} but x's last dim is K={K}: w_int8 must be [N, K]")
    N = w_int8.shape[0]
    ng = num_groups(op, K, group_size)
    _check(scales is not None, op, "scales is required (the weight's steps, [N, groups])")
    group_scales(op, "scales", scales, N, ng, group_size)
    row_vector(op, "bias", bias, N)
    same_device(op, "x", x, w_int8=w_int8, scales=scales, bias=bias)


def check_ternary(x, t1, t2, alpha1, alpha2, bias, group_size, op="qpass::ternary_linear") -> None:
    float_tensor(op, "x", x)
    K = last_dim(op, "x", x)
    packed_width(op, "t1", t1, K, 16, "formats.pack_trits")
    packed_width(op, "t2", t2, K, 16, "formats.pack_trits")
    N = t1.shape[0]
    _check(t2.shape[0] == N, op, lambda: f"t2 has {t2.shape[0]} rows but t1 has {N}")
    ng = num_groups(op, K, group_size)
    group_scales(op, "alpha1", alpha1, N, ng, group_size)
    group_scales(op, "alpha2", alpha2, N, ng, group_size)
    row_vector(op, "bias", bias, N)
    same_device(op, "x", x, t1=t1, t2=t2, alpha1=alpha1, alpha2=alpha2, bias=bias)


def check_int_linear(x_int8, w, w_scale, x_scale, bias, out_dtype, w4: bool, op: str, group_size: int = 0,
                     x_zero=None, w_zero=None, w_step=None) -> None:
    dtype_is(op, "x_int8", x_int8, torch.int8)
    K = last_dim(op, "x_int8", x_int8)
    if w4:
        packed_width(op, "qweight", w, K, 8, "formats.pack_int4 of signed int4")
        wname = "qweight"
    else:
        dtype_is(op, "w_int8", w, torch.int8)
        ndim(op, "w_int8", w, 2, "[N, K]")
        _check(w.shape[1] == K, op, lambda: f"w_int8 is {_shape(w)} but x_int8's last dim is K={K}: w_int8 must be [N, K]")
        wname = "w_int8"
    N = w.shape[0]
    int_arg(op, "group_size", group_size)
    if group_size > 0:
        _value(group_size >= K or group_size % 32 == 0, op,
               f"group_size must be <= 0 (one step per row), >= K, or a multiple of 32 (the int8 MMA's K), got {group_size}")
        group_scales(op, "w_scale", w_scale, N, num_groups(op, K, group_size), group_size)
        group_scales(op, "w_zero", w_zero, N, num_groups(op, K, group_size), group_size)
        row_vector(op, "w_step", w_step, N)
    else:
        _value(w_step is None, op, "w_step (one step per row under integer group steps) needs group_size > 0")
        row_vector(op, "w_scale", w_scale, N)
        row_vector(op, "w_zero", w_zero, N)
    if x_scale is not None:
        float_tensor(op, "x_scale", x_scale)
        rows = rows_of(x_int8)
        _check(x_scale.numel() == rows, op, lambda: (
            f"x_scale has {x_scale.numel()} elements but x_int8 has {rows} rows: one step per row"))
    if x_zero is not None:
        float_tensor(op, "x_zero", x_zero)
        shape_is(op, "x_zero", x_zero, (K,), "[K] (the activation codes' zero point per column)")
    row_vector(op, "bias", bias, N)
    _type(isinstance(out_dtype, torch.dtype) and out_dtype in FLOATS, op,
          f"out_dtype must be one of {[str(d) for d in FLOATS]}, got {out_dtype}")
    same_device(op, "x_int8", x_int8, **{wname: w}, w_scale=w_scale, x_scale=x_scale, bias=bias, x_zero=x_zero,
                w_zero=w_zero, w_step=w_step)


def check_quantize(x, scale, qmax, zero=None, gather=None, clip=1.0, op="qpass::quantize_activation_int8") -> None:
    float_tensor(op, "x", x)
    K = last_dim(op, "x", x)
    int_arg(op, "qmax", qmax)
    _value(1 <= qmax <= 127, op, f"qmax must lie in [1, 127] (127 for int8, 7 for int4 values), got {qmax}")
    _value(isinstance(clip, (int, float)) and 0 < clip <= 1, op, f"clip must lie in (0, 1], got {clip!r}")
    _value(clip == 1 or scale is None, op, "clip applies to dynamic steps (scale None); a static step is clipped "
                                           "when it is calibrated")
    if scale is not None:
        float_tensor(op, "scale", scale)
        rows = rows_of(x)
        n = scale.numel()
        _check(n == 1 or n == rows, op, lambda: (
            f"scale has {n} elements; a static step is one scalar or one per row of x ({rows} rows)"))
        same_device(op, "x", x, scale=scale)
    if gather is not None:
        _type(gather.dtype in (torch.int32, torch.int64), op, f"gather must be int32 or int64, got {gather.dtype}")
        ndim(op, "gather", gather, 1, "[K'] (the input column of each output column)")
        same_device(op, "x", x, gather=gather)
        K = gather.shape[0]
    if zero is not None:
        _value(scale is not None, op, "zero needs a static step (scale): dynamic steps are symmetric")
        float_tensor(op, "zero", zero)
        shape_is(op, "zero", zero, (K,), "[K'] (one zero point per output column)")
        same_device(op, "x", x, zero=zero)


# ------------------------------------------------------------------ attention
def _mask(op: str, attn_mask: Optional[Tensor], q: Tensor, target) -> None:
    if attn_mask is None:
        return
    _type(attn_mask.dtype == torch.bool or attn_mask.dtype == q.dtype, op,
          f"attn_mask must be bool or q's dtype {q.dtype} (additive), got {attn_mask.dtype}")
    _check(2 <= attn_mask.dim() <= len(target), op,
           lambda: f"attn_mask must broadcast to {list(target)}, got shape {_shape(attn_mask)}")
    for a, t in zip(reversed(attn_mask.shape), reversed(target)):
        _check(a == 1 or a == t, op, lambda: f"attn_mask of shape {_shape(attn_mask)} does not broadcast to "
                                             f"[B, H, S, L] = {list(target)}")
    same_device(op, "q", q, attn_mask=attn_mask)


def _qkv(op: str, q: Tensor, k: Tensor, v: Optional[Tensor], gqa: bool, same_len: bool) -> None:
    float_tensor(op, "q", q)
    ndim(op, "q", q, 4, "[B, H, S, D]")
    ndim(op, "k", k, 4, "[B, Hkv, L, D]")
    _type(k.dtype == q.dtype, op, f"k's dtype {k.dtype} differs from q's {q.dtype}")
    B, H, S, D = q.shape
    _check(k.shape[0] == B, op, lambda: f"k's batch {k.shape[0]} differs from q's {B} (q {_shape(q)}, k {_shape(k)})")
    _check(k.shape[3] == D, op, lambda: f"k's head dim {k.shape[3]} differs from q's {D} (q {_shape(q)}, k {_shape(k)})")
    if same_len:
        _check(k.shape[2] == S, op, lambda: f"k's length {k.shape[2]} differs from q's {S}: causal self-attention "
                                            f"takes q and k of one length (q {_shape(q)}, k {_shape(k)})")
    Hkv = k.shape[1]
    if gqa:
        _check(Hkv > 0 and H % Hkv == 0, op, lambda: f"q's {H} heads are not a multiple of k's {Hkv} heads")
    else:
        _check(Hkv == H, op, lambda: f"k has {Hkv} heads but q has {H} (enable_gqa=False)")
    if v is not None:
        ndim(op, "v", v, 4, "[B, Hkv, L, Dv]")
        _type(v.dtype == q.dtype, op, f"v's dtype {v.dtype} differs from q's {q.dtype}")
        for i, what in ((0, "batch"), (1, "heads"), (2, "length")):
            _check(v.shape[i] == k.shape[i], op,
                   lambda: f"v's {what} {v.shape[i]} differs from k's {k.shape[i]} (k {_shape(k)}, v {_shape(v)})")
    same_device(op, "q", q, k=k, v=v)


def check_attention(q, k, v, attn_mask, is_causal, scale, enable_gqa, op="qpass::attention") -> None:
    _qkv(op, q, k, v, enable_gqa, same_len=False)
    _value(not (is_causal and attn_mask is not None), op, "attn_mask must be None when is_causal=True")
    _mask(op, attn_mask, q, (q.shape[0], q.shape[1], q.shape[2], k.shape[2]))


def _sale_args(op, q, tau, block_m, block_n, sink, window, pool) -> None:
    float_tensor(op, "tau", tau)
    H = q.shape[1]
    _check(tau.dim() <= 1 and (tau.numel() == 1 or tau.numel() == H), op,
           lambda: f"tau must be [H] = [{H}] (one threshold per query head) or a scalar, got shape {_shape(tau)}")
    # tau may stay on the CPU (the reference reads it there; the kernels copy it to q's device)
    _check(tau.device == q.device or tau.device.type == "cpu", op,
           f"tau is on {tau.device}: it must be on q's device {q.device} or the CPU")
    for name, val, lo in (("block_m", block_m, 1), ("block_n", block_n, 1), ("sink", sink, 0),
                          ("window", window, 0), ("pool", pool, 1)):
        int_arg(op, name, val)
        _value(val >= lo, op, f"{name} must be >= {lo}, got {val}")
    p = int(pool)  # a config int: specializing a symbolic one is fine
    _value(p & (p - 1) == 0 and int(block_m) % p == 0, op,
           f"pool must be a power of two dividing block_m={block_m}, got {pool}")


def check_sale_select(q, k, tau, scale, block_m, block_n, sink, window, group, pool, op="qpass::sale_select") -> None:
    _qkv(op, q, k, None, True, same_len=True)
    _sale_args(op, q, tau, block_m, block_n, sink, window, pool)


def check_sale_attention(q, k, v, tau, scale, block_m, block_n, sink, window, min_seq_len, group, pool, attn_mask,
                         op="qpass::sale_attention") -> None:
    _qkv(op, q, k, v, True, same_len=False)  # a decode step (one query row, longer k) runs dense attention
    _sale_args(op, q, tau, block_m, block_n, sink, window, pool)
    int_arg(op, "min_seq_len", min_seq_len)
    _value(min_seq_len >= 0, op, f"min_seq_len must be >= 0, got {min_seq_len}")
    _mask(op, attn_mask, q, (q.shape[0], q.shape[1], q.shape[2], k.shape[2]))


def check_sale_kernel_args(q, k, v=None, op="sale kernels") -> None:
    """The SALE launchers' argument checks (what the kernels assume), with messages naming the argument."""
    _qkv(op, q, k, v, True, same_len=True)
    torch._check_value(q.shape[-1] in (64, 128), lambda: f"{op}: q's head dim must be 64 or 128, got {q.shape[-1]}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t is not None:
            torch._check(t.stride(-1) == 1, lambda: f"{op}: {name} must have unit stride along the head dim, "
                                                    f"got strides {t.stride()}")


def check_sale_blocks(block_m, block_n, pool, op) -> None:
    """The SALE launchers' block sizes and pool factor."""
    for name, b in (("block_m", block_m), ("block_n", block_n)):
        torch._check_value(isinstance(b, int) and b >= 16 and b & (b - 1) == 0,
                           lambda: f"{op}: {name} must be a power of two >= 16, got {b}")
    torch._check_value(pool >= 1 and pool & (pool - 1) == 0 and block_m % pool == 0,
                       lambda: f"{op}: pool must be a power of two dividing block_m={block_m}, got {pool}")


# ------------------------------------------------------------------ mixture of experts
def check_moe_w4a16(x, qweight, scales, zeros, offs, group_size, op="qpass::moe_w4a16") -> None:
    """x [S, K] rows sorted by expert; qweight uint8 [E, N, ceil(K/8)*4]; scales / zeros [E, N, groups];
    offs [E] integer, the cumulative row count of each expert (rows past offs[-1] are not routed)."""
    float_tensor(op, "x", x)
    ndim(op, "x", x, 2, "[S, K] (routed rows, sorted by expert)")
    K = x.shape[1]
    dtype_is(op, "qweight", qweight, torch.uint8, " (formats.pack_int4 per expert)")
    ndim(op, "qweight", qweight, 3, "[E, N, ceil(K/8)*4] (formats.pack_int4 per expert)")
    E, N = qweight.shape[0], qweight.shape[1]
    want = (K + 7) // 8 * 4
    _check(qweight.shape[2] == want, op, lambda: (
        f"qweight has {qweight.shape[2]} bytes per row but x's K={K} packs into ceil(K/8)*4 = {want}"))
    ng = num_groups(op, K, group_size)
    for name, s in (("scales", scales), ("zeros", zeros)):
        if s is not None:
            float_tensor(op, name, s)
            shape_is(op, name, s, (E, N, ng), f"[E, N, groups] for group_size={group_size}")
    _type(offs.dtype in (torch.int32, torch.int64), op, f"offs must be int32 or int64, got {offs.dtype}")
    shape_is(op, "offs", offs, (E,), "[E] (cumulative rows per expert)")
    same_device(op, "x", x, qweight=qweight, scales=scales, zeros=zeros, offs=offs)


def check_moe_linear(x, weight, offs, op="qpass::moe_linear") -> None:
    """x [S, K] rows sorted by expert; weight [E, N, K] float (full precision experts); offs [E] as above."""
    float_tensor(op, "x", x)
    ndim(op, "x", x, 2, "[S, K] (routed rows, sorted by expert)")
    float_tensor(op, "weight", weight)
    ndim(op, "weight", weight, 3, "[E, N, K]")
    _check(weight.shape[2] == x.shape[1], op, lambda: f"weight's K={weight.shape[2]} but x's K={x.shape[1]}")
    _type(offs.dtype in (torch.int32, torch.int64), op, f"offs must be int32 or int64, got {offs.dtype}")
    shape_is(op, "offs", offs, (weight.shape[0],), "[E] (cumulative rows per expert)")
    same_device(op, "x", x, weight=weight, offs=offs)


def check_hadamard(x, mix, op="qpass::hadamard") -> None:
    """x [..., n] float; mix None or a square float [m, m] with n = m·p, p a power of two."""
    float_tensor(op, "x", x)
    n = last_dim(op, "x", x)
    m = 1
    if mix is not None:
        float_tensor(op, "mix", mix)
        ndim(op, "mix", mix, 2, "[m, m]")
        _check(mix.shape[0] == mix.shape[1], op, lambda: f"mix must be square [m, m], got {_shape(mix)}")
        same_device(op, "x", x, mix=mix)
        m = mix.shape[0]
    _check(n % m == 0, op, lambda: f"x's last dim {n} is not a multiple of mix's size {m}")
    if isinstance(n, int) and isinstance(m, int) and m:
        p = n // m
        _value(p >= 1 and p & (p - 1) == 0, op,
               f"x's last dim {n} / mix size {m} = {p} must be a power of two (n = m · 2^k)")
