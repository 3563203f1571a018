"""Open fields (``kind: open``): short attributes with no closed list of values.

An open field (a first name, a birth place, an occupation, a topic) is generated
freely by the diffuse model: sampled (the diffuse adapter on by default),
validated and retried like a text field, but short, so it is reported like a
category (unique values, top values, coherence). What it may hold:

* ``seed_values`` (inline) or ``seed_values_file``: *examples*, never a closed
  set. ``synthgen train --from-recipe`` trains the field on them with the
  paper's early stopping, and the report counts the values outside them as
  *novel*;
* ``reference_file``: the values judged valid *in the report only* (validity
  and novelty); generation never reads it;
* ``max_words``, ``pattern`` (the whole value must match), ``reject`` /
  ``reject_file`` (values refused, compared case-insensitively): the checks a
  reply must pass, or be retried; ``lowercase`` lower-cases every value.

A value file may be a template over earlier closed fields, as a conditional
``options_file`` is (``data/names/{{ country }}_{{ gender }}.txt``): each record
then has its own seed and reference set (:class:`ValueSets`), resolved at load
time (:func:`resolve_open_fields`). A reply is normalised before the checks
(:func:`normalise_reply`): first line, whitespace collapsed, matching quotes
or emphasis around it and a final full stop dropped.

Pure code; imports neither torch nor the recipe module.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from synthgen._validate import boolean, number, show, string
from synthgen.errors import ConfigError, SynthgenError
from synthgen.option_sets import OptionSet, compile_options_path, is_templated, read_path_sets
from synthgen.prompts import PromptTemplate

if TYPE_CHECKING:
    from synthgen.fields import FieldSpec

log = logging.getLogger(__name__)

__all__ = ["OPEN_KEYS", "OpenValues", "ValueSets", "normalise_reply", "parse_open", "resolve_open_fields"]

OPEN_KEYS = ("seed_values", "seed_values_file", "reference_file", "max_words", "reject", "reject_file", "lowercase")
DEFAULT_MAX_WORDS = 5
_PAIRS = {'"': '"', "'": "'", "`": "`", "*": "*", "_": "_", "“": "”", "‘": "’", "«": "»", "„": "“"}
#: Reads one value file: ``read(key, path)`` -> ``(values, weights)`` (weights ignored), or a ConfigError.
Reader = Callable[[str, str], OptionSet]


@dataclass(frozen=True)
class ValueSets:
    """Values from a file or inline, possibly one set per combination of ``parents``' values
    (a templated path). ``sets`` maps a tuple of parent values (``()`` when plain) to the values."""

    key: str  # the recipe key the values come from (fields.x.seed_values_file)
    sets: Mapping[tuple, tuple[str, ...]] = field(default_factory=dict, hash=False)
    parents: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()
    path_template: PromptTemplate | None = None  # set until resolve_open_fields reads the files

    @cached_property
    def union(self) -> frozenset[str]:
        return frozenset(v for values in self.sets.values() for v in values)

    @cached_property
    def _members(self) -> dict[tuple, frozenset[str]]:
        return {k: frozenset(v) for k, v in self.sets.items()}

    def for_record(self, record: Mapping[str, object]) -> frozenset[str]:
        """The set this record's parent values select (the only set when there are no parents)."""
        key = tuple(record[p] for p in self.parents)
        if key not in self._members:
            where = ", ".join(f"{p}={v!r}" for p, v in zip(self.parents, key))
            raise SynthgenError(f"{self.key}: no value set for {where}")
        return self._members[key]

    def values_for(self, record: Mapping[str, object]) -> tuple[str, ...]:
        """Like :meth:`for_record`, in file order."""
        return self.sets[tuple(record[p] for p in self.parents)]


