"""The diversity report: ``report.json``, ``report.md`` and one bar chart per categorical field.

``report.json`` holds ``recipe``, ``n_requested``, ``n_generated``, ``n_kept``,
``removed`` (``invalid``, ``exact_duplicates``, ``near_duplicates``), ``fields``
(per field: ``unique``, ``entropy_bits``, ``normalized_entropy``, ``top1_value``,
``top1_share``, ``valid_rate``, ...; ``coherence`` for a field with parents) and
``timing``; these keys are stable. A text field with checks against the record
(:mod:`synthgen.checks`) also has ``checks``: check name -> pass rate (samples
that passed it / samples drawn).

Counting rules: ``unique``, entropies, top values and distances count the
non-null values of *kept* records only; when a field's option set is known,
values outside it are invalid and never count as diversity. Ideals are those
of a perfect sampler over the same options at the same N (``docs/diversity.md``).
Undefined or infinite numbers are written as ``null``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from synthgen import diversity as dv
from synthgen.errors import SynthgenError
from synthgen.io import atomic_write, writable_dir

log = logging.getLogger(__name__)

REPORT_KINDS = ("choice", "integer", "text", "sample", "unknown")
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


def _clean(x: Any) -> Any:
    """JSON-safe copy: nan/inf -> None, numpy scalars -> Python, unknown objects -> str."""
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (str, bool, int)):
        return x
    if hasattr(x, "item"):  # numpy scalar
        return _clean(x.item())
    return str(x)


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
    out.update(_check_rates(stats))
    return out


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
    timing: Mapping[str, float] | None = None,
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
    return _clean(report)


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



def _fmt(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _cell(value: Any, width: int = 40) -> str:
    s = " ".join(str(value).split())
    s = s if len(s) <= width else s[: width - 1] + "…"
    return s.replace("|", "\\|")


def _markdown(report: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    rm, t = report["removed"], report["timing"]
    lines = [f"# synthgen report{': ' + str(report['recipe']) if report.get('recipe') else ''}", "",
             f"- records: {report['n_requested']} requested, {report['n_generated']} generated, "
             f"**{report['n_kept']} kept**",
             f"- removed: {rm['invalid']} invalid, {rm['exact_duplicates']} exact duplicates, "
             f"{rm['near_duplicates']} near duplicates"]
    if t.get("seconds") is not None:
        lines.append(f"- time: {_fmt(t['seconds'], 1)} s ({_fmt(t['records_per_second'], 2)} records/s)")
    lines += [
        "", "Ideals are those of a perfect sampler over the same options with the same number of values "
        "(coverage ratio 1, entropy gap 0); – means the option set is open.", "", "## Fields", "",
        "| field | kind | unique / ideal | coverage ratio | entropy bits (ideal) | norm. entropy "
        "| KL to target (ideal) | top-1 | top-1 share | valid rate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, f in report["fields"].items():
        lines.append(
            f"| {_cell(name)} | {f['kind']} | {f['unique']} / {_fmt(f['expected_unique_ideal'], 1)} "
            f"| {_fmt(f['coverage_ratio'])} | {_fmt(f['entropy_bits'])} ({_fmt(f['ideal_entropy_bits'])}) "
            f"| {_fmt(f['normalized_entropy'])} | {_fmt(f['kl_to_target'])} ({_fmt(f['ideal_kl'])}) "
            f"| {_cell(_fmt(f['top1_value']), 30)} | {_fmt(f['top1_share'])} | {_fmt(f['valid_rate'])} |"
        )
    texts = {n: f for n, f in report["fields"].items() if f["kind"] == "text"}
    if texts:
        lines += ["", "## Free text", "", "| field | distinct-1 | distinct-2 | compression ratio | mean words |",
                  "|---|---|---|---|---|"]
        for name, f in texts.items():
            lines.append(f"| {_cell(name)} | {_fmt(f['distinct_1'])} | {_fmt(f['distinct_2'])} "
                         f"| {_fmt(f['compression_ratio'], 2)} | {_fmt(f['mean_words'], 1)} |")
    checked = {n: f["checks"] for n, f in report["fields"].items() if f.get("checks")}
    if checked:
        lines += ["", "## Checks against the record", "", "Share of the samples drawn (retries included) "
                  "that passed each check.", ""]
        lines += [f"- {_cell(name)}: " + ", ".join(f"{c} {_fmt(rate)}" for c, rate in checks.items())
                  for name, checks in checked.items()]
    r = report["records"]
    lines += ["", "## Records", "", f"- unique records: {_fmt(r['unique_share'])} of kept"]
    if r.get("unique_tuples") is not None:
        lines.append(f"- unique ({', '.join(r['tuple_fields'])}) tuples: {r['unique_tuples']} "
                     f"(entropy {_fmt(r['tuple_entropy_bits'])} bits)")
    lines += _coherence_lines(report)
    lines += ["", "## Top values"]
    for name, f in report["fields"].items():
        if f["kind"] == "text" or not f["top_values"]:
            continue
        lines += ["", f"### {name}", ""]
        if name in plots:
            lines += [f"![{name}]({plots[name]})", ""]
        lines += ["| value | count | share |", "|---|---|---|"]
        lines += [f"| {_cell(v['value'])} | {v['count']} | {_fmt(v['share'])} |" for v in f["top_values"]]
    return "\n".join(lines) + "\n"


def _coherence_lines(report: Mapping[str, Any]) -> list[str]:
    """The report.md "Coherence" section: one row per field with parents (none without)."""
    rows = {name: f["coherence"] for name, f in report["fields"].items() if f.get("coherence")}
    if not rows:
        return []
    lines = ["", "## Coherence", "",
             "Plug-in estimates in bits over the kept records. H(field|parents) well below H(field): the "
             "parents shape the field; close to its shuffled baseline (in parentheses: the same estimate with the "
             "field shuffled across records, so independent of its parents at the same N): the field ignores "
             "them. H(parent|field) near 0: the field's value determines the parent (a first name fixes the "
             "gender). With few records per parent value every H(field|parents) is biased low, the baseline "
             "included. Text fields are not measured (every text is unique).", "",
             "| field | parents | H(field) | H(field\\|parents) (shuffled) | H(parent\\|field) "
             "| records / parent values |",
             "|---|---|---|---|---|---|"]
    for name, c in rows.items():
        given = ", ".join(f"{_cell(p, 20)} {_fmt(h)}" for p, h in (c["parent_given_field_bits"] or {}).items())
        per_value = f"{c['n']} / {c['n_parent_values']}" if c["n_parent_values"] else "–"
        lines.append(
            f"| {_cell(name)} | {_cell(', '.join(c['parents']), 60)} | {_fmt(c['entropy_bits'])} "
            f"| {_fmt(c['conditional_entropy_bits'])} ({_fmt(c['conditional_entropy_shuffled_bits'])}) "
            f"| {given or '–'} | {per_value} |")
    return lines


def _plot(name: str, f: Mapping[str, Any]) -> bytes:
    from matplotlib.figure import Figure  # no pyplot: no global backend, no figure registry

    top = f["top_values"]
    labels = [_cell(v["value"], 30) for v in reversed(top)]
    shares = [v["share"] for v in reversed(top)]
    fig = Figure(figsize=(7, 1.2 + 0.35 * len(top)), layout="tight")
    ax = fig.add_subplot()
    ax.barh(range(len(top)), shares, color="#4C72B0")
    ax.set_yticks(range(len(top)), labels)
    if f.get("k"):
        ax.axvline(1 / f["k"], color="#C44E52", linestyle="--", label=f"uniform ideal 1/{f['k']}")
    if any("target_share" in v for v in top):
        ax.scatter([v.get("target_share", 0.0) for v in reversed(top)], range(len(top)), color="#C44E52",
                   marker="|", s=200, zorder=3, label="target share")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    ax.set_xlabel("share of kept values")
    ax.set_title(f"{name}: top {len(top)} of {f['unique']} unique")
    buf = io.BytesIO()
    with warnings.catch_warnings():  # layout and text are drawn here
        # Names in scripts the default font lacks are drawn as boxes; that is not an error.
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from font", category=UserWarning)
        fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def write_report(report: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write report.json, report.md and plot_<field>.png (non-text fields); return the paths."""
    out_dir = writable_dir(Path(out_dir), "report directory")
    written: list[Path] = []
    plots: dict[str, str] = {}
    used: set[str] = set()
    for name, f in report["fields"].items():
        if f["kind"] != "text" and f["top_values"]:
            stem = "plot_" + re.sub(r"[^A-Za-z0-9_.-]", "_", name)
            png, k = f"{stem}.png", 1
            while png.lower() in used:  # two names that sanitise alike get their own files
                k += 1
                png = f"{stem}-{k}.png"
            used.add(png.lower())
            written.append(atomic_write(out_dir / png, _plot(name, f)))
            plots[name] = written[-1].name
    text = json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    written.insert(0, atomic_write(out_dir / "report.json", text.encode("utf-8")))
    written.insert(1, atomic_write(out_dir / "report.md", _markdown(report, plots).encode("utf-8")))
    return written


