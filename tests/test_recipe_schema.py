"""The recipe schema: every field and pass option typed and range-checked (errors name the key path), YAML loaded
safely (alias bombs refused fast), GPTQ damping, and NaN/inf weights or statistics kept in full precision."""
import dataclasses
import time
import typing

import pytest
import torch

import qpass
from qpass import Recipe, RecipeError
from qpass.calibrate import ChannelObserver
from qpass.gptq import GPTQError, gptq_quantize
from qpass.passes import registry
from qpass.recipe import ActivationSpec, CalibrationSpec, WeightSpec, load_yaml

from tiny_models import tiny_model

STATIC = {"granularity": "per_channel"}  # qsm needs static activations


def _pass(name, **options):
    extra = {"activations": STATIC} if name == "qsm" else {}
    if name == "sale":
        extra["weights"] = None
    return {"passes": [{"name": name, **options}], **extra}


BAD = [
    # weights
    ({"weights": {"bits": 5}}, "weights.bits", "2, 3, 4, 8"),
    ({"weights": {"bits": "four"}}, "weights.bits", "expected int"),
    ({"weights": {"bits": True}}, "weights.bits", "expected int"),
    ({"weights": {"group_size": 0}}, "weights.group_size", "positive"),
    ({"weights": {"group_size": -64}}, "weights.group_size", "positive"),
    ({"weights": {"group_size": 1.5}}, "weights.group_size", "int"),
    ({"weights": {"clip_ratio": 0}}, "weights.clip_ratio", "(0, 1]"),
    ({"weights": {"clip_ratio": 1.5}}, "weights.clip_ratio", "(0, 1]"),
    ({"weights": {"clip_ratio": float("nan")}}, "weights.clip_ratio", "finite"),
    ({"weights": {"gptq_damp": 0}}, "weights.gptq_damp", "(0, 1)"),
    ({"weights": {"gptq_damp": -0.01}}, "weights.gptq_damp", "(0, 1)"),
    ({"weights": {"gptq_damp": 1.0}}, "weights.gptq_damp", "(0, 1)"),
    ({"weights": {"gptq_block": 0}}, "weights.gptq_block", "[1, inf)"),
    ({"weights": {"rounding": "magic"}}, "weights.rounding", "'rtn' | 'gptq'"),
    ({"weights": {"symmetric": "yes"}}, "weights.symmetric", "expected bool"),
    ({"weights": [4]}, "weights", "mapping"),
    # activations
    ({"activations": {"bits": 16}}, "activations.bits", "2, 3, 4, 8"),
    ({"activations": {"granularity": "per_tensor"}}, "activations.granularity", "per_token"),
    ({"activations": {"observer": "max", **STATIC}}, "activations.observer", "percentile"),
    ({"activations": {"observer": "minmax"}}, "activations.observer", "per_channel"),
    ({"activations": {"percentile": 0, **STATIC}}, "activations.percentile", "(0, 100]"),
    ({"activations": {"percentile": 101, **STATIC}}, "activations.percentile", "(0, 100]"),
    ({"activations": {"clip_ratio": 0}}, "activations.clip_ratio", "(0, 1]"),
    ({"activations": {"clip_search": "mse", **STATIC}}, "activations.clip_search", "per-token"),
    ({"activations": {"clip_search": "l1"}}, "activations.clip_search", "mse"),
    # calibration
    ({"calibration": {"num_samples": 0}}, "calibration.num_samples", "[1, inf)"),
    ({"calibration": {"seq_len": 1}}, "calibration.seq_len", "[2, inf)"),
    ({"calibration": {"skip_tokens": -1}}, "calibration.skip_tokens", "[0, inf)"),
    ({"calibration": {"seq_len": 8, "skip_tokens": 8}}, "calibration.skip_tokens", "seq_len"),
    ({"calibration": {"sink_hessian_weight": -1}}, "calibration.sink_hessian_weight", "[0, 1]"),
    ({"calibration": {"sink_hessian_weight": 0.5}}, "calibration.sink_hessian_weight", "skip_tokens"),
    ({"calibration": {"num_samples": "32"}}, "calibration.num_samples", "expected int"),
    # top level
    ({"version": 2}, "version", "this qpass reads version 1"),
    ({"version": "1"}, "version", "expected int"),
    ({"name": ""}, "name", "non-empty"),
    ({"name": 3}, "name", "expected str"),
    ({"ignore": [""]}, "ignore[0]", "non-empty"),
    ({"ignore": 3}, "ignore", "list of str"),
    ({"ignore": ["lm_head", None]}, "ignore[1]", "str"),
    ({"passes": "qsm"}, "passes", "list"),
    ({"passes": [{"name": "nope"}]}, "passes[0].name", "available"),
    ({"passes": [{"name": "smoothquant", "options": 3}]}, "passes[0].options", "mapping"),
    ({"colour": "blue"}, "colour", "unknown key"),
    # pass options
    (_pass("smoothquant", alpha=-0.1), "passes[0].alpha", "[0, 1]"),
    (_pass("smoothquant", alpha=1.5), "passes[0].alpha", "[0, 1]"),
    (_pass("smoothquant", alfa=0.5), "passes[0].alfa", "unknown key"),
    (_pass("qsm", split=-1), "passes[0].split", "≥ 0"),
    (_pass("qsm", max_copies=0), "passes[0].max_copies", "[1, inf)"),
    (_pass("qsm", tile=0), "passes[0].tile", "[1, inf)"),
    (_pass("qsm", act_clip_grid=[0.0]), "passes[0].act_clip_grid[0]", "(0, 1]"),
    (_pass("qsm", act_clip_grid=[1.0, 1.5]), "passes[0].act_clip_grid[1]", "(0, 1]"),
    (_pass("qsm", weight_clip_grid=[]), "passes[0].weight_clip_grid", "at least 1"),
    (_pass("qsm", samples=0), "passes[0].samples", "[1, inf)"),
    (_pass("qsm", keep_first=-1), "passes[0].keep_first", "≥ 0"),
    (_pass("qsm", outlier_guard=-1.0), "passes[0].outlier_guard", "≥ 0"),
    (_pass("qsm", sort="random"), "passes[0].sort", "'step' | 'column' | 'none'"),
    (_pass("qsm", granularity="row"), "passes[0].granularity", "'channel' | 'tensor'"),
    ({"passes": ["qsm"]}, "passes[0]", "per_channel"),  # qsm needs static activations
    (_pass("trit_planes", group_size=0), "passes[0].group_size", "[1, inf)"),
    (_pass("trit_planes", max_iter=0), "passes[0].max_iter", "[1, inf)"),
    (_pass("trit_planes", tol=-1.0), "passes[0].tol", "[0, inf)"),
    (_pass("trit_planes", method="fast"), "passes[0].method", "'sorted' | 'paper'"),
    (_pass("sale", block_m=48), "passes[0].block_m", "power of two"),
    (_pass("sale", block_n=8), "passes[0].block_n", "power of two"),
    (_pass("sale", pool=3), "passes[0].pool", "power of two"),
    (_pass("sale", pool=128), "passes[0].pool", "dividing block_m"),
    (_pass("sale", sink=-1), "passes[0].sink", "[0, inf)"),
    (_pass("sale", window=-1), "passes[0].window", "[0, inf)"),
    (_pass("sale", min_seq_len=-1), "passes[0].min_seq_len", "[0, inf)"),
    (_pass("sale", tau_init=0.0), "passes[0].tau_init", "(0, 1]"),
    (_pass("sale", tau_init=2.0), "passes[0].tau_init", "(0, 1]"),
    (_pass("sale", tau_init=1e-5), "passes[0].tau_init", "tau_dense"),
    (_pass("sale", theta=0), "passes[0].theta", "(0, inf)"),
    (_pass("sale", tau_dense=-0.1), "passes[0].tau_dense", "[0, 1)"),
    (_pass("sale", calib_tokens=0), "passes[0].calib_tokens", "[1, inf)"),
    (_pass("sale", calib_novel="dracula"), "passes[0].calib_novel", "'emma'"),
    (_pass("sale", taus={"m": [1.5]}), "passes[0].taus", "[0, 1]"),
    (_pass("sale", taus={"m": ["x"]}), "passes[0].taus.m[0]", "expected float"),
    (_pass("sale", taus=[0.1]), "passes[0].taus", "mapping"),
]


