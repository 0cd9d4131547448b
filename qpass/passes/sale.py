"""SALE per-head τ calibration (docs/sale.md) and the eager attention function that runs SALE in HF models.

Calibration (the paper's rule): for each attention head, τ starts at `tau_init` (0.008) and is halved while
Σ_i Σ_d |O_sparse − O_dense| ≥ θ · q_len on the calibration prompt; a head whose τ falls to `tau_dense` (1e-4)
or below runs dense.  One pass over the calibration text: per layer, per head, the estimate's block scores R
and the dense attention's per-(row, key block) partial sums are computed once; every candidate τ is then a
cheap masked sum (no re-run per τ).

Sliding-window layers (Mistral, Qwen2 `use_sliding_window`, Gemma 2/3 local layers): the window W is read from
the attention call's own `sliding_window` keyword (no per-architecture table); calibration measures against the
windowed attention the model applies, and the layer's plan carries W (`LayerSaleOptions.model_window`), which the
lowering passes to `qpass::sale_attention` (docs/sale.md "Per-layer attention").
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor

from ..schema import Checked, RecipeError, opt
from ..plan import AttentionPlan
from .context import PassContext


@dataclass
class SaleOptions(Checked):
    schema_name = "sale"  # errors name `sale.<option>`

    tau_init: float = opt(0.008, range="(0, 1]")
    theta: float = opt(0.4, range="(0, inf)")  # L1 bound per query row (Σ_d |ΔO|), as in the paper (0.4 for Llama)
    tau_dense: float = opt(1e-4, range="[0, 1)")
    block_m: int = opt(64, range="[16, inf)", pow2=True, desc="a power of two ≥ 16")
    block_n: int = opt(64, range="[16, inf)", pow2=True, desc="a power of two ≥ 16")
    sink: int = opt(64, range="[0, inf)")
    window: int = opt(256, range="[0, inf)")
    min_seq_len: int = opt(1024, range="[0, inf)")  # prefills this short stay dense
    calib_novel: Literal["emma", "prideprejudice"] = "emma"  # qpass.data.NOVELS
    calib_tokens: int = opt(4096, range="[1, inf)")
    # {attention module path: [τ per head]} to skip calibration
    taus: dict[str, list[float]] | None = None
    # > 1: coarse estimate from `pool` mean-pooled query rows (power of two dividing block_m)
    pool: int = opt(1, pow2=True, desc="a power of two dividing block_m")

    def check_fields(self, path: str) -> None:
        if self.block_m % self.pool:
            raise RecipeError(f"{path}.pool: a power of two dividing block_m ({self.block_m}), got {self.pool!r}")
        if not self.tau_init > self.tau_dense:
            raise RecipeError(f"{path}.tau_init: must be > tau_dense ({self.tau_dense}), got {self.tau_init}")
        if self.taus is not None and any(t < 0 or not t <= 1 for v in self.taus.values() for t in v):
            raise RecipeError(f"{path}.taus: every τ must be in [0, 1] (0: dense head)")


@dataclass
class LayerSaleOptions(SaleOptions):
    """The options of one planned attention module: the pass's options plus what the module's attention call
    showed (not a recipe option): the model's sliding window W for a local layer, None for full causal."""

    model_window: int | None = opt(None, range="[1, inf)")


def layer_options(opts: SaleOptions, model_window: int | None) -> LayerSaleOptions:
    base = {k: v for k, v in opts.__dict__.items() if k != "model_window"}
    return LayerSaleOptions(**base, model_window=model_window)


@dataclass
class SaleState:
    """What τ calibration found (`calibrate_taus`); the pass puts the τ into the plan (`Plan.attention`)."""
    taus: dict[str, list[float]]
    options: SaleOptions
    table: dict = field(default_factory=dict)  # module -> {"l1": [H][nτ], "kept": [H][nτ]} (calibration)
    refused: dict = field(default_factory=dict)  # module -> (why SALE cannot run it, query heads)
    windows: dict = field(default_factory=dict)  # module -> the model's sliding window (local layers only)

    def to_dict(self) -> dict:
        return {"taus": self.taus, "options": self.options.__dict__}


def tau_ladder(opts: SaleOptions) -> list[float]:
    out, t = [], opts.tau_init
    while t > opts.tau_dense:
        out.append(t)
        t /= 2
    return out


