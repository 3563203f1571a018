"""synthgen validate and synthgen preview."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from synthgen.cli import main
from synthgen.executors import LocalExecutor
from synthgen.generation import generate
from synthgen.preview import FieldDistribution, Preview, format_preview, preview
from synthgen.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = """\
name: people
seed: 5
count: 12
batch_size: 4
model: {model}
adapter: none
fields:
  color:
    kind: sample
    options: [red, green, blue]
  name:
    kind: choice
    template_inline: "Give me a name for someone who likes {{{{ color }}}}."
    options: [Anna, Bob, Carla, David, Emma, Frank, Grace, Henry]
  age:
    kind: integer
    template_inline: "How old is {{{{ name }}}}? Reply with only the number."
    min: 18
    max: 60
  bio:
    kind: text
    template_inline: "Write about {{{{ name }}}}, {{{{ age }}}}."
    max_tokens: 12
    retries: 1
"""


@pytest.fixture
def recipe_path(tmp_path, tiny_model_dir):
    path = tmp_path / "people.yaml"
    path.write_text(RECIPE.format(model=tiny_model_dir), encoding="utf-8")
    return path


def test_validate_summarises_without_importing_torch(tmp_path):
    code = ("import sys; from synthgen.cli import main; "
            f"code = main(['validate', {str(ROOT / 'recipes/biography.yaml')!r}]); "
            "print('torch imported' if 'torch' in sys.modules else 'no torch', code)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "recipe 'biography' is valid" in out
    assert "fill order: gender -> birth_country -> birth_place -> first_name" in out
    assert out.strip().endswith("no torch 0")


def test_validate_reports_a_bad_recipe_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfields:\n  a:\n    kind: choice\n    template_inline: 'Pick.'\n    options: []\n")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml: fields.a.options" in err[0]


@pytest.mark.parametrize("n", ["0", "-2"])
def test_preview_refuses_no_records(recipe_path, capsys, n):
    assert main(["preview", str(recipe_path), "-n", n]) == 2
    assert "-n" in capsys.readouterr().err


def test_preview_records_are_the_first_records_of_a_run(recipe_path, tiny_engine, tmp_path):
    recipe = load_recipe(recipe_path)
    generate(recipe, tmp_path / "run", executor=LocalExecutor(engine=tiny_engine))
    shards = pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / "run/shards").glob("*.parquet"))])
    run = shards.sort("_index").head(5)
    result = preview(recipe, 5, engine=tiny_engine)
    for name in recipe.order:
        assert [rec[name] for rec in result.records] == run[name].to_list(), name
    assert result.alive == run["_alive"].to_list()
    assert set(result.distributions) == {"name", "age"} and "bio" in result.valid_rates
    dist = result.distributions["name"]
    assert dist.k == 8 and 0 < sum(share for _, share in dist.top) <= 1 + 1e-9 and 0 <= dist.normalized_entropy <= 1


def test_preview_fields_fill_only_what_they_need(recipe_path, tiny_engine):
    result = preview(load_recipe(recipe_path), 3, engine=tiny_engine, fields=["name"])
    assert result.fields == ("name",) and set(result.records[0]) == {"color", "name"}


def test_preview_writes_nothing_without_out(recipe_path, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["preview", str(recipe_path), "-n", "2"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    out = capsys.readouterr().out
    assert "record 0" in out and "record 1" in out and "name: 8 values" in out
    assert main(["preview", str(recipe_path), "-n", "2", "-o", str(tmp_path / "pv")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "pv/preview.jsonl").read_text().splitlines()]
    assert [r["_index"] for r in rows] == [0, 1]
    assert "name" in json.loads((tmp_path / "pv/preview.json").read_text())["distributions"]


def test_a_collapsed_field_is_flagged(recipe_path):
    recipe = load_recipe(recipe_path)
    result = Preview(recipe, [{"name": "Anna"}], [True], ("name",), {
        "name": FieldDistribution("name", 1, 12, [("laptop", 0.55), ("phone", 0.45)], 0.28, 1.8)})
    lines = format_preview(result)
    assert any("warning: name looks collapsed" in line for line in lines)


def test_preview_of_a_field_after_one_it_does_not_read(tmp_path, tiny_model_dir, tiny_engine):
    # "mood" comes before "name" in the recipe but the name's prompt does not read it: a preview of
    # the name alone (as generate's collapse check runs it) fills only the name's ancestors
    text = RECIPE.format(model=tiny_model_dir).replace("fields:\n", "fields:\n  mood:\n    kind: sample\n"
                                                       "    options: [calm, cross]\n", 1)
    path = tmp_path / "moody.yaml"
    path.write_text(text, encoding="utf-8")
    recipe = load_recipe(path)
    assert recipe.order.index("mood") < recipe.order.index("name")
    result = preview(recipe, 3, engine=tiny_engine, fields=["name"])
    assert "mood" not in result.records[0] and result.distributions["name"].k == 8
