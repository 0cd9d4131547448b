"""Data-free trit-plane fit variants on a model: every q/k/v/o/gate/up/down weight replaced in place by its
reconstruction, perplexity on qpass's default text (Pride and Prejudice, 8,192 tokens, seq 512). Variants:
rule128 (the old pass default: G = 128 where it divides in_features, else 64), g64, g32, grid48 (48 starts),
normblock / normrow (reconstruction rescaled to the original norm per block / per row).

    python benchmarks/tritplane_variants.py --model smollm2 rule128 g64
"""
import sys, time, argparse, torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import itertools
from qpass import models, data
from qpass.evaluate import perplexity
from qpass.tritplane import decompose, reconstruct
LIN = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ap = argparse.ArgumentParser(); ap.add_argument('--model', default='smollm2'); ap.add_argument('variants', nargs='+')
ap.add_argument('--threads', type=int, default=2); ap.add_argument('--no-fp', action='store_true'); a = ap.parse_args()
torch.set_num_threads(a.threads)
model, tok = models.load(a.model, dtype=torch.float32); model.eval()
ids = data.tokens(tok, data.austen_text('prideprejudice'), 8192)
lins = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.split('.')[-1] in LIN]
orig = {n: m.weight.data.clone() for n, m in lins}
GRID48 = tuple(itertools.product((0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.1, 2.4, 2.8, 3.2, 3.8, 4.5), (0.1, 0.3, 0.5, 0.7))) + tuple(
    itertools.product((1.0, 1.4, 1.8, 2.4), (0.2, 0.4, 0.6, 0.8, 0.9, 1.0)))
def G_rule(C): return 128 if C % 128 == 0 else 64
def blockscale(W, R, G):
    O, C = W.shape; ng = -(-C // G); p = ng * G - C
    w = torch.nn.functional.pad(W.double(), (0, p)).view(O, ng, G); r = torch.nn.functional.pad(R.double(), (0, p)).view(O, ng, G)
    s = (w.norm(dim=-1, keepdim=True) / r.norm(dim=-1, keepdim=True).clamp_min(1e-30))
    return (r * s).view(O, ng * G)[:, :C].float()
def V(name, W):
    G = G_rule(W.shape[1])
    if name == 'rule128': return reconstruct(decompose(W, G))
    if name == 'grid48': return reconstruct(decompose(W, 64, starts=GRID48))
    if name == 'g64': return reconstruct(decompose(W, 64))
    if name == 'g32': return reconstruct(decompose(W, 32))
    if name == 'normblock': return blockscale(W, reconstruct(decompose(W, 64)), 64)
    if name == 'normrow': R = reconstruct(decompose(W, 64)); return R * (W.norm(dim=1, keepdim=True) / R.norm(dim=1, keepdim=True))
    raise SystemExit(name)
if not a.no_fp: print('fp', perplexity(model, ids, 512, progress=False), flush=True)
for v in a.variants:
    t = time.perf_counter(); num = den = 0.0
    for n, m in lins:
        R = V(v, orig[n]); m.weight.data = R.to(orig[n].dtype)
        num += float(((R.double() - orig[n].double()) ** 2).sum()); den += float((orig[n].double() ** 2).sum())
    ft = time.perf_counter() - t
    print(v, f'err {(num/den)**.5:.4f} fit {ft:.1f}s ppl {perplexity(model, ids, 512, progress=False):.3f} total {time.perf_counter()-t:.0f}s', flush=True)
    for n, m in lins: m.weight.data = orig[n].clone()
