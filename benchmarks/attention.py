"""Attention prefill on one GPU: cuDNN / FlashAttention SDPA, FlexAttention with SALE's block mask, and qpass
SALE (quantize + estimate/select, block-sparse attention), causal, bf16, B=1, 32 query heads, 8 KV heads, d=128.

    python benchmarks/attention.py [--seqs 16384 32768 65536 131072] [--sparsity 0.5 0.8 0.9 0.95] [--out DIR]
    python benchmarks/attention.py --quick --out $OUT/attention_quick.json   # v1 vs v2 kernels, ≤ ~200 s on H100

Synthetic inputs: random q/k/v (N(0,1)); the compute pass runs on random block masks at a controlled share of
skipped causal blocks (sink, local window and diagonal always kept, the rest kept at random to reach the
target), the estimate + select pass on the same q/k with one τ for every head (its time does not depend on
how many blocks it keeps); `qpass_select_ms` is the default (one block map per KV group),
`qpass_select_per_head_ms` the per-head selection (group=False).  Writes attention_<gpu>.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F


def bench(fn, rep=100):
    import triton
    return triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median")


def random_mask(S, H, bm, bn, sink, window, target, device, seed=0):
    from qpass.kernels.sale import reference as R
    nqb, nkb, causal, always = R.block_layout(S, bm, bn, sink, window)
    causal, always = causal.to(device), always.to(device)
    middle = causal & ~always
    r = ((1 - target) * causal.sum() - always.sum()).clamp_min(0) / middle.sum().clamp_min(1)
    g = torch.Generator(device=device).manual_seed(seed)
    keep = always | (middle & (torch.rand(1, H, nqb, nkb, device=device, generator=g) < r))
    return keep, 1 - keep.sum().item() / (causal.sum().item() * H)


def mask_to_index_gpu(mask):
    nkb = mask.shape[-1]
    ar = torch.arange(nkb, device=mask.device, dtype=torch.int32).expand_as(mask)
    key = torch.where(mask, ar, ar + nkb)
    idx = torch.sort(key, -1).values
    idx = torch.where(idx >= nkb, 0, idx).to(torch.int32).contiguous()
    return idx, mask.sum(-1).to(torch.int32).contiguous()


# ------------------------------------------------------------------ --quick: old vs new kernels, one process
def quick(a):
    """64K (and 128K when time is left): cuDNN SDPA, quantize, select v1 vs v2 (P ∈ {1, 8, 16}, v2's QB sweep),
    sparse compute v1 vs v2 variants at 90 / 95% skipped, totals; a GPU check of v2 vs v1 / the reference first.
    Writes attention_quick.json (to --out: a .json path or a folder) after every section; prints a table last."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from qpass.kernels.sale import dispatch as K
    from qpass.kernels.sale import reference as R
    from variants import sale_attn_v1 as V1  # benchmarks/variants/ (the script's folder is on sys.path)

    t0 = time.time()
    budget = a.budget
    dev = "cpu" if a.dry_run else "cuda"
    H, Hkv, D, dt = (8, 2, 128, torch.float16) if a.dry_run else (32, 8, 128, torch.bfloat16)
    bm, bn = a.block
    sink, window = 64, 256
    scale = D ** -0.5
    out_path = a.out if a.out.endswith(".json") else os.path.join(a.out, "attention_quick.json")
    res = {"gpu": "dry-run (CPU interpreter)" if a.dry_run else torch.cuda.get_device_name(), "torch": torch.__version__, "mode": "quick",
           "shape": dict(B=1, H=H, Hkv=Hkv, D=D, dtype="bf16", causal=True), "block": [bm, bn],
           "defaults": dict(select=K.SELECT_IMPL, attn="v2", npi=K.ATTN2_NPI), "check": {}, "rows": [],
           "skipped": []}

    def save():
        res["elapsed_s"] = round(time.time() - t0, 1)
        d = os.path.dirname(out_path)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(out_path, "w") as f:
            json.dump(res, f, indent=1)

    def left():
        return budget - (time.time() - t0)

    def tm(fn, rep=60):
        if a.dry_run:
            t = time.time()
            fn()
            return round(1e3 * (time.time() - t), 3)
        return round(bench(fn, rep=rep), 3)

    # ---- GPU correctness: v2 vs v1 (identical arithmetic: expect 0 mismatches), v1 vs the reference (margin)
    torch.manual_seed(0)
    Sc = 512 if a.dry_run else 4096
    q = torch.randn(1, 8, Sc, D, device=dev, dtype=dt)
    k = torch.randn(1, 2, Sc, D, device=dev, dtype=dt) + 1
    v = torch.randn(1, 2, Sc, D, device=dev, dtype=dt)
    tau = torch.tensor([0.01, 0.003, 1e-5, 0.05, 0.02, 0.01, 0.1, 0.004])
    quant1 = K.sale_quantize_triton(q, k)
    quant2 = K.sale_quantize_triton(q, k, unpack=True)
    chk = res["check"]
    chk["quant_unpack_same_pack"] = all(torch.equal(x, y) for x, y in zip(quant1, quant2[:6]))
    kx = R.unpack_int4_halves(quant1[3]).float()
    chk["quant_unpack_matches"] = bool(torch.equal(quant2[6].float(), kx))
    for pool in (1, 8, 16):
        m1 = K.sale_select_triton(q, k, tau, scale, bm, bn, sink, window, quant=quant1, pool=pool, impl="v1")
        for qb in ((None, 1) if pool > 1 else (None,)):  # (the interpreter tests cover every QB)
            m2 = K.sale_select_triton(q, k, tau, scale, bm, bn, sink, window, quant=quant2, pool=pool, impl="v2",
                                      qb=qb)
            chk[f"select_v2_vs_v1_mask_diff_P{pool}_qb{qb or 'def'}"] = int((m1[2] != m2[2]).sum())
            chk[f"select_v2_vs_v1_cnt_diff_P{pool}_qb{qb or 'def'}"] = int((m1[1] != m2[1]).sum())
        if pool > 1:
            m2 = K.sale_select_triton(q, k, tau, scale, bm, bn, sink, window, quant=quant2, pool=pool, impl="v2",
                                      bias_mma=True)
            chk[f"select_v2_vs_v1_mask_diff_P{pool}_biasmma"] = int((m1[2] != m2[2]).sum())  # ties only
        for qb in ((None, 1) if pool > 1 else (None,)):
            m2 = K.sale_select_triton(q, k, tau, scale, bm, bn, sink, window, quant=quant2, pool=pool, impl="v2",
                                      qb=qb, split=True)
            chk[f"select_v2_vs_v1_mask_diff_P{pool}_split_qb{qb or 'def'}"] = int((m1[2] != m2[2]).sum())
            chk[f"select_v2_vs_v1_cnt_diff_P{pool}_split_qb{qb or 'def'}"] = int((m1[1] != m2[1]).sum())
        if pool in (1, 8):  # v1 (and so v2) vs the CPU reference, outside a margin
            sc = R.sale_block_scores_ref(q.cpu().float(), k.cpu().float(), scale, bm, bn, sink, window, pool=pool)
            ref = R.group_union(R.mask_from_scores(sc, tau), 2)
            near = R.group_union((sc - torch.log(tau).reshape(1, -1, 1, 1)).abs() < 0.05, 2)
            chk[f"select_v1_vs_ref_outside_margin_P{pool}"] = int(((m1[2].cpu().bool() != ref) & ~near).sum())
            chk[f"kept_frac_P{pool}"] = round(float(m1[2].float().mean()), 4)
    idx, cnt, m = K.sale_select_triton(q, k, tau, scale, bm, bn, sink, window, quant=quant1, pool=8)
    o1 = V1.sale_sparse_attention_v1(q, k, v, idx, cnt, scale, bm, bn)
    ref = R.sale_attention_ref(q.cpu().float(), k.cpu().float(), v.cpu().float(), m.cpu().bool(), scale, bm, bn)
    chk["attn_v1_vs_ref_max_abs"] = float((o1.cpu().float() - ref).abs().max())
    for npi in (1, 2):
        o2 = K.sale_sparse_attention_triton(q, k, v, idx, cnt, scale, bm, bn, npi=npi)
        chk[f"attn_v2_npi{npi}_vs_v1_max_abs"] = float((o2.float() - o1.float()).abs().max())
        chk[f"attn_v2_npi{npi}_vs_ref_max_abs"] = float((o2.cpu().float() - ref).abs().max())
    del q, k, v, quant1, quant2, idx, cnt, m, o1, o2
    print("check", json.dumps(chk), f"({time.time() - t0:.0f} s)", flush=True)
    save()

    w8s2 = dict(num_warps=8, num_stages=2)
    attn_variants = [("v1", None), ("v2", dict(npi=1)), ("v2_npi2", dict(npi=2)),
                     ("v2_w8s2", dict(npi=1, launch=w8s2)), ("v2_npi2_w8s2", dict(npi=2, launch=w8s2))]

    def run_attn(q, k, v, idx, cnt, kw):
        if kw is None:  # v1: benchmarks/variants/sale_attn_v1.py
            return tm(lambda: V1.sale_sparse_attention_v1(q, k, v, idx, cnt, scale, bm, bn))
        return tm(lambda: K.sale_sparse_attention_triton(q, k, v, idx, cnt, scale, bm, bn, **kw))

    for S in a.quick_seqs:
        if S != a.quick_seqs[0] and left() < 70:
            res["skipped"].append(f"S={S}: {left():.0f} s left")
            continue
        torch.cuda.empty_cache()
        q = torch.randn(1, H, S, D, device=dev, dtype=dt)
        k = torch.randn(1, Hkv, S, D, device=dev, dtype=dt)
        v = torch.randn(1, Hkv, S, D, device=dev, dtype=dt)
        row = {"seq": S, "select": {}, "attn": {}}
        res["rows"].append(row)
        be = SDPBackend.MATH if a.dry_run else SDPBackend.CUDNN_ATTENTION
        try:
            with sdpa_kernel(be):
                f = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # noqa
                f()
                row["cudnn_ms"] = tm(f)
        except Exception as e:  # GQA unsupported by the backend: expanded K/V (as the full benchmark does)
            try:
                ke, ve = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
                with sdpa_kernel(be):
                    f = lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=True)  # noqa
                    f()
                    row["cudnn_ms"] = tm(f)
                row["cudnn_note"] = f"K/V expanded (enable_gqa: {type(e).__name__})"
                del ke, ve
            except Exception as e2:
                row["cudnn_error"] = f"{type(e2).__name__}: {str(e2)[:200]}"
        print(S, {k_: v_ for k_, v_ in row.items() if k_.startswith("cudnn")}, f"({time.time() - t0:.0f} s)",
              flush=True)
        row["quant_ms"] = tm(lambda: K.sale_quantize_triton(q, k))
        row["quant_unpack_ms"] = tm(lambda: K.sale_quantize_triton(q, k, unpack=True))
        quant1 = K.sale_quantize_triton(q, k)
        quant2 = K.sale_quantize_triton(q, k, unpack=True)
        tau = torch.full((H,), 0.01)
        sel = row["select"]
        for pool in (16, 8, 1):
            if pool == 1 and (S > 65536 or left() < 60 or a.dry_run):
                continue
            sel[f"v1_P{pool}"] = tm(lambda: K.sale_select_triton(q, k, tau, scale, bm, bn, sink, window, quant=quant1,
                                                                  pool=pool, impl="v1"), rep=40)
            qd = K.select2_blocks(4, bm, pool)[0]
            first = pool > 1 and S == a.quick_seqs[0]
            # (name, kwargs, env): v2 default first, then the variants in order of interest (skipped when time runs out)
            # v2 with the shipped defaults first (split exact pass + bias MMA, select2_blocks' QB), per-head
            # selection (group=False, what the lowered op runs), then comparisons (skipped when time runs out)
            qh = K.select2_blocks(1, bm, pool)[0]
            variants = [(f"v2_P{pool}_qb{qd}", {}, None), (f"v2_P{pool}_qb{qh}_head", dict(group=False), None)]
            if first:
                variants += [(f"v2_P{pool}_qb{x}_head", dict(group=False, qb=x), None) for x in (4, 8) if x != qh]
                variants += [(f"v2_P{pool}_qb{qd}_nobiasmma", dict(bias_mma=False), None),
                             (f"v2_P{pool}_qb{qd}_nosplit", dict(split=False), None)]
                variants += [(f"v2_P{pool}_qb{x}", dict(qb=x), None) for x in (2, 4) if x != qd]
            for i, (name, kw, warps) in enumerate(variants):
                if i > 0 and left() < 45:
                    res["skipped"].append(f"{S} {name}: {left():.0f} s left")
                    continue
                kw = dict(dict(impl="v2"), **kw)
                if warps:
                    kw["launch"] = dict(num_warps=int(warps), num_stages=2)
                try:
                    qt = quant2 if kw["impl"] == "v2" else quant1
                    sel[name] = tm(lambda: K.sale_select_triton(q, k, tau, scale, bm, bn, sink, window, quant=qt,
                                                                pool=pool, **kw), rep=40)
                except Exception as e:
                    res["skipped"].append(f"{S} {name}: {type(e).__name__}: {str(e)[:200]}")
            print(S, "select", sel, f"({time.time() - t0:.0f} s)", flush=True)
            save()
        del quant1, quant2
        for p in a.quick_sparsity:
            mask, actual = random_mask(S, H, bm, bn, sink, window, p, dev)
            idx, cnt = mask_to_index_gpu(mask)
            del mask
            ar = row["attn"][str(p)] = {"skipped": round(actual, 4)}
            for name, kw in attn_variants:
                if name not in ("v1", "v2", "v2_npi2") and (S != a.quick_seqs[0] or left() < 40):
                    continue
                ar[name] = run_attn(q, k, v, idx, cnt, kw)
            del idx, cnt
            print(S, "attn", p, ar, f"({time.time() - t0:.0f} s)", flush=True)
            save()
        # totals: old = quant + select v1 + attn v1; new = quant (unpack) + best v2 select + best v2 attn
        row["totals"] = {}
        for p, ar in row["attn"].items():
            best_attn = min((v_, k_) for k_, v_ in ar.items() if k_.startswith("v2"))
            for pool in (16, 8, 1):
                if f"v1_P{pool}" not in sel:
                    continue
                best_sel = min((v_, k_) for k_, v_ in sel.items() if k_.startswith(f"v2_P{pool}_"))
                t_old = row["quant_ms"] + sel[f"v1_P{pool}"] + ar["v1"]
                t_new = row["quant_unpack_ms"] + best_sel[0] + best_attn[0]
                tt = {"old_ms": round(t_old, 2), "new_ms": round(t_new, 2), "new_select": best_sel[1],
                      "new_attn": best_attn[1]}
                if "cudnn_ms" in row:
                    c = row["cudnn_ms"]
                    tt.update(old_speedup=round(c / t_old, 2), new_speedup=round(c / t_new, 2),
                              old_est_share=round((row["quant_ms"] + sel[f"v1_P{pool}"]) / c, 3),
                              new_est_share=round((row["quant_unpack_ms"] + best_sel[0]) / c, 3))
                qd = K.select2_blocks(4, bm, pool)[0]
                if f"v2_P{pool}_qb{qd}" in sel and "v2" in ar and "cudnn_ms" in row:  # the shipped defaults
                    t_def = row["quant_unpack_ms"] + sel[f"v2_P{pool}_qb{qd}"] + ar["v2"]
                    tt.update(default_ms=round(t_def, 2), default_speedup=round(row["cudnn_ms"] / t_def, 2),
                              default_est_share=round((row["quant_unpack_ms"] + sel[f"v2_P{pool}_qb{qd}"]) / row["cudnn_ms"], 3))
                qh = K.select2_blocks(1, bm, pool)[0]
                if f"v2_P{pool}_qb{qh}_head" in sel and "v2" in ar and "cudnn_ms" in row:  # per-head selection
                    t_h = row["quant_unpack_ms"] + sel[f"v2_P{pool}_qb{qh}_head"] + ar["v2"]
                    tt.update(head_ms=round(t_h, 2), head_speedup=round(row["cudnn_ms"] / t_h, 2),
                              head_est_share=round((row["quant_unpack_ms"] + sel[f"v2_P{pool}_qb{qh}_head"]) / row["cudnn_ms"], 3))
                row["totals"][f"{p}_P{pool}"] = tt
        save()
        del q, k, v

    # ---- table
    print("\n== attention --quick (ms; old = v1 kernels, new = best v2 variant) ==")
    for row in res["rows"]:
        c = row.get("cudnn_ms")
        print(f"S={row['seq']}  cuDNN {c}  quant {row['quant_ms']} / unpack {row['quant_unpack_ms']}")
        print("  select: " + "  ".join(f"{k_} {v_}" for k_, v_ in row["select"].items()))
        for p, ar in row["attn"].items():
            print(f"  attn {p} (skipped {ar['skipped']}): " + "  ".join(f"{k_} {v_}" for k_, v_ in ar.items()
                                                                       if k_ != "skipped"))
        print(f"  {'sparsity_P':<10} {'old':>7} {'new':>7} {'old x':>6} {'new x':>6} {'old est':>7} {'new est':>7} "
              f"{'default':>7} {'def x':>6} {'def est':>7} {'head':>7} {'head x':>6} {'head est':>8}  new via")
        for key, tt in row.get("totals", {}).items():
            print(f"  {key:<10} {tt['old_ms']:>7} {tt['new_ms']:>7} {tt.get('old_speedup', '-'):>6} "
                  f"{tt.get('new_speedup', '-'):>6} {tt.get('old_est_share', '-'):>7} {tt.get('new_est_share', '-'):>7}"
                  f" {tt.get('default_ms', '-'):>7} {tt.get('default_speedup', '-'):>6} {tt.get('default_est_share', '-'):>7}"
                  f" {tt.get('head_ms', '-'):>7} {tt.get('head_speedup', '-'):>6} {tt.get('head_est_share', '-'):>8}"
                  f"  {tt['new_select']} + {tt['new_attn']}")
    c = res["check"]
    print("check (S=4096): select v2 != v1 entries (max over P, QB):",
          max(v_ for k_, v_ in c.items() if k_.startswith("select_v2_vs_v1")),
          "| v1 vs reference outside margin:", [v_ for k_, v_ in c.items() if k_.startswith("select_v1_vs_ref")],
          "| attn max abs: v1 vs ref %.2g, v2 vs v1 %.2g, v2 npi2 vs v1 %.2g" % (
              c["attn_v1_vs_ref_max_abs"], c["attn_v2_npi1_vs_v1_max_abs"], c["attn_v2_npi2_vs_v1_max_abs"]),
          "| unpack ok:", c["quant_unpack_same_pack"] and c["quant_unpack_matches"])
    print("acceptance (64K, 90%): total <= cuDNN / 3 (x >= 3) and quant + select <= 0.15 x cuDNN (est); "
          "default = the shipped kernel defaults (select v2 as configured, attention v2)")
    print(f"elapsed {time.time() - t0:.0f} s; wrote {out_path}")
    save()


