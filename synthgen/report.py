"""The diversity report: what ``report.json`` holds, computed from the kept records.

Writing it (``report.md``, plots) is :mod:`synthgen.report_files`; reporting on an
existing dataset is :mod:`synthgen.dataset_report`.

``report.json`` holds ``recipe``, ``n_requested``, ``n_generated``, ``n_kept``,
``removed`` (``invalid``, ``exact_duplicates``, ``near_duplicates``), ``fields``
(per field: ``unique``, ``entropy_bits``, ``normalized_entropy``, ``top1_value``,
``top1_share``, ``valid_rate``, ...; ``coherence`` for a field with parents) and
``timing`` (``seconds``, ``records_per_second`` and ``fields``: per field, where this
process's time went, :class:`synthgen.fill.FieldTiming`); these keys are stable.
An open field also has ``open``: validity and novelty of its values
(:func:`synthgen.novelty.open_metrics`). A text field with checks against the
record (:mod:`synthgen.checks`) also has ``checks``: check name -> pass rate (samples that passed it / samples drawn).

Counting rules: ``unique``, entropies, top values and distances count the
non-null values of *kept* records only; when a field's option set is known,
values outside it are invalid and never count as diversity. Ideals are those
of a perfect sampler over the same options at the same N (``docs/diversity.md``).
Undefined or infinite numbers are written as ``null``.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from synthgen import diversity as dv
from synthgen.io import json_safe
from synthgen.novelty import open_metrics
from synthgen.open_fields import ValueSets

log = logging.getLogger(__name__)

REPORT_KINDS = ("choice", "integer", "text", "open", "sample", "unknown")
TEXT_MIN_MEAN_WORDS = 8  # report_dataset: string columns with more words on average are free text


@dataclass
class FieldInfo:
    """What the report knows of a field. A conditional field (its option set depends on earlier
    fields) has ``option_parents`` and ``option_sets``: the parents' values (a tuple in
    ``option_parents`` order) -> that record's ``(options, weights)``; ``options`` is their union."""

    name: str
    kind: str
    options: tuple[str, ...] | None = None
    weights: tuple[float, ...] | None = None
    parents: tuple[str, ...] = ()  # the fields this one is conditioned on (coherence)
    option_parents: tuple[str, ...] = ()
    option_sets: Mapping[tuple, tuple[tuple[str, ...], tuple[float, ...] | None]] | None = None
    seeds: ValueSets | None = None  # an open field's seed values (novel = valid and not its record's seed)
    reference: ValueSets | None = None  # an open field's reference (valid = in the record's set)

    def __post_init__(self) -> None:
        if self.kind not in REPORT_KINDS:
            raise ValueError(f"field {self.name!r}: kind must be one of {REPORT_KINDS}, got {self.kind!r}")
        if self.weights is not None and (self.options is None or len(self.weights) != len(self.options)):
            raise ValueError(f"field {self.name!r}: weights need options of the same length")
        if self.option_sets is not None:
            union = set(self.options or ())
            for key, (options, weights) in self.option_sets.items():
                if len(key) != len(self.option_parents) or not self.option_parents:
                    raise ValueError(f"field {self.name!r}: option set keys must hold one value per option parent")
                if not set(options) <= union or weights is not None and len(weights) != len(options):
                    raise ValueError(f"field {self.name!r}: each option set must lie in options, weights "
                                     "one per option")


def _value_counts(series: pl.Series) -> dict[Any, int]:
    s = series.drop_nulls()
    if s.dtype.is_float():
        s = s.drop_nans()
    if s.dtype.is_nested() or s.dtype == pl.Object:
        s = pl.Series([json.dumps(v, default=str, ensure_ascii=False) for v in s.to_list()], dtype=pl.String)
    vc = s.rename("value").value_counts(name="n")
    return dict(zip(vc["value"].to_list(), vc["n"].to_list()))


