"""Open fields (kind: open): loading, reply checks, generation on the tiny model, validity and novelty."""

from __future__ import annotations

import json
import logging
import textwrap

import polars as pl
import pytest

from synthgen.cli import main
from synthgen.errors import ConfigError
from synthgen.executors import LocalExecutor
from synthgen.generation import field_infos, generate
from synthgen.novelty import open_metrics
from synthgen.open_fields import normalise_reply
from synthgen.recipe import load_recipe
from synthgen.report import build_report

HEAD = """\
name: open
seed: 3
count: 24
batch_size: 8
fields:
  gender: {kind: choice, template_inline: "Pick a gender.", options: [female, male]}
"""
NAME = """\
  name:
    kind: open
    template_inline: "Choose a first name for a {{ gender }} person. Reply with only the name."
"""


def write(tmp_path, field_keys: str, files: dict[str, str] | None = None):
    for rel, text in (files or {}).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    path = tmp_path / "r.yaml"
    path.write_text(HEAD + NAME + textwrap.indent(textwrap.dedent(field_keys), "    "), encoding="utf-8")
    return path


REFS = {"ref/female.txt": "Anna\nMaria\nEve\n", "ref/male.txt": "Tom\nBob\n", "seeds/female.txt": "Anna\n",
        "seeds/male.txt": "Tom\nBob\n"}


def test_an_open_field_loads_with_conditional_seeds_and_reference(tmp_path):
    recipe = load_recipe(write(tmp_path, """\
        seed_values_file: "seeds/{{ gender }}.txt"
        reference_file: "ref/{{ gender }}.txt"
        reject: [Elara]
        """, REFS))
    spec = recipe.fields["name"]
    assert recipe.order == ("gender", "name") and spec.depends_on == {"gender"}
    assert spec.use_adapter and spec.closed_values is None and spec.stop == ("\n",)
    assert spec.open.seeds.sets == {("female",): ("Anna",), ("male",): ("Tom", "Bob")}
    assert spec.open.reference.for_record({"gender": "female"}) == {"Anna", "Maria", "Eve"}
    assert tmp_path / "ref" / "male.txt" in recipe.source_files


@pytest.mark.parametrize("reply, value", [
    ("Anna", "Anna"), ('  "Maria."  ', "Maria"), ("**Bob**\nand more", "Bob"), ("elara", None),
    ("Sure, here is a good name", None), ("", None), ("anna", None),
])
def test_replies_are_normalised_then_checked(tmp_path, reply, value):
    spec = load_recipe(write(tmp_path, """\
        seed_values: [Anna]
        pattern: "[A-Z][a-z]+"
        reject: [Elara]
        max_words: 3
        """)).fields["name"]
    assert spec.parse_value(reply) == value


def test_normalise_reply_keeps_an_abbreviation_inside():
    assert normalise_reply("St. Louis.") == "St. Louis"
    assert normalise_reply("\n\n 'New   York' \n") == "New York"
    assert normalise_reply("'s-Hertogenbosch") == "'s-Hertogenbosch" and normalise_reply('**"Bob."**') == "Bob"


@pytest.mark.parametrize("keys, files, where, what", [
    ('seed_values_file: "seeds/{{ gender }}.txt"\n', {"seeds/female.txt": "Anna\n", "seeds/male.txt": "\n"},
     "fields.name.seed_values_file", "holds no values"),
    ("reference_file: ref/missing.txt\n", {}, "fields.name.reference_file", "file not found"),
    ('seed_values: [anna, bob]\npattern: "[A-Z][a-z]+"\n', {}, "fields.name.seed_values",
     "none of the 2 seed values passes"),
    ("seed_values: []\n", {}, "fields.name.seed_values", "non-empty list"),
    ("seed_values: [Anna]\nseed_values_file: s.txt\n", {}, "fields.name.seed_values_file", "not both"),
    ("options: [Anna]\n", {}, "fields.name.options", "unknown key"),
    ("max_words: 0\n", {}, "fields.name.max_words", ">= 1"),
    ('reject_file: "r/{{ gender }}.txt"\n', {}, "fields.name.reject_file", "cannot be a template"),
])
def test_bad_open_fields_are_one_line_errors(tmp_path, keys, files, where, what):
    with pytest.raises(ConfigError) as err:
        load_recipe(write(tmp_path, keys, files))
    message = str(err.value)
    assert "\n" not in message and where in message and what in message and "r.yaml" in message


