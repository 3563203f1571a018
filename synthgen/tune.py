"""Recipe adapters on demand: ``synthgen generate RECIPE --tune`` (or ``tune: true`` in the recipe).

:func:`tune_recipe` trains a LoRA adapter for the recipe's own choice and
integer fields (those the adapter fills), starting from the recipe's adapter
(the model's shipped diffuse adapter by default), with one fast training
recipe (:data:`TUNE_CONFIG`):

* the tasks are the fields' prompts as generation asks them, every condition
  of a conditional field (its option parents' values in the prompt) and a few
  drawn prompts of the others, towards the recipe's weights;
* the loss is that of the distribution renormalised over the options, the one
  exact sampling draws from; a field with many options is trained on a random
  sample of them at each step, renormalised over the sample;
* the run stops as soon as every field's mean KL(model ‖ weights) over an
  epoch is at most :data:`TUNE_CONFIG` ``stop_kl``.

The adapter is cached under the model cache (``$SYNTHGEN_CACHE/tuned/``), keyed
by a fingerprint of the model, the starting adapter's weights, the training
recipe and every task (prompt, options, weights), so a second run with the same
recipe reuses it at once. A cached adapter whose weights no longer match the
sha256 it was saved with is tuned again, never trusted. After training, the
adapter is audited (exact metrics) on prompts drawn with another seed; the
audit is kept with the adapter (``tune.json``) and goes into the run's
``run.json`` and report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from synthgen.adapters import resolve_adapter
from synthgen.errors import ConfigError
from synthgen.io import atomic_write
from synthgen.provenance import adapter_digest, sha256_file
from synthgen.recipe import Recipe
from synthgen.training.config import TrainConfig, config_tasks, epoch_tasks
from synthgen.training.recipe_tasks import tasks_from_recipe
from synthgen.training.tasks import Task, task_to_dict

__all__ = ["TUNE_CONFIG", "TuneResult", "tunable_fields", "tune_config", "tune_recipe"]

log = logging.getLogger(__name__)

TUNE_FORMAT = "synthgen-tune-v1"  # what tune.json holds; another format is tuned again
#: The training recipe of ``--tune`` (keys of :class:`synthgen.training.config.TrainConfig`).
TUNE_CONFIG: dict = {
    "renormalize": True,
    "max_targets_per_step": 24,
    "every_condition": True,
    "prompts_per_field": 4,
    "family_min_tasks": 16,
    "stop_kl": 0.03,
    "lr": 5.0e-3,
    "lr_schedule": "cosine",
    "tasks_per_step": 1,
    "seed": 0,
}
#: Task steps a run is scheduled for: ``epochs`` = this / tasks per epoch, within
#: :data:`TUNE_EPOCHS` (the cosine schedule decays over them; ``stop_kl`` may end it sooner).
TUNE_TASK_STEPS = 160
TUNE_EPOCHS = (2, 12)
AUDIT_PROMPTS = 4  # held-out prompts per field in the audit after tuning
AUDIT_SEED_OFFSET = 1  # the audit draws its prompts with the training seed + this


@dataclass
class TuneResult:
    """The outcome of :func:`tune_recipe`: the adapter to generate with (None: nothing to
    tune), whether it came from the cache, and ``info``, the block for ``run.json`` and the
    report (adapter path and sha256, what it started from, the fields, the audit)."""

    adapter: Path | None
    cached: bool
    info: dict | None
    message: str


def tunable_fields(recipe: Recipe) -> tuple[list[str], dict[str, str]]:
    """The fields ``--tune`` trains (choice and integer fields the adapter fills, whose prompt
    can be rendered without the model), and the others with why not."""
    built = tasks_from_recipe(recipe, 1, 0)
    skipped = dict(built.skipped)
    fields = []
    for name in dict.fromkeys(t.family for t in built.tasks):
        if recipe.fields[name].use_adapter:
            fields.append(name)
        else:
            skipped[name] = "filled by the base model (use_adapter: false)"
    return fields, skipped


def tune_config(recipe: Recipe, fields: list[str], **overrides) -> TrainConfig:
    """The training config of ``--tune`` for these fields of ``recipe``, from its adapter:
    :data:`TUNE_CONFIG`, with ``epochs`` from :data:`TUNE_TASK_STEPS` unless overridden."""
    start = resolve_adapter(recipe.adapter or "default", model=recipe.model)
    values = {"epochs": 1, **TUNE_CONFIG, **overrides}
    config = TrainConfig(recipe=str(recipe.path), families=list(fields), model=recipe.model,
                         init_adapter=str(start) if start else None, source=f"--tune {recipe.path}", **values)
    if "epochs" in overrides:
        return config
    per_epoch = len(epoch_tasks(config, config_tasks(config, recipe)))
    low, high = TUNE_EPOCHS
    return dataclasses.replace(config, epochs=min(high, max(low, math.ceil(TUNE_TASK_STEPS / per_epoch))))


def fingerprint(config: TrainConfig, tasks: list[Task], model_name: str) -> str:
    """sha256 of what the tuned adapter depends on: the model, the starting adapter's
    weights, the training recipe and every task's prompt, targets and weights."""
    keys = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("recipe", "init_adapter", "source")}
    payload = {"format": TUNE_FORMAT, "model": model_name, "init_adapter_sha256": adapter_digest(config.init_adapter),
               "config": keys, "tasks": [task_to_dict(t) for t in tasks]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def cache_root() -> Path:
    """Where tuned adapters are kept: ``tuned/`` in the model cache (``$SYNTHGEN_CACHE``)."""
    from synthgen.store import cache_dir

    return cache_dir() / "tuned"


def _cache_problem(path: Path, key: str) -> str | None:
    """Why the cached adapter in ``path`` cannot be used (None: it can)."""
    try:
        info = json.loads((path / "tune.json").read_text(encoding="utf-8"))
        json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        return f"{Path(exc.filename).name} missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"unreadable ({exc})"
    if not isinstance(info, dict) or info.get("format") != TUNE_FORMAT or info.get("fingerprint") != key:
        return "tune.json does not match this recipe"
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        return "adapter_model.safetensors missing"
    if sha256_file(weights) != info.get("adapter_sha256"):
        return "adapter_model.safetensors does not match its sha256"
    return None


def tune_recipe(recipe: Recipe, *, on_start: Callable[[dict], None] | None = None,
                on_step: Callable[[dict], None] | None = None, cache: Path | None = None) -> TuneResult:
    """The recipe adapter for ``recipe``: from the cache when it holds a sound one, else trained now.

    Args:
        recipe: The recipe, with any command-line overrides (model, adapter) applied.
        on_start, on_step: Progress of the training (:func:`synthgen.training.loop.train`).
        cache: The folder of tuned adapters (default :func:`cache_root`).

    Returns:
        The adapter and its ``info`` block, or ``adapter=None`` and a message when the
        recipe has no field to tune.
    """
    from synthgen.executors import EngineSpec

    fields, skipped = tunable_fields(recipe)
    if not fields:
        why = "; ".join(f"{n}: {w}" for n, w in skipped.items()) or "no fields"
        return TuneResult(None, False, None, f"nothing to tune: {recipe.path} has no choice or integer field "
                                             f"filled by the adapter ({why})")
    free = [n for n in recipe.order if recipe.fields[n].uses_model and recipe.fields[n].use_adapter
            and recipe.fields[n].closed_values is None]
    if free:
        log.warning("fields %s are sampled freely with the adapter on: a tuned adapter is trained on the "
                    "distribution over the options only and may make free replies invalid; consider "
                    "use_adapter: false for them", ", ".join(free))
    config = tune_config(recipe, fields)
    tasks = config_tasks(config, recipe)
    model_name = EngineSpec.for_recipe(recipe).model_name
    key = fingerprint(config, tasks, model_name)
    path = (cache or cache_root()) / f"{_slug(recipe.name)}-{key[:16]}"
    if path.exists():
        problem = _cache_problem(path, key)
        if problem is None:
            info = json.loads((path / "tune.json").read_text(encoding="utf-8"))["run"]
            return TuneResult(path, True, info, f"tune: cached recipe adapter {path} "
                                                f"({len(fields)} fields, tuned in {info['seconds']:.0f} s)")
        log.warning("the cached recipe adapter %s is damaged (%s); tuning it again", path, problem)
        shutil.rmtree(path)
    info = _train_into(path, recipe, config, key, model_name, on_start, on_step)
    worst = max(info["audit"]["fields"].items(), key=lambda item: item[1]["kl_to_target"])
    return TuneResult(path, False, info, f"tune: recipe adapter for {len(fields)} fields tuned in "
                                         f"{info['seconds']:.0f} s, saved to {path} (held-out audit: largest KL "
                                         f"{worst[1]['kl_to_target']:.3f} nats, {worst[0]})")


def _train_into(path: Path, recipe: Recipe, config: TrainConfig, key: str, model_name: str,
                on_start, on_step) -> dict:
    """Train, audit and save the adapter into ``path`` (written whole: a partial folder first)."""
    from synthgen.training.loop import train

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    start = time.perf_counter()
    try:
        result = train(config, partial, on_step=on_step, on_start=on_start, recipe=recipe)
        audit = audit_adapter(recipe, partial, config)
        info = {"adapter": str(path), "adapter_sha256": adapter_digest(partial),
                "init_adapter": config.init_adapter, "init_adapter_sha256": adapter_digest(config.init_adapter),
                "model": model_name, "fingerprint": key, "fields": list(config.families),
                "seconds": round(time.perf_counter() - start, 1), "training_seconds": round(result.seconds, 1),
                "epochs": result.epochs_run, "stopped_early": result.stopped_early, "audit": audit}
        record = {"format": TUNE_FORMAT, "fingerprint": key, "adapter_sha256": info["adapter_sha256"],
                  "recipe": str(recipe.path), "run": info}
        atomic_write(partial / "tune.json", (json.dumps(record, indent=2) + "\n").encode("utf-8"))
        os.replace(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return info


def audit_adapter(recipe: Recipe, adapter: Path, config: TrainConfig) -> dict:
    """Exact metrics of ``adapter`` on each tuned field, over up to :data:`AUDIT_PROMPTS` prompts
    per field drawn with another seed than training's (held out where a field has more prompts):
    per field the mean KL to the weights, normalised entropy and valid mass, and the largest KL."""
    from synthgen.engines import create_engine
    from synthgen.training.audit import audit

    built = tasks_from_recipe(recipe, AUDIT_PROMPTS, config.seed + AUDIT_SEED_OFFSET)
    tasks = [t for t in built.tasks if t.family in set(config.families)]
    engine = create_engine("transformers", model=recipe.model, adapter=str(adapter))
    rows = audit(engine, tasks, samples=0)["tasks"]
    fields = {}
    for name in config.families:
        own = [r["exact"] for r in rows if r["family"] == name]
        entropies = [r["normalized_entropy"] for r in own if r["normalized_entropy"] is not None]
        fields[name] = {"prompts": len(own),
                        "kl_to_target": sum(r["kl_to_target"] for r in own) / len(own),
                        "max_kl_to_target": max(r["kl_to_target"] for r in own),
                        "normalized_entropy": sum(entropies) / len(entropies) if entropies else None,
                        "valid_mass": sum(r["valid_mass"] for r in own) / len(own)}
    return {"prompt_seed": config.seed + AUDIT_SEED_OFFSET, "fields": fields}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "recipe"


def check_tunable(recipe: Recipe) -> None:
    """Raise a ConfigError when ``--tune`` cannot run for this recipe's engine."""
    if recipe.engine != "transformers":
        raise ConfigError(recipe.path, "engine", f"--tune trains with the transformers engine; the recipe runs "
                                                 f"{recipe.engine!r} (tune once with --engine transformers, then "
                                                 "pass the adapter with --adapter)")
