"""Task files: the loader's checks, round trips, and the shipped suite and word lists."""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import math
import re
from pathlib import Path

import pytest
import yaml

from synthgen.errors import ConfigError
from synthgen.training.tasks import Task, load_tasks, save_tasks

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "recipes" / "data"
SUITE = ROOT / "recipes" / "diffuse" / "tasks.jsonl"
FAMILIES = ("numbers", "first_names", "countries", "days_dates", "fruits",
            "occupations", "cities", "surnames", "topics", "colors", "years", "categories", "facts",
            "facts_held_out")


def line(**fields) -> str:
    """One task line; a field set to ... is left out."""
    task = {"id": "t", "family": "f", "prompt": "Pick one. Reply with only it.", "targets": ["a", "b"]}
    task.update(fields)
    return json.dumps({k: v for k, v in task.items() if v is not ...})


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_text(text, encoding="utf-8")
    return path


# (file content, expected key fragment (None: no key), expected message fragment)
ERROR_CASES = {
    "invalid-json": ('{"id": "a",', "line 1", "invalid JSON"),
    "invalid-json-line-number": (line(id="a") + "\n\n" + "{oops}\n", "line 3", "invalid JSON"),
    "not-an-object": ("[1, 2]", "line 1", "expected a JSON object, got list"),
    "missing-targets": (line(targets=...), "line 1: targets", "missing required key"),
    "missing-prompt": (line(prompt=...), "line 1: prompt", "missing required key"),
    "unknown-key": (line(target=["a"]), "line 1: target", "unknown key"),
    "id-not-string": (line(id=7), "line 1: id", "expected a non-empty string, got int 7"),
    "empty-family": (line(family=""), "line 1: family", "expected a non-empty string, got str ''"),
    "empty-prompt": (line(prompt="   "), "line 1: prompt", "expected a non-empty string"),
    "targets-not-list": (line(targets="a"), "line 1: targets", "expected a list of strings"),
    "empty-targets": (line(targets=[]), "line 1: targets", "must not be empty"),
    "target-not-string": (line(targets=["a", 3]), "line 1: targets", "item 1: expected a string"),
    "empty-string-target": (line(targets=["a", ""]), "line 1: targets", "item 1: empty target"),
    "blank-target": (line(targets=["  "]), "line 1: targets", "item 0: empty target"),
    "duplicate-target": (line(targets=["x", "y", "x"]), "line 1: targets", "duplicate target 'x'"),
    "duplicate-after-strip": (line(targets=["x", " x "]), "line 1: targets", "duplicate target 'x'"),
    "padded-target": (line(targets=["x", "y "]), "line 1: targets", "surrounding whitespace"),
    "weights-not-list": (line(weights="uniform"), "line 1: weights", "expected null or a list"),
    "weights-length": (line(weights=[1.0]), "line 1: weights", "has 1 values but there are 2 targets"),
    "weight-not-number": (line(weights=["1", 1]), "line 1: weights", "item 0: expected a number"),
    "weight-bool": (line(weights=[True, 1]), "line 1: weights", "item 0: expected a number"),
    "negative-weight": (line(weights=[2, -1]), "line 1: weights", "negative weight"),
    "zero-sum-weights": (line(weights=[0, 0]), "line 1: weights", "sum to zero"),
    "nan-weight": ('{"id": "t", "family": "f", "prompt": "p", "targets": ["a"], "weights": [NaN]}',
                   "line 1: weights", "not a finite number"),
    "infinite-weight": ('{"id": "t", "family": "f", "prompt": "p", "targets": ["a"], "weights": [Infinity]}',
                        "line 1: weights", "not a finite number"),
    "huge-weight": (line(weights=[10**400, 1]), "line 1: weights", "not a finite number"),
    "duplicate-id": (line(id="a") + "\n" + line(id="a") + "\n", "line 2: id",
                     "duplicate task id 'a' (first on line 1)"),
    "empty-file": ("", None, "no tasks"),
    "blank-lines-only": ("\n   \n\n", None, "no tasks"),
}


@pytest.mark.parametrize(("content", "key", "message"), ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_bad_task_file_names_line_and_field(tmp_path, content, key, message):
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as info:
        load_tasks(path)
    err = info.value
    assert err.source == str(path)
    if key is None:
        assert err.key is None
    else:
        assert err.key is not None and key in err.key
    assert message in str(err)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_tasks(tmp_path / "nope.jsonl")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match="directory"):
        load_tasks(tmp_path)