def test_some_seeds_failing_the_checks_is_a_warning_with_the_count(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        load_recipe(write(tmp_path, 'seed_values: [Anna, bob, Eve]\npattern: "[A-Z][a-z]+"\n'))
    assert "1 of 3 seed values" in caplog.text


def test_an_open_field_cannot_select_an_options_file(tmp_path):
    path = write(tmp_path, "seed_values: [Anna]\n", {"x/Anna.txt": "a\n"})
    path.write_text(path.read_text() + '  other: {kind: sample, options_file: "x/{{ name }}.txt"}\n')
    with pytest.raises(ConfigError, match="'name' is an open field"):
        load_recipe(path)


def test_open_metrics_count_valid_by_reference_and_novel_outside_the_records_seeds(tmp_path):
    spec = load_recipe(write(tmp_path, """\
        seed_values_file: "seeds/{{ gender }}.txt"
        reference_file: "ref/{{ gender }}.txt"
        """, {**REFS, "ref/female.txt": "Anna\nMaria\nEve\nBob\n"})).fields["name"]
    seeds, reference = spec.open.seeds, spec.open.reference
    values = ["Anna", "Maria", "Maria", "Tom", "Anna", "Zed", None]
    rows = [{"gender": g} for g in ("female", "female", "female", "male", "male", "male", "male")]
    m = open_metrics(values, seeds, reference, rows)
    # Anna for a male record and Zed are outside their record's reference: 4 of 6 valid
    assert (m["n"], m["valid"], m["valid_rate"]) == (6, 4, 4 / 6)
    assert (m["unique_valid"], m["novel_valid"], m["seeds_reached"], m["seed_values"]) == (3, 1, 2, 3)
    assert m["novel_share"] == 1 / 3 and m["novel_value_share"] == 2 / 4
    # a male seed is novel for a female record: it was not among that prompt's examples
    bob = open_metrics(["Bob", "Bob"], seeds, reference, [{"gender": "female"}, {"gender": "male"}])
    assert (bob["novel_valid"], bob["seeds_reached"], bob["novel_value_share"]) == (1, 1, 0.5)
    plain = open_metrics(values, None, None, checks_valid_rate=0.5)
    assert plain["validity"] == "checks" and plain["valid_rate"] == 0.5 and plain["unique_valid"] == 4
    assert plain["novel_valid"] is None
    with pytest.raises(ValueError, match="one row of parent values"):
        open_metrics(values, seeds)


def test_report_has_an_open_entry_and_a_markdown_line(tmp_path):
    recipe = load_recipe(write(tmp_path, """\
        seed_values_file: "seeds/{{ gender }}.txt"
        reference_file: "ref/{{ gender }}.txt"
        """, REFS))
    df = pl.DataFrame({"gender": ["female", "male", "female"], "name": ["Eve", "Bob", "Eve"]})
    report = build_report(df, field_infos(recipe), recipe="open", n_requested=3, n_generated=3, removed={})
    entry = report["fields"]["name"]["open"]
    assert entry["validity"] == "reference" and entry["novel_valid"] == 1 and entry["seeds_reached"] == 1
    assert report["fields"]["name"]["coherence"]["parents"] == ["gender"]
    from synthgen.report_files import _markdown

    assert "- name: valid rate 1.000 (by reference), 2 unique valid, 1 novel" in _markdown(report, {})


def test_generate_fills_an_open_field_freely_and_reports_it(tmp_path, tiny_engine):
    recipe = load_recipe(write(tmp_path, "seed_values: [Anna, Tom]\nmax_words: 3\nretries: 2\n"))
    out = tmp_path / "out"
    generate(recipe, out, executor=LocalExecutor(engine=tiny_engine))
    df = pl.read_parquet(out / "records.parquet")
    report = json.loads((out / "report.json").read_text())
    field = report["fields"]["name"]
    assert len(df) and all(1 <= len(v.split()) <= 3 and v == normalise_reply(v) for v in df["name"])
    assert field["kind"] == "open" and field["open"]["validity"] == "checks"
    assert field["open"]["unique_valid"] == df["name"].n_unique()
    assert 0 < field["valid_rate"] <= 1 and field["open"]["valid_rate"] == field["valid_rate"]
    again = tmp_path / "again"
    generate(recipe, again, executor=LocalExecutor(engine=tiny_engine))
    assert pl.read_parquet(again / "records.parquet").equals(df)


def test_validate_cli_shows_an_open_field(tmp_path, capsys):
    path = write(tmp_path, 'seed_values_file: "seeds/{{ gender }}.txt"\n', REFS)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "open" in out and "3 seed values" in out


def test_recipe_tasks_train_an_open_field_on_its_records_seeds(tmp_path):
    from synthgen.training.recipe_tasks import tasks_from_recipe

    path = write(tmp_path, 'seed_values_file: "seeds/{{ gender }}.txt"\npattern: "[A-Z][a-z]+"\n',
                 {**REFS, "seeds/male.txt": "Tom\nbob\nBob\n"})
    built = tasks_from_recipe(load_recipe(path), prompts_per_field=4, seed=0)
    names = [t for t in built.tasks if t.family == "name"]
    assert built.open_families == ["name"] and "gender" in {t.family for t in built.tasks}
    by_prompt = {t.prompt: t.targets for t in names}
    assert by_prompt == {  # the record's own seeds that pass the checks ('bob' does not), uniform
        "Choose a first name for a female person. Reply with only the name.": ("Anna",),
        "Choose a first name for a male person. Reply with only the name.": ("Tom", "Bob"),
    }
    assert all(t.is_uniform for t in names)


def test_an_open_upstream_field_is_drawn_from_its_seeds(tmp_path):
    from synthgen.training.recipe_tasks import tasks_from_recipe

    path = write(tmp_path, "seed_values: [Anna, Tom]\n")
    path.write_text(path.read_text() + textwrap.indent(textwrap.dedent("""\
          nick:
            kind: open
            template_inline: "A nickname for {{ name }}."
            seed_values: [Bee]
          free:
            kind: open
            template_inline: "Anything."
          after:
            kind: choice
            template_inline: "Pick for {{ free }}."
            options: [a, b]
        """), "  "))
    built = tasks_from_recipe(load_recipe(path), prompts_per_field=4, seed=0)
    assert {t.prompt for t in built.tasks if t.family == "nick"} == {"A nickname for Anna.", "A nickname for Tom."}
    assert "free" in built.skipped and "unseeded open field 'free'" in built.skipped["after"]


def test_train_from_recipe_stops_an_open_field_at_one_plus_gamma_of_its_optimum(tiny_model_dir, tmp_path):
    from synthgen.training.config import LoraOptions, TrainConfig
    from synthgen.training.loop import train

    # one-letter seeds (single tokens for the tiny tokenizer); the tiny model gets within 4x of the
    # optimum in a few epochs but never within the closed families' tol, so only gamma can stop it
    path = write(tmp_path, "seed_values: [a, b, c, d, e]\n")
    gamma = 4.0
    config = TrainConfig(recipe=str(path), model=str(tiny_model_dir), families=["name"], epochs=30, lr=3e-2,
                         gamma=gamma, lora=LoraOptions(rank=4, alpha=8))
    train(config, tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "training.json").read_text())
    assert saved["config"]["open_families"] == ["name"]
    losses = [(e["families"]["name"]["loss"], e["families"]["name"]["optimal"]) for e in saved["epochs"]]
    assert len(losses) < 30 and saved["epochs"][-1]["families"]["name"]["stopped"]
    assert losses[-1][0] <= (1 + gamma) * losses[-1][1]
    assert all(loss > (1 + gamma) * optimal for loss, optimal in losses[:-1])


