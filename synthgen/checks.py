"""Checks of a text field against the record it is written from.

A ``text`` field may declare, in the recipe:

* ``must_mention: [f, ...]``: the value of each named field appears in the
  reply (:func:`mentions`); one check per field, named ``mentions_<f>``;
* ``consistent_year: f``: the reply states no four-digit year other than the
  integer field ``f``'s value as the birth year (:func:`contradicts_year`); one
  check named ``consistent_<f>``;
* ``consistent_nationality: {field: f, demonyms_file: FILE}``: the reply calls
  the person by no nationality word (demonym) of another value of ``f`` than the
  record's (:func:`contradicts_nationality`); ``FILE`` is a CSV ``value,demonym``
  (one row per word form) relative to the recipe; one check named
  ``nationality_<f>``.

Every named field must be filled before the text field: it becomes one of the
field's dependencies (:attr:`synthgen.recipe.FieldSpec.depends_on`), and
:func:`check_references` refuses, at load time, an unknown field or one that
depends on the text field. A sample that fails a check is invalid like one that
fails ``pattern``: it is retried, and the record is dropped when every try
fails. The run counts, per field and check, the samples that passed
(:class:`synthgen.fill.FieldStats`); the report shows each check's pass rate.

Matching rules (string checks, not a judge):

* text is compared case-insensitively and without accents (NFKD, combining
  marks dropped, ``casefold``), as words: maximal runs of letters and digits,
  so punctuation, hyphens and possessives ("Anna's") separate words;
* a value's words must appear consecutively in the text ("software engineer");
* a value word of fewer than 4 letters matches only itself; a longer one
  matches any text word made of its stem (the word less a final ``e`` or ``y``
  when it has 5 or more letters) followed by one of :data:`ENDINGS`: "engineer"
  matches "engineers" and "engineering", "nurse" matches "nursing", "secretary"
  matches "secretaries";
* a value with a comma is a place ("Lyon, France") and matches on its part
  before the first comma (the city);
* an integer (or a string of digits) matches on its digits, not inside a longer
  run of digits ("1950" in "1950s", not in "19501").

A birth year is *stated* (:func:`contradicts_year`) by the first four-digit
year within the same sentence after "born", "year/date of birth",
"birth year/date" or "b." ("born in Paris, France, in 1962", "(b. 1962)"),
or by a life span in parentheses right after the name that opens the text
("Jane Doe (1962–2010)", "Jane Doe (1962–": only capitalised words before
it). A decade ("born in the 1950s") agrees with every year of it. Not a
statement about the person: "born" whose subject is a relative ("her son was
born in 1980"), a hyphenated "-born" ("German-born"), and years of other events
("in 1975 she moved", a career span "Siemens (1975–1980)").

A nationality word matches as whole words, case- and accent-insensitively, also
in the plural ("Brazilians"). It does not count after a region word ("South
American", "Latin American") or where it is part of another value of the record
(an occupation "Spanish teacher", a place "Indian Wells"). A language named like
a nationality ("fluent in French") counts: the check cannot tell them apart.

Known blind spots: synonyms and paraphrases fail a mention ("doctor" for
physician); a stem can match a related but different word ("pharmacy" matches
"pharmacist"); a mention says the words are there, not that the text is true to
them ("she never became a nurse" mentions nurse); and the year check reads only
the phrasings above.

Pure functions; imports neither torch nor the recipe module.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from synthgen._validate import show
from synthgen.errors import ConfigError
from synthgen.prompts import inside

__all__ = ["ENDINGS", "NationalityCheck", "TextChecks", "check_references", "contradicts_nationality",
           "contradicts_year", "mention_kind", "mentions", "parse_checks"]

#: What may follow a value word's stem in a matching text word (inflection and common derivations).
ENDINGS = frozenset({"", "s", "es", "e", "y", "ed", "d", "ing", "ings", "er", "ers", "ry", "ies", "ied",
                     "ist", "ists", "ism", "al", "ial", "ic", "ics", "ure", "ural"})
SHORT_WORD = 4  # value words shorter than this match only themselves
STEM_MIN = 5  # value words at least this long lose a final "e" or "y" before the endings
YEAR_WINDOW = 80  # characters after a birth cue searched for the stated year
NAME_WORDS = 6  # the most words before a life span that opens the text ("Dr. Jane Mary Doe (1950–")
_WORD = re.compile(r"[^\W_]+")
_DIGITS = re.compile(r"[+-]?[0-9]+")
_YEAR = re.compile(r"(?<![\d])([12]\d{3})(?!\d)('?s\b)?")
_BIRTH_CUE = re.compile(r"(?<![\w-])born\b|\b(?:year|date) of birth\b|\bbirth[ -]?(?:year|date)\b|\bb\.(?=\s*\d)",
                        re.IGNORECASE)
_LIFESPAN = re.compile(r"\(\s*([12]\d{3})\s*(?:[-–—]|to\b)", re.IGNORECASE)
_RELATIVE = re.compile(r"\b(?:sons?|daughters?|child(?:ren)?|bab(?:y|ies)|twins?|grand(?:son|daughter|child)\w*"
                       r"|brothers?|sisters?|siblings?|nephews?|nieces?|kids?)\b(?!\s+of\b)", re.IGNORECASE)
_SUBJECT = re.compile(r"\b(?:she|he|they|i|we)\b", re.IGNORECASE)
_STOP = re.compile(r"[.!?;](?=\s|$)|\n")
_ABBREVIATIONS = frozenset({"st", "mt", "dr", "mr", "mrs", "ms", "jr", "sr", "ft", "prof", "no", "vs", "b", "c",
                            "ca"})


# ------------------------------------------------------------------ mentions
def _fold(text: str) -> str:
    """Case- and accent-insensitive form of ``text``."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def _words(text: str) -> list[str]:
    return _WORD.findall(_fold(text))