def recorded(a):
    """Real attention patterns: SmolLM2's q, k, v of some layers (benchmarks/record_smollm2_attention.py, with
    each head's calibrated τ) tiled along the sequence to GPU lengths; per length: cuDNN and flash causal SDPA,
    qpass SALE with the recording's options (per-head selection, the calibration's pool and blocks) — total,
    quantize + select, the share of causal blocks skipped, and the output's relative L1 error vs flash."""
    from safetensors import safe_open
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from triton.testing import do_bench

    from qpass.kernels.sale import dispatch as K
    from qpass.kernels.sale import reference as R

    with safe_open(a.recorded, "pt") as f:
        meta = f.metadata()
        tensors = {k_: f.get_tensor(k_) for k_ in f.keys()}
    o = json.loads(meta["options"])
    pool, bm, bn, sink, window = int(meta["pool"]), o["block_m"], o["block_n"], o["sink"], o["window"]
    layers = sorted({k_.split(".")[0] for k_ in tensors})
    res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "recording": meta, "rows": []}
    tm = lambda f: do_bench(f, warmup=5, rep=30)  # noqa: E731
    for layer in layers:
        q0, k0, v0 = (tensors[f"{layer}.{n}"].to("cuda", torch.bfloat16) for n in "qkv")
        tau = tensors[f"{layer}.tau"]
        T, D = q0.shape[2], q0.shape[3]
        scale = D ** -0.5
        for S in a.recorded_seqs:
            rep = -(-S // T)
            q, k, v = (t.repeat(1, 1, rep, 1)[:, :, :S].contiguous() for t in (q0, k0, v0))
            row = {"layer": layer, "seq": S, "heads": [q.shape[1], k.shape[1]], "d": D, "tiled_from": T}
            G = q.shape[1] // k.shape[1]
            for name, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
                for kk, vv, gqa in ((k, v, True), (k.repeat_interleave(G, 1), v.repeat_interleave(G, 1), False)):
                    try:  # the backend may refuse enable_gqa: then on expanded K/V
                        with sdpa_kernel(be):
                            f = lambda: F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=gqa)  # noqa
                            f()
                            row[f"{name}_ms"] = tm(f)
                        row[f"{name}_gqa"] = gqa
                        break
                    except Exception as e:  # noqa: BLE001
                        row[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:120]}"
            dense = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            sel = lambda: K.sale_select_triton(q, k, tau, scale, bm, bn, sink, window, group=False, pool=pool)  # noqa
            idx, cnt, mask = sel()
            _, _, causal, _ = R.block_layout(S, bm, bn, sink, window)
            kept = float(mask.sum()) / (float(causal.sum()) * q.shape[1])
            out = K.sale_attention_triton(q, k, v, tau, scale, bm, bn, sink, window, group=False, pool=pool)
            row.update(skipped=round(1 - kept, 4),
                       rel_l1=float((out.float() - dense.float()).abs().sum() / dense.float().abs().sum()),
                       qpass_ms=tm(lambda: K.sale_attention_triton(q, k, v, tau, scale, bm, bn, sink, window,
                                                                    group=False, pool=pool)),
                       estimate_ms=tm(sel))
            base = row.get("cudnn_ms", row.get("flash_ms"))
            row.update(speedup_vs_cudnn=round(base / row["qpass_ms"], 2), estimate_share=round(row["estimate_ms"] / base, 3))
            res["rows"].append(row)
            print(json.dumps(row), flush=True)
            del q, k, v, dense, out, idx, cnt, mask
            torch.cuda.empty_cache()
    out_path = a.out if a.out.endswith(".json") else os.path.join(a.out, "attention_recorded.json")
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)
    print(f"\n{'layer':<8} {'S':>6} {'cuDNN':>7} {'flash':>7} {'qpass':>7} {'x cuDNN':>7} {'est/cuDNN':>9} {'skipped':>7} {'rel L1':>7}")
    for r in res["rows"]:
        print(f"{r['layer']:<8} {r['seq']:>6} {r.get('cudnn_ms', float('nan')):7.2f} {r.get('flash_ms', float('nan')):7.2f} "
              f"{r['qpass_ms']:7.2f} {r['speedup_vs_cudnn']:7.2f} {r['estimate_share']:9.3f} {r['skipped']:7.3f} {r['rel_l1']:7.4f}")


