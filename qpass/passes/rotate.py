"""Pass `rotate` (QuaRot): rotate the residual stream, V/O per head and the down projections' inputs with
orthogonal (Hadamard) transforms, so activations and weights lose their outlier channels before quantization.
The rotated full-precision model computes the same function (tests/test_rotate.py checks the logits).

It runs before calibration (the driver runs passes marked `before_calibration` first), so every statistic, GPTQ
Hessian and static step is measured on the rotated model. What it does, where `qpass.rotation.find_layout` finds
the graph allows it (else the model is left as it was and the report says why):
- each RMSNorm's scale is folded into the linears that read it (γ ← 1);
- the stream x ← x·Q (Q a seeded random-sign Hadamard): embedding E ← E·Q, readers W ← W·Q, writers W ← Qᵀ·W
  (and their biases b ← b·Q); a tied lm_head is untied first (its fold must not reach the embedding);
- per attention head, V's output rows and O's input columns by a Hadamard of the head dim;
- the input of every other writer (down_proj) by qpass::hadamard at run time, its weight pre-multiplied.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..plan import OnlineRotation
from ..rotation import RotationLayout, find_layout, mix_matrix, online_rotation_hooks, residual_rotation, transform
from ..schema import Checked, RecipeError, opt
from .context import PassContext


@dataclass
class RotateOptions(Checked):
    schema_name = "rotate"  # errors name `rotate.<option>`

    seed: int = opt(0, range="[0, inf)")  # the random signs of Q (and the small orthogonal factors)
    heads: bool = True  # per-head Hadamard of V's output and O's input
    online: bool = True  # run-time Hadamard of the down projections' inputs (qpass::hadamard)
    # run-time Hadamard of the attention output projections' inputs too (QuaRot's across-heads transform; the
    # per-head V/O transform alone mixes only within a head)
    online_attention: bool = False
    # max |Δlogit| / max |logit| the rotated model may differ by on a check input (x50 for 16-bit weights)
    check_tol: float = opt(1e-3, range="(0, inf)")

    def check_recipe(self, recipe, path: str) -> None:
        """rotate runs before calibration and every other pass: it must be listed first."""
        if recipe.passes and recipe.passes[0].options is not self:
            raise RecipeError(f"{path}: rotate must be the first pass (it runs before calibration and the others)")


def _canonical(model, site) -> tuple[torch.nn.Parameter, torch.Tensor]:
    p = model.get_parameter(site.weight)
    return p, (p.detach().t() if site.transposed else p.detach()).double()


def _store(p: torch.nn.Parameter, site, w: torch.Tensor) -> None:
    p.data.copy_((w.t() if site.transposed else w).to(p.dtype))


def _untie(model, site, tables: list[str], log: list[str]) -> None:
    """Give `site` (a linear reading the embedding table, e.g. a tied lm_head) its own copy of the weight."""
    if site.weight not in tables:
        return
    module = model.get_submodule(site.name.split("#")[0])
    shared = model.get_parameter(site.weight)
    attr = next((k for k, v in module.named_parameters(recurse=False) if v is shared), None)
    if attr is None:
        raise ValueError(f"rotate: {site.name} reads the embedding table {site.weight} but holds no parameter of it")
    setattr(module, attr, torch.nn.Parameter(shared.detach().clone(), requires_grad=False))
    tied, site.weight = site.weight, f"{site.name}.{attr}"
    cfg = getattr(model, "config", None)
    if cfg is not None and getattr(cfg, "tie_word_embeddings", False):
        cfg.tie_word_embeddings = False  # saving / reloading must not tie them again
    log.append(f"rotate: {site.name} untied from {tied} (the final norm's scale folds into it only)")


def _logits(model, ids, rotations: dict):
    """The model's logits, eagerly, with the plan's online rotations applied."""
    with online_rotation_hooks(model, rotations):
        out = model(input_ids=ids, use_cache=False)
    return (out.logits if hasattr(out, "logits") else out[0]).float()


def _apply(ctx: PassContext, layout: RotationLayout, opts: RotateOptions) -> int:
    """Edit the weights; return how many linears changed."""
    model, sites = ctx.model, ctx.analysis.by_name()
    Q = residual_rotation(layout.hidden, opts.seed)
    for name in [n for r in layout.readers for n in r.sites] + layout.direct_readers + layout.writers:
        _untie(model, sites[name], layout.embeddings, ctx.log)
    # fold each norm's scale into its readers, then make the norm plain (γ ← 1)
    for r in layout.readers:
        if r.norm_weight is None:
            continue
        g = model.get_parameter(r.norm_weight).detach().double()
        g = 1 + g if r.norm_form == "one_plus_gamma" else g
        for name in r.sites:
            p, w = _canonical(model, sites[name])
            _store(p, sites[name], w * g[None, :])
    for r in layout.readers:
        if r.norm_weight is not None:
            gp = model.get_parameter(r.norm_weight)
            gp.data.fill_(0.0 if r.norm_form == "one_plus_gamma" else 1.0)
    for name in [n for r in layout.readers for n in r.sites] + layout.direct_readers:
        p, w = _canonical(model, sites[name])
        _store(p, sites[name], w @ Q.to(w.device))
    for name in layout.writers:
        s = sites[name]
        p, w = _canonical(model, s)
        _store(p, s, Q.to(w.device).t() @ w)
        if s.bias:
            b = model.get_parameter(s.bias)
            b.data.copy_((b.detach().double() @ Q.to(b.device)).to(b.dtype))
    for table in layout.embeddings:
        e = model.get_parameter(table)
        e.data.copy_((e.detach().double() @ Q.to(e.device)).to(e.dtype))
    changed = {n for r in layout.readers for n in r.sites} | set(layout.direct_readers) | set(layout.writers)
    if opts.heads:
        for hp in layout.heads:
            T = transform(hp.head_dim, opts.seed + 2)
            v, o = sites[hp.v], sites[hp.o]
            p, w = _canonical(model, v)  # V rows per KV head: W ← Tᵀ W, b ← b T
            hd = hp.head_dim
            w = w.reshape(-1, hd, w.shape[1])
            _store(p, v, torch.einsum("ji,hjc->hic", T.to(w.device), w).reshape(-1, w.shape[2]))
            if v.bias:
                b = model.get_parameter(v.bias)
                b.data.copy_((b.detach().double().reshape(-1, hd) @ T.to(b.device)).reshape(-1).to(b.dtype))
            p, w = _canonical(model, o)  # O columns per query head: W ← W T
            w = w.reshape(w.shape[0], -1, hd)
            _store(p, o, torch.einsum("ohj,jk->ohk", w, T.to(w.device)).reshape(w.shape[0], -1))
            changed |= {hp.v, hp.o}
    online = (layout.online if opts.online else []) + (layout.attention_out if opts.online_attention else [])
    for name in online:
        s = sites[name]
        T = transform(s.in_features, opts.seed + 3)
        p, w = _canonical(model, s)
        _store(p, s, w @ T.to(w.device))
        mix = mix_matrix(s.in_features, opts.seed + 3)
        ctx.plan.rotations[name] = OnlineRotation(s.in_features, None if mix is None else mix.float())
    return len(changed)


@torch.no_grad()
def rotate(ctx: PassContext, opts: RotateOptions) -> None:
    """Rotate the model copy where the graph allows it; a refusal leaves it unchanged, in the log and a warning."""
    layout = find_layout(ctx.analysis)
    if layout.refused:
        msg = f"rotate: not applied: {layout.refused}"
        ctx.log.append(msg)
        warnings.warn(msg, UserWarning, stacklevel=4)
        return
    ids = _check_ids(ctx)
    saved = {k: v.detach().clone() for k, v in ctx.model.state_dict(keep_vars=True).items()}
    tied_names = {n: s.weight for n, s in ctx.analysis.by_name().items()}
    modules = {n: dict(m.named_parameters(recurse=False)) for n, m in ctx.model.named_modules()}
    before = _logits(ctx.model, ids, {})
    n = _apply(ctx, layout, opts)
    after = _logits(ctx.model, ids, ctx.plan.rotations)
    err = float((after - before).abs().max() / before.abs().max().clamp_min(1e-12))
    dtype = next(ctx.model.parameters()).dtype
    tol = opts.check_tol * (1 if dtype == torch.float32 else 50)
    if not err <= tol:  # a graph the layout misread: undo everything, say so
        for name, params in modules.items():
            mod = ctx.model.get_submodule(name)
            for k, p in params.items():
                setattr(mod, k, p)
        ctx.model.load_state_dict(saved)
        for name, w in tied_names.items():
            ctx.analysis.by_name()[name].weight = w
        ctx.plan.rotations.clear()
        msg = (f"rotate: not applied: the rotated model's logits differ by {err:.2e} (relative) > {tol} "
               "on a check input; some op of the graph does not commute with the rotation")
        ctx.log.append(msg)
        warnings.warn(msg, UserWarning, stacklevel=4)
        return
    ctx.log.append(
        f"rotate: residual stream (d={layout.hidden}) rotated by a random Hadamard (seed {opts.seed}): "
        f"{sum(len(r.sites) for r in layout.readers) + len(layout.direct_readers)} readers, {len(layout.writers)} "
        f"writers, {len(layout.embeddings)} embedding table(s); {len(layout.heads) if opts.heads else 0} V/O head pairs; "
        f"{len(ctx.plan.rotations)} online Hadamards (qpass::hadamard); {n} linears changed; "
        f"logits equal to {err:.1e} (relative)")
    ctx.log.extend(layout.notes)
    if ctx.plan.rotations and _static_steps_after_online(ctx):
        msg = ("rotate: online Hadamards before static per-channel activation steps spread each token's outliers "
               "over every channel, and the static steps must then cover them for all tokens (SmolLM2 W4A4 P&P "
               "58.70 all static, 36.30 with those inputs dynamic per-token, docs/rotation.md); the qsm pass keeps "
               "them dynamic; without it consider `rotate: {online: false}`")
        ctx.log.append(msg)
        warnings.warn(msg, UserWarning, stacklevel=4)


def _static_steps_after_online(ctx: PassContext) -> bool:
    """Static per-channel activation steps would read the online Hadamards' outputs: the qsm pass keeps those
    inputs dynamic, without it nothing does."""
    a = ctx.activations
    return a is not None and a.granularity == "per_channel" and "qsm" not in ctx.pass_names


def _check_ids(ctx: PassContext) -> torch.Tensor:
    """A short input for the equality check: the first calibration batch's first row, or fixed random ids."""
    device = next(ctx.model.parameters()).device
    if ctx.calib:
        return ctx.calib[0][:1, :64].to(device)
    vocab = getattr(getattr(ctx.model, "config", None), "vocab_size", 2) or 2
    return torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(0)).to(device)
