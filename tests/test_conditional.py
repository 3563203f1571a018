"""Conditional option sets: a templated ``options_file`` (load-time checks, exact per-record draws,
the report's per-record ideal, and records of recipes without conditions left unchanged)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import pickle
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from synthgen import diversity as dv
from synthgen.diversity import softmax
from synthgen.errors import ConfigError, SynthgenError
from synthgen.executors import LocalExecutor
from synthgen.fill import FieldFiller, make_records
from synthgen.generation import field_info, generate
from synthgen.option_sets import MAX_COMBINATIONS, unsafe_path_value
from synthgen.recipe import load_recipe
from synthgen.report import FieldInfo, build_report
from synthgen.seeding import record_rng
from synthgen.training.recipe_tasks import tasks_from_recipe

# names by country and gender; Japan's women are weighted (a .csv set)
NAMES = {
    "recipes/data/countries.txt": "France\nJapan\n",
    "recipes/data/names/France_female.txt": "Marie\nJulie\nClaire\n",
    "recipes/data/names/France_male.txt": "Jean\nLuc\n",
    "recipes/data/names/Japan_female.csv": "value,weight\nYuki,3\nHana,1\n",
    "recipes/data/names/Japan_male.txt": "Kenji\nTaro\nJean\n",
}
PEOPLE = """\
country: {kind: sample, options_file: data/countries.txt}
gender: {kind: sample, options: [female, male]}
first_name:
  kind: choice
  template_inline: "Give a {{ gender }} first name from {{ country }}."
  options_file: "data/names/{{ country }}_{{ gender }}.{{ 'csv' if country ~ gender == 'Japanfemale' else 'txt' }}"
"""
SETS = {("France", "female"): ("Marie", "Julie", "Claire"), ("France", "male"): ("Jean", "Luc"),
        ("Japan", "female"): ("Yuki", "Hana"), ("Japan", "male"): ("Kenji", "Taro", "Jean")}


def write_tree(tmp_path: Path, fields: str, files: dict[str, str] | None = None, top: str = "") -> Path:
    """``recipes/r.yaml`` with these fields, plus files relative to tmp_path; returns the recipe path."""
    for rel, data in (files or {}).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(data, encoding="utf-8")
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    body = "name: r\n" + textwrap.dedent(top) + "fields:\n" + textwrap.indent(textwrap.dedent(fields), "  ")
    recipe.write_text(body, encoding="utf-8")
    return recipe


# ------------------------------------------------------------------ loading
def test_sets_are_loaded_per_parent_values(tmp_path):
    recipe = load_recipe(write_tree(tmp_path, PEOPLE, NAMES))
    spec = recipe.fields["first_name"]
    assert spec.is_conditional and spec.option_parents == ("country", "gender")
    assert spec.depends_on == {"country", "gender"}
    assert {k: v[0] for k, v in spec.option_sets.items()} == SETS
    assert spec.option_sets[("Japan", "female")][1] == (0.75, 0.25)
    assert spec.options == ("Marie", "Julie", "Claire", "Jean", "Luc", "Yuki", "Hana", "Kenji", "Taro")
    assert spec.closed_values == spec.known_values == spec.options and spec.weights is None
    assert spec.options_for({"country": "Japan", "gender": "male"}) == (("Kenji", "Taro", "Jean"), None)
    assert len(spec.option_files) == 4 and set(spec.option_files) <= set(recipe.source_files)
    with pytest.raises(SynthgenError, match="no option set for country='Peru'"):
        spec.options_for({"country": "Peru", "gender": "male"})
    with pytest.raises(ValueError, match="needs the record"):
        spec.draw(np.random.default_rng(0))
    # shipped to workers: pickles, and stays hashable
    again = pickle.loads(pickle.dumps(recipe))
    assert again.fields["first_name"].option_sets == spec.option_sets and hash(again.fields["first_name"])


def test_a_plain_path_and_its_parents_are_unchanged(tmp_path):
    files = {"recipes/data/a.txt": "x\ny\n"}
    spec = load_recipe(write_tree(tmp_path, "a: {kind: sample, options_file: data/a.txt}\n", files)).fields["a"]
    assert not spec.is_conditional and spec.option_parents == () and spec.options == ("x", "y")
    assert spec.options_for({}) == (("x", "y"), None)


def test_only_reachable_combinations_need_a_file(tmp_path):
    """A parent that is itself conditional contributes only the values its own parents allow."""
    files = {"recipes/c/France.txt": "Paris\nLyon\n", "recipes/c/Japan.txt": "Tokyo\n",
             "recipes/d/France_Paris.txt": "Marais\n", "recipes/d/France_Lyon.txt": "Croix-Rousse\n",
             "recipes/d/Japan_Tokyo.txt": "Shibuya\nGinza\n"}
    recipe = load_recipe(write_tree(tmp_path, """\
        country: {kind: sample, options: [France, Japan]}
        city: {kind: sample, options_file: "c/{{ country }}.txt"}
        district: {kind: sample, options_file: "d/{{ country }}_{{ city }}.txt"}
        """, files))
    spec = recipe.fields["district"]
    assert list(spec.option_sets) == [("France", "Paris"), ("France", "Lyon"), ("Japan", "Tokyo")]
    assert recipe.fields["city"].options == ("Paris", "Lyon", "Tokyo")


def test_an_integer_parent_and_a_distant_conditional_ancestor(tmp_path):
    """Option parents are enumerated jointly through an ancestor's own condition."""
    files = {"recipes/s/1.txt": "a\nb\n", "recipes/s/2.txt": "c\n",
             "recipes/t/a.txt": "A\n", "recipes/t/b.txt": "B\n", "recipes/t/c.txt": "C\n"}
    recipe = load_recipe(write_tree(tmp_path, """\
        n: {kind: integer, template_inline: "Pick 1 or 2.", min: 1, max: 2}
        s: {kind: sample, options_file: "s/{{ n }}.txt"}
        t: {kind: sample, options_file: "t/{{ s }}.txt"}
        """, files))
    assert recipe.order == ("n", "s", "t")
    assert recipe.fields["s"].option_sets == {(1,): (("a", "b"), None), (2,): (("c",), None)}
    assert list(recipe.fields["t"].option_sets) == [("a",), ("b",), ("c",)]


