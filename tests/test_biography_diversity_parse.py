"""benchmarks/baselines.py (reply validity, the list-then-pick parser, prompting records) and the
bookkeeping of benchmarks/biography_diversity.py (methods, resume, result table)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import baselines as bl
from benchmarks import biography_diversity as bd
from synthgen.errors import SynthgenError
from synthgen.seeding import attempt_seed

CITY = SimpleNamespace(options=("Paris, France", "New York, United States"), min=None, max=None)
YEAR = SimpleNamespace(options=None, min=1900, max=2005)


@pytest.mark.parametrize(
    ("spec", "reply", "expected"),
    [
        (CITY, "Paris, France", "Paris, France"),
        (CITY, "  paris,   FRANCE \n", "Paris, France"),       # case and whitespace
        (CITY, '"Paris, France".', "Paris, France"),           # quotes and a trailing period
        (CITY, "**New York, United States**", "New York, United States"),
        (CITY, "Paris", None),                                 # not an option
        (CITY, "I was born in Paris, France", None),           # chatter is invalid
        (YEAR, "1957", 1957),
        (YEAR, "1957.", 1957),
        (YEAR, "1899", None),
        (YEAR, "2006", None),
        (YEAR, "The year 1957", None),
        (YEAR, "", None),
    ],
)
def test_validator(spec, reply, expected):
    assert bl.Validator(spec)(reply) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Emily — 0.3\nOlivia — 0.7", [("Emily", 0.3), ("Olivia", 0.7)]),
        ("1. Emily: 30%\n2. Olivia (20%)", [("Emily", 0.3), ("Olivia", 0.2)]),
        ("- Paris, France - 0.25", [("Paris, France", 0.25)]),
        ("1. Engineer | Probability 95.1%", [("Engineer", 0.951)]),
        ("Emily 0.3", [("Emily", 0.3)]),
        ("Emily p=0.4", [("Emily", 0.4)]),
        ("Emily — 40", [("Emily", 0.4)]),                            # > 1: a percent
        ("1957 — 0.2\n1960", [("1957", 0.2), ("1960", None)]),       # a year alone keeps no probability
        ("Here are five names:\nEmily — 0.5", [("Here are five names:", None), ("Emily", 0.5)]),
        ("Emily — 250", [("Emily — 250", None)]),                   # not a probability
        ("", []),
        ("\n  \n", []),
    ],
)
def test_parse_candidates(text, expected):
    got = bl.parse_candidates(text)
    assert [c for c, _ in got] == [c for c, _ in expected]
    assert [p for _, p in got] == pytest.approx([p for _, p in expected])


def test_pick_follows_stated_probabilities_and_drops_lines_without_one():
    cands = [("Here are names:", None), ("Emily", 0.8), ("Olivia", 0.2)]
    rng = np.random.default_rng(0)
    counts = Counter(bl.pick_candidate(cands, rng) for _ in range(4000))
    assert set(counts) == {"Emily", "Olivia"}
    assert counts["Emily"] / 4000 == pytest.approx(0.8, abs=0.03)


def test_pick_is_uniform_without_probabilities_and_none_without_candidates():
    rng = np.random.default_rng(1)
    counts = Counter(bl.pick_candidate([("A", None), ("B", None)], rng) for _ in range(4000))
    assert counts["A"] / 4000 == pytest.approx(0.5, abs=0.03)
    zero = Counter(bl.pick_candidate([("A", 0.0), ("B", 0.0)], rng) for _ in range(2000))
    assert set(zero) == {"A", "B"}
    assert bl.pick_candidate([], rng) is None


def test_parse_methods_accepts_names_and_letters_in_table_order():
    assert [m.key for m in bd.parse_methods("e,base,c")] == ["base", "list_pick", "adapter"]
    with pytest.raises(SystemExit):
        bd.parse_methods("nope")


@pytest.mark.parametrize(
    ("spec", "reply", "expected"),
    [
        (CITY, "I was born in paris, france!", "Paris, France"),          # found inside chatter
        (CITY, "Paris or New York, United States", "New York, United States"),  # "Paris" alone is no option
        (CITY, "Parisian, Frances", None),                                 # whole phrases only
        (SimpleNamespace(options=("female", "male"), min=None, max=None), "I am a female.", "female"),
        (SimpleNamespace(options=("Ann", "Anna"), min=None, max=None), "Anna", "Anna"),  # longest at a position
        (YEAR, "Born in 1850, or maybe 1957 or 1960", 1957),             # first integer in range
        (YEAR, "year 19577", None),
    ],
)
def test_lenient_extractor(spec, reply, expected):
    assert bl.Extractor(spec)(reply) == expected


RESULTS = Path(bd.__file__).resolve().parent / "results" / "biography_diversity.json"


def _fields(unique, entropy, valid=1.0):
    return {f: {"unique": unique, "normalized_entropy": entropy, "top1_share": 0.1, "valid_rate": valid}
            for f in bd.TABLE_FIELDS}


def test_table_follows_the_numbers():
    results = {
        "base": {"fields": _fields(5, 0.2, 0.1), "lenient_fields": _fields(9, 0.3, 0.2), "attr_seconds": 1.0,
                 "bio_seconds": 0.0, "quality": {"n": 0, "ok": None}},
        "adapter": {"fields": _fields(20, 0.8), "attr_seconds": 2.0, "bio_seconds": 3.0,
                    "quality": {"n": 10, "ok": 0.8, "mentions_name": 0.9, "fits_occupation": 0.85},
                    "name_fits_gender": {"n": 4, "rate": 0.75}},
        "recipe": {"skipped": "no --recipe-adapter given"},
    }
    md = bd.markdown({"config": {"n": 8, "seed": 0, "bio_n": 4}, "machine": "test", "command": "cmd",
                      "methods": results, "complete": False})
    assert md.startswith("**Partial result**")
    assert "| (e) shipped adapter | first_name | 20 | 0.800 | 0.100 | 1.000 | 0.90 / 0.85 / 0.80 (10) " \
           "| 0.75 (4) | 2 + 3 |" in md
    assert "skipped: no --recipe-adapter given" in md
    assert "| (a) base, T=1.0 | 9 / 0.300 / 0.200 |" in md  # the lenient table
    assert "arget" not in md  # a benchmark reports numbers; it asserts no targets


def test_the_committed_result_file_stays_readable():
    md = bd.markdown(json.loads(RESULTS.read_text(encoding="utf-8")))
    assert "| (e) shipped adapter | first_name | 236 | 0.859 |" in md


# ------------------------------------------------ methods with a scripted engine
CUES = [("biography", "biography"), ("first name", "first_name"), ("last name", "last_name"),
        ("year between", "birth_year"), ("city", "birth_place"), ("occupation", "occupation"), ("gender", "gender")]
REPLIES = {"gender": "female", "first_name": "Ava", "last_name": "Smith", "birth_year": "1950",
           "birth_place": "Paris, France", "occupation": "nurse",
           "biography": "Ava Smith was a nurse in Paris who cared for her patients for forty years."}


class Scripted:
    """Stands in for the base model: answers by the field a prompt asks for; for first names, one
    seed in two gets chatter around the answer (invalid read strictly, valid read leniently)."""

    name, model_name, adapter_name = "scripted", "scripted-model", None

    def __init__(self, fail_after: int | None = None):
        self.calls, self.fail_after = 0, fail_after

    def generate(self, prompts, n=1, seed=None, **kwargs):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        out = []
        for prompt, s in zip(prompts, seed):
            answer = REPLIES[next(f for word, f in CUES if word in prompt)]
            answer = f"I would say {answer}" if answer == "Ava" and s % 2 == 0 else answer
            if "Give 5 different possible answers" in prompt:
                answer = f"Here you go:\n1. {answer} — 0.9"
            out.append([answer])
        return out


def make_setup(work: Path, engine, n: int = 5, seed: int = 0) -> bd.Setup:
    recipe, bio_spec = bd.split_recipe(n, seed)
    args = SimpleNamespace(n=n, seed=seed, block=2, bio_n=3, recipe_adapter=None)
    return bd.Setup(args, recipe, bio_spec, engine, ["a baker", "a pilot", "a poet"],
                    {"female": ["Ava"], "male": ["James"]}, work)


def _numbers(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.endswith("seconds")}


@pytest.mark.parametrize("key", ["persona", "list_pick"])
def test_prompting_method_resumes_through_its_run_directory(tmp_path, key):
    """A prompting baseline keeps its records as shards: stopped in its second block and rerun,
    it makes only the missing records and reports what an uninterrupted run reports, in the
    schema of the committed result file."""
    method = next(m for m in bd.METHODS if m.key == key)
    whole = bd.run_method(method, make_setup(tmp_path / "whole", Scripted()))
    fields = 6  # attribute fields: one engine call each per block of records
    with pytest.raises(KeyboardInterrupt):
        bd.run_method(method, make_setup(tmp_path / "cut", Scripted(fail_after=fields + 2)))
    again = Scripted()
    resumed = bd.run_method(method, make_setup(tmp_path / "cut", again))
    assert whole["fully_valid_records"] > 0
    assert again.calls == 2 * fields + 1  # blocks 2 and 3, then one call for the biographies
    assert _numbers(resumed) == _numbers(whole)
    assert set(whole) == set(json.loads(RESULTS.read_text(encoding="utf-8"))["methods"][key])
    strict, lenient = whole["fields"]["first_name"], whole["lenient_fields"]["first_name"]
    assert 0 < strict["valid_rate"] < 1 and lenient["valid_rate"] == 1.0
    assert whole["quality"]["n"] == min(3, whole["fully_valid_records"]) and whole["bio_stats"]["failed_records"] == 0
    with pytest.raises(SynthgenError, match="different seed"):
        bd.run_method(method, make_setup(tmp_path / "cut", Scripted(), seed=1))


def test_prompting_records_depend_only_on_their_index():
    recipe = make_setup(Path("unused"), None).recipe
    together = bl.prompt_records(recipe, Scripted(), [0, 1, 2, 3], 0, list_pick=True)
    alone = [bl.prompt_records(recipe, Scripted(), [i], 0, list_pick=True)[0] for i in (3, 2, 1, 0)][::-1]
    assert together == alone
    engine = Scripted()
    seeds = []
    engine.generate = lambda prompts, n=1, seed=None, **kw: seeds.append(seed) or [["x"]] * len(prompts)
    bl.prompt_records(recipe, engine, [7], 3)
    assert seeds[0] == [attempt_seed(3, 7, recipe.order[0], 0)]


def test_pipeline_method_with_the_tiny_model(tmp_path, tiny_engine):
    """(g) runs synthgen's generate (resumable) and writes its biographies with the same engine."""
    method = next(m for m in bd.METHODS if m.key == "base_exact")
    setup = make_setup(tmp_path, tiny_engine, n=4)
    result = bd.run_method(method, setup)
    assert set(result) == set(json.loads(RESULTS.read_text(encoding="utf-8"))["methods"]["base_exact"])
    assert result["n_kept"] + sum(result["removed"].values()) == 4
    assert all(f["valid_rate"] == 1.0 for f in result["fields"].values())
    assert (tmp_path / "base_exact" / "run.json").is_file()
    assert _numbers(bd.run_method(method, setup)) == _numbers(result)  # resumed: nothing left to make


def test_main_writes_the_result_with_its_provenance(tmp_path, monkeypatch):
    from synthgen.engines.transformers import TransformersEngine

    monkeypatch.setattr(TransformersEngine, "load", classmethod(lambda cls, *a, **kw: Scripted()))
    out = tmp_path / "result.json"
    args = ["-n", "4", "--methods", "a,c,f", "--bio-n", "2", "--out", str(out), "--work-dir", str(tmp_path / "w")]
    assert bd.main(args) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert set(result) == {"command", "complete", "machine", "config", "methods", "provenance"}
    assert set(json.loads(RESULTS.read_text(encoding="utf-8"))) - set(result) == {"targets"}
    assert result["complete"] and result["command"] == "python -m benchmarks.biography_diversity " + " ".join(args)
    assert result["provenance"]["command"] == result["command"] and result["provenance"]["adapters"] == {}
    assert list(result["methods"]) == ["base", "list_pick", "recipe"]
    assert result["methods"]["recipe"] == {"label": "(f) recipe-tuned adapter", "skipped": "no --recipe-adapter given"}
    assert out.with_suffix(".md").read_text(encoding="utf-8") == bd.markdown(result)
