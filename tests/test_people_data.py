"""The committed people data (recipes/data/people/, written by recipes/build_people.py) and the
recipe that reads it: every country has its files, the gender lists are disjoint, the
non-binary lists are the unions, and every path the recipe's templates can render exists."""

from __future__ import annotations

import csv
import functools
import importlib.util
import re
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from synthgen.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
PEOPLE = RECIPES / "data/people"
RECIPE = RECIPES / "biography.yaml"
GENDERS = ("female", "male", "non-binary")
MAX_LINES = 300


def countries() -> list[str]:
    with open(PEOPLE / "countries.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["value", "weight"]
    return [row[0] for row in rows[1:]]


COUNTRIES = countries()


def stem(country: str) -> str:
    return country.replace(" ", "_")


def lines(path: Path) -> list[str]:
    """The file's lines, after checking it is plain UTF-8 text in the house format."""
    assert path.is_file(), f"missing {path.relative_to(REPO)}"
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    assert not text.startswith("\ufeff") and "\r" not in text, path
    assert text.endswith("\n") and "\n\n" not in text, f"{path}: one entry per line, no blank lines"
    items = text.splitlines()
    assert items, f"{path} is empty"
    for item in items:
        assert item == item.strip() and item, f"{path}: {item!r}"
        assert unicodedata.is_normalized("NFC", item), f"{path}: {item!r} is not NFC"
    assert len(items) == len(set(items)), f"{path}: duplicates"
    assert items == sorted(items), f"{path}: not sorted"
    return items


def test_countries_csv():
    assert len(COUNTRIES) >= 40
    assert len(set(COUNTRIES)) == len(COUNTRIES)
    for name in COUNTRIES:  # display names that map one-to-one onto file stems
        assert re.fullmatch(r"[A-Z][a-z]+(?: [A-Z][a-z]+)*", name), name
    with open(PEOPLE / "countries.csv", encoding="utf-8", newline="") as fh:
        weights = {row["weight"] for row in csv.DictReader(fh)}
    assert weights == {"1"}, "uniform weights"


@pytest.mark.parametrize("country", COUNTRIES)
def test_first_names(country):
    names = {g: lines(PEOPLE / "first_names" / f"{stem(country)}_{g}.txt") for g in GENDERS}
    assert not set(names["female"]) & set(names["male"]), "a name in both gender lists"
    assert names["non-binary"] == sorted(set(names["female"]) | set(names["male"]))
    assert all(len(v) <= MAX_LINES for v in names.values())


@pytest.mark.parametrize("country", COUNTRIES)
def test_last_names(country):
    names = {g: lines(PEOPLE / "last_names" / f"{stem(country)}_{g}.txt") for g in GENDERS}
    assert names["non-binary"] == sorted(set(names["female"]) | set(names["male"]))
    assert all(len(v) <= MAX_LINES for v in names.values())


@pytest.mark.parametrize("country", COUNTRIES)
def test_cities(country):
    assert 10 <= len(lines(PEOPLE / "cities" / f"{stem(country)}.txt")) <= MAX_LINES


def test_no_stray_files():
    expected = {Path("countries.csv"), Path("README.md"), Path("dropped.tsv")}
    for country in COUNTRIES:
        expected |= {Path(kind) / f"{stem(country)}_{g}.txt" for kind in ("first_names", "last_names")
                     for g in GENDERS}
        expected.add(Path("cities") / f"{stem(country)}.txt")
    found = {p.relative_to(PEOPLE) for p in PEOPLE.rglob("*") if p.is_file()}
    assert found == expected


def test_dropped_log_names_known_countries():
    with open(PEOPLE / "dropped.tsv", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert rows[0] == ["country", "list", "name", "reason"]
    assert {row[0] for row in rows[1:]} <= set(COUNTRIES)


def test_recipe_paths_render_to_existing_files():
    """Render each options_file of the recipe for every (country, gender) the earlier fields can
    take, with the sandbox's built-in filters only, and find the file."""
    fields = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))["fields"]
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    assert fields["gender"]["options"] == list(GENDERS)
    assert fields["birth_country"]["options_file"] == "data/people/countries.csv"
    templated = {name: spec["options_file"] for name, spec in fields.items() if "{{" in spec.get("options_file", "")}
    assert set(templated) == {"birth_place", "first_name", "last_name"}
    for name, path in templated.items():
        rendered = {env.from_string(path).render(birth_country=c, gender=g) for c in COUNTRIES for g in GENDERS}
        for rel in rendered:
            assert (RECIPES / rel).is_file(), f"{name}: {rel}"
    for spec in fields.values():
        assert (REPO / "templates" / spec["template"]).is_file()


def test_countries_csv_loads_as_options(tmp_path):
    """countries.csv and a rendered per-country file read as choice options by synthgen itself."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "t", "fields": {
        "country": {"kind": "choice", "template_inline": "Pick. Reply with only the country.",
                    "options_file": str(PEOPLE / "countries.csv")},
        "name": {"kind": "choice", "template_inline": "Pick. Reply with only the name.",
                 "options_file": str(PEOPLE / "first_names/United_Kingdom_non-binary.txt")},
    }}), encoding="utf-8")
    loaded = load_recipe(recipe, trust_paths=True)
    assert list(loaded.fields["country"].options) == COUNTRIES
    assert loaded.fields["country"].weights is not None and len(set(loaded.fields["country"].weights)) == 1
    assert len(loaded.fields["name"].options) > 100


@functools.cache
def _build_script():
    """recipes/build_people.py as a module: its conversions import no build-time package."""
    spec = importlib.util.spec_from_file_location("build_people", RECIPES / "build_people.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("locale", "native", "latin"), [
    ("ru_RU", "Наталья", "Natalya"), ("ru_RU", "Евгений", "Yevgeniy"), ("ru_RU", "Алексеев", "Alekseyev"),
    ("ru_RU", "Фёдор", "Fyodor"),
    ("uk_UA", "Тетяна", "Tetiana"), ("uk_UA", "Юрій", "Yurii"), ("uk_UA", "Ярослава", "Yaroslava"),
    ("uk_UA", "Згурський", "Zghurskyi"),
    ("el_GR", "Ευαγγελία", "Evangelia"), ("el_GR", "Ευστάθιος", "Efstathios"), ("el_GR", "Μπακογιάννη", "Bakogianni"),
    ("el_GR", "Παπαδοπούλου", "Papadopoulou"), ("el_GR", "Άγγελος", "Angelos"),
    ("ka_GE", "ნინო", "Nino"), ("ka_GE", "ჭავჭავაძე", "Chavchavadze"),
    ("hy_AM", "Երևան", "Yerevan"), ("hy_AM", "Հովհաննես", "Hovhannes"), ("hy_AM", "Ոսկան", "Voskan"),
    ("hy_AM", "Տեր-Գևորգյան", "Ter-Gevorgyan"),
    ("zh_TW", "SHU-FEN", "Shu-fen"),
])
def test_transliteration(locale, native, latin):
    assert _build_script().to_latin(locale, native) == latin


def test_script_countries_match_the_committed_list():
    build = _build_script()
    assert [c.name for c in build.COUNTRIES] == COUNTRIES
    assert [build.slug(c) for c in COUNTRIES] == [stem(c) for c in COUNTRIES]
    assert [build.feminine_polish(n) for n in ("Kowalski", "Zawadzki", "Nowak")] == ["Kowalska", "Zawadzka", "Nowak"]