def _word_matches(value_word: str, text_word: str) -> bool:
    if text_word == value_word:
        return True
    if len(value_word) < SHORT_WORD:
        return False
    stem = value_word[:-1] if len(value_word) >= STEM_MIN and value_word[-1] in "ey" else value_word
    return text_word.startswith(stem) and text_word[len(stem):] in ENDINGS


def mention_kind(value: object) -> str:
    """How a value is looked for: ``number`` (an int or a string of digits: its digits), ``place``
    (a string with a comma, "City, Country": its city) or ``words`` (the value's words)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return "number"
    text = str(value).strip()
    if _DIGITS.fullmatch(text):
        return "number"
    return "place" if "," in text else "words"


def mentions(text: str, value: object, kind: str | None = None) -> bool:
    """Whether ``text`` mentions ``value`` (see the module docstring for the rules).

    ``kind``: ``number``, ``place`` or ``words``; None = :func:`mention_kind` of the value.
    """
    kind = kind or mention_kind(value)
    if kind not in ("number", "place", "words"):
        raise ValueError(f"kind must be 'number', 'place' or 'words', got {kind!r}")
    if kind == "number":
        digits = str(value).strip().lstrip("+-")
        return bool(digits) and re.search(rf"(?<!\d){re.escape(digits)}(?!\d)", text) is not None
    wanted = str(value).split(",")[0] if kind == "place" else str(value)
    words = _words(wanted)
    if not words:  # a value without letters or digits: compared as folded text
        return bool(wanted.strip()) and _fold(wanted.strip()) in _fold(text)
    found = _words(text)
    return any(all(_word_matches(w, found[i + j]) for j, w in enumerate(words))
               for i in range(len(found) - len(words) + 1))


# ---------------------------------------------------------------- birth year
def _sentence_end(text: str, start: int) -> int:
    """Index of the end of the sentence (or clause ending in ``;``) that ``start`` is in;
    a full stop after an abbreviation or an initial ("St. Louis", "J. Smith") ends nothing."""
    for match in _STOP.finditer(text, start):
        if match.group() == ".":
            before = re.search(r"(\w+)$", text[:match.start()])
            if before and (len(before.group(1)) == 1 or before.group(1).casefold() in _ABBREVIATIONS):
                continue
        return match.start()
    return len(text)


def _sentence_start(text: str, end: int) -> int:
    start = 0
    while (stop := _sentence_end(text, start)) < end:
        start = stop + 1
    return start


def _disagrees(match: re.Match, year: int) -> bool:
    stated = int(match.group(1))
    if match.group(2) and stated % 10 == 0:  # a decade: "the 1950s"
        return stated // 10 != year // 10
    return stated != year


def _about_a_relative(text: str, cue_start: int) -> bool:
    """Whether the "born" at ``cue_start`` has a relative as its subject ("her son was born"):
    a relative noun earlier in the sentence with no subject pronoun after it."""
    before = text[_sentence_start(text, cue_start):cue_start]
    relatives = list(_RELATIVE.finditer(before))
    return bool(relatives) and not _SUBJECT.search(before, relatives[-1].end())


def stated_birth_years(text: str) -> list[re.Match]:
    """The year matches ``text`` states as the person's birth year (module docstring)."""
    stated = []
    for cue in _BIRTH_CUE.finditer(text):
        if cue.group().casefold() == "born" and _about_a_relative(text, cue.start()):
            continue
        end = min(_sentence_end(text, cue.end()), cue.end() + YEAR_WINDOW)
        year = _YEAR.search(text, cue.end(), end)
        if year:
            stated.append(year)
    span = _LIFESPAN.search(text)
    if span and _opens_with_a_name(text[:span.start()]):
        stated.append(_YEAR.match(text, span.start(1)))
    return stated


