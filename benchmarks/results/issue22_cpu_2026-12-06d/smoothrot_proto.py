"""Prototype (SmoothRot): per-channel smoothing of down_proj inputs (x/s into up_proj rows, s into down_proj
columns) before the rotation's online Hadamard."""
import os, sys
import torch
sys.path.insert(0, "/work/main/benchmarks")
import qpass.passes.rotate as rot
ALPHA = float(os.environ.get("PROTO_ALPHA", "0.5"))
_apply = rot._apply
def apply(ctx, layout, opts):
    model = ctx.model
    names = list(layout.online) if opts.online else []
    mods = {n.split("#")[0]: None for n in names}
    amax = {}
    hooks = [model.get_submodule(n).register_forward_pre_hook(
        lambda m, a, n=n: amax.__setitem__(n, torch.maximum(amax.get(n, torch.zeros(a[0].shape[-1])), a[0].detach().abs().reshape(-1, a[0].shape[-1]).amax(0).float())))
        for n in mods]
    with torch.no_grad():
        for b in ctx.calib[:8]:
            model(input_ids=b, use_cache=False)
    for h in hooks: h.remove()
    for n in mods:
        down = model.get_submodule(n); up = model.get_submodule(n.replace("down_proj", "up_proj"))
        wmax = down.weight.detach().abs().amax(0).float()
        s = (amax[n].clamp_min(1e-5) ** ALPHA / wmax.clamp_min(1e-5) ** (1 - ALPHA)).clamp_min(1e-5)
        up.weight.data.div_(s[:, None].to(up.weight.dtype))
        down.weight.data.mul_(s[None, :].to(down.weight.dtype))
    ctx.log.append(f"proto smoothrot alpha {ALPHA} on {len(mods)} down_proj")
    return _apply(ctx, layout, opts)
rot._apply = apply
import paper_eval
paper_eval.main()
