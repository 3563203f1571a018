"""How diffuse is a model? (``synthgen audit``)

For each task, two views:

* **exact**, from scoring every target (:meth:`Engine.score`): ``valid_mass``
  (probability of replying exactly with some target), ``normalized_entropy`` of
  the distribution renormalised over the targets (``H / log K``),
  ``kl_to_target`` = KL(model ‖ target weights) in nats, ``top1_share``;
* **sampled**, from ``n`` free samples at temperature 1: ``valid_rate``,
  ``coverage`` = unique valid answers / K, ``unique_valid`` and the normalised
  entropy of the valid samples.

:func:`run_audit` is the whole command: it builds the tasks (a task file or a
recipe's fields), audits the adapter and the base model, and writes the JSON
report (with a ``provenance`` block) and a plot of the distributions.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from synthgen.diversity import distribution_entropy, distribution_kl, log_total_mass, normalized_entropy, softmax
from synthgen.errors import SynthgenError
from synthgen.training.tasks import Task

if TYPE_CHECKING:
    from synthgen.engines.base import Engine

log = logging.getLogger(__name__)

EXACT_KEYS = ("valid_mass", "normalized_entropy", "kl_to_target", "top1_share")
SAMPLED_KEYS = ("valid_rate", "coverage", "unique_valid", "normalized_entropy")


def exact_metrics(logprobs: Sequence[float], weights: Sequence[float]) -> dict:
    """Metrics of the model's distribution over the K targets of a task."""
    q = softmax(logprobs)
    k = len(q)
    return {
        "valid_mass": math.exp(log_total_mass(logprobs)),
        "normalized_entropy": distribution_entropy(q) / math.log(k) if k > 1 else None,  # undefined for one target
        "kl_to_target": distribution_kl(q, weights),
        "top1_share": float(q.max()),
    }


def sampled_metrics(samples: Sequence[str], task: Task) -> dict:
    """Metrics of free samples: how many are valid, and how many targets they cover."""
    valid = [s.strip() for s in samples if task.is_valid(s)]
    counts = Counter(valid)
    k = len(task.targets)
    return {
        "n": len(samples),
        "valid_rate": len(valid) / len(samples) if samples else 0.0,
        "coverage": len(counts) / k,
        "unique_valid": len(counts),
        "normalized_entropy": normalized_entropy(counts, k),
    }


def _audit(engine: Engine, tasks: Sequence[Task], samples: int, seed: int, max_new_tokens: int,
           on_task: Callable[[Task], None] | None) -> tuple[dict, dict[str, np.ndarray]]:
    """The report of :func:`audit`, and each task's distribution over its targets (by id)."""
    rows, shares = [], {}
    for i, task in enumerate(tasks):
        logprobs = engine.score(task.prompt, task.targets)
        shares[task.id] = softmax(logprobs)
        row = {"id": task.id, "family": task.family, "k": len(task.targets),
               "exact": exact_metrics(logprobs, task.weights)}
        if samples > 0:
            outs = engine.generate([task.prompt], n=samples, temperature=1.0, top_p=1.0,
                                   max_new_tokens=max_new_tokens, seed=seed + i)[0]
            row["sampled"] = sampled_metrics(outs, task)
            row["examples"] = Counter(o.strip() for o in outs).most_common(5)
        rows.append(row)
        if on_task:
            on_task(task)
    report = {"model": engine.model_name, "adapter": engine.adapter_name, "tasks": rows, "summary": summarize(rows)}
    return report, shares


def audit(engine: Engine, tasks: Sequence[Task], samples: int = 100, seed: int = 0,
          max_new_tokens: int = 16, on_task: Callable[[Task], None] | None = None) -> dict:
    """Audit one engine on a task list.

    Args:
        engine: The model (with or without its adapter) to audit.
        tasks: The tasks.
        samples: Free samples per task at temperature 1 (0: exact metrics only).
        seed: Seed of task ``i``'s samples is ``seed + i``.
        max_new_tokens: Length limit of a sample.
        on_task: Called after each task.

    Returns:
        ``{"model", "adapter", "tasks": [{"id", "family", "k", "exact", "sampled",
        "examples"}], "summary": {"exact", "sampled"}}`` (the ``audit --json`` object).
    """
    return _audit(engine, tasks, samples, seed, max_new_tokens, on_task)[0]