def _opens_with_a_name(head: str) -> bool:
    """Whether ``head`` (the text before a parenthesis) is only a name: 1 to
    ``NAME_WORDS`` capitalised words ("Dr. Jane Doe"), no digits, no sentence end."""
    words = head.split()
    return (0 < len(words) <= NAME_WORDS and not any(ch.isdigit() for ch in head)
            and all(w[0].isupper() or not w[0].isalpha() for w in words) and _sentence_end(head, 0) == len(head))


def contradicts_year(text: str, year: int) -> bool:
    """Whether ``text`` states a birth year other than ``year`` (module docstring)."""
    return any(_disagrees(match, int(year)) for match in stated_birth_years(text))


# --------------------------------------------------------------- nationality
_REGION_WORDS = frozenset({"north", "south", "east", "west", "central", "latin", "northern", "southern",
                           "eastern", "western"})


def contradicts_nationality(text: str, value: object, demonyms: Mapping[str, tuple[str, ...]],
                            record: Mapping[str, object] | None = None) -> bool:
    """Whether ``text`` uses a nationality word of another key of ``demonyms`` than ``value``
    (module docstring); words that are part of another value of ``record`` do not count."""
    found = _words(text)
    own = {tuple(_words(d)) for d in demonyms.get(str(value), ())}
    exempt = [_words(str(v)) for k, v in (record or {}).items() if isinstance(v, str) and v != text]
    for key, forms in demonyms.items():
        if key == str(value):
            continue
        for form in forms:
            words = tuple(_words(form))
            if not words or words in own or any(_contains(values, words) for values in exempt):
                continue
            for i in range(len(found) - len(words) + 1):
                last = found[i + len(words) - 1]
                if (found[i:i + len(words) - 1] == list(words[:-1]) and last in (words[-1], words[-1] + "s")
                        and not (i and found[i - 1] in _REGION_WORDS)):
                    return True
    return False


def _contains(words: list[str], part: tuple[str, ...]) -> bool:
    return any(tuple(words[i:i + len(part)]) == part for i in range(len(words) - len(part) + 1))


@dataclass(frozen=True)
class NationalityCheck:
    """``consistent_nationality``: the field holding the country, and each of its values' demonyms."""

    field: str
    demonyms: Mapping[str, tuple[str, ...]]
    file: Path


