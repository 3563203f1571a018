"""Fields: one field of a recipe (:class:`FieldSpec`) and how its YAML entry is read and checked.

A field has a kind (``choice``, ``integer``, ``text``, ``open``, ``sample``), a template
(unless it is a ``sample``), a closed value set where it has one (options, inline
or from a file, possibly chosen per record by earlier fields:
:mod:`synthgen.option_sets`; or an integer range) and, for text, validation and
checks against the record (:mod:`synthgen.checks`); an open field (a short value generated
freely, with seed values and a reference: :mod:`synthgen.open_fields`) is sampled like text
and validated by its own checks. Every mistake is a
ConfigError naming the recipe file and the dotted key.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from synthgen._validate import check_keys, number, show, string
from synthgen.checks import TextChecks, parse_checks
from synthgen.errors import ConfigError, SynthgenError
from synthgen.open_fields import OPEN_KEYS, OpenValues, normalise_reply, parse_open
from synthgen.option_sets import OptionSet, compile_options_path, is_templated
from synthgen.prompts import RESERVED_NAMES, PromptTemplate, compile_template, inside, load_template_file

__all__ = ["FIELD_KINDS", "MAX_CLOSED_VALUES", "FieldSpec", "parse_field", "read_options", "read_values_file"]

FIELD_KINDS = ("choice", "integer", "text", "open", "sample")
_TEMPLATE = ("template", "template_inline")
_SAMPLING = ("max_tokens", "retries", "temperature", "top_p", "min_p", "use_adapter")
FIELD_KEYS = {
    "choice": ("kind", "description", *_TEMPLATE, "options", "options_file", "weights", "use_adapter"),
    "integer": ("kind", "description", *_TEMPLATE, "min", "max", *_SAMPLING),
    "text": ("kind", "description", *_TEMPLATE, "stop", "pattern", "min_chars", *_SAMPLING,
             "must_mention", "consistent_year", "consistent_nationality", "reply_prefix"),
    "open": ("kind", "description", *_TEMPLATE, "stop", "pattern", *_SAMPLING, *OPEN_KEYS),
    "sample": ("kind", "description", "options", "options_file", "weights", "min", "max"),
}
# the widest integer range the model picks from as a closed set (wider ranges are sampled as text)
MAX_CLOSED_VALUES = 2000
INT_LIMIT = 2**62  # integer bounds stay well inside int64 (the column type)
MAX_NEW_TOKENS = 8192  # a generated value's token budget (the default model's context length)
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class FieldSpec:
    """One validated field. ``depends_on`` are the fields its template (and a templated
    ``options_file``) reads.

    A field with a templated ``options_file`` is *conditional*: ``option_parents`` are the fields
    its path reads, in fill order, and ``option_sets`` maps their values (a tuple in that order, as
    the record holds them) to that record's ``(options, weights)``; ``options`` is the union of the
    sets in first-seen order and ``weights`` None. :meth:`options_for` gives a record's own set.
    """

    name: str
    kind: str
    template: PromptTemplate | None = None
    options: tuple[str, ...] | None = None
    weights: tuple[float, ...] | None = None  # normalised to sum 1; None = uniform
    min: int | None = None
    max: int | None = None
    max_tokens: int = 128
    stop: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    min_chars: int = 1
    retries: int = 3
    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float | None = None  # sampled fields: drop tokens below min_p x the top token's probability
    # The diffuse adapter spreads attribute values; free text is written by the
    # base model unless a field asks otherwise (the adapter shortens replies).
    use_adapter: bool = True
    description: str = ""
    depends_on: frozenset[str] = frozenset()
    options_file: Path | None = None  # the file the options were read from, if any
    options_template: PromptTemplate | None = None  # a templated options_file
    option_parents: tuple[str, ...] = ()
    option_sets: Mapping[tuple, OptionSet] | None = field(default=None, hash=False)
    option_files: tuple[Path, ...] = ()  # every file the option sets were read from
    checks: TextChecks | None = None  # text fields: must_mention / consistent_year / consistent_nationality
    reply_prefix: PromptTemplate | None = None  # text fields: the start of the reply, rendered from the record
    open: OpenValues | None = None  # open fields: seeds, reference, reply checks (synthgen.open_fields)

    @property
    def is_conditional(self) -> bool:
        """Whether the option set depends on earlier fields (a templated ``options_file``)."""
        return self.option_sets is not None

    def options_for(self, record: Mapping[str, object]) -> OptionSet:
        """``(options, weights)`` for this record: the set its option parents select, or the field's own."""
        if self.option_sets is None:
            return self.options, self.weights
        key = tuple(record[p] for p in self.option_parents)
        if key not in self.option_sets:
            where = ", ".join(f"{p}={v!r}" for p, v in zip(self.option_parents, key))
            raise SynthgenError(f"field '{self.name}': no option set for {where}")
        return self.option_sets[key]

    @property
    def uses_model(self) -> bool:
        return self.kind != "sample"

    @property
    def known_values(self) -> tuple[str, ...] | range | None:
        """The set of valid values (options or the integer range, however wide); None for text."""
        if self.options is not None or self.min is None:
            return self.options
        return range(self.min, self.max + 1)

    @property
    def closed_values(self) -> tuple[str, ...] | None:
        """The valid values as strings when the model picks among them (a choice field, or an
        integer range of at most ``MAX_CLOSED_VALUES`` values): scored, sampled exactly and
        trainable. None for text, sample fields and wider ranges (sampled as text and validated)."""
        if self.kind == "choice":
            return self.options
        if self.kind == "integer" and self.max - self.min < MAX_CLOSED_VALUES:
            return tuple(str(v) for v in range(self.min, self.max + 1))
        return None

    @property
    def is_integer(self) -> bool:
        """Whether the field's values are integers (an integer field or a sample field's range)."""
        return self.kind == "integer" or (self.kind == "sample" and not self.options)

    def draw(self, rng, record: Mapping[str, object] | None = None) -> str | int:
        """One value from the recipe's own distribution, with a numpy Generator: an option by
        the recipe's weights (uniform without), else an integer uniform in [min, max]. A conditional
        field draws from the set of ``record`` (the record so far), by that set's weights. An open
        field with seed values draws one of the record's seeds, uniformly (training prompts read it)."""
        if self.open is not None:
            if self.open.seeds is None:
                raise ValueError(f"field {self.name!r} is open without seed values: nothing to draw from")
            seeds = self.open.seeds.values_for(record or {})
            return seeds[rng.choice(len(seeds))]
        if self.options:
            if self.option_sets is not None and record is None:
                raise ValueError(f"field {self.name!r} is conditional: draw(rng, record) needs the record")
            options, weights = self.options_for(record) if record is not None else (self.options, self.weights)
            return options[rng.choice(len(options), p=list(weights) if weights else None)]
        return int(rng.integers(self.min, self.max + 1))

    def parse_value(self, raw: str) -> str | int | None:
        """The value a stripped reply stands for, or None if invalid: an option, an integer in
        [min, max], text of ``min_chars`` or more where ``pattern.search`` finds a match, or an open
        value (the reply normalised, :func:`~synthgen.open_fields.normalise_reply`) that passes its checks."""
        if self.open is not None:
            value = normalise_reply(raw.lower() if self.open.lowercase else raw)
            return value if self.open.accepts(value, self.pattern) else None
        value = raw.strip()
        if self.options is not None:
            return value if value in self.options else None
        if self.kind == "text":
            ok = len(value) >= self.min_chars and (self.pattern is None or self.pattern.search(value))
            return value if ok else None
        number = int(value) if _INT_RE.fullmatch(value) else None
        return number if number is not None and self.min <= number <= self.max else None