def test_each_distinct_file_is_read_once(tmp_path, monkeypatch):
    import synthgen.fields as recipe_module

    calls = []
    real = recipe_module._read_options_file
    monkeypatch.setattr(recipe_module, "_read_options_file", lambda *a: calls.append(a[2]) or real(*a))
    files = {"recipes/data/one.txt": "a\nb\n"}
    recipe = load_recipe(write_tree(tmp_path, """\
        n: {kind: sample, min: 1, max: 50}
        x: {kind: sample, options_file: "data/{{ 'one' if n > 0 else n }}.txt"}
        """, files))
    assert len(recipe.fields["x"].option_sets) == 50 and calls == ["data/one.txt"]


def test_a_trusted_recipe_may_read_sets_outside_its_folder(tmp_path):
    files = {"outside/France.txt": "Marie\n", "outside/Japan.txt": "Yuki\n"}
    path = write_tree(tmp_path, """\
        country: {kind: sample, options: [France, Japan]}
        name: {kind: sample, options_file: "../outside/{{ country }}.txt"}
        """, files)
    with pytest.raises(ConfigError, match="outside the recipe's folder"):
        load_recipe(path)
    assert load_recipe(path, trust_paths=True).fields["name"].options == ("Marie", "Yuki")


@pytest.mark.parametrize("value, reason", [
    ("France", None), ("United States", None), ("Côte d'Ivoire", None), (1900, None), ("a.b", None),
    ("a/b", "'/'"), ("a\\b", "'\\\\'"), ("..", "'..'"), ("x..y", "'..'"), (".hidden", "'.'"), ("~root", "'~'"),
    ("", "empty"), ("a\nb", "control"),
])
def test_which_values_may_go_into_a_path(value, reason):
    got = unsafe_path_value(value)
    assert (got is None) if reason is None else (reason in got)


def with_country(fields: str) -> str:
    return "country: {kind: sample, options: [France, Japan]}\n" + textwrap.dedent(fields)


