import json

import pytest

import qpass
from qpass import Recipe, RecipeError


def test_presets_exist_and_describe_the_contract():
    r = qpass.recipes()
    assert {"w8a8", "w4a16", "w4a8", "w4a4"} <= set(r)
    assert r["w8a8"].weights.bits == 8 and r["w8a8"].weights.group_size is None
    assert r["w8a8"].activations.bits == 8 and r["w8a8"].activations.granularity == "per_token"
    assert r["w4a16"].weights.bits == 4 and r["w4a16"].weights.group_size == 64
    assert not r["w4a16"].weights.symmetric and r["w4a16"].weights.rounding == "rtn"  # data-free default
    assert r["w4a16"].activations is None
    assert r["w4a4"].activations.bits == 4 and r["w4a4"].activations.granularity == "per_token"
    assert all(p.ignore == ["lm_head"] for p in r.values())


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_round_trip(tmp_path, fmt):
    r = qpass.recipes()["w4a8"]
    path = tmp_path / f"r.{fmt}"
    r.save(path)
    back = Recipe.from_file(path)
    assert back == r
    assert qpass.recipe.resolve(str(path)) == r


@pytest.mark.parametrize(
    "data, path_in_message, allowed",
    [
        ({"weights": {"bits": 4, "group_sze": 64}}, "weights.group_sze", "group_size"),
        ({"weights": {"bits": "four"}}, "weights.bits", "int"),
        ({"weights": {"bits": 5}}, "weights.bits", "2, 3, 4, 8"),
        ({"weights": {"group_size": 0}}, "weights.group_size", "positive"),
        ({"activations": {"granularity": "per_tensor"}}, "activations.granularity", "per_token"),
        ({"activations": {"granularity": "per_token", "observer": "minmax"}}, "activations.observer", "per_channel"),
        ({"weights": {"rounding": "magic"}}, "weights.rounding", "rtn"),
        ({"colour": "blue"}, "colour", "weights"),
        ({"version": 99}, "version", "version 1"),
        ({"passes": [{"name": "nope"}]}, "passes[0].name", "available"),
        ({"ignore": [3]}, "ignore[0]", "str"),
        ({"weights": None, "activations": None}, "nothing to do", "weights"),
        ({"weights": {"clip_ratio": 1.5}}, "weights.clip_ratio", "(0, 1]"),
    ],
)
def test_bad_recipes_name_the_key(data, path_in_message, allowed):
    with pytest.raises(RecipeError) as e:
        Recipe.from_dict(data)
    assert path_in_message in str(e.value) and allowed in str(e.value)


def test_recipe_built_in_python_is_validated_too():
    with pytest.raises(RecipeError, match="weights.bits"):
        Recipe(weights=qpass.WeightSpec(bits=7))


def test_resolve_errors():
    with pytest.raises(RecipeError, match="neither a preset"):
        qpass.recipe.resolve("no-such-recipe")
    with pytest.raises(RecipeError, match="expected a Recipe"):
        qpass.recipe.resolve(42)


def test_bad_file_top_level(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps([1, 2]))
    with pytest.raises(RecipeError, match="mapping"):
        Recipe.from_file(p)
