"""Quality guard for biographies: does the text agree with the record it was written from?

Diversity must not cost coherence. A biography is written from its record's
attributes (name, occupation, ...); when those attributes are rare or odd, a
small model may drop them or write about something else. This module checks,
per record, two plain string facts about the ``biography`` text:

``mentions_name``
    Both ``first_name`` and ``last_name`` occur in the text as whole words,
    case-insensitive (``casefold``). "Whole word" means not preceded or followed
    by a word character, so "Ann" does not match inside "Anna", while "Emily's"
    and "(Emily)" do match. Inner whitespace of a multi-word name ("van den
    Berg") matches any run of whitespace.

``fits_occupation``
    The occupation's **head noun** (its last word: "engineer" for "software
    engineer", "nurse" for "nurse") occurs as a whole word, optionally with a
    plural "s"/"es"; or, when removing one agent suffix (``AGENT_SUFFIXES``:
    -ist, -ian, -ant, -ent, -er, -or, -ive, -ary) from the head noun leaves a
    stem of at least ``MIN_STEM`` (5) letters, a word that *starts* with that
    stem occurs ("photograph…" for photographer: "photography"; "teach…" for
    teacher: "teaching"; "account…" for accountant: "accounting").

``occupation_exact`` (reported, not part of the guard)
    The whole occupation phrase occurs as whole words, optionally plural — the
    strict variant ("software engineer", not just "engineer").

``ok`` = ``mentions_name and fits_occupation``. A missing or empty biography
fails every check.

``name_fits_gender`` (a separate, attribute-only check; no text needed)
    For a female or male record, whether its first name is in that gender's
    name list (the recipe's ``first_names_female.txt`` / ``first_names_male.txt``,
    which partition ``first_names.txt``); undecided (``None``) for other
    genders and names in neither list. It catches a coherence cost that the text
    check cannot: a first name drawn without regard to the gender the prompt
    asked for. Blind spot: unisex names (Avery, Jordan) sit in one list only.

Known blind spots (this is a string check, not a judge):

* synonyms and paraphrases fail: "doctor" for physician, "she treated
  patients" for nurse, "drives a cab" for taxi driver; short stems are not
  tried ("driv…", "farm…", "writ…" would match "drive", "farmland", "written"),
  so "driving" does not confirm driver;
* the head noun is lenient for multi-word jobs: a text calling a *software*
  engineer a *civil* engineer passes (``occupation_exact`` catches that);
* stems can match unrelated words: "physic…" (physician) matches "physics",
  "engine…" (engineer) matches "engine";
* it checks that the words are there, not that the text is true to them: "she
  never wanted to be a nurse" passes, and so does a text that names the person
  but is otherwise incoherent;
* the biography prompt itself contains the name and occupation, so a model that
  copies the prompt passes. The check measures whether the writer *kept* the
  record's attributes, which is the failure diversity could cause (rare names
  and jobs dropped or replaced), not the quality of the prose.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

__all__ = ["AGENT_SUFFIXES", "MIN_STEM", "biography_check", "name_fits_gender", "name_gender_rate",
           "occupation_stem", "quality_rate"]

AGENT_SUFFIXES = ("ist", "ian", "ant", "ent", "ive", "ary", "er", "or")  # longest first
MIN_STEM = 5


def _phrase(words: str) -> str:
    """Regex for a phrase: words escaped, inner whitespace = any whitespace run."""
    return r"\s+".join(re.escape(w) for w in words.split())


def _has_word(text: str, phrase: str, plural: bool = False) -> bool:
    if not phrase.strip():
        return False
    tail = r"(?:s|es)?" if plural else ""
    return re.search(rf"(?<!\w){_phrase(phrase)}{tail}(?!\w)", text) is not None


def occupation_stem(occupation: str) -> str | None:
    """The head noun minus one agent suffix, if at least ``MIN_STEM`` letters remain; else None."""
    words = occupation.casefold().split()
    if not words:
        return None
    head = words[-1]
    for suffix in AGENT_SUFFIXES:
        if head.endswith(suffix) and len(head) - len(suffix) >= MIN_STEM:
            return head[: -len(suffix)]
    return None


def biography_check(record: Mapping[str, Any], text_field: str = "biography") -> dict[str, bool]:
    """Per-record checks: ``mentions_name``, ``fits_occupation``, ``occupation_exact``, ``ok``."""
    text = record.get(text_field)
    text = text.casefold() if isinstance(text, str) else ""
    first = str(record.get("first_name") or "").casefold()
    last = str(record.get("last_name") or "").casefold()
    occupation = " ".join(str(record.get("occupation") or "").casefold().split())
    mentions_name = bool(text) and _has_word(text, first) and _has_word(text, last)
    head = occupation.split()[-1] if occupation else ""
    stem = occupation_stem(occupation)
    fits = bool(text) and (_has_word(text, head, plural=True)
                           or (stem is not None and re.search(rf"(?<!\w){re.escape(stem)}", text) is not None))
    exact = bool(text) and _has_word(text, occupation, plural=True)
    return {"mentions_name": mentions_name, "fits_occupation": fits, "occupation_exact": exact,
            "ok": mentions_name and fits}


def quality_rate(records: Iterable[Mapping[str, Any]], text_field: str = "biography") -> dict[str, Any]:
    """Share of records passing each check (``None`` rates for no records), with ``n``."""
    checks = [biography_check(r, text_field) for r in records]
    n = len(checks)
    keys = ("mentions_name", "fits_occupation", "occupation_exact", "ok")
    return {"n": n, **{k: (sum(c[k] for c in checks) / n if n else None) for k in keys}}


def name_fits_gender(record: Mapping[str, Any], names_by_gender: Mapping[str, Collection[str]]) -> bool | None:
    """True / False when ``record['gender']`` has a name list and the first name is in some
    list (True: its own gender's); None (undecided) otherwise. Case-insensitive."""
    lists = {g.casefold(): {n.casefold() for n in names} for g, names in names_by_gender.items()}
    gender = str(record.get("gender") or "").casefold()
    name = str(record.get("first_name") or "").casefold()
    if gender not in lists or not any(name in names for names in lists.values()):
        return None
    return name in lists[gender]


def name_gender_rate(records: Iterable[Mapping[str, Any]], names_by_gender: Mapping[str, Collection[str]]
                     ) -> dict[str, Any]:
    """Share of decided records whose first name fits their gender, with ``n`` decided records."""
    verdicts = [v for v in (name_fits_gender(r, names_by_gender) for r in records) if v is not None]
    return {"n": len(verdicts), "rate": sum(verdicts) / len(verdicts) if verdicts else None}