# (case, fields, files, key named in the error, words in the error)
REFUSED = [
    ("missing_file_for_one_value", with_country("""\
        name: {kind: sample, options_file: "n/{{ country }}.txt"}
        """), {"recipes/n/France.txt": "Marie\n"}, "fields.name.options_file",
     "n/Japan.txt (for country='Japan'): file not found"),
    ("empty_set", with_country("""\
        name: {kind: sample, options_file: "n/{{ country }}.txt"}
        """), {"recipes/n/France.txt": "Marie\n", "recipes/n/Japan.txt": "\n\n"}, "fields.name.options_file",
     "n/Japan.txt (for country='Japan'): empty options"),
    ("duplicate_in_one_set", with_country("""\
        name: {kind: sample, options_file: "n/{{ country }}.txt"}
        """), {"recipes/n/France.txt": "Marie\n", "recipes/n/Japan.txt": "Yuki\nYuki\n"}, "fields.name.options_file",
     "duplicate options: 'Yuki'"),
    ("bad_weight_in_one_set", with_country("""\
        name: {kind: sample, options_file: "n/{{ country }}.csv"}
        """), {"recipes/n/France.csv": "value,weight\nMarie,1\n", "recipes/n/Japan.csv": "value,weight\nYuki,x\n"},
     "fields.name.options_file", "for country='Japan'"),
    ("path_escapes_the_folder", with_country("""\
        name: {kind: sample, options_file: "../{{ country }}.txt"}
        """), {"France.txt": "Marie\n", "Japan.txt": "Yuki\n"}, "fields.name.options_file",
     "outside the recipe's folder"),
    ("parent_value_with_a_slash", """\
        country: {kind: sample, options: [France, ../secrets]}
        name: {kind: sample, options_file: "n/{{ country }}.txt"}
        """, {"recipes/n/France.txt": "Marie\n"}, "fields.name.options_file",
     "value '../secrets' of field 'country' cannot be part of a path"),
    ("parent_is_a_text_field", """\
        bio: {kind: text, template_inline: "Write a line."}
        name: {kind: sample, options_file: "n/{{ bio }}.txt"}
        """, {}, "fields.name.options_file", "'bio' is a text field"),
    ("parent_is_a_wide_integer", """\
        year: {kind: integer, template_inline: "A year?", min: 0, max: 100000}
        name: {kind: sample, options_file: "n/{{ year }}.txt"}
        """, {}, "fields.name.options_file", "'year' is an integer field with a wider range"),
    ("cycle_through_an_options_file", """\
        a: {kind: choice, template_inline: "After {{ b }}?", options: [x, y]}
        b: {kind: sample, options_file: "n/{{ a }}.txt"}
        """, {"recipes/n/x.txt": "1\n", "recipes/n/y.txt": "2\n"}, "fields.a.template_inline",
     "reference cycle: a -> b -> a"),
    ("cycle_starting_at_the_options_file", """\
        b: {kind: sample, options_file: "n/{{ a }}.txt"}
        a: {kind: choice, template_inline: "After {{ b }}?", options: [x, y]}
        """, {"recipes/n/x.txt": "1\n", "recipes/n/y.txt": "2\n"}, "fields.b.options_file",
     "reference cycle: b -> a -> b"),
    ("refers_to_itself", """\
        name: {kind: sample, options_file: "n/{{ name }}.txt"}
        """, {}, "fields.name.options_file", "refers to itself"),
    ("unknown_variable", """\
        name: {kind: sample, options_file: "n/{{ nation }}.txt"}
        """, {}, "fields.name.options_file", "undefined template variable 'nation'"),
    ("too_many_combinations", """\
        a: {kind: sample, min: 0, max: 199}
        b: {kind: sample, min: 0, max: 199}
        name: {kind: sample, options_file: "n/{{ a }}_{{ b }}.txt"}
        """, {}, "fields.name.options_file", f"more than {MAX_COMBINATIONS} combinations of a, b"),
    ("weights_beside_a_templated_file", with_country("""\
        name: {kind: sample, options_file: "n/{{ country }}.txt", weights: [1]}
        """), {}, "fields.name.weights", "per-set weights go in .csv files"),
    ("path_fails_to_render_for_one_value", """\
        n: {kind: sample, min: 1, max: 3}
        name: {kind: sample, options_file: "n/{{ 10 // (n - 2) }}.txt"}
        """, {"recipes/n/-10.txt": "a\n", "recipes/n/10.txt": "b\n"}, "fields.name.options_file",
     "for n=2: template failed to render: ZeroDivisionError"),
    ("template_syntax_error", with_country("""\
        name: {kind: sample, options_file: "n/{{ country }.txt"}
        """), {}, "fields.name.options_file", "template syntax error"),
]


@pytest.mark.parametrize("case, fields, files, key, words", REFUSED, ids=[row[0] for row in REFUSED])
def test_bad_conditional_sets_are_one_line_errors(tmp_path, case, fields, files, key, words):
    recipe = write_tree(tmp_path, fields, files)
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert message.startswith(f"{recipe}: {key}: "), message
    assert words in message and "\n" not in message, message