def head_tables(q: Tensor, k: Tensor, v: Tensor, scale: float, opts: SaleOptions, ladder: list[float],
                chunk_rows: int = 1024, model_window: int | None = None) -> tuple[Tensor, Tensor]:
    """(l1 [H, nτ]: Σ|O_sparse − O_dense| / q_len, kept [H, nτ]: fraction of causal blocks kept) for q [1, H, S, D];
    `model_window`: the layer's sliding window (dense and sparse attention both stay inside it, and "causal blocks"
    are those inside it)."""
    from qpass.kernels.sale import reference as R

    B, H, S, D = q.shape
    G = H // k.shape[1]
    bm, bn = opts.block_m, opts.block_n
    scores = R.sale_block_scores_ref(q, k, scale, bm, bn, opts.sink, opts.window, chunk_rows=chunk_rows,
                                     pool=opts.pool, model_window=model_window)[0]
    causal = R.block_layout(S, bm, bn, 0, 0, model_window)[2]
    nkb = causal.shape[1]
    l1 = torch.zeros(H, len(ladder))
    kept = torch.zeros(H, len(ladder))
    thr = torch.log(torch.tensor(ladder))
    for h in range(H):
        keeps = scores[h][None] > thr[:, None, None]  # [nτ, nQB, nKB]
        kept[h] = (keeps & causal).flatten(1).sum(1).float() / causal.sum()
        kh, vh = k[0, h // G].float(), v[0, h // G].float()
        pad = nkb * bn - S
        vb = torch.nn.functional.pad(vh, (0, 0, 0, pad)).reshape(nkb, bn, -1)
        rows_per = max(1, chunk_rows // bm) * bm
        for r0 in range(0, S, rows_per):
            r1 = min(S, r0 + rows_per)
            s = (q[0, h, r0:r1].float() @ kh.T) * scale
            s = s.masked_fill(~R.visible(torch.arange(r0, r1)[:, None], torch.arange(S)[None], model_window),
                              float("-inf"))
            p = torch.exp(s - s.amax(-1, keepdim=True))
            pb = torch.nn.functional.pad(p, (0, pad)).reshape(r1 - r0, nkb, bn)
            lb = pb.sum(-1)  # [rows, nKB]
            ob = torch.einsum("rbn,bnd->rbd", pb, vb)  # [rows, nKB, D]
            dense = ob.sum(1) / lb.sum(1, keepdim=True)
            qb = torch.arange(r0, r1) // bm
            for t in range(len(ladder)):
                km = keeps[t][qb].float()  # [rows, nKB]
                o = torch.einsum("rb,rbd->rd", km, ob) / (km * lb).sum(1, keepdim=True)
                l1[h, t] += (o - dense).abs().sum()
    return l1 / S, kept


def choose_taus(l1: Tensor, ladder: list[float], theta: float, tau_dense: float) -> list[float]:
    """Per head: the first τ on the ladder whose L1 error per row is under θ; dense (τ = 0) if none."""
    out = []
    for h in range(l1.shape[0]):
        ok = (l1[h] < theta).nonzero()
        out.append(ladder[int(ok[0])] if len(ok) else 0.0)
    return out


# ------------------------------------------------------------------ HF attention functions
def _module_names(model) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


class use_sale:
    """Context manager: run `model` (an HF causal LM) with SALE attention ("sale", needs `taus`) or in
    calibration mode ("calibrate", fills `tables`). Each use registers its own HF attention function (bound to
    this object, under a name of its own) and removes it on exit: no module-level state chooses the mode."""

    def __init__(self, model, kind: str, opts: SaleOptions, taus: dict | None = None):
        self.model, self.kind, self.opts, self.taus = model, kind, opts, taus
        self.tables, self.stats = {}, {}
        self.calls = {}  # module -> what its attention call asks for beyond causal SDPA (`refusal`), query heads
        self.ladder, self.names = tau_ladder(opts), {}
        self.key = f"qpass_sale_{id(self):x}"

    def __enter__(self):
        from transformers import AttentionInterface, AttentionMaskInterface
        from transformers.masking_utils import sdpa_mask

        AttentionInterface.register(self.key, self.attention)
        AttentionMaskInterface.register(self.key, sdpa_mask)
        self.names = _module_names(self.model)
        self.prev = self.model.config._attn_implementation
        self.model.set_attn_implementation(self.key)
        return self

    def __exit__(self, *exc):
        from transformers import AttentionInterface, AttentionMaskInterface

        self.model.set_attn_implementation(self.prev)
        for interface in (AttentionInterface, AttentionMaskInterface):  # HF has no unregister
            interface._global_mapping.pop(self.key, None)

    def attention(self, module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                  **kwargs):
        """An HF `AttentionInterface` function: dense SDPA plus this mode's work (calibration tables, or SALE
        attention with the calibrated τ).  Assumes causal, unpadded batches (the eval/calibration setting)."""
        import torch.nn.functional as F

        name = self.names.get(id(module), str(getattr(module, "layer_idx", "?")))
        S = query.shape[2]
        gqa = key.shape[1] != query.shape[1]
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        win = model_window(kwargs, max_positions(self.model))
        w = win if win is not None and win < S else None  # a window this long does not limit this call
        if w is None:
            dense = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale, enable_gqa=gqa)
        else:  # the mask the model applies (i - W < j <= i)
            import qpass.kernels.sale.reference as R

            i = torch.arange(S, device=query.device)
            dense = F.scaled_dot_product_attention(query, key, value, attn_mask=R.visible(i[:, None], i[None], w),
                                                   scale=scale, enable_gqa=gqa)
        out = dense
        why = refusal(kwargs, max_positions(self.model), query) or nothing_to_skip(win, self.opts)
        self.calls[name] = {"refused": why, "heads": query.shape[1], "window": win}
        if why:
            return out.transpose(1, 2).contiguous(), None
        if self.kind == "calibrate" and S > 1:  # against the attention the layer applies (its window included)
            l1, kept = head_tables(query, key, value, scale, self.opts, self.ladder, model_window=w)
            self.tables[name] = {"l1": l1.tolist(), "kept": kept.tolist()}
        elif self.kind == "sale" and S > self.opts.min_seq_len:
            from qpass.kernels.sale import reference as R

            o = self.opts
            tau = torch.tensor(self.taus[name])
            out, mask = R.sale_attention_chunked_ref(query, key, value, tau, scale, o.block_m, o.block_n, o.sink,
                                                     o.window, o.tau_dense, pool=o.pool, model_window=w)
            causal = R.block_layout(S, o.block_m, o.block_n, 0, 0, w)[2]
            st = self.stats.setdefault(name, {"kept": 0.0, "causal": 0.0, "l1": 0.0, "norm": 0.0})
            st["kept"] += float((mask & causal).sum())
            st["causal"] += float(causal.sum()) * mask.shape[0] * mask.shape[1]
            st["l1"] += float((out - dense).abs().sum())
            st["norm"] += float(dense.abs().sum())
        return out.transpose(1, 2).contiguous(), None


def max_positions(model) -> int | None:
    """The longest sequence the model's position table takes (`max_position_embeddings`; GPT-2's `n_positions`
    maps onto it), None when the config does not say (rotary models without one)."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def model_window(call_kwargs: dict, positions: int | None) -> int | None:
    """The sliding window W of an attention call (HF's `sliding_window` keyword: key j seen by query i iff
    i - W < j <= i), None for full causal attention.  A window at least as long as the model's positions never
    limits attention, so it is no window."""
    window = call_kwargs.get("sliding_window")
    if window is None or (positions is not None and window >= positions):
        return None
    if not (isinstance(window, int) and window >= 1):
        raise ValueError(f"sale: an attention call's sliding_window must be an int >= 1, got {window!r}")
    return window


def refusal(call_kwargs: dict, positions: int | None, query: Tensor) -> str:
    """Why SALE cannot run an attention call with these HF keyword arguments and this query ("" when it can):
    read from the call itself, not from a per-architecture table. A sliding window is no reason: SALE runs
    inside it (`model_window`)."""
    if query.is_cuda and query.shape[-1] not in (64, 128):  # the CPU reference takes any head dim
        return f"head dim {query.shape[-1]}: the Triton SALE kernels take 64 or 128; the layer runs dense"
    softcap = call_kwargs.get("softcap")
    if softcap is not None:
        return (f"logit soft-capping (softcap={softcap:g}): SALE's estimate and kernel have no soft-cap; "
                f"the layer runs its own attention")
    return ""


def nothing_to_skip(window: int | None, opts: SaleOptions) -> str:
    """Why a local layer stays dense-local ("" when SALE can skip something in it): a sliding window so short that
    every key block inside it is always kept (sink, SALE's recent band, the diagonal) leaves SALE no block to skip,
    only the estimate's cost. Decided from the block layout, at any sequence length."""
    if window is None:
        return ""
    from qpass.kernels.sale import reference as R

    S = 4 * (window + opts.window + opts.sink + opts.block_m + opts.block_n)  # past every edge effect
    _, _, causal, always = R.block_layout(S, opts.block_m, opts.block_n, opts.sink, opts.window, window)
    if (causal & ~always).any():
        return ""
    return (f"sliding window {window}: every key block inside it is always kept (sink {opts.sink}, window "
            f"{opts.window}, {opts.block_m}x{opts.block_n} blocks), so SALE would skip nothing; the layer stays "
            f"dense-local")


def calibrate_taus(model, ids: Tensor, opts: SaleOptions) -> SaleState:
    """Per-head τ from one forward over `ids` [1, T] (no grad); layers SALE refuses (`refusal`) get no τ
    (`SaleState.refused`)."""
    with torch.no_grad(), use_sale(model, "calibrate", opts) as ctx:
        model(input_ids=ids.reshape(1, -1), use_cache=False)
    ladder = tau_ladder(opts)
    taus = {n: choose_taus(torch.tensor(t["l1"]), ladder, opts.theta, opts.tau_dense) for n, t in ctx.tables.items()}
    refused = {n: (c["refused"], c["heads"]) for n, c in ctx.calls.items() if c["refused"]}
    windows = {n: c["window"] for n, c in ctx.calls.items() if c["window"] is not None}
    return SaleState(taus, opts, ctx.tables, refused, windows)


def probe_calls(model, opts: SaleOptions) -> tuple[dict[str, tuple[str, int]], dict[str, int]]:
    """({module: (why SALE refuses it, query heads)}, {module: its sliding window}) from one 8-token forward (when
    τ are given, nothing else runs the model to show what each attention call asks for)."""
    ids = torch.randint(0, model.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), use_sale(model, "probe", opts) as ctx:
        model(input_ids=ids.to(next(model.parameters()).device), use_cache=False)
    return ({n: (c["refused"], c["heads"]) for n, c in ctx.calls.items() if c["refused"]},
            {n: c["window"] for n, c in ctx.calls.items() if c["window"] is not None})


def _calib_ids(ctx: PassContext, opts: SaleOptions) -> Tensor:
    """One long sequence of `calib_tokens` ids: the user's calibration batches (rows joined) when they hold that
    many tokens, else the `calib_novel` text (SALE needs long context; short calibration rows are not enough).
    Never longer than the model's position table (`max_positions`): clipped to it, with a note."""
    limit = max_positions(ctx.model)
    if limit is not None and opts.calib_tokens > limit:
        ctx.log.append(f"sale: calib_tokens {opts.calib_tokens} > the model's {limit} positions; "
                       f"τ calibrated on {limit} tokens")
        opts = replace(opts, calib_tokens=limit)
    return _calib_ids_within(ctx, opts)


def _calib_ids_within(ctx: PassContext, opts: SaleOptions) -> Tensor:
    from transformers import AutoTokenizer

    from qpass.data import austen_tokens

    if ctx.calib:
        ids = torch.cat([b.reshape(-1) for b in ctx.calib])
        if ids.numel() >= opts.calib_tokens:
            ctx.log.append(f"sale: τ calibrated on the first {opts.calib_tokens} tokens of the calibration data")
            return ids[: opts.calib_tokens][None]
        ctx.log.append(f"sale: calibration data has {ids.numel()} tokens < calib_tokens {opts.calib_tokens}; "
                       f"calibrating on {opts.calib_novel!r} instead")

    path = getattr(getattr(ctx.model, "config", None), "_name_or_path", None)
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return austen_tokens(tok, opts.calib_novel, opts.calib_tokens)[None]
    except Exception as e:  # no tokenizer beside the model: random tokens (noted in the report)
        ctx.log.append(f"sale: no tokenizer at {path!r} ({type(e).__name__}); calibrating on random tokens")
        vocab = ctx.model.config.vocab_size
        return torch.randint(0, vocab, (1, opts.calib_tokens), generator=torch.Generator().manual_seed(0))


def runs_model(opts: SaleOptions) -> bool:
    """The pass runs the model (on the calibration data, else a shipped novel) unless it is given its τ."""
    return opts.taus is None


def sale(ctx: PassContext, opts: SaleOptions) -> None:
    """SALE sparse attention: per-head τ calibrated on long text (weights untouched); `Plan.attention`."""
    if opts.taus is not None:
        taus = {k: [float(t) for t in v] for k, v in dict(opts.taus).items()}
        # the torch.compile backend has the graph's parameters, not a model to run: no probe there (a layer SALE
        # cannot take has no SDPA node for the rule, and the report says so)
        refused, windows = probe_calls(ctx.model, opts) if hasattr(ctx.model, "config") else ({}, {})
    else:
        state = calibrate_taus(ctx.model, _calib_ids(ctx, opts), opts)
        taus, refused, windows = state.taus, state.refused, state.windows
    ctx.plan.attention.update({name: AttentionPlan("sale", list(t), layer_options(opts, windows.get(name)))
                               for name, t in taus.items()})
    for name, (why, heads) in refused.items():  # planned, so the report names the module and the reason
        ctx.plan.attention[name] = AttentionPlan("sale", [0.0] * heads, opts, refused=why)
        ctx.log.append(f"sale: {name} runs its own attention: {why}")
    taus = {n: t for n, t in taus.items() if n not in refused}
    heads = [t for v in taus.values() for t in v]
    dense = sum(t <= opts.tau_dense for t in heads)
    ctx.log.append(f"sale: τ for {len(heads)} heads in {len(taus)} attention modules "
                   f"(median {sorted(heads)[len(heads) // 2] if heads else float('nan'):.2g}, {dense} dense)")
    local = sorted({w for n, w in windows.items() if n in taus})
    if local:
        ctx.log.append(f"sale: {sum(n in taus for n in windows)} local layers run SALE inside their sliding window "
                       f"(W = {', '.join(map(str, local))})")