@dataclass(frozen=True)
class OpenValues:
    """What an open field knows beyond its template: seeds, reference and the reply checks."""

    seeds: ValueSets | None = None
    reference: ValueSets | None = None
    max_words: int = DEFAULT_MAX_WORDS
    reject: frozenset[str] = frozenset()  # casefolded
    reject_file: Path | None = None
    lowercase: bool = False  # values are lower-cased after normalisation (occupations, topics)

    def accepts(self, value: str, pattern: re.Pattern[str] | None) -> bool:
        """Whether a normalised reply is a valid value: non-empty, at most ``max_words`` words,
        matching ``pattern`` as a whole, not rejected."""
        return (bool(value) and len(value.split()) <= self.max_words
                and (pattern is None or pattern.fullmatch(value) is not None)
                and value.casefold() not in self.reject)

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file the field reads (the reference too: it changes the report)."""
        out = [*(self.seeds.files if self.seeds else ()), *(self.reference.files if self.reference else ())]
        return tuple(out) + ((self.reject_file,) if self.reject_file else ())

    @property
    def variables(self) -> frozenset[str]:
        """The fields templated value paths read."""
        return frozenset().union(*(vs.path_template.variables for vs in (self.seeds, self.reference)
                                   if vs is not None and vs.path_template is not None))


def normalise_reply(text: str) -> str:
    """A reply as an open value: its first non-empty line, whitespace collapsed, matching quotes or
    emphasis around it (``"..."``, ``'...'``, ``**...**``, typographic quotes) and one final full stop
    removed. A lone quote stays (``'s-Hertogenbosch``)."""
    value = " ".join(next((ln for ln in text.strip().splitlines() if ln.strip()), "").split())
    while True:
        if value.endswith(".") and not value.endswith(".."):
            value = value[:-1].rstrip()
        if len(value) >= 2 and _PAIRS.get(value[0]) == value[-1]:
            value = value[1:-1].strip()
            continue
        return value


def parse_open(src: Path, key: str, raw: dict, read: Reader) -> OpenValues:
    """The open part of a field's YAML entry (``key`` = ``fields.NAME``). Plain value files are
    read here; a templated one is kept as a template for :func:`resolve_open_fields`."""
    if "seed_values" in raw and "seed_values_file" in raw:
        raise ConfigError(src, f"{key}.seed_values_file", "give 'seed_values' or 'seed_values_file', not both")
    seeds = None
    if "seed_values" in raw:
        skey = f"{key}.seed_values"
        items = raw["seed_values"]
        if not isinstance(items, list) or not items:
            raise ConfigError(src, skey, f"expected a non-empty list of example values, got {show(items)}")
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item.strip():
                raise ConfigError(src, f"{skey}[{i}]", f"expected a non-empty string, got {show(item)}")
        seeds = ValueSets(skey, {(): tuple(dict.fromkeys(" ".join(v.split()) for v in items))})
    elif "seed_values_file" in raw:
        seeds = _value_file(src, f"{key}.seed_values_file", raw["seed_values_file"], read)
    reference = (_value_file(src, f"{key}.reference_file", raw["reference_file"], read)
                 if "reference_file" in raw else None)
    reject = raw.get("reject", [])
    if not isinstance(reject, list) or not all(isinstance(r, str) and r.strip() for r in reject):
        raise ConfigError(src, f"{key}.reject", f"expected a list of non-empty strings, got {show(reject)}")
    rejected, reject_file = {r.strip().casefold() for r in reject}, None
    if "reject_file" in raw:
        rkey = f"{key}.reject_file"
        path = string(src, rkey, raw["reject_file"], non_empty=True)
        if is_templated(path):
            raise ConfigError(src, rkey, "a reject_file cannot be a template (one list for every record)")
        rejected |= {v.casefold() for v in read(rkey, path)[0]}
        reject_file = src.parent / Path(path).expanduser()
    max_words = number(src, f"{key}.max_words", raw.get("max_words", DEFAULT_MAX_WORDS), low=1)
    return OpenValues(seeds, reference, max_words, frozenset(rejected), reject_file,
                      boolean(src, f"{key}.lowercase", raw.get("lowercase", False)))


def _value_file(src: Path, key: str, value: object, read: Reader) -> ValueSets:
    path = string(src, key, value, non_empty=True)
    if is_templated(path):
        return ValueSets(key, {}, path_template=compile_options_path(src, key, path))
    values = _checked(src, key, path, read(key, path))
    return ValueSets(key, {(): values}, files=(src.parent / Path(path).expanduser(),))


def _checked(src: Path, key: str, path: str, read: OptionSet) -> tuple[str, ...]:
    """The values of one file, duplicates dropped; an empty file is an error."""
    values = tuple(dict.fromkeys(read[0]))
    if not values:
        raise ConfigError(src, key, f"{path}: the file holds no values")
    return values


def resolve_open_fields(src: Path, fields: dict[str, FieldSpec], order: Sequence[str],
                        read: Reader) -> dict[str, FieldSpec]:
    """Every open field with its templated value files read (one set per reachable combination of
    the path's parents) and its seeds checked against its reply checks: none passing is an error,
    some failing a warning with the count (they are left out of training)."""
    out = dict(fields)
    for name in order:
        spec = out[name]
        if spec.open is None:
            continue
        values = spec.open
        for attr in ("seeds", "reference"):
            vs = getattr(values, attr)
            if vs is not None and vs.path_template is not None:
                def checked_read(k, p, key=vs.key):
                    return (_checked(src, key, p, read(k, p)), None)
                parents, sets, files = read_path_sets(src, out, order, vs.path_template, name, checked_read)
                vs = ValueSets(vs.key, {k: v[0] for k, v in sets.items()}, parents, files, vs.path_template)
                values = dataclasses.replace(values, **{attr: vs})
        out[name] = spec = dataclasses.replace(spec, open=values)
        if values.seeds is not None:
            _check_seeds(src, spec)
    return out


def _check_seeds(src: Path, spec: FieldSpec) -> None:
    seeds = spec.open.seeds
    failing = sorted(v for v in seeds.union if spec.parse_value(v) is None)
    if len(failing) == len(seeds.union):
        raise ConfigError(src, seeds.key, f"none of the {len(failing)} seed values passes the field's checks "
                                          f"(pattern, max_words {spec.open.max_words}, reject), e.g. {failing[0]!r}; "
                                          "fix the pattern or the seeds")
    if failing:
        log.warning("%s: %s: %d of %d seed values fail the field's checks (pattern, max_words, reject) and are "
                    "not trained on, e.g. %r", src, seeds.key, len(failing), len(seeds.union), failing[0])