# ------------------------------------------------------------------ generation
class SpyEngine:
    """Forwards to an engine and records every ``score`` call's (prompt, options)."""

    def __init__(self, engine):
        self.engine = engine
        self.calls: list[tuple[str, tuple]] = []

    def score(self, prompt, options, use_adapter=True):
        self.calls.append((prompt, tuple(options)))
        return self.engine.score(prompt, options, use_adapter=use_adapter)


def test_a_conditional_choice_draws_exactly_over_the_records_own_set(tmp_path, tiny_engine):
    recipe = load_recipe(write_tree(tmp_path, PEOPLE, NAMES, top="seed: 3\n"))
    spec = recipe.fields["first_name"]
    spy = SpyEngine(tiny_engine)
    filler = FieldFiller(spy)
    records = make_records(recipe, filler, range(60)).records
    assert len(records) == 60
    for index, rec in enumerate(records):
        options = SETS[(rec["country"], rec["gender"])]
        assert rec["first_name"] in options
        # the exact rule: renormalise the model's scores over this record's set, draw with its rng
        probs = softmax(tiny_engine.score(spec.template.render(rec), list(options)))
        assert rec["first_name"] == options[record_rng(3, index, "first_name").choice(len(options), p=probs)]
    # every set is scored as a whole, and each (prompt, set) once
    assert {options for _, options in spy.calls} <= set(SETS.values())
    assert len(spy.calls) == len(set(spy.calls)) == filler.score_calls == 4


def test_a_conditional_sample_draws_from_its_own_set_by_its_weights(tmp_path):
    fields = PEOPLE.replace("kind: choice", "kind: sample").replace(
        '  template_inline: "Give a {{ gender }} first name from {{ country }}."\n', "")
    recipe = load_recipe(write_tree(tmp_path, fields, NAMES, top="seed: 5\n"))
    spec = recipe.fields["first_name"]
    records = make_records(recipe, FieldFiller(None), range(4000)).records
    for index, rec in enumerate(records[:200]):
        options, weights = SETS[(rec["country"], rec["gender"])], spec.options_for(rec)[1]
        rng = record_rng(5, index, "first_name")
        assert rec["first_name"] == options[rng.choice(len(options), p=list(weights) if weights else None)]
    japanese_women = [r["first_name"] for r in records if (r["country"], r["gender"]) == ("Japan", "female")]
    assert set(japanese_women) == {"Yuki", "Hana"}
    assert abs(japanese_women.count("Yuki") / len(japanese_women) - 0.75) < 0.05
    assert all(r["first_name"] in SETS[(r["country"], r["gender"])] for r in records)


def test_generate_resume_and_report_of_a_conditional_field(tmp_path, tiny_engine):
    recipe = load_recipe(write_tree(tmp_path, PEOPLE, NAMES, top="seed: 1\ncount: 30\nbatch_size: 6\n"))
    local = LocalExecutor(engine=tiny_engine)
    full = generate(recipe, tmp_path / "full", executor=local)

    class Stop(Exception):
        pass

    def stop(done, total):
        if done >= 12:
            raise Stop

    with pytest.raises(Stop):
        generate(recipe, tmp_path / "cut", executor=local, on_progress=stop)
    resumed = generate(recipe, tmp_path / "cut", executor=local, resume=True)
    a = pl.read_parquet(tmp_path / "full" / "records.parquet")
    assert a.equals(pl.read_parquet(tmp_path / "cut" / "records.parquet"))
    assert all(n in SETS[(c, g)] for c, g, n in a.select("country", "gender", "first_name").rows())

    report = full.report["fields"]["first_name"]
    assert report["in_set_rate"] == 1.0 and report["k"] == 9
    keys = a.select("country", "gender").rows()
    draws = [(keys.count(key), options, recipe.fields["first_name"].option_sets[key][1])
             for key, options in SETS.items() if key in keys]
    ideal = dv.expected_unique_mixture(draws)
    assert report["expected_unique_ideal"] == pytest.approx(ideal)
    assert report["coverage_ratio"] == pytest.approx(a["first_name"].n_unique() / ideal)
    with open(tmp_path / "full" / "report.json") as fh:
        assert json.load(fh)["fields"]["first_name"]["in_set_rate"] == 1.0
    assert set(resumed.report["fields"]["gender"]) == set(report) - {"in_set_rate", "coherence"}  # every key kept

    # an edited set file is noticed: a run is never resumed over another set
    (tmp_path / "recipes/data/names/France_male.txt").write_text("Jean\nPaul\n", encoding="utf-8")
    with pytest.raises(SynthgenError, match="different recipe_sha256"):
        generate(load_recipe(recipe.path), tmp_path / "full", executor=local, resume=True)