# ---------------------------------------------------------------- existing datasets

_EXPECTED = ("a .parquet or .jsonl file, a datasets directory (save_to_disk) "
             "or a generate output directory with records.parquet")


def _read_file(path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".jsonl", ".ndjson", ".json"):
        raise SynthgenError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected {_EXPECTED}")
    try:
        if suffix in (".parquet", ".pq"):
            return pl.read_parquet(path)
        with path.open("rb") as fh:
            head = fh.read(4096).lstrip()
        if not head:
            return pl.DataFrame()
        if suffix == ".json" and head.startswith(b"["):
            return pl.read_json(path)
        return pl.read_ndjson(path)
    except (pl.exceptions.PolarsError, OSError, ValueError) as e:
        kind = "parquet" if suffix in (".parquet", ".pq") else "JSON lines"
        raise SynthgenError(f"{path}: cannot read as {kind}: {e}") from e


def _read_hf(path: Path) -> pl.DataFrame:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            split = "train" if "train" in ds else next(iter(ds)) if len(ds) == 1 else None
            if split is None:
                raise SynthgenError(f"{path}: a DatasetDict with splits {list(ds)}; "
                                    "pass one split's directory (e.g. .../train)")
            ds = ds[split]
        return ds.to_polars()
    except (OSError, ValueError, KeyError, pl.exceptions.PolarsError) as e:
        raise SynthgenError(f"{path}: cannot load as a datasets directory: {e}") from e


