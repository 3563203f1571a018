"""Writing a report: ``report.json``, ``report.md`` (with the coherence and check sections)
and one bar chart per categorical field (matplotlib ``Figure``, no global state)."""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synthgen.io import atomic_write, writable_dir

log = logging.getLogger(__name__)


def _fmt(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _cell(value: Any, width: int = 40) -> str:
    s = " ".join(str(value).split())
    s = s if len(s) <= width else s[: width - 1] + "…"
    return s.replace("|", "\\|")


def _timing_lines(timing: Mapping[str, Any]) -> list[str]:
    """The "Time by field" section: one line per field filled in this process."""
    fields = timing.get("fields") or {}
    if not fields:
        return []
    total = sum(f["seconds"] for f in fields.values()) or 1.0
    lines = ["", "## Time by field", "", "| field | seconds | share | prompts scored | options scored "
             "| tokens scored | tokens generated | samples | retries | peak memory rise (MiB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {_cell(name)} | {_fmt(f['seconds'], 1)} | {_fmt(f['seconds'] / total, 2)} | {f['prompts_scored']} "
              f"| {f['options_scored']} | {f.get('tokens_scored', 0)} | {f['tokens_generated']} | {f['samples']} "
              f"| {f['retries']} | {_fmt(f.get('peak_rss_rise_mib'), 0)} |"
              for name, f in fields.items()]
    if timing.get("peak_rss_mib"):
        lines += ["", f"Peak memory of the process: {_fmt(timing['peak_rss_mib'], 0)} MiB."]
    return lines


def _markdown(report: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    rm, t = report["removed"], report["timing"]
    lines = [f"# synthgen report{': ' + str(report['recipe']) if report.get('recipe') else ''}", "",
             f"- records: {report['n_requested']} requested, {report['n_generated']} generated, "
             f"**{report['n_kept']} kept**",
             f"- removed: {rm['invalid']} invalid, {rm['exact_duplicates']} exact duplicates, "
             f"{rm['near_duplicates']} near duplicates"]
    if t.get("seconds") is not None:
        lines.append(f"- time: {_fmt(t['seconds'], 1)} s ({_fmt(t['records_per_second'], 2)} records/s)")
    if report.get("tune"):
        tune = report["tune"]
        audit = ", ".join(f"{n} {_fmt(f['kl_to_target'])}" for n, f in tune["audit"]["fields"].items())
        lines.append(f"- recipe adapter: `{tune['adapter']}` (tuned in {_fmt(tune['seconds'], 0)} s; held-out "
                     f"audit, KL to the weights in nats: {audit})")
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
    lines += _open_lines(report)
    lines += _timing_lines(t)
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


def _open_lines(report: Mapping[str, Any]) -> list[str]:
    """The report.md "Open fields" section: validity and novelty, one line per open field."""
    rows = {name: f["open"] for name, f in report["fields"].items() if f.get("open")}
    if not rows:
        return []
    lines = ["", "## Open fields", "", "Valid: in the record's reference set when the field has a reference, "
             "else passed the field's checks (rate per sample drawn). Novel: valid and not among the seed values.",
             ""]
    for name, o in rows.items():
        novel = ("no seed values" if o["seed_values"] is None else
                 f"{o['novel_valid']} novel ({_fmt(o['novel_share'])} of unique valid; "
                 f"{o['seeds_reached']} of {o['seed_values']} seeds reached)")
        lines.append(f"- {_cell(name)}: valid rate {_fmt(o['valid_rate'])} (by {o['validity']}), "
                     f"{o['unique_valid']} unique valid, {novel}")
    return lines


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
