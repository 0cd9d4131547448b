"""Issue 18: the static activation quantizer compiled by inductor (fused into its producer) against the same
lowered model compiled by inductor with the quantizer as its Triton kernel (the decomposition not installed), and
against FX Python: a 2-layer Llama-3-8B-shaped model, prefill and a decode step, logits and greedy tokens.
Run with TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 (inductor's cache key does not include the decomposition table)."""
import sys

import torch

sys.path.insert(0, "benchmarks")
import e2e  # noqa: E402

import qpass  # noqa: E402
import qpass.kernels.define as define  # noqa: E402

install = define.install_inductor_decompositions

torch.manual_seed(0)
for preset in sys.argv[1:] or ("w4a8_qsm", "w4a4_qsm"):
    cfg = e2e.llama3_8b_config(2)
    outs = {}
    for compiler in (None, "kernel", "inductor"):
        define.install_inductor_decompositions = (lambda: None) if compiler == "kernel" else install
        model = e2e.build(cfg, "cuda")
        calib = [torch.randint(0, cfg.vocab_size, (1, 256), generator=torch.Generator().manual_seed(i)).cuda()
                 for i in range(4)]
        q = qpass.compile(model, e2e.qsm_recipe(e2e.QSM_PRESETS[preset]), calib, progress=False,
                          compiler=compiler and "inductor")
        ids = torch.randint(0, cfg.vocab_size, (1, 300), generator=torch.Generator().manual_seed(9)).cuda()
        with torch.no_grad():
            cache = qpass.static_cache(q, 512, 1)
            a = q(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1].float()
            nxt = a.argmax(-1, keepdim=True)
            b = q(input_ids=nxt, past_key_values=cache, use_cache=True).logits[:, -1].float()
        outs[compiler] = (a, b)
        del q, model
        torch.cuda.empty_cache()
    rel = lambda x, y: float((x - y).abs().max() / y.abs().max())
    for new, base in (("inductor", None), ("inductor", "kernel"), ("kernel", None)):
        (a1, b1), (a0, b0) = outs[new], outs[base]
        print(f"{preset}: {new} vs {base or 'FX'}: prefill rel {rel(a1, a0):.2e} argmax {bool(a1.argmax() == a0.argmax())}; "
              f"decode rel {rel(b1, b0):.2e} argmax {bool(b1.argmax() == b0.argmax())}")
