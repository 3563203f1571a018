"""The examples and worked values in README.md and docs/ are true of the code."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from synthgen import diversity as dv
from synthgen.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_recipe_loads(tmp_path):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    recipe = re.search(r"## A first recipe\n\n```yaml\n(.*?)```", text, re.S).group(1)
    (tmp_path / "pets.yaml").write_text(recipe, encoding="utf-8")
    assert load_recipe(tmp_path / "pets.yaml").order == ("species", "age", "name")


def _worked_values() -> list[list[str]]:
    text = (ROOT / "docs" / "diversity.md").read_text(encoding="utf-8")
    table = text[text.index("| K | N | E[unique]"):].split("\n\n")[0].splitlines()[2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table]


@pytest.mark.parametrize("row", _worked_values(), ids=lambda row: f"K={row[0]},N={row[1]}")
def test_the_ideal_sampler_table_matches_synthgen_diversity(row):
    k, n = int(row[0]), int(row[1])
    h = dv.expected_entropy_bits(n, [1.0] * k)
    expected = [f"{dv.expected_unique_uniform(k, n):.1f}", f"{math.log2(k):.3f}", f"{h:.3f}",
                f"{h / math.log2(k):.3f}", f"{dv.ideal_kl(k, n):.4f}"]
    assert row[2:] == expected


def test_the_recipe_reference_example_loads(tmp_path):
    from synthgen.recipe import load_recipe

    text = (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    start = text.index("```yaml\nname: biography") + len("```yaml\n")
    example = ROOT / "recipes" / f".doc-example-{tmp_path.name}.yaml"  # beside the real data and templates
    example.write_text(text[start:text.index("```", start)], encoding="utf-8")
    try:
        recipe = load_recipe(example)
    finally:
        example.unlink()
    assert recipe.fields["first_name"].option_parents == ("gender", "birth_country")
    assert recipe.fields["biography"].checks is not None
