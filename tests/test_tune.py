"""`synthgen generate --tune`: the recipe adapter, its cache, and the collapse check before generating."""

from __future__ import annotations

import json
import logging
import textwrap

import pytest

from synthgen.cli import main
from synthgen.preview import COLLAPSE_KL, FieldDistribution
from synthgen.recipe import load_recipe
from synthgen.tune import cache_root, fingerprint, tunable_fields, tune_config, tune_recipe

RECIPE = """\
name: tiny tune
model: {model}
adapter: none
seed: 1
count: 6
batch_size: 3
fields:
  color:
    kind: choice
    template_inline: "Pick a colour. Reply with only the colour."
    options: [red, green, blue]
  size:
    kind: integer
    template_inline: "Pick a size for a {{{{ color }}}} box. Reply with only the number."
    min: 1
    max: 4
  shape:
    kind: sample
    options: [round, square]
"""


@pytest.fixture
def recipe_file(tmp_path, tiny_model_dir):
    path = tmp_path / "tiny.yaml"
    path.write_text(RECIPE.format(model=tiny_model_dir), encoding="utf-8")
    return path


def test_tune_trains_once_then_reuses_the_cached_adapter(recipe_file, monkeypatch):
    recipe = load_recipe(recipe_file)
    first = tune_recipe(recipe)
    assert not first.cached and first.adapter.is_relative_to(cache_root())
    assert (first.adapter / "adapter_model.safetensors").is_file()
    info = first.info
    assert info["fields"] == ["color", "size"] and info["adapter"] == str(first.adapter)
    assert set(info["audit"]["fields"]) == {"color", "size"}
    assert all(f["kl_to_target"] >= 0 and f["prompts"] >= 1 for f in info["audit"]["fields"].values())

    import synthgen.training.loop as loop

    monkeypatch.setattr(loop, "train", lambda *a, **k: pytest.fail("a cache hit must not train"))
    second = tune_recipe(recipe)
    assert second.cached and second.adapter == first.adapter and second.info == info
    assert "cached recipe adapter" in second.message and "\n" not in second.message


def test_a_damaged_cached_adapter_is_tuned_again(recipe_file, caplog):
    recipe = load_recipe(recipe_file)
    first = tune_recipe(recipe)
    weights = first.adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING, logger="synthgen.tune"):
        again = tune_recipe(recipe)
    assert not again.cached and again.adapter == first.adapter
    assert "damaged" in caplog.text and "sha256" in caplog.text
    assert again.info["adapter_sha256"] == first.info["adapter_sha256"]  # same seed, same adapter
    (again.adapter / "tune.json").write_text("{not json", encoding="utf-8")
    assert not tune_recipe(recipe).cached


def test_the_fingerprint_follows_the_prompts_options_and_weights(recipe_file, tmp_path, tiny_model_dir):
    from synthgen.training.config import config_tasks

    def key(text: str) -> str:
        path = tmp_path / "variant.yaml"
        path.write_text(text, encoding="utf-8")
        recipe = load_recipe(path)
        config = tune_config(recipe, tunable_fields(recipe)[0])
        return fingerprint(config, config_tasks(config, recipe), "tiny")

    base = RECIPE.format(model=tiny_model_dir)
    same = key(base)
    assert key(base) == same
    assert key(base.replace("[red, green, blue]", "[red, green, teal]")) != same
    assert key(base.replace("[red, green, blue]", "[red, green, blue]\n    weights: [2, 1, 1]")) != same
    assert key(base.replace("Pick a colour.", "Choose a colour.")) != same
    assert key(base.replace("max: 4", "max: 5")) != same
    assert key(base.replace("options: [round, square]", "options: [round, oval]")) == same  # not a tuned field


