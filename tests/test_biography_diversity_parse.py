"""Pure helpers of benchmarks/biography_diversity.py: reply validity and the list-then-pick parser."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "biography_diversity.py"
_spec = importlib.util.spec_from_file_location("biography_diversity", _PATH)
bd = importlib.util.module_from_spec(_spec)
sys.modules.setdefault(_spec.name, bd)  # dataclasses look their module up there
_spec.loader.exec_module(bd)


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
    assert bd.Validator(spec)(reply) == expected


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
    got = bd.parse_candidates(text)
    assert [c for c, _ in got] == [c for c, _ in expected]
    assert [p for _, p in got] == pytest.approx([p for _, p in expected])


def test_pick_follows_stated_probabilities_and_drops_lines_without_one():
    cands = [("Here are names:", None), ("Emily", 0.8), ("Olivia", 0.2)]
    rng = np.random.default_rng(0)
    counts = Counter(bd.pick_candidate(cands, rng) for _ in range(4000))
    assert set(counts) == {"Emily", "Olivia"}
    assert counts["Emily"] / 4000 == pytest.approx(0.8, abs=0.03)


def test_pick_is_uniform_without_probabilities_and_none_without_candidates():
    rng = np.random.default_rng(1)
    counts = Counter(bd.pick_candidate([("A", None), ("B", None)], rng) for _ in range(4000))
    assert counts["A"] / 4000 == pytest.approx(0.5, abs=0.03)
    zero = Counter(bd.pick_candidate([("A", 0.0), ("B", 0.0)], rng) for _ in range(2000))
    assert set(zero) == {"A", "B"}
    assert bd.pick_candidate([], rng) is None


def test_record_seeds_are_stable_and_distinct():
    assert bd.record_seed(0, 3, "first_name") == bd.record_seed(0, 3, "first_name")
    seeds = {bd.record_seed(s, i, f, a) for s in (0, 1) for i in range(3) for f in ("a", "b") for a in (0, 1)}
    assert len(seeds) == 24
    assert all(0 <= s < 2**63 for s in seeds)


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
    assert bd.Extractor(spec)(reply) == expected


def _fields(unique, entropy, valid=1.0):
    return {f: {"unique": unique, "normalized_entropy": entropy, "top1_share": 0.1, "valid_rate": valid}
            for f in bd.TABLE_FIELDS}


def test_targets_and_table_follow_the_numbers():
    results = {
        "base": {"fields": _fields(5, 0.2, 0.1), "lenient_fields": _fields(9, 0.3, 0.2), "attr_seconds": 1.0,
                 "bio_seconds": 0.0, "quality": {"n": 0, "ok": None}},
        "hot_minp": {"fields": _fields(7, 0.5, 0.05), "lenient_fields": _fields(30, 0.9, 0.3), "attr_seconds": 1.0,
                     "bio_seconds": 0.0, "quality": {"n": 2, "ok": 0.5}},
        "adapter": {"fields": _fields(20, 0.8), "attr_seconds": 2.0, "bio_seconds": 3.0,
                    "quality": {"n": 10, "ok": 0.8, "mentions_name": 0.9, "fits_occupation": 0.85}},
        "base_exact": {"fields": _fields(8, 0.4), "attr_seconds": 2.0, "bio_seconds": 3.0,
                       "quality": {"n": 10, "ok": 0.9}},
        "recipe": {"skipped": "no --recipe-adapter given"},
    }
    t = bd.check_targets(results)
    assert t["baselines_compared"] == ["base", "hot_minp"]
    assert "recipe" not in t
    a = t["adapter"]
    assert a["beats_every_baseline"]["first_name"] == {"unique": True, "normalized_entropy": True}
    assert a["beats_every_baseline_lenient"]["first_name"] == {"unique": False, "normalized_entropy": False}
    assert a["valid_rate_ge_0.95"] is True
    assert a["quality_minus_base"] is None and a["quality_n_base"] == 0
    assert a["quality_minus_base_exact"] == pytest.approx(-0.1)
    assert a["quality_within_5_points_of_base_exact"] is False
    md = bd.markdown({"config": {"n": 8, "seed": 0, "bio_n": 4}, "machine": "test", "command": "cmd",
                      "methods": results, "targets": t})
    assert "| (e) shipped adapter | first_name | 20 | 0.800 |" in md
    assert "skipped: no --recipe-adapter given" in md
    assert "strict: first_name yes" in md and "lenient: first_name no" in md


def test_prompting_run_continues_after_an_interruption_with_the_same_records(tmp_path):
    """Checkpoint after every block; a rerun with the same key resumes and equals an uninterrupted run.
    (A scripted sampler stands in for the model: this tests the benchmark's bookkeeping.)"""
    import dataclasses

    from synthgen.recipe import load_recipe

    full = load_recipe(bd.RECIPE)
    attrs = tuple(f for f in full.order if full.fields[f].kind != "text")
    recipe = dataclasses.replace(full, fields={f: full.fields[f] for f in attrs}, order=attrs, near_dup_fields=())
    method = next(m for m in bd.METHODS if m.key == "persona")
    CUES = [("first name", "first_name"), ("last name", "last_name"), ("year between", "birth_year"),
            ("city", "birth_place"), ("occupation", "occupation"), ("gender", "gender")]
    replies = {"gender": "female", "first_name": "Ava", "last_name": "Smith", "birth_year": "1950",
               "birth_place": "Paris, France", "occupation": "nurse"}

    class Scripted:
        per_prompt = True

        def __init__(self, fail_after: int | None = None):
            self.calls, self.fail_after = 0, fail_after

        def __call__(self, prompts, seeds, **kw):
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise KeyboardInterrupt
            self.calls += 1
            out = []
            for p, s in zip(prompts, seeds):
                name = next(f for word, f in CUES if word in p)
                out.append(replies[name] if s % 3 else "I would say " + replies[name])
            return out

    personas = ["a baker", "a pilot", "a poet"]
    whole = bd.run_prompting(method, recipe, Scripted(), 5, 0, personas, 2)
    ckpt = tmp_path / "persona.partial.json"
    key = {"n": 5, "seed": 0}
    with pytest.raises(KeyboardInterrupt):  # stopped during the second block
        bd.run_prompting(method, recipe, Scripted(fail_after=len(attrs) + 2), 5, 0, personas, 2, ckpt, key)
    assert ckpt.is_file()
    resumed_sampler = Scripted()
    resumed = bd.run_prompting(method, recipe, resumed_sampler, 5, 0, personas, 2, ckpt, key)
    assert resumed_sampler.calls == 2 * len(attrs)  # blocks 2 and 3 only
    for k in ("records", "lenient", "replies", "raw", "stats"):
        assert resumed[k] == whole[k], k
    assert 0 < sum(s["valid"] for s in whole["stats"].values()) < sum(s["drawn"] for s in whole["stats"].values())
    other = Scripted()
    bd.run_prompting(method, recipe, other, 5, 0, personas, 2, ckpt, {"n": 5, "seed": 1})  # another key: from scratch
    assert other.calls == 3 * len(attrs)