def _key(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


def _field_report(series: pl.Series, info: FieldInfo, n_kept: int, stats: Mapping[str, int] | None,
                  top_k: int, frame: pl.DataFrame | None = None) -> dict[str, Any]:
    """One field's entry of ``report.json``: counts, then target metrics, then text metrics
    (``frame``: the kept records, where a conditional field finds its parents' values)."""
    counts, non_null = _valid_counts(series, info)
    out = _count_metrics(counts, non_null, info, n_kept, stats, top_k)
    out.update(_target_metrics(counts, info, out["entropy_bits"], _set_draws(series, info, frame)))
    if info.kind == "text":
        out.update(_text_metrics(series))
    if info.kind == "open":
        out["open"] = _open_entry(series, info, frame, out["valid_rate"])
    out.update(_check_rates(stats))
    return out


def _open_entry(series: pl.Series, info: FieldInfo, frame: pl.DataFrame | None,
                checks_valid_rate: float | None) -> dict[str, Any]:
    """An open field's validity and novelty (:func:`synthgen.novelty.open_metrics`)."""
    parents = tuple(dict.fromkeys(p for vs in (info.seeds, info.reference) if vs is not None for p in vs.parents))
    missing = [p for p in parents if frame is None or p not in frame.columns]
    if missing:
        raise ValueError(f"build_report: field {info.name!r}'s value sets depend on {missing}, not in the frame")
    rows = frame.select(parents).to_dicts() if parents else None
    return open_metrics(series.to_list(), info.seeds, info.reference, rows, checks_valid_rate)


def _check_rates(stats: Mapping[str, Any] | None) -> dict[str, Any]:
    """``checks``: per check of the field, the share of drawn samples (retries included) that
    passed it; nothing for a field without checks."""
    passed = (stats or {}).get("passed")
    if not passed:
        return {}
    drawn = stats.get("drawn") or 0
    return {"checks": {name: count / drawn if drawn else None for name, count in passed.items()}}


def _target(info: FieldInfo) -> dict[str, float] | None:
    """The field's target distribution over its options (uniform without weights), or None."""
    if not info.options:
        return None
    weights = info.weights if info.weights is not None else (1.0,) * len(info.options)
    total = float(sum(weights))
    return {o: w / total for o, w in zip(info.options, weights)}


def _valid_counts(series: pl.Series, info: FieldInfo) -> tuple[dict[Any, int], int]:
    """Counts of the valid values (inside the option set when there is one) and of all non-null values."""
    counts = _value_counts(series)
    non_null = sum(counts.values())
    if info.options is not None:
        allowed = set(info.options)
        counts = {v: c for v, c in counts.items() if _key(v) in allowed}
    return counts, non_null


def _count_metrics(counts: dict[Any, int], non_null: int, info: FieldInfo, n_kept: int,
                   stats: Mapping[str, int] | None, top_k: int) -> dict[str, Any]:
    """Unique values, entropy, top values, valid rate and coverage (every field)."""
    options = info.options
    n = sum(counts.values())
    k = len(options) if options is not None else None
    target = _target(info)
    top = dv.top_values(counts, top_k)
    top_rows = [{"value": v, "count": c, "share": s} for v, c, s in top]
    if target is not None and info.weights is not None:
        for row in top_rows:
            row["target_share"] = target.get(_key(row["value"]), 0.0)
    if stats is not None and stats.get("drawn"):  # retries included: the generator's own tally
        valid_rate = stats.get("valid", 0) / stats["drawn"]
    else:
        valid_rate = (n if options is not None else non_null) / n_kept if n_kept else None
    return {
        "kind": info.kind,
        "n": n,
        "unique": len(counts),
        "entropy_bits": dv.entropy_bits(counts),
        "normalized_entropy": dv.normalized_entropy(counts, k) if n else None,
        "top1_value": top[0][0] if top else None,
        "top1_share": top[0][2] if top else None,
        "top_values": top_rows,
        "valid_rate": valid_rate,
        "k": k,
        "coverage": len(counts) / k if k else None,
        **dict.fromkeys(("expected_unique_ideal", "coverage_ratio", "ideal_entropy_bits", "gap_entropy_bits",
                         "kl_to_target", "ideal_kl", "kl_excess")),
        "singleton_share": dv.singleton_share(counts),
    }


def _set_draws(series: pl.Series, info: FieldInfo, frame: pl.DataFrame | None) -> dict[str, Any] | None:
    """For a conditional field: ``draws`` = (n_s, options, weights) per option set its kept records'
    parents select (values present only), and ``in_set_rate`` = the share of those values that lie in
    their record's own set. None for any other field."""
    if info.option_sets is None:
        return None
    missing = [p for p in info.option_parents if frame is None or p not in frame.columns]
    if missing:
        raise ValueError(f"build_report: field {info.name!r} depends on {missing}, not in the frame")
    n_by_key: dict[tuple, int] = {}
    members: dict[tuple, frozenset] = {}
    present = inside = 0
    for key, value in zip(frame.select(info.option_parents).rows(), series.to_list()):
        if value is None:
            continue
        present += 1
        if key in info.option_sets:
            n_by_key[key] = n_by_key.get(key, 0) + 1
            if key not in members:
                members[key] = frozenset(info.option_sets[key][0])
            inside += _key(value) in members[key]
    draws = [(n, *info.option_sets[key]) for key, n in n_by_key.items()]
    return {"draws": draws, "in_set_rate": inside / present if present else None}


def _target_metrics(counts: dict[Any, int], info: FieldInfo, entropy_bits: float,
                    sets: dict[str, Any] | None = None) -> dict[str, Any]:
    """What an ideal sampler over the field's options reaches at the same N, and the gaps to it.
    For a conditional field (``sets`` from :func:`_set_draws`) the ideal sampler draws each record's
    value from its own set, and the target is the mixture of the sets the records selected."""
    n = sum(counts.values())
    extra = {} if sets is None else {"in_set_rate": sets["in_set_rate"]}
    target = _target(info) if sets is None else dv.mixture_distribution(sets["draws"]) or None
    if target is None or not n:
        return extra
    q = list(target.values())
    k = len(q)
    support = sum(1 for w in q if w > 0)
    if sets is not None:
        ideal_unique = dv.expected_unique_mixture(sets["draws"])
    else:
        ideal_unique = dv.expected_unique_uniform(k, n) if info.weights is None else dv.expected_unique(n, q)
    ideal_h = dv.expected_entropy_bits(n, q)
    kl = dv.kl_divergence({_key(v): c for v, c in counts.items()}, target)
    return {
        **extra,
        "expected_unique_ideal": ideal_unique,
        "coverage_ratio": len(counts) / ideal_unique,
        "ideal_entropy_bits": ideal_h,
        "gap_entropy_bits": ideal_h - entropy_bits,
        "kl_to_target": kl,
        "ideal_kl": dv.ideal_kl(support, n),
        "kl_excess": kl - dv.ideal_kl(support, n),
    }


def _text_metrics(series: pl.Series) -> dict[str, Any]:
    """Distinct-1/2, compression ratio and mean length of a free-text field."""
    texts = [_key(v) for v in series.drop_nulls().to_list()]
    return {
        "distinct_1": dv.distinct_n(texts, 1),
        "distinct_2": dv.distinct_n(texts, 2),
        "compression_ratio": dv.compression_ratio(texts),
        "mean_words": sum(len(t.split()) for t in texts) / len(texts) if texts else None,
    }


def _records(df: pl.DataFrame, fields: Sequence[FieldInfo]) -> dict[str, Any]:
    cols = [f.name for f in fields] or df.columns
    tuple_cols = [f.name for f in fields if f.kind != "text"]
    out: dict[str, Any] = {"unique_share": df.select(cols).n_unique() / df.height if df.height else None,
                           "tuple_fields": tuple_cols, "unique_tuples": None, "tuple_entropy_bits": None}
    if tuple_cols and df.height:
        sizes = df.group_by(tuple_cols).len()["len"].to_list()
        out.update(unique_tuples=len(sizes), tuple_entropy_bits=dv.entropy_bits(sizes))
    return out


def build_report(
    df: pl.DataFrame,
    fields: Sequence[FieldInfo],
    *,
    recipe: str | None,
    n_requested: int,
    n_generated: int,
    removed: Mapping[str, int],
    field_stats: Mapping[str, Mapping[str, int]] | None = None,
    timing: Mapping[str, Any] | None = None,
    top_k: int = 10,
) -> dict[str, Any]:
    """The ``report.json`` dict for the kept records ``df`` (JSON-safe, nan/inf as None)."""
    missing = [f.name for f in fields if f.name not in df.columns]
    if missing:
        raise ValueError(f"build_report: field(s) {missing} not in the frame's columns {df.columns}")
    field_stats = field_stats or {}
    timing = dict(timing or {})
    seconds = timing.get("seconds")
    if "records_per_second" not in timing:
        timing["records_per_second"] = n_generated / seconds if seconds else None
    timing.setdefault("seconds", None)
    report = {
        "recipe": recipe,
        "n_requested": n_requested,
        "n_generated": n_generated,
        "n_kept": df.height,
        "removed": {"invalid": 0, "exact_duplicates": 0, "near_duplicates": 0, **removed},
        "fields": {f.name: _field_report(df[f.name], f, df.height, field_stats.get(f.name), top_k, df)
                   for f in fields},
        "records": _records(df, fields),
        "timing": timing,
    }
    _add_coherence(report["fields"], df, fields)
    return json_safe(report)


# ---------------------------------------------------------------- coherence

COHERENCE_SHUFFLES = 20  # seeded permutations behind ``conditional_entropy_shuffled_bits``


def _valid_values(series: pl.Series, info: FieldInfo) -> list[Any]:
    """The column's values, None where a value is not valid: null, NaN, or outside a known option set.

    The same values ``_valid_counts`` counts; nested values become their JSON text (hashable)."""
    allowed = set(info.options) if info.options is not None else None
    out: list[Any] = []
    nested = series.dtype.is_nested() or series.dtype == pl.Object
    for v in series.to_list():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
            continue
        if nested:
            v = json.dumps(v, default=str, ensure_ascii=False)
        out.append(v if allowed is None or _key(v) in allowed else None)
    return out


def _coherence(df: pl.DataFrame, info: FieldInfo, by_name: Mapping[str, FieldInfo]) -> dict[str, Any]:
    """A field's ``coherence`` entry: how much its values depend on its parents' (plug-in, in bits).

    Counted over the kept records where the field and every parent it is conditioned on
    hold a valid value. Text fields and text parents are not conditioned on: over
    (nearly) unique texts every conditional entropy is 0 whatever the data."""
    parents = list(dict.fromkeys(info.parents))
    used = [p for p in parents if by_name[p].kind != "text"]
    out: dict[str, Any] = {
        "parents": parents,
        "conditioned_on": used if info.kind != "text" else [],
        "estimator": "plug-in",
        **dict.fromkeys(("n", "n_parent_values", "entropy_bits", "conditional_entropy_bits",
                         "conditional_entropy_shuffled_bits", "mutual_information_bits",
                         "parent_given_field_bits")),
    }
    if info.kind == "text" or not used:
        return out
    child = _valid_values(df[info.name], info)
    columns = [_valid_values(df[p], by_name[p]) for p in used]
    rows = [(x, tuple(parent_values)) for x, *parent_values in zip(child, *columns)
            if x is not None and None not in parent_values]
    out["n"] = len(rows)
    if not rows:
        return out
    xs = [x for x, _ in rows]
    ys = [y for _, y in rows]
    joint = dv.pair_counts(rows)
    out.update(
        n_parent_values=len(set(ys)),
        entropy_bits=dv.entropy_bits(Counter(xs)),
        conditional_entropy_bits=dv.conditional_entropy_bits(joint),
        conditional_entropy_shuffled_bits=dv.shuffled_conditional_entropy_bits(xs, ys, COHERENCE_SHUFFLES),
        mutual_information_bits=dv.mutual_information_bits(joint),
        parent_given_field_bits={p: dv.conditional_entropy_bits((y[i], x) for x, y in rows)
                                 for i, p in enumerate(used)},
    )
    return out


def _add_coherence(report_fields: dict[str, Any], df: pl.DataFrame, fields: Sequence[FieldInfo]) -> None:
    """Add ``coherence`` to the entry of every field that has parents."""
    by_name = {f.name: f for f in fields}
    for f in fields:
        if not f.parents:
            continue
        bad = [p for p in f.parents if p not in by_name or p == f.name]
        if bad:
            raise ValueError(f"build_report: field {f.name!r} has parent(s) {bad} that are not other reported fields")
        report_fields[f.name]["coherence"] = _coherence(df, f, by_name)


# ---------------------------------------------------------------- writing