def test_biography_open_recipe_seeds_are_half_of_its_references():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    recipe = load_recipe(root / "recipes" / "biography_open.yaml")
    assert {n for n, f in recipe.fields.items() if f.kind == "open"} == {"first_name", "birth_place", "occupation"}
    assert recipe.fields["first_name"].depends_on == {"gender", "birth_country"}
    assert recipe.fields["birth_place"].depends_on == {"birth_country"}
    for name in ("first_name", "birth_place", "occupation"):
        spec = recipe.fields[name]
        assert spec.use_adapter and spec.open.seeds.parents == spec.open.reference.parents
        for key, seeds in spec.open.seeds.sets.items():
            reference = spec.open.reference.sets[key]
            assert set(seeds) < set(reference), (name, key)
            if "non-binary" not in key:  # non-binary seeds: the union of the female and male seeds
                assert len(seeds) == (len(reference) + 1) // 2, (name, key)
            assert all(spec.parse_value(v) == v for v in reference), (name, key)
    import runpy

    builder = runpy.run_path(str(root / "recipes" / "build_open_seeds.py"))
    assert builder["main"](["--check"]) == 0


def test_instruction_recipe_topics_and_personas_are_open_and_seeded_with_the_old_lists():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    recipe = load_recipe(root / "recipes" / "instruction_tuning.yaml")
    topic, persona = recipe.fields["topic"], recipe.fields["persona"]
    assert topic.kind == persona.kind == "open" and topic.open.reference is None
    topics = [line.strip() for line in (root / "recipes/data/topics.txt").read_text().splitlines() if line.strip()]
    assert topic.open.seeds.union == set(topics) and all(topic.parse_value(t) == t for t in topics)
    assert len(persona.open.seeds.union) == 15 and all(persona.parse_value(p) == p for p in persona.open.seeds.union)


