"""The ``consistent_nationality`` check: the words it catches, its recipe key, its file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from synthgen.checks import contradicts_nationality
from synthgen.errors import ConfigError
from synthgen.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
DEMONYMS = {"Argentina": ("Argentinean", "Argentine"), "Brazil": ("Brazilian",), "United States": ("American",),
            "United Kingdom": ("British",), "Ireland": ("Irish",), "Spain": ("Spanish",),
            "New Zealand": ("New Zealander",)}

CASES = [
    # (text, the record's country, other record values, contradicts)
    ("Ana Ruiz (born 1950 in Rosario, Argentina) is a renowned Brazilian architect.", "Argentina", {}, True),
    ("Ana Ruiz (born 1950 in Rosario, Argentina) is a renowned Argentine architect.", "Argentina", {}, False),
    ("She is one of the best known South American writers.", "Argentina", {}, False),
    ("He is a British statistician.", "Ireland", {}, True),
    ("He is an Irish statistician who works with Americans.", "Ireland", {}, True),
    ("He is an IRISH statistician.", "Ireland", {}, False),
    ("She is a Spanish teacher in Rosario.", "Argentina", {"occupation": "Spanish teacher"}, False),
    ("She is a Spanish teacher in Rosario.", "Argentina", {"occupation": "teacher"}, True),
    ("A New Zealander by birth, he farms.", "Ireland", {}, True),
    ("He lives in New Zealand.", "Ireland", {}, False),  # a country named is no nationality
    ("He is an Ireland-born writer.", "Ireland", {}, False),
    ("", "Ireland", {}, False),
]


@pytest.mark.parametrize("text, country, record, expected", CASES)
def test_contradicts_nationality(text, country, record, expected):
    assert contradicts_nationality(text, country, DEMONYMS, record) is expected


def recipe(tmp_path: Path, check: str, demonyms: str | None = "value,demonym\nSpain,Spanish\nFrance,French\n") -> Path:
    if demonyms is not None:
        (tmp_path / "demonyms.csv").write_text(demonyms, encoding="utf-8")
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent("""\
        name: t
        fields:
          country: {kind: sample, options: [Spain, France]}
          bio:
            kind: text
            template_inline: "Write about a person from {{ country }}."
        """) + textwrap.indent(check, "    "), encoding="utf-8")
    return path


def test_the_check_is_named_after_its_field_and_reads_the_file(tmp_path):
    r = load_recipe(recipe(tmp_path, "consistent_nationality: {field: country, demonyms_file: demonyms.csv}\n"))
    checks = r.fields["bio"].checks
    assert checks.names == ("nationality_country",)
    assert checks.fields == {"country"}
    assert checks.failed("A French poet.", {"country": "Spain"}) == ("nationality_country",)
    assert checks.failed("A Spanish poet.", {"country": "Spain"}) == ()
    assert tmp_path / "demonyms.csv" in r.source_files


def test_an_edited_demonyms_file_changes_the_fingerprint(tmp_path):
    path = recipe(tmp_path, "consistent_nationality: {field: country, demonyms_file: demonyms.csv}\n")
    before = load_recipe(path).digest()
    (tmp_path / "demonyms.csv").write_text("value,demonym\nSpain,Spanish\nFrance,Gallic\n", encoding="utf-8")
    assert load_recipe(path).digest() != before


BAD = [
    ("consistent_nationality: country\n", "value,demonym\nSpain,Spanish\n", "consistent_nationality",
     "mapping with keys"),
    ("consistent_nationality: {field: country}\n", "value,demonym\nSpain,Spanish\n", "consistent_nationality",
     "mapping with keys"),
    ("consistent_nationality: {field: nope, demonyms_file: demonyms.csv}\n", "value,demonym\nSpain,Spanish\n",
     "consistent_nationality.field", "unknown field 'nope'"),
    ("consistent_nationality: {field: country, demonyms_file: missing.csv}\n", None,
     "consistent_nationality.demonyms_file", "cannot read"),
    ("consistent_nationality: {field: country, demonyms_file: demonyms.csv}\n", "country,word\nSpain,Spanish\n",
     "consistent_nationality.demonyms_file", "header row 'value,demonym'"),
    ("consistent_nationality: {field: country, demonyms_file: demonyms.csv}\n", "value,demonym\nSpain\n",
     "consistent_nationality.demonyms_file", "line 2"),
    ("consistent_nationality: {field: country, demonyms_file: ../demonyms.csv}\n", None,
     "consistent_nationality.demonyms_file", "outside the recipe's folder"),
]


@pytest.mark.parametrize("check, demonyms, key, fragment", BAD)
def test_bad_nationality_keys_are_one_line_errors(tmp_path, check, demonyms, key, fragment):
    (tmp_path.parent / "demonyms.csv").write_text("value,demonym\nSpain,Spanish\n", encoding="utf-8")
    path = recipe(tmp_path, check, demonyms)
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: fields.bio.{key}"), message
    assert fragment in message


def test_the_shipped_biography_checks_the_nationality_of_every_country():
    recipe_ = load_recipe(ROOT / "recipes/biography.yaml")
    check = recipe_.fields["biography"].checks.nationality
    assert check.field == "birth_country"
    assert set(recipe_.fields["birth_country"].options) <= set(check.demonyms)
