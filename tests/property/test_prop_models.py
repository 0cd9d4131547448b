"""Property tests: random tiny Llama / Qwen2 configs x calibration-free presets. qpass.compile works (or raises a
documented qpass error) and the quantized logits stay close to the full-precision model's: relative error
||q - fp|| / ||fp|| under a per-recipe bound. These are the slow cases (one compile each, ~10 s on a shared core): CI runs 4; QPASS_PROP_SCALE=8 runs 32."""
from __future__ import annotations

import os

import torch
import transformers as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import qpass


from prop_util import n  # noqa: E402


# Relative logit error bounds on random-weight tiny models (random weights quantize worse than trained ones,
# and the logits of a random model are small: the bounds are loose but catch a broken kernel, a transposed
# scale or a wrong group, which give errors of order 1).
# Measured on 12 generated configs (max): w8a8 0.007, w8a16 0.008, w4a8 0.075, w4a4 0.087, ternary 0.034.
BOUND = {"w8a16": 0.03, "w8a8": 0.05, "w4a16": 0.2, "w4a8": 0.25, "w3a16": 0.4, "w4a4": 0.5, "ternary": 0.4}


@st.composite
def configs(draw):
    arch = draw(st.sampled_from(["llama", "qwen2"]))
    head_dim = draw(st.sampled_from([4, 8, 16]))
    heads = draw(st.sampled_from([h for h in (1, 2, 4, 8) if 16 <= h * head_dim <= 64] or [1]))
    hidden = heads * head_dim
    kv = draw(st.sampled_from([k for k in (1, 2, 4, 8) if heads % k == 0]))
    inter = draw(st.integers(8, 96))
    layers = draw(st.integers(1, 2))
    vocab = draw(st.sampled_from([64, 100, 256]))
    cfg = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
               num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=128,
               tie_word_embeddings=draw(st.booleans()))
    return arch, cfg


IGNORE_FORMS = [None, "lm_head", ["lm_head"], "mlp", "down_proj", ["q_proj", "lm_head"], "re:\\.mlp\\.", "re:^lm_head$"]


@settings(max_examples=n(4))
@given(configs(), st.sampled_from(sorted(BOUND)), st.integers(0, 1000), st.sampled_from(IGNORE_FORMS),
       st.sampled_from(["name", "dict", "Recipe"]))
def test_tiny_config_compiles_close_to_fp(case, recipe, seed, ignore, form):
    """...and `ignore` works the same written as one string or as a list, in a dict or a Recipe: exactly the
    linears whose name matches a pattern stay in full precision."""
    from qpass.plan import matches

    arch, cfg = case
    preset = qpass.recipes()[recipe]
    if ignore is not None and form == "name":
        form = "dict"
    if form == "dict":
        spec = preset.to_dict()
        if ignore is not None:
            spec["ignore"] = ignore
    elif form == "Recipe":
        spec = qpass.Recipe(**{**{k: getattr(preset, k) for k in ("name", "weights", "activations", "passes",
                                                                   "calibration")},
                               **({"ignore": ignore} if ignore is not None else {})})
    else:
        spec = recipe
    patterns = preset.ignore if ignore is None else ([ignore] if isinstance(ignore, str) else ignore)
    torch.manual_seed(seed)
    config = (tf.LlamaConfig if arch == "llama" else tf.Qwen2Config)(**cfg)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    ids = torch.randint(0, cfg["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = model(ids).logits.float()
    try:
        q = qpass.compile(model, spec, progress=False, copy=True)
    except (qpass.RecipeError, ValueError) as e:  # a documented refusal, with a message
        assert str(e)
        return
    with torch.no_grad():
        out = q(ids).logits.float()
    assert out.shape == ref.shape and torch.isfinite(out).all()
    rel = ((out - ref).norm() / ref.norm().clamp_min(1e-12)).item()
    if os.environ.get("QPASS_PROP_VERBOSE"):
        print(f"\n{arch} {cfg} {recipe}: rel {rel:.4f}")
    assert rel <= BOUND[recipe], f"{arch} {cfg} {recipe}: relative logit error {rel:.4f} > {BOUND[recipe]}"
    rep = qpass.report(q)
    assert len(rep.rows) >= 7 * cfg["num_hidden_layers"]
    if recipe != "ternary":  # trit_planes is a pass: it decides its own sites
        for row in rep.rows:
            ignored = any(matches(row.name, p) for p in patterns)
            assert (row.status != "quantized") == ignored, (row.name, row.status, row.reason, patterns)