def parse_field(src: Path, name: object, raw: object, trust_paths: bool = False) -> FieldSpec:
    key = f"fields.{name}"
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in RESERVED_NAMES:
        raise ConfigError(src, key, "a field name must be an identifier (letters, digits, _) and "
                                    f"not a Jinja name ({', '.join(sorted(RESERVED_NAMES))})")
    if not isinstance(raw, dict):
        raise ConfigError(src, key, f"expected a mapping with at least 'kind', got {show(raw)}")
    kind = raw.get("kind")
    if kind not in FIELD_KINDS:
        what = "missing 'kind'" if kind is None else f"unknown kind {kind!r}"
        raise ConfigError(src, f"{key}.kind", f"{what}; expected one of: {', '.join(FIELD_KINDS)}")
    check_keys(src, key, raw, FIELD_KEYS[kind], f"a {kind} field")
    get = raw.get
    spec: dict = {"name": name, "kind": kind,
                  "description": string(src, f"{key}.description", get("description", ""))}
    if kind != "sample":
        spec["template"] = _template(src, key, raw, trust_paths)
        spec["depends_on"] = spec["template"].variables
        tokens = {"text": 128, "open": 16}.get(kind, 8)
        for k, default, kw in (("max_tokens", tokens, {"low": 1, "high": MAX_NEW_TOKENS}),
                               ("retries", 5 if kind == "open" else 3, {"low": 0}),
                               ("temperature", 1.0, {"kind": float, "low": 0}),
                               ("top_p", 1.0, {"kind": float, "low": 0, "high": 1, "open_low": True})):
            spec[k] = number(src, f"{key}.{k}", get(k, default), **kw)
        if get("min_p") is not None:
            spec["min_p"] = number(src, f"{key}.min_p", get("min_p"), float, low=0, high=1)
        use_adapter = get("use_adapter", kind != "text")
        if not isinstance(use_adapter, bool):
            raise ConfigError(src, f"{key}.use_adapter", f"expected true or false, got {show(use_adapter)}")
        spec["use_adapter"] = use_adapter
    has_options = "options" in raw or "options_file" in raw
    has_range = "min" in raw or "max" in raw
    if kind == "sample" and has_options == has_range:
        raise ConfigError(src, key, "a sample field needs either 'options' or 'options_file' (with optional "
                                    f"'weights'), or 'min' and 'max'; it has {'both' if has_options else 'neither'}")
    if kind == "choice" and not has_options:
        raise ConfigError(src, f"{key}.options", "a choice field needs 'options' or 'options_file'")
    if has_options and isinstance(raw.get("options_file"), str) and is_templated(raw["options_file"]):
        if "options" in raw or "weights" in raw:
            extra = "options" if "options" in raw else "weights"
            raise ConfigError(src, f"{key}.{extra}", f"a templated options_file takes no '{extra}' "
                                                     "(per-set weights go in .csv files)")
        spec["options_template"] = compile_options_path(src, f"{key}.options_file", raw["options_file"])
        spec["depends_on"] = spec.get("depends_on", frozenset()) | spec["options_template"].variables
    elif has_options:
        spec["options"], spec["weights"] = read_options(src, key, raw, trust_paths)
        if "options_file" in raw:
            spec["options_file"] = src.parent / Path(raw["options_file"]).expanduser()
    elif kind in ("integer", "sample"):
        if "weights" in raw:
            raise ConfigError(src, f"{key}.weights", "weights need options; a range is uniform")
        for bound in ("min", "max"):
            if bound not in raw:
                raise ConfigError(src, f"{key}.{bound}", f"missing required key (an integer {bound})")
            spec[bound] = number(src, f"{key}.{bound}", raw[bound], low=-INT_LIMIT, high=INT_LIMIT)
        if spec["min"] > spec["max"]:
            raise ConfigError(src, f"{key}.max", f"max ({spec['max']}) must be >= min ({spec['min']})")
    if kind in ("text", "open"):
        _reply_keys(src, key, raw, spec)
    if kind == "open":
        spec["open"] = parse_open(src, key, raw, lambda k, p: _read_options_file(src, k, p, trust_paths))
        spec["depends_on"] |= spec["open"].variables
    if kind == "text":
        spec["min_chars"] = number(src, f"{key}.min_chars", get("min_chars", 1), low=0)
        spec["checks"] = parse_checks(src, key, raw, trust_paths)
        if "reply_prefix" in raw:
            spec["reply_prefix"] = compile_template(string(src, f"{key}.reply_prefix", raw["reply_prefix"],
                                                           non_empty=True), str(src), f"{key}.reply_prefix")
        if spec["checks"] is not None:
            spec["depends_on"] |= spec["checks"].fields
        if "reply_prefix" in spec:
            spec["depends_on"] |= spec["reply_prefix"].variables
    return FieldSpec(**spec)