def op_check():
    """`qpass::sale_attention` as the lowering emits it with the `sale` preset's options (128x64 blocks, per-head
    selection, pool 8), bf16, 32/8 heads, d 128: at 8K, τ below the dense cutoff must reproduce causal SDPA; at
    2K with τ = 0.01 the GPU op must match the same op on the CPU (the reference path, fp32); a one-token decode
    step (mask [1, 1, 1, L]) takes the dense decode path. Exit 1 on a failure."""
    import qpass.kernels  # noqa: F401  (registers the ops)
    import torch.nn.functional as F

    op = torch.ops.qpass.sale_attention
    H, Hkv, D = 32, 8, 128
    fails = []

    def report(name, rel, tol):
        ok = rel == rel and rel < tol
        print(f"{'ok  ' if ok else 'FAIL'} sale_attention {name}: rel err {rel:.2e} (tol {tol:g})", flush=True)
        fails.extend([] if ok else [name])

    def rel(a, b):
        return float((a.float() - b.float()).norm() / b.float().norm())

    torch.manual_seed(0)
    for S in (8192, 2048):
        q, k, v = (torch.randn(1, h, S, D, device="cuda", dtype=torch.bfloat16) for h in (H, Hkv, Hkv))
        k = k + 2 * torch.randn(1, Hkv, 1, D, device="cuda", dtype=torch.bfloat16)  # non-uniform attention
        mask = torch.ones(S, S, dtype=torch.bool, device="cuda").tril()[None, None]
        if S == 8192:
            dense = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            out = op(q, k, v, torch.full((H,), 1e-6), None, 128, 64, 64, 256, 1024, False, 8, mask)
            report("8K, dense τ, vs causal SDPA", rel(out, dense), 2e-2)
            step = torch.ones(1, 1, 1, S, dtype=torch.bool, device="cuda")
            out = op(q[:, :, -1:], k, v, torch.full((H,), 0.01), None, 128, 64, 64, 256, 1024, False, 8, step)
            report("8K decode step vs SDPA", rel(out, dense[:, :, -1:]), 2e-2)
        else:
            tau = torch.full((H,), 0.01)
            out = op(q, k, v, tau, None, 128, 64, 64, 256, 1024, False, 8, mask)
            ref = op(*(t.cpu().float() for t in (q, k, v)), tau, None, 128, 64, 64, 256, 1024, False, 8, mask.cpu())
            report("2K, τ 0.01, GPU vs CPU reference", rel(out.cpu(), ref), 5e-2)
    raise SystemExit(1 if fails else 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqs", type=int, nargs="+", default=[16384, 32768, 65536, 131072])
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95])
    ap.add_argument("--block", type=int, nargs=2, default=[128, 64])
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--select-only", action="store_true", help="time quantize + select only (group and per-head)")
    ap.add_argument("--sweep", action="store_true", help="with --select-only: key blocks / warps / stages sweep")
    ap.add_argument("--quick", action="store_true",
                    help="one-process old (v1) vs new (v2) kernel comparison at 64K (+128K if time is left); "
                         "--out may name the .json file")
    ap.add_argument("--quick-seqs", type=int, nargs="+", default=[65536, 131072])
    ap.add_argument("--quick-sparsity", type=float, nargs="+", default=[0.9, 0.95])
    ap.add_argument("--budget", type=float, default=170.0, help="--quick: seconds after which optional parts are skipped")
    ap.add_argument("--dry-run", action="store_true", help="--quick logic on the CPU (TRITON_INTERPRET=1, tiny)")
    ap.add_argument("--recorded", default=None,
                    help="a benchmarks/record_smollm2_attention.py file: real patterns tiled to --recorded-seqs")
    ap.add_argument("--recorded-seqs", type=int, nargs="+", default=[16384, 32768, 65536])
    ap.add_argument("--op-check", action="store_true",
                    help="the lowered op qpass::sale_attention as the `sale` preset calls it, vs dense SDPA")
    a = ap.parse_args()
    from qpass.kernels.sale import dispatch as K  # noqa: F401  (imports checked before asking for CUDA)
    from qpass.kernels.sale import reference as R  # noqa: F401
    if a.quick and a.dry_run:
        return quick(a)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/attention.py needs a CUDA GPU (arguments parsed: %s)" % vars(a))
    if a.quick:
        return quick(a)
    if a.op_check:
        return op_check()
    if a.recorded:
        return recorded(a)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from qpass.kernels.sale import dispatch as K
    from qpass.kernels.sale import reference as R

    dev = "cuda"
    gpu = torch.cuda.get_device_name()
    H, Hkv, D, dt = 32, 8, 128, torch.bfloat16
    bm, bn = a.block
    sink, window = 64, 256
    scale = D ** -0.5
    res = {"gpu": gpu, "torch": torch.__version__, "shape": dict(B=1, H=H, Hkv=Hkv, D=D, dtype="bf16", causal=True),
           "block": [bm, bn], "sink": sink, "window": window, "rows": [], "check": None}

    # correctness on the GPU: Triton path vs the reference at a small size
    torch.manual_seed(0)
    q = torch.randn(1, 4, 2048, D, device=dev, dtype=dt)
    k = torch.randn(1, 2, 2048, D, device=dev, dtype=dt) + 2
    v = torch.randn(1, 2, 2048, D, device=dev, dtype=dt)
    tau = torch.tensor([0.01, 0.003, 1e-5, 0.05])
    out = K.sale_attention_triton(q, k, v, tau, scale, bm, bn, sink, window)
    idx, cnt, m = K.sale_select_triton(q, k, tau, scale, bm, bn, sink, window)
    sc = R.sale_block_scores_ref(q.cpu().float(), k.cpu().float(), scale, bm, bn, sink, window)
    mref = R.group_union(R.mask_from_scores(sc, tau), 2)  # default: one block map per KV group
    near = R.group_union((sc - torch.log(tau).reshape(1, -1, 1, 1)).abs() < 0.05, 2)
    ref = R.sale_attention_ref(q.cpu().float(), k.cpu().float(), v.cpu().float(), m.cpu().bool(), scale, bm, bn)
    m1 = K.sale_select_triton(q, k, tau, scale, bm, bn, sink, window, group=False)[2]
    near1 = (sc - torch.log(tau).reshape(1, -1, 1, 1)).abs() < 0.05
    res["check"] = {"mask_mismatch_outside_margin": int(((m.cpu().bool() != mref) & ~near).sum()),
                    "per_head_mask_mismatch_outside_margin": int(((m1.cpu().bool() != R.mask_from_scores(sc, tau))
                                                                  & ~near1).sum()),
                    "kept_frac": float(m.float().mean()), "max_abs_err": float((out.cpu().float() - ref).abs().max())}
    print("check", res["check"], flush=True)

    flex = None
    if not a.no_flex:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention
        flex = torch.compile(flex_attention, dynamic=False)

        def causal_mod(b, h, qi, ki):
            return qi >= ki

    for S in a.seqs:
        torch.cuda.empty_cache()
        q = torch.randn(1, H, S, D, device=dev, dtype=dt)
        k = torch.randn(1, Hkv, S, D, device=dev, dtype=dt)
        v = torch.randn(1, Hkv, S, D, device=dev, dtype=dt)
        row = {"seq": S}
        if a.select_only:
            tau = torch.full((H,), 0.01)
            quant = K.sale_quantize_triton(q, k)
            row["qpass_quant_ms"] = bench(lambda: K.sale_quantize_triton(q, k))
            for grp in (True, False):
                row[f"qpass_select_{'group' if grp else 'head'}_ms"] = bench(
                    lambda: K.sale_select_triton(q, k, tau, scale, bm, bn, sink, window, quant=quant, group=grp))
            for pool in (8, 16):
                row[f"qpass_select_group_pool{pool}_ms"] = bench(
                    lambda: K.sale_select_triton(q, k, tau, scale, bm, bn, sink, window, quant=quant, pool=pool))
            print(row, flush=True)
            if S == a.seqs[0] and a.sweep:
                for kb_, w_, st_ in ((1, 4, 2), (1, 8, 2), (2, 4, 2), (2, 8, 2), (4, 8, 2), (1, 8, 3), (2, 8, 1)):
                    tune = dict(kb=kb_, launch=dict(num_warps=w_, num_stages=st_))
                    out = {"kb": kb_, "warps": w_, "stages": st_}
                    for name, kw in (("group", {}), ("head", dict(group=False)), ("pool16", dict(pool=16)),
                                     ("pool8", dict(pool=8))):
                        if name == "group" and (kb_, w_) in ((1, 4), (2, 4)):
                            continue
                        try:
                            out[name] = round(bench(lambda: K.sale_select_triton(
                                q, k, tau, scale, bm, bn, sink, window, quant=quant, **kw, **tune), rep=30), 2)
                        except Exception as e:
                            out[name] = type(e).__name__
                    print("sweep", out, flush=True)
            continue
        flops = 4 * S * S / 2 * D * H  # causal
        for name, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            try:
                with sdpa_kernel(be):
                    f = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # noqa
                    f()
                    row[f"{name}_ms"] = bench(f)
            except Exception as e:  # GQA unsupported by the backend: expanded K/V
                try:
                    ke, ve = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
                    with sdpa_kernel(be):
                        f = lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=True)  # noqa
                        f()
                        row[f"{name}_ms"] = bench(f)
                    row[f"{name}_note"] = "K/V expanded (no enable_gqa)"
                    del ke, ve
                except Exception as e2:
                    row[f"{name}_error"] = f"{type(e2).__name__}: {str(e2)[:200]}"
            if f"{name}_ms" in row:
                row[f"{name}_tflops"] = round(flops / row[f"{name}_ms"] / 1e9, 1)
        # qpass: quantize, estimate + select (τ = 0.01 every head), and the dense-mask compute pass
        tau = torch.full((H,), 0.01)
        row["qpass_quant_ms"] = bench(lambda: K.sale_quantize_triton(q, k))
        quant = K.sale_quantize_triton(q, k)
        row["qpass_select_ms"] = bench(lambda: K.sale_select_triton(q, k, tau, scale, bm, bn, sink, window, quant=quant))
        row["qpass_select_per_head_ms"] = bench(
            lambda: K.sale_select_triton(q, k, tau, scale, bm, bn, sink, window, quant=quant, group=False))
        for pool in (8, 16):
            row[f"qpass_select_pool{pool}_ms"] = bench(
                lambda: K.sale_select_triton(q, k, tau, scale, bm, bn, sink, window, quant=quant, pool=pool))
            row[f"qpass_estimate_pool{pool}_ms"] = row["qpass_quant_ms"] + row[f"qpass_select_pool{pool}_ms"]
        idx, cnt, m = K.sale_select_triton(q, k, tau, scale, bm, bn, sink, window, quant=quant)
        row["qpass_estimate_ms"] = row["qpass_quant_ms"] + row["qpass_select_ms"]
        causal = R.block_layout(S, bm, bn, 0, 0)[2].sum().item() * H
        row["random_input_skipped_pct"] = round(100 * (1 - m.sum().item() / causal), 2)
        del idx, cnt, m, quant
        full, _ = random_mask(S, H, bm, bn, 0, S, 0.0, dev)
        idx, cnt = mask_to_index_gpu(full)
        row["qpass_dense_attn_ms"] = bench(lambda: K.sale_sparse_attention_triton(q, k, v, idx, cnt, scale, bm, bn))
        del idx, cnt, full
        row["sparse"] = []
        for p in a.sparsity:
            mask, actual = random_mask(S, H, bm, bn, sink, window, p, dev)
            idx, cnt = mask_to_index_gpu(mask)
            r = {"target": p, "skipped": round(actual, 4)}
            r["qpass_attn_ms"] = bench(lambda: K.sale_sparse_attention_triton(q, k, v, idx, cnt, scale, bm, bn))
            r["qpass_total_ms"] = r["qpass_attn_ms"] + row["qpass_estimate_ms"]
            r["qpass_total_pool16_ms"] = r["qpass_attn_ms"] + row["qpass_estimate_pool16_ms"]
            if "cudnn_ms" in row:
                r["speedup_vs_cudnn"] = round(row["cudnn_ms"] / r["qpass_total_ms"], 2)
                r["estimate_share_of_cudnn"] = round(row["qpass_estimate_ms"] / row["cudnn_ms"], 3)
                r["speedup_vs_cudnn_pool16"] = round(row["cudnn_ms"] / r["qpass_total_pool16_ms"], 2)
                r["estimate_pool16_share_of_cudnn"] = round(row["qpass_estimate_pool16_ms"] / row["cudnn_ms"], 3)
            r["estimate_share_of_total"] = round(row["qpass_estimate_ms"] / r["qpass_total_ms"], 3)
            if flex is not None:
                try:
                    bmask = BlockMask.from_kv_blocks(cnt, idx, BLOCK_SIZE=(bm, bn), mask_mod=causal_mod,
                                                     seq_lengths=(S, S))
                    fl = lambda: flex(q, k, v, block_mask=bmask, enable_gqa=True)  # noqa
                    fl()
                    r["flex_ms"] = bench(fl)
                except Exception as e:
                    r["flex_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            row["sparse"].append(r)
            del idx, cnt, mask
            print(S, r, flush=True)
        row = {k2: (round(v2, 3) if isinstance(v2, float) else v2) for k2, v2 in row.items()}
        print({k2: v2 for k2, v2 in row.items() if k2 != "sparse"}, flush=True)
        res["rows"].append(row)
        del q, k, v
        tag = gpu.replace("NVIDIA ", "").split()[0].lower()
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, f"attention_{tag}.json"), "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