@pytest.mark.parametrize("data, path, allowed", BAD, ids=[f"{p}:{i}" for i, (_, p, _) in enumerate(BAD)])
def test_bad_value_names_the_key_path(data, path, allowed):
    with pytest.raises(RecipeError) as e:
        Recipe.from_dict(data)
    msg = str(e.value)
    assert msg.startswith(path + ":") or msg.startswith(path), msg
    assert allowed in msg, msg


def test_documented_error_messages_are_unchanged():
    cases = [
        ({"weights": {"bits": "four"}}, "weights.bits: expected int, got str 'four'"),
        ({"weights": {"bits": 5}}, "weights.bits: 5 is not supported; allowed: 2, 3, 4, 8"),
        ({"version": 2}, "version: recipe version 2 is not supported; this qpass reads version 1"),
    ]
    for data, message in cases:
        with pytest.raises(RecipeError) as e:
            Recipe.from_dict(data)
        assert str(e.value) == message
    with pytest.raises(RecipeError, match=r"^weights\.group_sze: unknown key; allowed: bits, group_size, symmetric, rounding, clip_ratio"):
        Recipe.from_dict({"weights": {"group_sze": 64}})
    with pytest.raises(RecipeError, match=r"^passes\[0\]\.name: unknown pass 'nope'; available: "):
        Recipe.from_dict({"passes": [{"name": "nope"}]})
    with pytest.raises(RecipeError, match=r"^activations\.observer: per_token activations are dynamic and use no observer; "):
        Recipe.from_dict({"activations": {"granularity": "per_token", "observer": "minmax"}})