def test_open_fields_benchmark_runs_at_small_n_without_a_model(tmp_path):
    from benchmarks import open_fields as bench

    out = tmp_path / "open.json"
    assert bench.main(["-n", "40", "--methods", "seeds", "--instruction-n", "0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    seeds = result["results"]["seeds"]
    assert result["n"] == 40 and result["provenance"]["command"].endswith("--instruction-n 0 --out " + str(out))
    for field in ("first_name", "birth_place", "occupation"):
        # exact sampling over the seeds: every value valid, none novel (by definition)
        assert seeds[field]["valid_rate"] == 1.0 and seeds[field]["novel_valid"] == 0
        assert 0 < seeds[field]["normalized_entropy"] <= seeds[field]["normalized_entropy_at_n"] <= 1 + 1e-9
    assert seeds["first_name"]["gender_checked"] > 0
    assert result["targets"]["first_name"]["valid_rate"]["met"] is None  # no recipe adapter run: not measured
    from benchmarks.results_tables import open_fields as render

    text = "\n".join(render(result))
    assert "| seeds | first_name | 100% |" in text and "| first_name: valid_rate | – | 0.800 | – |" in text


def test_open_fields_table_says_when_the_base_model_had_no_valid_value():
    from benchmarks.results_tables import open_fields as render

    def metrics(unique: int) -> dict:
        return {"valid_rate": unique / 10, "unique_valid": unique, "novel_valid": 0, "novel_share": 0.0,
                "normalized_entropy": 0.5, "wall_s": 1.0}

    data = {"n": 10, "recipe": "r.yaml", "seed": 0,
            "results": {"base": {"occupation": metrics(0)}, "general": {"occupation": metrics(4)},
                        "recipe": {"occupation": metrics(6)}},
            "targets": {"occupation": {"unique_valid_ratio": {"measured": None, "goal": 1.5, "met": None}}}}
    text = "\n".join(render(data))
    assert "| occupation: unique_valid_ratio | base: no valid value | 1.500 | – |" in text
    assert "against the general adapter's: occupation 1.50x." in text