def _reply_keys(src: Path, key: str, raw: dict, spec: dict) -> None:
    """``stop`` and ``pattern`` of a sampled field (text or open; open fields stop at a newline)."""
    default = ["\n"] if spec["kind"] == "open" else []
    stop = [raw["stop"]] if isinstance(raw.get("stop"), str) else raw.get("stop", default)
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise ConfigError(src, f"{key}.stop", f"expected a string or a list of non-empty strings, "
                                              f"got {show(raw.get('stop'))}")
    spec["stop"] = tuple(stop)
    pattern = string(src, f"{key}.pattern", raw.get("pattern"), optional=True)
    try:
        spec["pattern"] = None if pattern is None else re.compile(pattern)
    except re.error as exc:
        raise ConfigError(src, f"{key}.pattern", f"invalid regular expression {pattern!r}: {exc}") from None


def _template(src: Path, key: str, raw: dict, trust_paths: bool) -> PromptTemplate:
    given = [k for k in _TEMPLATE if k in raw]
    if len(given) != 1:
        raise ConfigError(src, f"{key}.template", ("both given" if given else "missing")
                          + ": give exactly one of 'template' (a file, relative to the recipe or "
                          "to templates/) or 'template_inline' (the template text)")
    tkey = f"{key}.{given[0]}"
    value = string(src, tkey, raw[given[0]])
    if given[0] == "template_inline":
        return compile_template(value, str(src), tkey)
    return load_template_file(value, [src.parent, src.parent.parent / "templates"], str(src), tkey,
                              allow_outside=trust_paths)