def test_conditional_fields_leave_the_other_fields_unchanged(tmp_path, tiny_engine):
    """Values depend on (seed, index, field): adding a conditional field changes no other column."""
    plain = PEOPLE.split("first_name:")[0] + textwrap.dedent("""\
        age: {kind: integer, template_inline: "How old is a {{ gender }} person?", min: 20, max: 40}
        """)
    with_condition = PEOPLE + "age: {kind: integer, template_inline: \"How old is a {{ gender }} person?\", " \
                              "min: 20, max: 40}\n"
    a = make_records(load_recipe(write_tree(tmp_path / "a", plain, NAMES)), FieldFiller(tiny_engine), range(20))
    b = make_records(load_recipe(write_tree(tmp_path / "b", with_condition, NAMES)), FieldFiller(tiny_engine),
                     range(20))
    assert [{k: r[k] for k in ("country", "gender", "age")} for r in b.records] == a.records


# Records of a recipe without conditions, as made before option sets could be conditional
# (the tiny model of tests/conftest.py; sha256 of records.jsonl).
PLAIN = """\
name: plain
seed: 11
count: 24
batch_size: 5
fields:
  country:
    kind: sample
    options_file: countries.csv
  gender:
    kind: choice
    template_inline: "Pick a gender for someone from {{ country }}."
    options: [female, male, non-binary]
    weights: [49, 49, 2]
  name:
    kind: choice
    template_inline: "Name a {{ gender }} person from {{ country }}."
    options: [Ann, Bob, Cid, Dee, Eve, Fay, Gus]
  age:
    kind: integer
    template_inline: "How old is {{ name }}?"
    min: 18
    max: 30
  n:
    kind: sample
    min: 1
    max: 1000
"""
PLAIN_RECORDS_SHA256 = "cf347ad29fff9d1ddc140b9082577576a1030e83bbf66313f29790d1d7bc8fce"


def test_records_of_a_recipe_without_conditions_are_unchanged(tmp_path, tiny_engine):
    (tmp_path / "countries.csv").write_text("value,weight\nFrance,3\nJapan,2\nPeru,1\n", encoding="utf-8")
    (tmp_path / "r.yaml").write_text(PLAIN, encoding="utf-8")
    recipe = load_recipe(tmp_path / "r.yaml")
    assert not any(spec.is_conditional for spec in recipe.fields.values())
    generate(recipe, tmp_path / "out", executor=LocalExecutor(engine=tiny_engine))
    data = (tmp_path / "out" / "records.jsonl").read_bytes()
    assert hashlib.sha256(data).hexdigest() == PLAIN_RECORDS_SHA256, data.decode()[:400]


# ------------------------------------------------------------------ report
def brute_force_expected_unique(draws):
    """E[distinct] by enumerating every joint outcome of the draws."""
    singles = []
    for n, values, weights in draws:
        q = np.asarray(weights if weights is not None else [1.0] * len(values), float)
        singles += [(values, q / q.sum())] * n
    total = 0.0
    for outcome in itertools.product(*(range(len(v)) for v, _ in singles)):
        p = np.prod([q[i] for (_, q), i in zip(singles, outcome)])
        total += p * len({values[i] for (values, _), i in zip(singles, outcome)})
    return total


@pytest.mark.parametrize("draws", [
    [(3, ("a", "b", "c"), None)],
    [(2, ("a", "b"), (0.9, 0.1)), (2, ("b", "c", "d"), (1, 2, 3))],
    [(1, ("a",), None), (3, ("a", "b"), (1, 0)), (0, ("z",), None), (2, ("c", "a"), None)],
])
def test_expected_unique_mixture_matches_brute_force(draws):
    assert dv.expected_unique_mixture(draws) == pytest.approx(brute_force_expected_unique(draws), rel=1e-12)


