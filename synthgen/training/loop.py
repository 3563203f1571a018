"""Diffuse fine-tuning (``synthgen train``): the paper's method.

For each task the loss is ``-Σ_y w_y · log p(y + end-of-turn | prompt)``; its
minimum is the entropy ``H(w)`` of the target weights, reached when the model's
distribution over complete answers equals ``w``. The prompt is encoded once per
task and shared by all its targets, which run as a token trie after it
(:func:`synthgen.engines.trie.packed_option_logprobs`), with the gradient
flowing through it. One AdamW step per ``tasks_per_step``
tasks, tasks shuffled every epoch, gradient norm clipped.

Early stopping follows the paper: a family whose answers are an open set
(names, cities, …) stops training once its epoch loss is within ``(1+γ)`` of
its optimum, so the model does not learn to produce only the listed targets;
closed families (numbers, days) train until within ``(1+tol)``; a family of
one-answer tasks (optimum 0, e.g. facts) until its mean loss per task is at
most ``tol`` nats. The run ends when every family has stopped or after ``epochs``.

Data parallel (:mod:`synthgen.training.distributed`): under ``accelerate
launch`` (or ``torchrun``) with N processes, every process takes its share of
each step's tasks and the gradients are averaged across processes, so N
processes with ``tasks_per_step: k`` compute the same steps as one process
with ``tasks_per_step: N*k``. Process 0 saves the adapter.

Tasks come from a task file (``tasks:``) or from a recipe (``recipe:``, or
``synthgen train --from-recipe``): then every closed-set field of the recipe
becomes tasks whose prompts are the ones generation will ask
(:mod:`synthgen.training.recipe_tasks`) and whose weights are the recipe's.
The config keys: :class:`synthgen.training.config.TrainConfig` and ``docs/training.md``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from synthgen.adapters import SHIPPED_DIR
from synthgen.errors import ConfigError, SynthgenError
from synthgen.io import writable_dir
from synthgen.training.config import LoraOptions, TrainConfig, config_tasks, epoch_tasks
from synthgen.training.distributed import DistributedState, average_gradients, steps_per_epoch
from synthgen.training.loss import family_done, loss_from_logp, option_logp, renormalized_kl, subsample, task_loss
from synthgen.training.preserve import Anchor, anchor_kl, build_anchors, read_prompts
from synthgen.training.tasks import Task, save_tasks

if TYPE_CHECKING:
    from synthgen.recipe import Recipe

__all__ = ["TrainResult", "family_done", "lora_model", "subsample", "task_loss", "train"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ the model
def lora_model(base_model, options: LoraOptions):
    """Wrap a model in a fresh, trainable LoRA adapter.

    Args:
        base_model: A transformers causal LM.
        options: The adapter's rank, alpha, dropout and target modules.

    Returns:
        The peft model (its LoRA weights trainable, the base frozen).

    Raises:
        SynthgenError: A target module is not in the model.
    """
    from peft import LoraConfig, get_peft_model

    from synthgen.engines.transformers import quiet_peft

    present = {name.rsplit(".", 1)[-1] for name, _ in base_model.named_modules()}
    missing = [m for m in options.target_modules if m not in present]
    if missing:
        raise SynthgenError(f"lora.target_modules: {missing} not found in the model "
                            f"(it has e.g. {sorted(present)[:12]})")
    config = LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout,
                        target_modules=list(options.target_modules), task_type="CAUSAL_LM")
    with quiet_peft():
        return get_peft_model(base_model, config)


def _load_model(config: TrainConfig, model_name: str | None, device: str):
    """The engine (tokenizer, prompt format) and the trainable peft model on its weights."""
    from synthgen.engines.transformers import TransformersEngine

    engine = TransformersEngine.load(model_name, adapter="none", device=device)
    if config.init_adapter is None:
        model = lora_model(engine.model, config.lora)
    else:
        from peft import PeftModel

        from synthgen.adapters import resolve_adapter
        from synthgen.engines.transformers import quiet_peft

        start_from = resolve_adapter(config.init_adapter, model=model_name)
        if start_from is None:
            raise ConfigError(config.source, "init_adapter", f"model {engine.model_name} has no shipped adapter")
        with quiet_peft():
            model = PeftModel.from_pretrained(engine.model, str(start_from), is_trainable=True)
    model.train()
    return engine, model


def _encode(engine, tasks: list[Task]) -> tuple[dict[str, tuple], dict[str, torch.Tensor]]:
    """Each task's prompt and target token ids, and its weights as a tensor, by task id."""
    encoded, weights = {}, {}
    for t in tasks:
        prompt_ids = engine.encode_prompt(t.prompt)
        encoded[t.id] = (prompt_ids, engine.encode_options(engine.format_prompt(t.prompt), prompt_ids, t.targets))
        weights[t.id] = torch.tensor(t.weights, dtype=torch.float32)
    return encoded, weights