def test_not_utf8(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_tasks(path)


def sample_tasks() -> list[Task]:
    return [
        Task("n", "numbers", "Pick a number. Reply with only the number.", ("1", "2", "3")),
        Task("c", "cities", "Pick a city. Reply with only the city.", ("Lyon, France", "Kyōto, Japan"), (3.0, 1.0)),
        Task("w", "numbers", "Pick one. Reply with only it.", ("x", "y", "z"), (0.1, 0.2, 0.7)),
    ]


def test_round_trip(tmp_path):
    tasks = sample_tasks()
    path = tmp_path / "out" / "tasks.jsonl"
    save_tasks(tasks, path)
    assert load_tasks(path) == tasks
    save_tasks(load_tasks(path), tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_bytes() == path.read_bytes()
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["weights"] is None  # uniform is written as null
    assert "Kyōto, Japan" in path.read_text(encoding="utf-8")  # UTF-8, not \u escapes


def test_uniform_weights_when_null_or_omitted(tmp_path):
    path = write(tmp_path, line(id="a", weights=None) + "\n" + line(id="b", weights=...) + "\n")
    for task in load_tasks(path):
        assert task.weights == (0.5, 0.5)
        assert task.is_uniform
    assert Task("t", "f", "p", ("a", "b", "c", "d")).weights == (0.25,) * 4


def test_weights_are_normalised(tmp_path):
    path = write(tmp_path, line(targets=["a", "b", "c"], weights=[2, 6, 0]))
    (task,) = load_tasks(path)
    assert task.weights == pytest.approx((0.25, 0.75, 0.0))
    assert math.fsum(task.weights) == pytest.approx(1.0)
    assert not task.is_uniform


@pytest.mark.parametrize("k", [1, 2, 10, 457])
def test_entropy_of_uniform_is_log_k(k):
    task = Task("t", "f", "p", tuple(str(i) for i in range(k)))
    assert task.entropy() == pytest.approx(math.log(k))
    assert task.k == k


def test_entropy_of_weighted():
    task = Task("t", "f", "p", ("a", "b", "c"), (1, 1, 2))
    assert task.entropy() == pytest.approx(-(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5)))


def test_is_valid_strips_the_reply_only():
    task = Task("t", "f", "p", ("7", "marine biologist"))
    assert task.is_valid("7") and task.is_valid(" 7\n") and task.is_valid("marine biologist ")
    assert not task.is_valid("7.") and not task.is_valid("{7}") and not task.is_valid("Marine biologist")


@pytest.mark.parametrize("weights", [(1.0,), (-1.0, 2.0), (0.0, 0.0), (math.nan, 1.0)])
def test_task_rejects_bad_weights(weights):
    with pytest.raises(ValueError, match="weights"):
        Task("t", "f", "p", ("a", "b"), weights)


def test_task_rejects_no_targets():
    with pytest.raises(ValueError, match="no targets"):
        Task("t", "f", "p", ())


def test_family_filters(tmp_path):
    path = tmp_path / "tasks.jsonl"
    save_tasks(sample_tasks(), path)
    assert [t.id for t in load_tasks(path, families=["numbers"])] == ["n", "w"]
    assert [t.id for t in load_tasks(path, families="cities")] == ["c"]
    assert [t.id for t in load_tasks(path, exclude_families=["numbers"])] == ["c"]
    assert load_tasks(path, families=["numbers"], exclude_families=["numbers"]) == []
    for kwargs, key in (({"families": ["numbers", "fruit"]}, "families"),
                        ({"exclude_families": ["names"]}, "exclude_families")):
        with pytest.raises(ConfigError, match="the file has: cities, numbers") as info:
            load_tasks(path, **kwargs)
        assert info.value.key == key


# --- the shipped word lists and task suite ---------------------------------------------------

@functools.cache
def read_list(name: str) -> list[str]:
    return (DATA / name).read_text(encoding="utf-8").split("\n")[:-1]


LIST_MINIMA = {
    "first_names_female.txt": 200, "first_names_male.txt": 200, "first_names.txt": 400,
    "last_names.txt": 300, "cities.txt": 250, "occupations.txt": 200, "fruits.txt": 70,
    "topics.txt": 120, "colors.txt": 25, "countries_africa.txt": 54, "countries_asia.txt": 47,
    "countries_europe.txt": 44, "countries_north_america.txt": 23, "countries_oceania.txt": 14,
    "countries_south_america.txt": 12,
}


@pytest.mark.parametrize(("name", "minimum"), LIST_MINIMA.items())
def test_word_list_is_clean(name, minimum):
    text = (DATA / name).read_text(encoding="utf-8")
    assert text.endswith("\n") and not text.endswith("\n\n")
    values = read_list(name)
    assert len(values) >= minimum
    assert len(set(values)) == len(values), "duplicates"
    for value in values:
        assert value and value == value.strip() and not value.startswith("#"), repr(value)


def test_word_lists_agree():
    assert set(read_list("first_names.txt")) == set(read_list("first_names_female.txt")) | set(
        read_list("first_names_male.txt"))
    countries = {c for key in ("africa", "asia", "europe", "north_america", "oceania", "south_america")
                 for c in read_list(f"countries_{key}.txt")}
    assert len(countries) == 197  # 193 UN members + Vatican City, Palestine, Kosovo, Taiwan
    cities = read_list("cities.txt")
    for city in cities:
        name, _, country = city.rpartition(", ")
        assert name and country in countries, city
    assert all(o == o.lower() for o in read_list("occupations.txt"))
    with (DATA / "cities_weighted.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["value", "weight"] and len(rows) >= 60
    assert {r["value"] for r in rows} <= set(cities)
    assert len({r["value"] for r in rows}) == len(rows)
    assert all(0 < float(r["weight"]) < 50 for r in rows)


@functools.cache
def category_members() -> frozenset[str]:
    categories = yaml.safe_load((DATA / "categories.yaml").read_text(encoding="utf-8"))
    return frozenset(m for members in categories.values() for m in members)


def plausible(family: str, target: str) -> bool:
    countries = {c for p in sorted(DATA.glob("countries_*.txt")) for c in read_list(p.name)}
    checks = {
        "numbers": lambda t: t.isdigit() and 1 <= int(t) <= 100,
        "first_names": lambda t: t in read_list("first_names.txt"),
        "countries": lambda t: t in countries,
        "days_dates": lambda t: re.fullmatch(
            r"(Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day|January|February|March|April|May|June|July"
            r"|August|September|October|November|(June ([1-9]|[12]\d|30))|(December ([1-9]|[12]\d|3[01]))"
            r"|December", t) is not None,
        "fruits": lambda t: t in read_list("fruits.txt"),
        "occupations": lambda t: t in read_list("occupations.txt"),
        "cities": lambda t: t in read_list("cities.txt"),
        "surnames": lambda t: t in read_list("last_names.txt"),
        "topics": lambda t: t in read_list("topics.txt"),
        "colors": lambda t: t in read_list("colors.txt") and t.isalpha() and t.islower(),
        "years": lambda t: t.isdigit() and len(t) == 4 and 1700 <= int(t) <= 2020,
        "categories": lambda t: t in category_members() and t.islower(),
        "facts": lambda t: bool(t.strip()),
        "facts_held_out": lambda t: bool(t.strip()),
    }
    return checks[family](target)


def test_shipped_suite():
    tasks = load_tasks(SUITE)
    by_id = {t.id: t for t in tasks}
    assert len(by_id) == len(tasks)
    assert {t.family for t in tasks} == set(FAMILIES)
    assert 100 <= len(tasks) <= 130
    assert not any("capital of France" in t.prompt for t in tasks)  # held out for the integration test
    preserve = (SUITE.parent / "preserve.txt").read_text(encoding="utf-8")
    note = '"What is the capital of France?" is deliberately absent'
    assert "What is the capital of" in preserve and "France" not in preserve.replace(note, "")
    assert sum(t.k for t in tasks) <= 6000
    assert by_id["first_names-any-a"].k >= 400
    assert by_id["first_names-female-a"].k >= 200 and by_id["first_names-male-a"].k >= 200
    assert by_id["numbers-1-10-a"].targets == tuple(str(i) for i in range(1, 11))
    assert by_id["numbers-primes-1-100-a"].k == 25 and by_id["numbers-primes-1-50-a"].k == 15
    assert by_id["days_dates-december-a"].k == 31 and by_id["days_dates-june-a"].k == 30
    weighted = [t for t in tasks if not t.is_uniform]
    assert [t.id for t in weighted] == ["cities-by-population-a"]
    assert weighted[0].weights[weighted[0].targets.index("Tokyo, Japan")] == max(weighted[0].weights)

    paraphrases: dict[str, list[Task]] = {}
    for task in tasks:
        assert "Reply with only" in task.prompt, task.id
        assert "{" not in task.prompt, task.id
        assert re.fullmatch(r"[a-z_]+-[a-z0-9-]+-[a-z]", task.id), task.id
        assert task.id.startswith(task.family + "-")
        bad = [t for t in task.targets if not plausible(task.family, t)]
        assert not bad, (task.id, bad[:5])
        paraphrases.setdefault(task.id.rsplit("-", 1)[0], []).append(task)
    for family in FAMILIES:  # at least two tasks per family
        assert sum(t.family == family for t in tasks) >= 2, family
    # the categories family: one prompt per category, none sharing a member with the
    # shipped adapter's held-out families (fruits, colors)
    held_out = set(read_list("fruits.txt")) | set(read_list("colors.txt"))
    category_tasks = [t for t in tasks if t.family == "categories"]
    assert len(category_tasks) >= 25 and all(8 <= t.k <= 40 for t in category_tasks)
    assert not {y for t in category_tasks for y in t.targets} & held_out
    facts = sorted(t.id.split("-", 1)[1] for t in tasks if t.family.startswith("facts"))
    assert len(facts) == len(set(facts)) == 30  # half trained, half held out, none in both
    for group in paraphrases.values():  # paraphrases of one question share their targets
        assert len({t.targets for t in group}) == 1, [t.id for t in group]
        assert len({t.prompt for t in group}) == len(group), [t.id for t in group]


def test_shipped_suite_is_what_the_build_script_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("build_tasks", SUITE.parent / "build_tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    save_tasks(module.build(), tmp_path / "tasks.jsonl")
    assert (tmp_path / "tasks.jsonl").read_bytes() == SUITE.read_bytes()