def test_expected_unique_mixture_matches_monte_carlo_and_one_set():
    rng = np.random.default_rng(0)
    draws = [(40, tuple("abcdefghij"), tuple(rng.random(10))), (25, tuple("fghijklmnopq"), None),
             (7, ("a", "q", "z"), (5, 1, 1))]
    sims = []
    for _ in range(4000):
        seen = set()
        for n, values, weights in draws:
            p = None if weights is None else np.asarray(weights) / np.sum(weights)
            seen.update(values[i] for i in rng.choice(len(values), size=n, p=p))
        sims.append(len(seen))
    exact = dv.expected_unique_mixture(draws)
    assert abs(np.mean(sims) - exact) < 4 * np.std(sims) / np.sqrt(len(sims))
    weights = (1, 2, 3, 4)
    assert dv.expected_unique_mixture([(9, "wxyz", weights)]) == pytest.approx(dv.expected_unique(9, weights))
    assert dv.expected_unique_mixture([]) == 0.0
    mix = dv.mixture_distribution([(1, ("a", "b"), (3, 1)), (3, ("b",), None)])
    assert mix == pytest.approx({"a": 0.1875, "b": 0.8125})


def test_report_in_set_rate_and_ideal_from_the_records_parents():
    sets = {("f",): (("Ann", "Eve"), None), ("m",): (("Bob", "Cid", "Dan"), (2.0 / 3, 1.0 / 6, 1.0 / 6))}
    info = FieldInfo("name", "choice", options=("Ann", "Eve", "Bob", "Cid", "Dan"), option_parents=("g",),
                     option_sets=sets)
    df = pl.DataFrame({"g": ["f", "f", "m", "m", "m", "x"], "name": ["Ann", "Bob", "Bob", "Cid", "Bob", "Ann"]})
    report = build_report(df, [FieldInfo("g", "unknown"), info], recipe=None, n_requested=6, n_generated=6,
                          removed={})
    f = report["fields"]["name"]
    assert f["in_set_rate"] == pytest.approx(4 / 6)  # Bob is outside the set of f; x selects no set
    ideal = dv.expected_unique_mixture([(2, sets[("f",)][0], None), (3, *sets[("m",)])])
    assert f["expected_unique_ideal"] == pytest.approx(ideal)
    assert f["coverage_ratio"] == pytest.approx(3 / ideal) and f["k"] == 5
    assert "in_set_rate" not in report["fields"]["g"]
    with pytest.raises(ValueError, match="depends on"):
        build_report(df.drop("g"), [info], recipe=None, n_requested=6, n_generated=6, removed={})
    with pytest.raises(ValueError, match="option set"):
        FieldInfo("name", "choice", options=("Ann",), option_parents=("g",), option_sets=sets)


def test_field_info_passes_the_sets(tmp_path):
    spec = load_recipe(write_tree(tmp_path, PEOPLE, NAMES)).fields["first_name"]
    info = field_info(spec)
    assert info.option_parents == ("country", "gender") and info.option_sets == spec.option_sets
    assert info.options == spec.options and info.weights is None
    plain = field_info(dataclasses.replace(spec, option_sets=None, option_parents=()))
    assert plain.option_sets is None


def test_training_tasks_target_the_records_own_set(tmp_path):
    recipe = load_recipe(write_tree(tmp_path, PEOPLE, NAMES))
    tasks = [t for t in tasks_from_recipe(recipe, prompts_per_field=4, seed=0).tasks if t.family == "first_name"]
    assert len(tasks) == 4
    for task in tasks:
        country = "France" if "France" in task.prompt else "Japan"
        gender = "female" if "female" in task.prompt else "male"
        assert tuple(task.targets) == SETS[(country, gender)]


def test_the_ray_stages_fill_conditional_fields_like_the_local_run(tmp_path, tiny_engine):
    """Without Ray: the per-field ``fill_batch`` stages over arrow batches, with the recipe pickled as
    Ray ships it to workers, make the same records as a local run."""
    import pyarrow as pa

    from synthgen.executors import fill_batch
    from synthgen.shards import ALIVE, INDEX

    recipe = load_recipe(write_tree(tmp_path, PEOPLE, NAMES, top="seed: 2\n"))
    shipped = pickle.loads(pickle.dumps(recipe))
    batch = pa.RecordBatch.from_pydict({INDEX: pa.array(range(16), pa.int64()), ALIVE: pa.array([True] * 16)})
    filler = FieldFiller(tiny_engine)
    for name in shipped.order:
        batch = fill_batch(batch, shipped, name, filler)
    rows = batch.select(list(recipe.order)).to_pylist()
    assert rows == make_records(recipe, FieldFiller(tiny_engine), range(16)).records