def _optimizer(config: TrainConfig, params: list[torch.nn.Parameter], total_steps: int):
    """AdamW and its schedule (None for a constant learning rate)."""
    optimizer = torch.optim.AdamW(params, lr=config.lr, eps=config.adam_eps, weight_decay=config.weight_decay)
    if config.lr_schedule != "cosine":
        return optimizer, None
    # decays to 0 over the steps the run would take without early stopping
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    return optimizer, scheduler


# ------------------------------------------------------------------ the loop
@dataclass
class TrainResult:
    """What :func:`train` returns (losses in nats, summed over the tasks)."""

    out_dir: Path
    epochs_run: int
    final_loss: float
    optimal_loss: float
    seconds: float
    stopped_early: bool


@dataclass
class _Run:
    """What the steps of one training run share."""

    config: TrainConfig
    dist: DistributedState
    model: Any
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    encoded: dict[str, tuple]
    weights: dict[str, torch.Tensor]
    anchors: list[Anchor]
    rng: random.Random  # shuffles the epochs, the same on every process
    step: int = 0
    slot: int = 0  # tasks visited so far over all processes: picks the preserve anchor and the target sample
    history: list[dict] = field(default_factory=list)

    @property
    def per_step(self) -> int:
        """Tasks in one optimizer step, over all processes."""
        return self.config.tasks_per_step * self.dist.world


