"""Issue 18: the static activation quantizer compiled by inductor (fused into its producer) against the same
lowered model run as FX Python (the op's Triton kernel): a 2-layer Llama-3-8B-shaped model, prefill and a decode
step, logits and greedy tokens. Also counts the Triton kernels of one decode step by name."""
import sys

import torch

sys.path.insert(0, "benchmarks")
import e2e  # noqa: E402

import qpass  # noqa: E402

torch.manual_seed(0)
for preset in ("w4a8_qsm", "w4a4_qsm"):
    cfg = e2e.llama3_8b_config(2)
    outs = {}
    for compiler in (None, "inductor"):
        model = e2e.build(cfg, "cuda")
        calib = [torch.randint(0, cfg.vocab_size, (1, 256), generator=torch.Generator().manual_seed(i)).cuda()
                 for i in range(4)]
        q = qpass.compile(model, e2e.qsm_recipe(e2e.QSM_PRESETS[preset]), calib, progress=False, compiler=compiler)
        ids = torch.randint(0, cfg.vocab_size, (1, 300), generator=torch.Generator().manual_seed(9)).cuda()
        with torch.no_grad():
            cache = qpass.static_cache(q, 512, 1)
            a = q(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1].float()
            nxt = a.argmax(-1, keepdim=True)
            b = q(input_ids=nxt, past_key_values=cache, use_cache=True).logits[:, -1].float()
        outs[compiler] = (a, b)
        del q, model
        torch.cuda.empty_cache()
    (a0, b0), (a1, b1) = outs[None], outs["inductor"]
    rel = lambda x, y: float((x - y).abs().max() / y.abs().max())
    print(f"{preset}: prefill rel {rel(a1, a0):.2e} argmax {bool(a1.argmax() == a0.argmax())}; "
          f"decode rel {rel(b1, b0):.2e} argmax {bool(b1.argmax() == b0.argmax())}")