def read_options(src: Path, key: str, raw: dict, trust_paths: bool) -> tuple[tuple[str, ...], tuple[float, ...] | None]:
    """Options (inline or from a .txt/.csv file) and their normalised weights."""
    if "options" in raw and "options_file" in raw:
        raise ConfigError(src, f"{key}.options_file", "give 'options' or 'options_file', not both")
    weights, okey = None, f"{key}.options"
    if "options" in raw:
        if not isinstance(raw["options"], list):
            raise ConfigError(src, okey, f"expected a list of options, got {show(raw['options'])}")
        options = [str(item).strip() for item in raw["options"]]
        for i, item in enumerate(raw["options"]):
            if isinstance(item, bool) or not isinstance(item, (str, int, float)) or not options[i]:
                hint = " (quote it: YAML reads yes/no/true/false as booleans)" * isinstance(item, bool)
                raise ConfigError(src, f"{okey}[{i}]", f"expected a non-empty string, got {show(item)}{hint}")
            written = getattr(item, "yaml_text", None)
            if written is not None and written != options[i]:
                raise ConfigError(src, f"{okey}[{i}]", f"YAML reads {written} as the number {options[i]}; "
                                                       f"quote it ('{written}') to keep it as written")
    else:
        okey = f"{key}.options_file"
        value = string(src, okey, raw["options_file"])
        options, weights = _read_options_file(src, okey, value, trust_paths)
    if not options:
        raise ConfigError(src, okey, "empty options: expected at least one option")
    duplicates = sorted(o for o, n in Counter(options).items() if n > 1)
    if duplicates:
        raise ConfigError(src, okey, f"duplicate options: {', '.join(map(repr, duplicates[:5]))}")
    wkey = okey
    if "weights" in raw:
        if weights is not None:
            raise ConfigError(src, f"{key}.weights", "the options file already gives weights")
        weights, wkey = raw["weights"], f"{key}.weights"
        if not isinstance(weights, list) or len(weights) != len(options):
            got = len(weights) if isinstance(weights, list) else show(weights)
            raise ConfigError(src, wkey, f"expected a list of {len(options)} weights "
                                         f"(one per option), got {got}")
    if weights is None:
        return tuple(options), None
    for i, w in enumerate(weights):
        number(src, f"{wkey}[{i}]", w, float, low=0)
    peak = max(float(w) for w in weights)
    if peak <= 0:
        raise ConfigError(src, wkey, "weights must sum to more than 0")
    scaled = [float(w) / peak for w in weights]  # sums to at most len(weights): no overflow
    total = math.fsum(scaled)
    return tuple(options), tuple(w / total for w in scaled)


def read_values_file(src: Path, key: str, value: str, trust_paths: bool) -> tuple[list[str], list[float] | None]:
    """A values file read as an options file (open fields' seed, reference and reject files)."""
    return _read_options_file(src, key, value, trust_paths)


def _read_options_file(src: Path, key: str, value: str, trust_paths: bool) -> tuple[list[str], list[float] | None]:
    """A .txt file (one option per line, blank lines skipped) or a .csv with 'value[,weight]',
    inside the recipe's folder unless ``trust_paths``. A UTF-8 byte-order mark is dropped."""
    path = src.parent / Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(src, key, f"file not found: {path} (paths are relative to the recipe)")
    if not trust_paths and not inside(path, [src.parent]):
        raise ConfigError(src, key, f"{value}: {path.resolve()} is outside the recipe's folder {src.parent}; "
                                    "pass --trust-paths to allow it")
    if path.suffix not in (".txt", ".csv"):
        raise ConfigError(src, key, f"{path}: expected a .txt file (one option per line) or a "
                                    ".csv file with header 'value,weight'")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(src, key, f"cannot read {path}: {exc}") from None
    if path.suffix == ".txt":
        return [line.strip() for line in lines if line.strip()], None
    reader = csv.reader(lines)
    header = next(reader, [])
    if header not in (["value"], ["value", "weight"]):
        raise ConfigError(src, key, f"{path}: expected a header row 'value,weight' (or 'value')")
    options, weights = [], []
    for row in reader:
        if not row or not row[0].strip():
            continue
        if len(row) != len(header) or len(row) == 2 and not _FLOAT_RE.fullmatch(row[1].strip()):
            raise ConfigError(src, key, f"{path} line {reader.line_num}: expected "
                                        f"{','.join(header)}, got {','.join(row)!r}")
        options.append(row[0].strip())
        weights.append(float(row[1]) if len(row) == 2 else 1.0)
    return options, (weights if len(header) == 2 else None)