def load_dataset_table(path: Path) -> pl.DataFrame:
    """Load a parquet/jsonl file, an HF ``save_to_disk`` directory or a generate output dir."""
    path = Path(path)
    if not path.exists():
        raise SynthgenError(f"{path}: no such file or directory; expected {_EXPECTED}")
    if path.is_dir():
        if (path / "records.parquet").is_file():
            df = _read_file(path / "records.parquet")
        elif any((path / n).is_file() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
            df = _read_hf(path)
        elif (path / "dataset" / "state.json").is_file():
            df = _read_hf(path / "dataset")
        else:
            raise SynthgenError(f"{path}: directory holds no dataset; expected {_EXPECTED}")
    else:
        df = _read_file(path)
    if df.height == 0 or df.width == 0:
        raise SynthgenError(f"{path}: the dataset is empty (no records)")
    return df


def infer_field(series: pl.Series) -> FieldInfo:
    """Kind of an existing column: long strings are text, integers 'integer', the rest open categories."""
    if series.dtype == pl.String:
        mean_words = series.drop_nulls().str.extract_all(r"\S+").list.len().mean()
        return FieldInfo(series.name, "text" if (mean_words or 0) > TEXT_MIN_MEAN_WORDS else "unknown")
    if series.dtype.is_integer():
        return FieldInfo(series.name, "integer")
    return FieldInfo(series.name, "unknown")


REPORT_FILES = ("report.json", "report.md")


def report_dataset(path: Path, out_dir: Path | None = None, fields: Sequence[str] | None = None,
                   overwrite: bool = False, given: Mapping[str, Sequence[str]] | None = None) -> dict:
    """Report on an existing dataset (no dedup) and return the report.

    Writes into ``out_dir`` (default: a ``report`` folder beside the file, or inside the
    directory). A folder that already holds a report (a finished ``generate`` run's own,
    or an earlier ``synthgen report``) is refused unless ``overwrite``. ``given`` maps a
    column to the columns it is conditioned on (``{"first_name": ["gender"]}``): those
    fields get a ``coherence`` entry, as a generated field with parents does.
    """
    path = Path(path)
    out = Path(out_dir) if out_dir is not None else (path if path.is_dir() else path.parent) / "report"
    existing = [name for name in REPORT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise SynthgenError(f"{out} already holds a report ({', '.join(existing)}); pass --overwrite to "
                            "replace it or choose another -o")
    df = load_dataset_table(path)
    if fields:
        wanted = list(dict.fromkeys(fields))
        unknown = [f for f in wanted if f not in df.columns]
        if unknown:
            raise SynthgenError(f"{path}: unknown field(s) {', '.join(unknown)}; "
                                f"available columns: {', '.join(df.columns)}")
        df = df.select(wanted)
    parents = _given_parents(path, df.columns, given or {}, selected=bool(fields))
    writable_dir(out, "report directory")
    infos = [dataclasses.replace(infer_field(df[c]), parents=parents.get(c, ())) for c in df.columns]
    report = build_report(df, infos, recipe=None, n_requested=df.height, n_generated=df.height, removed={})
    report["source"] = str(path)
    report["report_dir"] = str(out)
    write_report(report, out)
    log.info("report on %s (%d records) written to %s", path, df.height, out)
    return report


def _given_parents(path: Path, columns: Sequence[str], given: Mapping[str, Sequence[str]],
                   selected: bool) -> dict[str, tuple[str, ...]]:
    """Check ``given`` (column -> the columns it is conditioned on) against the dataset's columns."""
    parents: dict[str, tuple[str, ...]] = {}
    for child, names in given.items():
        names = tuple(dict.fromkeys(names))
        if not names:
            raise SynthgenError(f"given: {child!r} names no parent column")
        if child in names:
            raise SynthgenError(f"given: {child!r} cannot be its own parent")
        parents[child] = names
    named = list(dict.fromkeys([*parents, *(p for names in parents.values() for p in names)]))
    unknown = [c for c in named if c not in columns]
    if unknown:
        where = "among the selected fields" if selected else "in the dataset"
        raise SynthgenError(f"{path}: given: column(s) not {where}: {', '.join(unknown)}; "
                            f"available columns: {', '.join(columns)}")
    return parents