def _task_backward(run: _Run, task: Task, slot: int) -> tuple[float, float, float]:
    """Backpropagate one task's loss (plus the preserve term on its slot); returns
    the loss, the preserve KL (nan when the slot has none) and KL(q ‖ w) of the
    distribution renormalised over the targets scored."""
    config = run.config
    # The targets a task samples must not depend on which process trains it, so in
    # a step of several tasks (which may be split over processes) they come from a
    # stream of the task's slot. One task per step is never split: its sample comes
    # from the run's own stream, which keeps the shipped adapters (trained one task
    # per step) reproducible from their configs.
    draw = run.rng if run.per_step == 1 else random.Random(f"{config.seed}:{slot}")
    batch, w = subsample(run.encoded[task.id], run.weights[task.id], config.max_targets_per_step, draw,
                         config.renormalize)
    logp = option_logp(run.model, batch, config.chunk_size)
    loss = loss_from_logp(logp, w, config.renormalize)
    every = config.preserve_every
    kl = None
    if run.anchors and slot % every == 0:
        kl = anchor_kl(run.model, run.anchors[slot // every % len(run.anchors)])
    (loss if kl is None else loss + config.preserve_weight * every * kl).backward()
    return (float(loss.detach()), float(kl.detach()) if kl is not None else float("nan"),
            renormalized_kl(logp, w))


def _run_step(run: _Run, group: list[Task]) -> torch.Tensor:
    """One optimizer step on ``group`` (this process trains its share); returns the
    loss and preserve KL of every task of the group, gathered from all processes."""
    config, dist = run.config, run.dist
    first = dist.rank * config.tasks_per_step
    mine = group[first: first + config.tasks_per_step]
    run.optimizer.zero_grad(set_to_none=True)
    stats = torch.zeros((len(group), 3), dtype=torch.float64, device=dist.device)
    for j, task in enumerate(mine, start=first):
        stats[j] = torch.tensor(_task_backward(run, task, run.slot + j), dtype=torch.float64)
    if run.per_step > 1:
        average_gradients(run.params, len(mine), dist)
    dist.all_reduce_sum(stats)
    torch.nn.utils.clip_grad_norm_(run.params, config.clip_norm)
    run.optimizer.step()
    if run.scheduler is not None:
        run.scheduler.step()
    run.step += 1
    run.slot += len(group)
    return stats


def _run_epoch(run: _Run, epoch: int, order: list[Task], active: set[str], optimum: dict[str, float],
               on_step: Callable[[dict], None] | None) -> tuple[dict[str, float], dict[str, list[float]]]:
    """One pass over ``order`` (the tasks of the ``active`` families); returns each family's summed
    loss and its tasks' KL(q ‖ w) values."""
    fam_loss = {f: 0.0 for f in active}
    fam_kl: dict[str, list[float]] = {f: [] for f in active}
    for begin in range(0, len(order), run.per_step):
        group = order[begin: begin + run.per_step]
        stats = _run_step(run, group)
        for j, t in enumerate(group):
            value, kl, shape_kl = (float(x) for x in stats[j])
            fam_loss[t.family] += value
            fam_kl[t.family].append(shape_kl)
            run.history.append({"step": run.step, "epoch": epoch, "task": t.id, "loss": value,
                                "optimal": optimum[t.id], "kl": shape_kl,
                                **({"preserve_kl": kl} if run.anchors and not math.isnan(kl) else {})})
            if on_step:
                on_step({"step": run.step, "epoch": epoch, "task": t.id, "loss": value, "kl": shape_kl,
                         "steps_in_epoch": len(order)})
    return fam_loss, fam_kl


def _end_epoch(config: TrainConfig, epoch: int, tasks: list[Task], order: list[Task], optimum: dict[str, float],
               fam_loss: dict[str, float], fam_kl: dict[str, list[float]], active: set[str]) -> dict:
    """The epoch's record; stops (removes from ``active``) every family that is done: with
    ``stop_kl``, all of them once every family's mean KL is at most ``stop_kl``."""
    record = {"epoch": epoch, "families": {}}
    mean_kl = {fam: sum(values) / len(values) for fam, values in fam_kl.items() if values}
    all_there = config.stop_kl is not None and all(kl <= config.stop_kl for kl in mean_kl.values())
    for fam in sorted(fam_loss):
        opt = sum(optimum[t.id] for t in tasks if t.family == fam)
        slack = config.gamma if fam in config.open_families else config.tol
        if config.stop_kl is None:
            done = family_done(fam_loss[fam], opt, sum(t.family == fam for t in order), slack)
        else:
            done = all_there
        record["families"][fam] = {"loss": fam_loss[fam], "optimal": opt, "kl": mean_kl.get(fam),
                                   "stopped": done}
        if done:
            active.discard(fam)
    record["loss"] = sum(fam_loss.values())
    record["optimal"] = sum(optimum[t.id] for t in order)
    log.info("epoch %d: loss %.3f (optimum %.3f), families still training: %d; mean KL %s",
             epoch, record["loss"], record["optimal"], len(active),
             ", ".join(f"{fam} {kl:.3f}" for fam, kl in sorted(mean_kl.items())))
    return record


def _train_epochs(run: _Run, tasks: list[Task], optimum: dict[str, float],
                  on_step: Callable[[dict], None] | None,
                  on_epoch: Callable[[int, list[dict]], None] | None = None) -> tuple[list[dict], bool]:
    """Epochs until every family has stopped or ``epochs`` have run; returns each
    epoch's record and whether every family stopped. ``on_epoch(epoch, records)``
    is called after every epoch but the last."""
    active = {t.family for t in tasks}
    epochs: list[dict] = []
    for epoch in range(1, run.config.epochs + 1):
        order = [t for t in tasks if t.family in active]
        run.rng.shuffle(order)  # the same order on every process (same seed)
        fam_loss, fam_kl = _run_epoch(run, epoch, order, active, optimum, on_step)
        epochs.append(_end_epoch(run.config, epoch, tasks, order, optimum, fam_loss, fam_kl, active))
        if not active:
            break
        if on_epoch and epoch < run.config.epochs:
            on_epoch(epoch, epochs)
    return epochs, not active


def _checkpoint(run: _Run, out_dir: Path, epoch: int, epochs: list[dict]) -> None:
    """The adapter after ``epoch`` in ``out_dir/epoch-N/``, with the epochs so far."""
    folder = out_dir / f"epoch-{epoch}"
    folder.mkdir(parents=True, exist_ok=True)
    run.model.save_pretrained(str(folder), safe_serialization=True)
    summary = {"config": asdict(run.config), "epochs_run": epoch, "epochs": epochs}
    (folder / "training.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    log.info("saved the adapter after epoch %d in %s", epoch, folder)


def _save(run: _Run, out_dir: Path, model_name: str, tasks: list[Task], unique_tasks: list[Task],
          epochs: list[dict], result: TrainResult) -> None:
    """The adapter (safetensors), ``training.json`` and ``tasks.jsonl`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run.model.save_pretrained(str(out_dir), safe_serialization=True)
    summary = {
        "config": asdict(run.config),
        "model": model_name,
        "tasks": [{"id": t.id, "family": t.family, "k": len(t.targets)} for t in tasks],
        "preserve": [{"prompt": a.prompt, "base_reply": a.reply} for a in run.anchors],
        "optimal_loss": result.optimal_loss,
        "final_epoch_loss": epochs[-1]["loss"] if epochs else None,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "wall_seconds": result.seconds,
        "processes": run.dist.world,
        "device": run.dist.device,
        "epochs": epochs,
        "steps": run.history,
    }
    save_tasks(unique_tasks, out_dir / "tasks.jsonl")  # what it was trained on: `synthgen audit DIR/tasks.jsonl`
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")


def _check_out_dir(out_dir: Path, overwrite: bool) -> Path:
    """Refuse to replace a finished adapter (unless ``overwrite``) or to fill a folder of other files,
    and check the folder is writable, all before the model loads."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SynthgenError(f"output directory {out_dir} is a file; choose another")
    finished = [name for name in ("adapter_config.json", "training.json") if (out_dir / name).exists()]
    if finished and not overwrite:
        raise SynthgenError(f"{out_dir} already holds an adapter ({', '.join(finished)}); pass --overwrite to "
                            "replace it or choose another output directory")
    if not finished and out_dir.exists() and any(out_dir.iterdir()):
        raise SynthgenError(f"output directory {out_dir} exists and is not an adapter directory; choose another")
    if out_dir.resolve().is_relative_to(SHIPPED_DIR):
        raise SynthgenError(f"{out_dir} is inside the shipped adapters' folder; choose another output directory")
    return writable_dir(out_dir, "adapter directory")


def train(config: TrainConfig, out_dir: str | Path, on_step: Callable[[dict], None] | None = None,
          on_start: Callable[[dict], None] | None = None, overwrite: bool = False,
          recipe: Recipe | None = None) -> TrainResult:
    """Train a diffuse LoRA adapter and save it.

    Args:
        config: The training config (:func:`synthgen.training.config.load_config`).
        out_dir: Where the adapter (safetensors), ``training.json`` (the config,
            every step's loss, every epoch's family losses) and ``tasks.jsonl``
            (the tasks trained on) are written, and with ``save_every`` the
            checkpoints in ``epoch-N/``; it must be new, empty or an earlier
            adapter directory.
        on_step: Called after every task of every step with ``step``, ``epoch``,
            ``task`` (its id), ``loss`` and ``steps_in_epoch`` (tasks in the epoch).
        overwrite: Replace an adapter already in ``out_dir`` (refused otherwise).
        on_start: Called once before the model loads, with ``epochs``, ``tasks``
            (per epoch), ``total_tasks`` and ``total_steps`` (without early stopping).
        recipe: The config's recipe, already loaded (e.g. with command-line
            overrides or trusted paths); None loads ``config.recipe``.

    Returns:
        Where the adapter is, the epochs run, the last epoch's loss, the optimum
        (``Σ H(w)``), the wall time and whether every family stopped early. Under
        a launcher every process returns it; only process 0 writes ``out_dir``.

    Raises:
        ConfigError: The tasks, the recipe, the preserve file or the adapter
            to start from cannot be used.
    """
    if recipe is None and config.recipe is not None:
        from synthgen.recipe import load_recipe

        recipe = load_recipe(config.recipe)
    unique_tasks = config_tasks(config, recipe)
    tasks = epoch_tasks(config, unique_tasks)
    preserve_prompts = read_prompts(config.preserve, config.source) if config.preserve else []
    out_dir = _check_out_dir(Path(out_dir), overwrite)
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(config.source, "device", f"{config.device!r} asked for, but torch sees no CUDA device "
                                                   "(use 'auto' or 'cpu')")
    dist = DistributedState.start(config.device)
    total_steps = config.epochs * steps_per_epoch(len(tasks), config.tasks_per_step, dist.world)
    if on_start:
        on_start({"epochs": config.epochs, "tasks": len(tasks), "total_tasks": config.epochs * len(tasks),
                  "total_steps": total_steps})
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    model_name = config.model if config.model is not None else (recipe.model if recipe is not None else None)
    engine, model = _load_model(config, model_name, dist.device)
    start = time.perf_counter()  # the wall time counts the preserve anchors' decoding too
    anchors = build_anchors(engine, model, preserve_prompts, config.preserve_tokens) if preserve_prompts else []
    encoded, weights = _encode(engine, tasks)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = _optimizer(config, params, total_steps)
    run = _Run(config, dist, model, params, optimizer, scheduler, encoded, weights, anchors, rng)
    optimum = {t.id: t.entropy() for t in tasks}
    every = config.save_every

    def on_epoch(epoch: int, records: list[dict]) -> None:
        if every and epoch % every == 0 and dist.main:
            _checkpoint(run, out_dir, epoch, records)

    epochs, all_stopped = _train_epochs(run, tasks, optimum, on_step, on_epoch)
    result = TrainResult(out_dir, len(epochs), epochs[-1]["loss"] if epochs else 0.0, sum(optimum.values()),
                         time.perf_counter() - start, all_stopped)
    if dist.main:  # process 0 saves; the others wait until it has
        _save(run, out_dir, engine.model_name, tasks, unique_tasks, epochs, result)
    dist.barrier()
    return result
