"""Issue 18: qpass.compile(w4a8-qsm, compiler="inductor") on one Llama-3-8B-shaped layer (vocab 512): does it build
and run on this device? argv: preset, "int" | "noint" (integer group steps on / off)."""
import sys, time, dataclasses
import torch
sys.path.insert(0, "benchmarks")
import e2e, qpass  # noqa: E402

preset, steps = sys.argv[1], sys.argv[2] == "int"
cfg = e2e.llama3_8b_config(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
cfg.vocab_size = 512
if len(sys.argv) > 5: cfg.hidden_size, cfg.intermediate_size = int(sys.argv[4]), int(sys.argv[5])
dev = "cuda" if torch.cuda.is_available() else "cpu"
base = e2e.build(cfg, dev)
g = torch.Generator().manual_seed(2)
calib = [torch.randint(0, cfg.vocab_size, (1, 256), generator=g).to(dev) for _ in range(4)]
r = e2e.qsm_recipe(preset)
r = dataclasses.replace(r, weights=dataclasses.replace(r.weights, integer_group_steps=steps))
t = time.time()
try:
    m = qpass.compile(base, r, calib, progress=False, copy=True, compiler="inductor")
    print(preset, steps, "compiled", round(time.time() - t, 1), qpass.report(m).summary()["lowered"], flush=True)
    with torch.no_grad():
        for n in (48, 40, 1):
            print(n, m(torch.randint(0, 512, (1, n), device=dev)).logits.shape, flush=True)
except Exception as e:  # noqa: BLE001
    import traceback
    traceback.print_exc()
    print(preset, steps, "FAILED", type(e).__name__, str(e)[:300])