def _read_demonyms(src: Path, key: str, value: object, trust_paths: bool) -> NationalityCheck:
    if not isinstance(value, Mapping) or set(value) != {"field", "demonyms_file"}:
        raise ConfigError(src, key, f"expected a mapping with keys 'field' and 'demonyms_file', got {show(value)}")
    name, file = value["field"], value["demonyms_file"]
    if not isinstance(name, str) or not name:
        raise ConfigError(src, f"{key}.field", f"expected a field name, got {show(name)}")
    if not isinstance(file, str) or not file:
        raise ConfigError(src, f"{key}.demonyms_file", f"expected a CSV file path, got {show(file)}")
    path = src.parent / file
    if not trust_paths and not inside(path, [src.parent]):
        raise ConfigError(src, f"{key}.demonyms_file", f"{file}: {path.resolve()} is outside the recipe's folder "
                                                       f"{src.parent}; pass --trust-paths to allow it")
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(src, f"{key}.demonyms_file", f"cannot read {path}: {exc}") from None
    if not rows or rows[0] != ["value", "demonym"] or len(rows) < 2:
        raise ConfigError(src, f"{key}.demonyms_file", f"{path}: expected a header row 'value,demonym' and rows")
    demonyms: dict[str, tuple[str, ...]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ConfigError(src, f"{key}.demonyms_file", f"{path} line {line}: expected value,demonym, got {row}")
        demonyms[row[0].strip()] = (*demonyms.get(row[0].strip(), ()), row[1].strip())
    return NationalityCheck(name, demonyms, path)


# ------------------------------------------------------------------- checks
@dataclass(frozen=True)
class TextChecks:
    """The checks of one text field: the fields it must mention, the birth-year field and the
    nationality check."""

    must_mention: tuple[str, ...] = ()
    consistent_year: str | None = None
    nationality: NationalityCheck | None = None

    @property
    def fields(self) -> frozenset[str]:
        """The fields the checks read (dependencies of the text field)."""
        named = set(self.must_mention) | ({self.consistent_year} if self.consistent_year else set())
        return frozenset(named | ({self.nationality.field} if self.nationality else set()))

    @property
    def files(self) -> tuple[Path, ...]:
        """The files the checks read (part of the run's fingerprint)."""
        return (self.nationality.file,) if self.nationality else ()

    @property
    def names(self) -> tuple[str, ...]:
        """The check names, in the recipe's order: ``mentions_<f>``..., ``consistent_<f>``, ``nationality_<f>``."""
        year = (f"consistent_{self.consistent_year}",) if self.consistent_year else ()
        nationality = (f"nationality_{self.nationality.field}",) if self.nationality else ()
        return tuple(f"mentions_{f}" for f in self.must_mention) + year + nationality

    def results(self, text: str, record: Mapping[str, object]) -> dict[str, bool]:
        """Check name -> whether ``text`` passes it, for the record it was written from."""
        out = {f"mentions_{f}": mentions(text, record[f]) for f in self.must_mention}
        if self.consistent_year:
            out[f"consistent_{self.consistent_year}"] = not contradicts_year(text, record[self.consistent_year])
        if self.nationality:
            field, demonyms = self.nationality.field, self.nationality.demonyms
            out[f"nationality_{field}"] = not contradicts_nationality(text, record[field], demonyms, record)
        return out

    def failed(self, text: str, record: Mapping[str, object]) -> tuple[str, ...]:
        """The names of the checks ``text`` fails."""
        return tuple(name for name, ok in self.results(text, record).items() if not ok)


def parse_checks(src: Path, key: str, raw: Mapping, trust_paths: bool = False) -> TextChecks | None:
    """The checks a text field's recipe keys declare (``must_mention``, ``consistent_year``,
    ``consistent_nationality``), or None without any. Whether the named fields exist is
    :func:`check_references`' job."""
    if not {"must_mention", "consistent_year", "consistent_nationality"} & set(raw):
        return None
    names = raw.get("must_mention", [])
    mkey = f"{key}.must_mention"
    if not isinstance(names, list) or ("must_mention" in raw and not names):
        raise ConfigError(src, mkey, f"expected a non-empty list of field names, got {show(names)}")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise ConfigError(src, f"{mkey}[{i}]", f"expected a field name, got {show(name)}")
        if name in names[:i]:
            raise ConfigError(src, f"{mkey}[{i}]", f"'{name}' is listed twice")
    year = raw.get("consistent_year")
    if year is not None and (not isinstance(year, str) or not year):
        raise ConfigError(src, f"{key}.consistent_year", f"expected a field name, got {show(year)}")
    nationality = (_read_demonyms(src, f"{key}.consistent_nationality", raw["consistent_nationality"], trust_paths)
                   if "consistent_nationality" in raw else None)
    return TextChecks(tuple(names), year, nationality)


def ancestors(fields: Mapping, name: str) -> set[str]:
    """Every field ``name`` depends on, directly or not (unknown names skipped; cycles stop).

    ``fields`` maps names to objects with ``depends_on`` (FieldSpecs, before or after ordering)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for dep in getattr(fields.get(todo.pop()), "depends_on", ()):
            if dep in fields and dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def check_references(src: Path, fields: Mapping) -> None:
    """Every field a text field's checks or ``reply_prefix`` name exists and can be filled before it
    (it does not depend on the text field); ``consistent_year`` names an integer field.

    ``fields``: field name -> :class:`synthgen.recipe.FieldSpec`. Raises a ConfigError naming the key.
    """
    for name, spec in fields.items():
        checks, prefix = getattr(spec, "checks", None), getattr(spec, "reply_prefix", None)
        named: list[tuple[str, str]] = []
        if checks is not None:
            named += [(f"fields.{name}.must_mention[{i}]", f) for i, f in enumerate(checks.must_mention)]
            if checks.consistent_year:
                named.append((f"fields.{name}.consistent_year", checks.consistent_year))
            if checks.nationality:
                named.append((f"fields.{name}.consistent_nationality.field", checks.nationality.field))
        if prefix is not None:
            named += [(prefix.key, f) for f in sorted(prefix.variables)]
        for key, other in named:
            if other not in fields:
                raise ConfigError(src, key, f"unknown field '{other}' (known fields: {', '.join(fields)})")
            if other == name:
                raise ConfigError(src, key, f"field '{name}' cannot check or start with itself")
            if name in ancestors(fields, other):
                raise ConfigError(src, key, f"field '{other}' is filled after '{name}' (it depends on it); "
                                            "only a field filled before can be named")
        year = checks.consistent_year if checks is not None else None
        if year and not fields[year].is_integer:
            raise ConfigError(src, f"fields.{name}.consistent_year",
                              f"'{year}' is a {fields[year].kind} field; expected an integer field (a year)")