def test_nothing_to_tune_is_one_line_and_the_run_goes_on(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "plain.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: plain
        model: {tiny_model_dir}
        count: 4
        fields:
          shape:
            kind: sample
            options: [round, square]
          color:
            kind: choice
            template_inline: "Pick a colour for a {{{{ shape }}}} box."
            options: [red, green]
            use_adapter: false
        """), encoding="utf-8")
    assert main(["generate", str(path), "--tune", "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("tune:")]
    assert len(lines) == 1 and "nothing to tune" in lines[0] and "use_adapter: false" in lines[0]
    assert "tune" not in json.loads((tmp_path / "out" / "run.json").read_text())
    assert not cache_root().exists()


def test_cli_generate_tune_records_the_adapter_and_its_audit(recipe_file, tmp_path, capsys):
    assert main(["generate", str(recipe_file), "--tune", "-o", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "tune: recipe adapter for 2 fields tuned" in out
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert run["tune"] == report["tune"] and run["adapter"] == run["tune"]["adapter"]
    assert run["adapter_sha256"] == run["tune"]["adapter_sha256"]
    assert "recipe adapter" in (tmp_path / "a" / "report.md").read_text()
    # the recipe key does the same; the second run finds the adapter in the cache: one line
    recipe_file.write_text(recipe_file.read_text() + "tune: true\n", encoding="utf-8")
    assert main(["generate", str(recipe_file), "-o", str(tmp_path / "b")]) == 0
    tune_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("tune:")]
    assert len(tune_lines) == 1 and "cached recipe adapter" in tune_lines[0]
    assert json.loads((tmp_path / "b" / "run.json").read_text())["tune"] == run["tune"]
    # --no-tune overrides the key
    assert main(["generate", str(recipe_file), "--no-tune", "-o", str(tmp_path / "c")]) == 0
    assert "tune:" not in capsys.readouterr().out
    assert "tune" not in json.loads((tmp_path / "c" / "run.json").read_text())
    # a resumed run with --tune checks the same adapter
    assert main(["generate", str(recipe_file), "--resume", "-o", str(tmp_path / "b")]) == 0


def test_tune_needs_the_transformers_engine(recipe_file, tmp_path, capsys):
    code = main(["generate", str(recipe_file), "--tune", "--engine", "vllm", "-o", str(tmp_path / "v")])
    err = capsys.readouterr().err
    assert code == 1 and "--tune" in err and "engine" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "v").exists()


def test_generate_warns_about_fields_far_from_their_weights(tmp_path, tiny_model_dir, caplog):
    # the tiny model spreads its mass over the options; weights that put almost all of it on
    # one option are far from that, beyond COLLAPSE_KL: the warning names the field
    path = tmp_path / "skewed.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: skewed
        model: {tiny_model_dir}
        adapter: none
        count: 4
        fields:
          color:
            kind: choice
            template_inline: "Pick a colour."
            options: [red, green, blue, teal]
            weights: [1000, 1, 1, 1]
          size:
            kind: integer
            template_inline: "Pick a size."
            min: 1
            max: 3
        """), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="synthgen"):
        assert main(["generate", str(path), "-o", str(tmp_path / "out")]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: color ") and "--tune" in warnings[0]


def test_tune_into_an_occupied_folder_fails_before_tuning(recipe_file, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    code = main(["generate", str(recipe_file), "--tune", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "not a synthgen run directory" in err and len(err.strip().splitlines()) == 1
    assert not cache_root().exists() and (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(("entropy", "target", "kl", "collapsed"), [
    (0.28, 1.0, 0.2, True),  # entropy far below a uniform target's
    (0.55, 0.7, 0.1, False),  # a weighted target's own entropy is low: not collapsed
    (0.95, 1.0, COLLAPSE_KL + 0.1, True),  # spread out, but far from the weights
    (0.95, 1.0, 0.05, False),
])
def test_one_definition_of_collapsed(entropy, target, kl, collapsed):
    dist = FieldDistribution("f", 4, 12, [("a", 0.5)], entropy, kl, target_normalized_entropy=target)
    assert dist.collapsed is collapsed
    if collapsed:
        assert dist.warning().startswith("warning: f ") and f"{kl:.2f}" in dist.warning()


def test_the_shipped_biography_config_is_what_tune_trains_with():
    # `synthgen train recipes/diffuse/smollm2-135m-biography.yaml` and
    # `synthgen generate recipes/biography.yaml --adapter default --tune` train the same way
    from pathlib import Path

    from synthgen.training.config import TrainConfig, config_keys, load_config

    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "recipes/diffuse/smollm2-135m-biography.yaml")
    recipe = load_recipe(root / "recipes/biography.yaml").with_overrides(adapter="default")
    tuned = tune_config(recipe, tunable_fields(recipe)[0])
    assert config.init_adapter == "default" and Path(config.recipe) == recipe.path.resolve()
    for key in config_keys(TrainConfig):
        if key not in ("recipe", "init_adapter"):
            assert getattr(config, key) == getattr(tuned, key), key


def test_tune_warns_about_fields_sampled_freely_with_the_adapter(recipe_file, caplog):
    text = recipe_file.read_text() + ("  serial:\n    kind: integer\n    template_inline: \"Pick a serial number.\"\n"
                                      "    min: 0\n    max: 99999\n")
    recipe_file.write_text(text, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="synthgen.tune"):
        result = tune_recipe(load_recipe(recipe_file))
    assert result.info["fields"] == ["color", "size"]
    assert "serial" in caplog.text and "use_adapter: false" in caplog.text