def summarize(rows: Sequence[dict]) -> dict:
    """Mean of every exact and sampled metric over ``rows`` (undefined values left out)."""
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
    """Write ``report`` as indented JSON (atomically); returns the path."""
    from synthgen.io import atomic_write, json_safe

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, json.dumps(json_safe(report), indent=2, allow_nan=False).encode("utf-8"))



def plot_tasks(tasks: Sequence[Task], max_tasks: int = 6) -> list[Task]:
    """The tasks :func:`plot` shows: the first few with at most 40 targets (else the first few)."""
    return [t for t in tasks if len(t.targets) <= 40][:max_tasks] or list(tasks[:max_tasks])


def plot(shares: dict[str, dict[str, Sequence[float]]], tasks: Sequence[Task], path: str | Path) -> Path:
    """Bar charts of the distribution over targets (renormalised), per audited model, one chart a task.

    Args:
        shares: For each label (e.g. ``base``, ``adapter``), each task's shares by task id.
        tasks: The tasks to chart (:func:`plot_tasks`).
        path: The PNG to write.

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend, no figure registry

    from synthgen.io import atomic_write

    fig = Figure(figsize=(10, 2.6 * len(tasks)))
    axes = fig.subplots(len(tasks), 1, squeeze=False)
    width = 0.8 / len(shares)
    for ax, task in zip(axes[:, 0], tasks):
        for j, (label, by_task) in enumerate(shares.items()):
            p = by_task[task.id]
            ax.bar([i + j * width for i in range(len(p))], p, width=width, label=label)
        ax.axhline(1 / len(task.targets), color="k", lw=0.8, ls="--", label="uniform")
        ax.set_title(task.id, fontsize=9)
        ax.set_xticks(range(len(task.targets)))
        ax.set_xticklabels(task.targets, rotation=90, fontsize=6)
    axes[0, 0].legend(fontsize=7)
    buf = io.BytesIO()
    with warnings.catch_warnings():  # layout and text are drawn here
        # Names in scripts the default font lacks are drawn as boxes; that is not an error.
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from font", category=UserWarning)
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, buf.getvalue())


# ------------------------------------------------------------------ the command
def audit_tasks(tasks_file: str | Path | None = None, recipe: str | Path | None = None,
                families: Sequence[str] | None = None, prompts_per_field: int = 4,
                prompt_seed: int = 1) -> tuple[list[Task], str | None, str | None]:
    """The tasks to audit, from a task file or a recipe's fields (one of them), and the recipe's model
    and adapter (None, None for a task file).

    Raises:
        SynthgenError: A named family is not in the file or the recipe, or the recipe
            has no choice or integer field.
    """
    if (tasks_file is None) == (recipe is None):
        raise ValueError("give a task file or a recipe (one of them)")
    if recipe is None:
        from synthgen.training.tasks import load_tasks

        return load_tasks(tasks_file, families=families), None, None
    from synthgen.recipe import load_recipe
    from synthgen.training.recipe_tasks import tasks_from_recipe

    loaded = load_recipe(recipe)
    tasks = tasks_from_recipe(loaded, prompts_per_field, prompt_seed).tasks
    known = {t.family for t in tasks}
    for fam in families or ():
        if fam not in known:
            raise SynthgenError(f"{recipe}: --families: no field {fam!r} to audit; it has: {', '.join(sorted(known))}")
    tasks = [t for t in tasks if families is None or t.family in families]
    if not tasks:
        raise SynthgenError(f"{recipe}: fields: no choice or integer field to audit")
    return tasks, loaded.model, loaded.adapter


def _counter(on_progress: Callable[[str, int, int], None], label: str, total: int) -> Callable[[Task], None]:
    """Report 0 of ``total`` tasks of ``label`` now, and a callback reporting each one done."""
    on_progress(label, 0, total)
    done = itertools.count(1)
    return lambda _task: on_progress(label, next(done), total)


@dataclass
class AuditRun:
    """What :func:`run_audit` produced."""

    reports: dict[str, dict]  # label ("base", "adapter") -> that model's audit, in the order audited
    report: dict  # the ``audit --json`` object: the last model's, with "baseline" and "provenance"
    json_path: Path | None
    plot_path: Path | None

    @property
    def table(self) -> str:
        """The side-by-side text table of :func:`format_table`."""
        return format_table(self.reports)


def run_audit(tasks_file: str | Path | None = None, *, recipe: str | Path | None = None,
              families: Sequence[str] | None = None, prompts_per_field: int = 4, prompt_seed: int = 1,
              model: str | None = None, adapter: str | None = None, compare: bool = True, samples: int = 100,
              seed: int = 0, json_out: str | Path | None = None, plot_out: str | Path | None = None,
              argv: list[str] | None = None,
              on_progress: Callable[[str, int, int], None] | None = None) -> AuditRun:
    """Audit a model with its adapter (and the base model beside it): ``synthgen audit``.

    Args:
        tasks_file: A task file (JSONL); or give ``recipe``.
        recipe: A recipe whose choice and integer fields become the tasks, with
            ``prompts_per_field`` prompts per field drawn with ``prompt_seed``.
        families: Audit only these families (recipe: fields).
        prompts_per_field: See ``recipe``.
        prompt_seed: See ``recipe``.
        model: The model (default: the recipe's, else the default model).
        adapter: An adapter directory or shipped name, ``default`` (the model's shipped one) or
            ``none``; None: the recipe's adapter (``default`` if it names none, or for a task file).
        compare: Also audit the base model; its report becomes ``"baseline"``.
        samples: Free samples per task (0: exact metrics only).
        seed: Seed of the samples.
        json_out: Write the report here.
        plot_out: Write a PNG of a few tasks' distributions here.
        argv: The command line for the provenance block (default ``sys.argv``).
        on_progress: Called with (label, tasks done, tasks) before the first task of
            each audited model and after every task.

    Returns:
        The reports by label, the ``audit --json`` object and the paths written.
    """
    from synthgen.adapters import resolve_adapter
    from synthgen.engines.transformers import TransformersEngine
    from synthgen.io import writable_file
    from synthgen.provenance import provenance

    for path, what in ((json_out, "--json file"), (plot_out, "--plot file")):
        if path:  # checked before any model loads, so the audit's result cannot be lost at the end
            writable_file(Path(path), what)
    tasks, recipe_model, recipe_adapter = audit_tasks(tasks_file, recipe, families, prompts_per_field, prompt_seed)
    model = model or recipe_model
    adapter = adapter or recipe_adapter or "default"
    adapter_path = resolve_adapter(adapter, model=model)
    runs = {"adapter": str(adapter_path)} if adapter_path else {}
    if compare or not adapter_path:
        runs = {"base": "none", **runs}
    reports, shares = {}, {}
    for label, which in runs.items():
        engine = TransformersEngine.load(model, adapter=which)
        on_task = _counter(on_progress, label, len(tasks)) if on_progress else None
        reports[label], shares[label] = _audit(engine, tasks, samples, seed, 16, on_task)
    report = dict(reports[list(runs)[-1]])
    if compare and len(reports) > 1:
        report["baseline"] = reports["base"]
    report["provenance"] = provenance(argv, adapters={"adapter": adapter_path} if adapter_path else {})
    json_path = write_json(report, json_out) if json_out else None
    plot_path = None
    if plot_out:
        shown = plot_tasks(tasks)
        plot_path = plot({label: {t.id: by_task[t.id] for t in shown} for label, by_task in shares.items()},
                         shown, plot_out)
    return AuditRun(reports, report, json_path, plot_path)
