"""How diffuse is a model? (``synthgen audit``)

For each task, two views:

* **exact**, from scoring every target (:meth:`Engine.score`): ``valid_mass``
  (probability of replying exactly with some target), ``normalized_entropy`` of
  the distribution renormalised over the targets (``H / log K``),
  ``kl_to_target`` = KL(model ‖ target weights) in nats, ``top1_share``;
* **sampled**, from ``n`` free samples at temperature 1: ``valid_rate``,
  ``coverage`` = unique valid answers / K, ``unique_valid`` and the normalised
  entropy of the valid samples.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from synthgen.training.tasks import Task

if TYPE_CHECKING:
    from synthgen.engines.base import Engine

log = logging.getLogger(__name__)

EXACT_KEYS = ("valid_mass", "normalized_entropy", "kl_to_target", "top1_share")
SAMPLED_KEYS = ("valid_rate", "coverage", "unique_valid", "normalized_entropy")


def exact_metrics(logprobs: Sequence[float], weights: Sequence[float]) -> dict:
    """Metrics of the model's distribution over the K targets of a task."""
    peak = max(logprobs)
    probs = [math.exp(v - peak) for v in logprobs]
    total = sum(probs)
    q = [p / total for p in probs]
    k = len(q)
    entropy = -sum(p * math.log(p) for p in q if p > 0)
    kl = sum(p * math.log(p / w) for p, w in zip(q, weights) if p > 0)
    return {
        "valid_mass": math.exp(peak) * total,
        "normalized_entropy": entropy / math.log(k) if k > 1 else None,  # undefined for one target
        "kl_to_target": kl,
        "top1_share": max(q),
    }


def sampled_metrics(samples: Sequence[str], task: Task) -> dict:
    valid = [s.strip() for s in samples if task.is_valid(s)]
    counts = Counter(valid)
    k = len(task.targets)
    n_valid = len(valid)
    entropy = -sum(c / n_valid * math.log(c / n_valid) for c in counts.values()) if n_valid else 0.0
    return {
        "n": len(samples),
        "valid_rate": n_valid / len(samples) if samples else 0.0,
        "coverage": len(counts) / k,
        "unique_valid": len(counts),
        "normalized_entropy": entropy / math.log(k) if k > 1 else None,
    }


def audit(engine: Engine, tasks: Sequence[Task], samples: int = 100, seed: int = 0,
          max_new_tokens: int = 16, on_task: Callable[[Task], None] | None = None) -> dict:
    """Audit one engine on a task list; returns the ``audit --json`` object."""
    rows = []
    for i, task in enumerate(tasks):
        row = {"id": task.id, "family": task.family, "k": len(task.targets),
               "exact": exact_metrics(engine.score(task.prompt, task.targets), task.weights)}
        if samples > 0:
            outs = engine.generate([task.prompt], n=samples, temperature=1.0, top_p=1.0,
                                   max_new_tokens=max_new_tokens, seed=seed + i)[0]
            row["sampled"] = sampled_metrics(outs, task)
            row["examples"] = Counter(o.strip() for o in outs).most_common(5)
        rows.append(row)
        if on_task:
            on_task(task)
    return {
        "model": engine.model_name,
        "adapter": engine.adapter_name,
        "tasks": rows,
        "summary": summarize(rows),
    }


def summarize(rows: Sequence[dict]) -> dict:
    def means(section: str, keys: Sequence[str]) -> dict:
        out = {}
        for key in keys:  # None (undefined, e.g. entropy of a one-target task) is left out of the mean
            values = [r[section][key] for r in rows if section in r and r[section][key] is not None]
            out[key] = sum(values) / len(values) if values else None
        return out if any(section in r for r in rows) else {}

    return {"exact": means("exact", EXACT_KEYS), "sampled": means("sampled", SAMPLED_KEYS)}


def by_family(report: dict) -> dict[str, dict]:
    """Mean exact and sampled metrics per family."""
    families: dict[str, list[dict]] = {}
    for row in report["tasks"]:
        families.setdefault(row["family"], []).append(row)
    return {fam: summarize(rows) for fam, rows in sorted(families.items())}


def format_table(reports: dict[str, dict]) -> str:
    """A side-by-side text table, one column group per audited engine."""
    names = list(reports)
    header = f"{'family':<14}" + "".join(f"| {n[:26]:<26}" for n in names)
    sub = f"{'':<14}" + "| valid  H_norm  top1  cov  " * len(names)
    lines = [header, sub]
    fams = by_family(next(iter(reports.values())))
    per = {n: by_family(r) for n, r in reports.items()}
    for fam in list(fams) + ["ALL"]:
        cells = []
        for n in names:
            s = reports[n]["summary"] if fam == "ALL" else per[n][fam]
            e, sm = s["exact"], s.get("sampled") or {}
            cov = f"{sm['coverage']:.2f}" if sm else "  - "
            h = f"{e['normalized_entropy']:.3f}" if e["normalized_entropy"] is not None else "  -  "
            cells.append(f"| {e['valid_mass']:.3f} {h}  {e['top1_share']:.2f} {cov} ")
        lines.append(f"{fam:<14}" + "".join(cells))
    return "\n".join(lines)


def write_json(report: dict, path: str | Path) -> Path:
    from synthgen.io import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, json.dumps(report, indent=2).encode("utf-8"))


def plot(reports: dict[str, dict], tasks: Sequence[Task], engines: dict[str, Engine], path: str | Path,
         max_tasks: int = 6) -> Path:
    """Bar charts of the renormalised distribution over targets, per engine, for a few tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [t for t in tasks if len(t.targets) <= 40][:max_tasks] or list(tasks[:max_tasks])
    fig, axes = plt.subplots(len(chosen), 1, figsize=(10, 2.6 * len(chosen)), squeeze=False)
    for ax, task in zip(axes[:, 0], chosen):
        width = 0.8 / len(engines)
        for j, (name, engine) in enumerate(engines.items()):
            lp = engine.score(task.prompt, task.targets)
            peak = max(lp)
            p = [math.exp(v - peak) for v in lp]
            total = sum(p)
            ax.bar([i + j * width for i in range(len(p))], [v / total for v in p], width=width, label=name)
        ax.axhline(1 / len(task.targets), color="k", lw=0.8, ls="--", label="uniform")
        ax.set_title(task.id, fontsize=9)
        ax.set_xticks(range(len(task.targets)))
        ax.set_xticklabels(task.targets, rotation=90, fontsize=6)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
