"""How far the default multi-start trit-plane fit is from the exact per-block optimum on SmolLM2 weights: the
optimum by enumerating every contiguous 5-slot partition of a block's sorted |w| (both level orders) with the
2x2 least-squares scales (tests/test_tritplane.py checks this reference against the full 9^G search). 24
blocks (8 rows x 3 groups of 64) of two layers; ratios of squared error, fp16 scale rounding off.

    python benchmarks/tritplane_optimality.py
"""
import torch, time
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qpass.tritplane import decompose, reconstruct
torch.set_num_threads(1)
ORD = [torch.tensor(o, dtype=torch.float64) for o in ([(0,0),(0,1),(1,-1),(1,0),(1,1)], [(0,0),(1,-1),(0,1),(1,0),(1,1)])]
def cuts(G):
    c = torch.combinations(torch.arange(G + 4), 4) - torch.arange(4)
    z = torch.zeros(len(c), 1, dtype=torch.long)
    return torch.cat([z, c, torch.full_like(z, G)], 1)  # [N, 6] boundaries of 5 slots
def global_opt(w, CU):
    a = w.double().abs().sort().values
    P1 = torch.cat([torch.zeros(1, dtype=torch.float64), a.cumsum(0)])
    Q = (a * a).sum()
    n = (CU[:, 1:] - CU[:, :-1]).double()  # [N,5]
    m = P1[CU[:, 1:]] - P1[CU[:, :-1]]
    best = float('inf')
    for C in ORD:
        c1, c2 = C[:, 0], C[:, 1]
        A11 = (n * c1 * c1).sum(1); A12 = (n * c1 * c2).sum(1); A22 = (n * c2 * c2).sum(1)
        b1 = (m * c1).sum(1); b2 = (m * c2).sum(1)
        det = A11 * A22 - A12 * A12
        ok = det > 1e-9
        x1 = (A22 * b1 - A12 * b2) / det; x2 = (A11 * b2 - A12 * b1) / det
        e = Q - (x1 * b1 + x2 * b2)
        e = torch.where(ok, e, Q - torch.where(A11 > 0, b1 * b1 / A11.clamp_min(1e-30), 0.0))
        best = min(best, float(e.min()))
    return best
if __name__ == "__main__":
    from qpass import models
    sd = {n + '.weight': m.weight.data for n, m in models.load('smollm2', dtype=torch.float32)[0].named_modules()
          if isinstance(m, torch.nn.Linear)}
    G = 64; CU = cuts(G)
    for n in ('model.layers.3.self_attn.q_proj.weight', 'model.layers.20.mlp.down_proj.weight'):
        W = sd[n].float()[:8, :G * 3].contiguous()
        tp = decompose(W, G, fp16_scales=False)
        R = reconstruct(tp, torch.float64) - W.double()
        fit = R.view(8, 3, G).pow(2).sum(-1).flatten()
        t = time.time()
        opt = torch.tensor([global_opt(W.view(8, 3, G)[i, j], CU) for i in range(8) for j in range(3)])
        r = fit / opt
        print(n, f"mean ratio {r.mean():.5f} max {r.max():.5f} exact {(r < 1 + 1e-6).double().mean():.2f}  {time.time()-t:.0f}s", flush=True)