def _schema_classes():
    return [WeightSpec, ActivationSpec, CalibrationSpec, Recipe] + [p.options for p in registry.available().values()]


def _numeric(tp) -> bool:
    """int / float / int | None ... (lists and mappings are checked item-wise or in check_fields)."""
    if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType):
        return any(a in (int, float) for a in typing.get_args(tp))
    return tp in (int, float)


@pytest.mark.parametrize("cls", _schema_classes(), ids=lambda c: c.__name__)
def test_every_numeric_field_declares_its_range(cls):
    """One mechanism for all: each int/float field of a recipe section or a pass's options declares its range
    or allowed values (opt(...)), and the defaults satisfy them."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if _numeric(hints[f.name]):
            meta = f.metadata.get("qpass")
            assert meta and (meta["range"] or meta["allowed"] or meta["pow2"]), f"{cls.__name__}.{f.name}"
        if typing.get_origin(hints[f.name]) is list and typing.get_args(hints[f.name])[0] in (int, float):
            assert f.metadata["qpass"]["item_range"], f"{cls.__name__}.{f.name}"
    if cls is not Recipe:
        qpass.recipe.build(cls, {}, "x")  # defaults are valid


def test_every_preset_round_trips_through_the_validator():
    for name, r in qpass.recipes().items():
        assert Recipe.from_dict(r.to_dict()) == r, name
        assert Recipe.from_dict(load_yaml(r.to_yaml())) == r, name


def test_python_built_options_use_the_same_validator():
    from qpass.passes.sale import SaleOptions

    with pytest.raises(RecipeError, match=r"sale\.block_m: must be a power of two"):
        SaleOptions(block_m=48)
    with pytest.raises(RecipeError, match=r"passes\[0\]\.alpha"):
        Recipe(passes=[qpass.recipe.PassSpec("smoothquant", {"alpha": 2})],
               activations=ActivationSpec(granularity="per_channel"))


# -- YAML --------------------------------------------------------------------------------------------------

BOMB = "\n".join(
    ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    + ["ignore: *a9"]
)


def test_billion_laughs_fails_fast(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(BOMB)
    t = time.perf_counter()
    with pytest.raises(RecipeError, match="expands to more than"):
        Recipe.from_file(p)
    assert time.perf_counter() - t < 0.5
    t = time.perf_counter()
    with pytest.raises(RecipeError, match="bomb.yaml"):
        qpass.recipe.resolve(str(p))
    assert time.perf_counter() - t < 0.5


def test_yaml_aliases_within_bounds_work_and_other_hazards_are_refused(tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text("activations: {granularity: per_channel}\n"
                  "passes: [{name: qsm, act_clip_grid: &g [1.0, 0.9], weight_clip_grid: *g}]\n")
    r = Recipe.from_file(ok)
    assert r.passes[0].options.weight_clip_grid == [1.0, 0.9]
    with pytest.raises(RecipeError, match="containing itself"):
        load_yaml("a: &a [1, *a]\n")
    with pytest.raises(RecipeError, match="duplicate key 'weights'"):
        load_yaml("weights: {bits: 4}\nweights: null\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_yaml("weights: {bits: 4\n")
    with pytest.raises(RecipeError, match="python"):  # safe types only
        load_yaml("name: !!python/object/apply:os.system ['true']\n")
    big = tmp_path / "big.yaml"
    big.write_text("name: x\n" + "#" * (qpass.recipe.MAX_RECIPE_BYTES + 1))
    with pytest.raises(RecipeError, match="at most"):
        Recipe.from_file(big)
    bad_json = tmp_path / "dup.json"
    bad_json.write_text('{"name": "a", "name": "b"}')
    with pytest.raises(RecipeError, match="duplicate key 'name'"):
        Recipe.from_file(bad_json)
    # YAML 1.1 reads 1e-5 as a string; recipes read it as the number meant
    assert load_yaml("x: 1e-5\ny: -2E3\n") == {"x": 1e-5, "y": -2000.0}


# -- ignore ------------------------------------------------------------------------------------------------


def test_string_ignore_is_one_pattern(tmp_path):
    assert Recipe.from_dict({"ignore": "lm_head"}).ignore == ["lm_head"]
    assert Recipe(ignore="lm_head").ignore == ["lm_head"]
    p = tmp_path / "r.yaml"
    p.write_text("weights: {bits: 4, group_size: 32}\nignore: lm_head\n")
    r = Recipe.from_file(p)
    assert r.ignore == ["lm_head"]
    from qpass.analysis import GraphAnalysis
    from qpass.plan import select_sites

    class S:  # select_sites reads .name and .routes (a router stays in full precision)
        def __init__(self, name):
            self.name, self.routes = name, False

    selected, skipped = select_sites(GraphAnalysis([S("lm_head"), S("model.layers.0.mlp.down_proj")], [], []), r.ignore)
    assert list(selected) == ["model.layers.0.mlp.down_proj"] and "lm_head" in skipped


# -- GPTQ damping ------------------------------------------------------------------------------------------


def test_gptq_rank_deficient_hessian_raises_damping_and_says_so():
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(8, 32, generator=g), torch.randn(4, 32, generator=g)  # 4 tokens: XᵀX has rank 4 < 32
    info = {}
    q = gptq_quantize(w, x.T @ x, 4, 16, damp=0.0, info=info)
    assert info["damp"] > 0 and "not positive definite" in info["note"]
    assert torch.isfinite(q.dequantize()).all()
    with pytest.raises(GPTQError, match="NaN"):
        gptq_quantize(w, torch.full((32, 32), float("nan")), 4, 16)
    with pytest.raises(GPTQError, match="not positive definite"):
        gptq_quantize(w, 2 * torch.eye(32) - torch.ones(32, 32), 4, 16)  # eigenvalue -30: no damping helps


# -- NaN / inf ---------------------------------------------------------------------------------------------


def test_nan_weight_site_stays_full_precision_with_the_reason():
    model = tiny_model("llama")
    bad = "model.layers.0.self_attn.q_proj"
    with torch.no_grad():
        model.get_submodule(bad).weight[3, 5] = float("nan")
        model.get_submodule("model.layers.1.mlp.up_proj").weight[0, :2] = float("inf")
    with pytest.warns(UserWarning, match="NaN/inf"):
        q = qpass.compile(model, "w4a16", progress=False, copy=True, lower=False)
    rep = qpass.report(q)
    rows = {r.name: r for r in rep.rows}
    assert rows[bad].status == "full precision" and "NaN" in rows[bad].reason, rows[bad]
    assert "(1 NaN, 0 inf)" in rows[bad].reason
    up = rows["model.layers.1.mlp.up_proj"]
    assert up.status == "full precision" and "2 inf" in up.reason
    others = [r for n, r in rows.items() if n not in (bad, up.name, "lm_head")]
    assert others and all(r.status == "quantized" for r in others)
    assert "NaN" in rep.format() and any("NaN/inf" in line for line in rep.log)


def test_nan_calibration_statistics_keep_sites_full_precision():
    obs = ChannelObserver(4)
    obs.update(torch.tensor([[1.0, float("nan"), 2.0, float("inf")]]))
    assert obs.nonfinite == 2 and obs.nan == 1 and "1 NaN, 1 inf" in obs.problem()
    assert "no calibration tokens" in ChannelObserver(4).problem()
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.embed_tokens.weight[7] = float("nan")  # token 7 carries NaN into every layer's inputs
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    ids[:, 3] = 7
    with pytest.warns(UserWarning, match="NaN/inf"):
        q = qpass.compile(model, "w8a8-static", [ids], progress=False, copy=True, lower=False)
    rows = [r for r in qpass.report(q).rows if r.name != "lm_head"]
    assert rows and all(r.status == "full precision" and "NaN" in r.reason and "calibration" in r.reason
                        for r in rows), [(r.name, r.reason) for r in rows]


@pytest.mark.parametrize("weights, reason", [
    ({"bits": 8, "group_size": 64}, "needs 4-bit weights with a group_size"),
    ({"bits": 4, "group_size": None}, "needs 4-bit weights with a group_size"),
    ({"bits": 4, "group_size": 64, "rounding": "gptq"}, "with GPTQ it needs gptq_static_groups"),
])
def test_integer_group_steps_outside_their_format_name_the_key(weights, reason):
    with pytest.raises(RecipeError, match=rf"^weights\.integer_group_steps: {reason}"):
        Recipe.from_dict({"version": 1, "name": "x", "weights": {**weights, "integer_group_steps": True}})
    ok = {"bits": 4, "group_size": 64, "rounding": "gptq", "gptq_static_groups": True, "integer_group_steps": True}
    assert Recipe.from_dict({"version": 1, "name": "x", "weights": ok}).weights.integer_group_steps
