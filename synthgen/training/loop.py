"""Diffuse fine-tuning (``synthgen train``): the paper's method.

For each task the loss is ``-Σ_y w_y · log p(y + end-of-turn | prompt)``; its
minimum is the entropy ``H(w)`` of the target weights, reached when the model's
distribution over complete answers equals ``w``. The prompt is encoded once per
task and shared by all its targets (:func:`synthgen.engines.scoring.option_logprobs`),
with the gradient flowing through it. One AdamW step per task, tasks shuffled
every epoch, gradient norm clipped.

Early stopping follows the paper: a family whose answers are an open set
(names, cities, …) stops training once its epoch loss is within ``(1+γ)`` of
its optimum, so the model does not learn to produce only the listed targets;
closed families (numbers, days) train until within ``(1+tol)``; a family of
one-answer tasks (optimum 0, e.g. facts) until its mean loss per task is at
most ``tol`` nats. The run ends when every family has stopped or after ``epochs``.

Data parallel: ``tasks_per_step`` tasks make one optimizer step (their
gradients averaged). Under ``accelerate launch`` (or ``torchrun``) with N
processes, every process takes its share of each step's tasks and the
gradients are averaged across processes (one all-reduce per step), so N
processes with ``tasks_per_step: k`` compute the same steps as one process
with ``tasks_per_step: N*k``. Process 0 saves the adapter.

Tasks come from a task file (``tasks:``) or from a recipe (``recipe:``, or
``synthgen train --from-recipe``): then every closed-set field of the recipe
becomes tasks whose prompts are the ones generation will ask
(:mod:`synthgen.recipe_tasks`) and whose weights are the recipe's.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import yaml

from synthgen.errors import ConfigError, SynthgenError
from synthgen.training.preserve import anchor_kl, build_anchors, read_prompts
from synthgen.training.tasks import Task, load_tasks, save_tasks

log = logging.getLogger(__name__)

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraOptions:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))


@dataclass
class TrainConfig:
    """A training config (YAML). Paths are relative to the config file.

    Exactly one of ``tasks`` (a task file) and ``recipe`` (tasks built from a
    recipe, ``prompts_per_field`` prompts per conditioned field) is given.
    """

    tasks: str | None = None
    recipe: str | None = None
    prompts_per_field: int = 8
    model: str | None = None
    # start from an existing adapter ("default" = the model's shipped diffuse
    # adapter, or a directory) instead of a fresh LoRA; `lora` is then ignored
    init_adapter: str | None = None
    # ordinary prompts (a text file, one per line) on which the adapter is kept
    # close to the base model: KL(base || adapter) along the base model's greedy
    # reply, weighted by preserve_weight, added to every step (synthgen.preserve)
    preserve: str | None = None
    preserve_weight: float = 1.0
    preserve_tokens: int = 32
    # apply the preserve term on every k-th task only, weighted k times (the same
    # expected penalty for about 1/k of its cost)
    preserve_every: int = 1
    families: list[str] | None = None
    exclude_families: list[str] = field(default_factory=list)
    open_families: list[str] = field(default_factory=list)
    epochs: int = 20
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    weight_decay: float = 0.01
    adam_eps: float = 1e-5
    clip_norm: float = 1.0
    gamma: float = 0.2
    tol: float = 0.02
    seed: int = 0
    chunk_size: int = 256
    max_targets_per_step: int | None = None
    # train the distribution over the targets renormalised to sum to one,
    # -sum_y w_y log(p_y / sum_y' p_y'), instead of the absolute probabilities:
    # for recipe fields sampled exactly over their options (choice, integer) only
    # that shape matters, and no gradient goes to raising the valid mass. Needs
    # every target at every step (max_targets_per_step unset).
    renormalize: bool = False
    # repeat each family's tasks so every family gets as many steps per epoch as
    # the family with the most tasks (a recipe field whose prompt has no
    # variables is one task; without this it trains once per epoch)
    balance_families: bool = False
    # tasks per optimizer step on each process (their gradients are averaged)
    tasks_per_step: int = 1
    # "auto" (cuda if available, else cpu), "cpu", "cuda"; under accelerate
    # launch each process uses the device accelerate assigns it
    device: str = "auto"
    lora: LoraOptions = field(default_factory=LoraOptions)
    source: str = ""

    @classmethod
    def from_dict(cls, data: dict, source: str = "<config>") -> TrainConfig:
        _check_keys(data, cls, source, "", skip={"source"})
        if ("tasks" in data) == ("recipe" in data):
            raise ConfigError(source, "tasks", "give exactly one of 'tasks' (a task file, JSONL) "
                                               "and 'recipe' (a recipe YAML to build tasks from)")
        lora = data.get("lora") or {}
        if not isinstance(lora, dict):
            raise ConfigError(source, "lora", f"expected a mapping, got {type(lora).__name__}")
        _check_keys(lora, LoraOptions, source, "lora.")
        values = {k: v for k, v in data.items() if k != "lora"}
        config = cls(**values, lora=LoraOptions(**lora), source=source)
        config.validate()
        return config

    def validate(self) -> None:
        src = self.source
        for name in ("tasks", "recipe", "model", "init_adapter", "preserve"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(src, name, f"expected a path or name (a string), got {value!r}")
        for name in ("epochs", "seed", "chunk_size", "prompts_per_field", "preserve_tokens", "tasks_per_step",
                     "preserve_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or (name != "seed" and value <= 0):
                raise ConfigError(src, name, f"expected a positive integer, got {value!r}")
        if self.max_targets_per_step is not None and (
                not isinstance(self.max_targets_per_step, int) or self.max_targets_per_step <= 0):
            raise ConfigError(src, "max_targets_per_step", f"expected a positive integer or null, got {self.max_targets_per_step!r}")
        for name in ("lr", "weight_decay", "adam_eps", "clip_norm", "gamma", "tol", "preserve_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or not math.isfinite(value):
                raise ConfigError(src, name, f"expected a non-negative number, got {value!r}")
        for name in ("families", "exclude_families", "open_families"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                raise ConfigError(src, name, f"expected a list of family names, got {value!r}")
        if not isinstance(self.renormalize, bool):
            raise ConfigError(src, "renormalize", f"expected true or false, got {self.renormalize!r}")
        if self.renormalize and self.max_targets_per_step is not None:
            raise ConfigError(src, "renormalize", "needs every target at every step (the normaliser is a sum over "
                                                  "all of them); remove max_targets_per_step")
        if not isinstance(self.balance_families, bool):
            raise ConfigError(src, "balance_families", f"expected true or false, got {self.balance_families!r}")
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu", "cuda")
                                                    or self.device.startswith("cuda:")):
            raise ConfigError(src, "device", f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(src, "lr_schedule", f"expected 'cosine' or 'constant', got {self.lr_schedule!r}")
        if not isinstance(self.lora.rank, int) or self.lora.rank <= 0:
            raise ConfigError(src, "lora.rank", f"expected a positive integer, got {self.lora.rank!r}")
        if not isinstance(self.lora.alpha, (int, float)) or self.lora.alpha <= 0:
            raise ConfigError(src, "lora.alpha", f"expected a positive number, got {self.lora.alpha!r}")
        if not self.lora.target_modules or not all(isinstance(m, str) for m in self.lora.target_modules):
            raise ConfigError(src, "lora.target_modules", "expected a non-empty list of module names")


def _check_keys(data: dict, cls, source: str, prefix: str, skip=frozenset()) -> None:
    allowed = {f.name for f in fields(cls)} - set(skip)
    for key in data:
        if key not in allowed:
            raise ConfigError(source, f"{prefix}{key}", f"unknown key; allowed: {', '.join(sorted(allowed))}")


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, None, "config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(path, None, f"invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(path, None, "expected a mapping of config keys")
    config = TrainConfig.from_dict(data, source=str(path))
    for key in ("tasks", "recipe", "preserve", "init_adapter"):
        value = getattr(config, key)
        if value is not None and value != "default" and not Path(value).is_absolute():
            setattr(config, key, str((path.parent / value).resolve()))
    return config


def config_tasks(config: TrainConfig) -> list[Task]:
    """The tasks a config trains on, after family selection."""
    if config.recipe is not None:
        from synthgen.recipe import load_recipe
        from synthgen.training.recipe_tasks import recipe_tasks

        built = recipe_tasks(load_recipe(config.recipe), config.prompts_per_field, config.seed)
        for name, why in built.skipped.items():
            log.info("recipe field %s: not trained (%s)", name, why)
        every, origin = built.tasks, config.recipe
        if not every:
            raise ConfigError(config.recipe, "fields", "no choice or integer field to build training tasks from")
    else:
        if not Path(config.tasks).is_file():
            raise ConfigError(config.source, "tasks", f"task file not found: {config.tasks}")
        every, origin = load_tasks(config.tasks), config.tasks
    known = {t.family for t in every}
    for key in ("families", "exclude_families", "open_families"):
        for fam in getattr(config, key) or ():
            if fam not in known:
                raise ConfigError(config.source, key, f"unknown family {fam!r}; {origin} has: {', '.join(sorted(known))}")
    keep = set(config.families or known) - set(config.exclude_families)
    tasks = [t for t in every if t.family in keep]
    if not tasks:
        raise ConfigError(config.source, "families", "no tasks left after family selection")
    return tasks


def balanced(tasks: list[Task]) -> list[Task]:
    """Each family's tasks cycled up to the size of the largest family; repeats get
    ids ``ID#2``, ``ID#3``, … (the same prompt, targets and weights)."""
    by_family: dict[str, list[Task]] = {}
    for t in tasks:
        by_family.setdefault(t.family, []).append(t)
    most = max(len(v) for v in by_family.values())
    out = list(tasks)
    for family, own in by_family.items():
        for k in range(len(own), most):
            t = own[k % len(own)]
            out.append(replace(t, id=f"{t.id}#{k // len(own) + 1}"))
    return out


# ------------------------------------------------------------------ the loss
def task_loss(model, encoded: tuple[list[int], list[list[int]]], weights: torch.Tensor, chunk_size: int,
              renormalize: bool = False) -> torch.Tensor:
    """``-Σ w_y log p(y + end | prompt)`` with the prompt encoded once; with
    ``renormalize``, of ``p`` renormalised over the targets (``Σ w = 1``: the loss
    is then ``H(w) + KL(w ‖ p / Σ p)``)."""
    from synthgen.engines.scoring import option_logprobs

    prompt_ids, options_ids = encoded
    logp = option_logprobs(model, prompt_ids, options_ids, chunk_size)
    if renormalize:
        logp = logp - torch.logsumexp(logp, dim=0)
    return -(weights.to(logp.device) * logp).sum()


def family_done(loss: float, optimum: float, n_tasks: int, slack: float) -> bool:
    """Early stop of a family after an epoch: its loss within ``(1 + slack)`` of
    its optimum; a family of one-answer tasks (optimum 0: facts) stops once its
    mean loss per task is at most ``slack`` nats (each answer at p >= e^-slack)."""
    if optimum <= 1e-9:
        return loss <= slack * n_tasks + 1e-6
    return loss <= (1 + slack) * optimum + 1e-6


def subsample(encoded, weights: torch.Tensor, limit: int | None, rng: random.Random):
    """At most ``limit`` targets of a task, drawn without replacement, with the
    weights scaled by K/limit so the loss stays an unbiased estimate of the full
    one (None = every target, the paper's full objective)."""
    prompt_ids, options_ids = encoded
    k = len(options_ids)
    if limit is None or k <= limit:
        return encoded, weights
    idx = sorted(rng.sample(range(k), limit))
    return (prompt_ids, [options_ids[i] for i in idx]), weights[idx] * (k / limit)


# ------------------------------------------------------------ data parallel
def world_size() -> int:
    """Processes in this training run (``WORLD_SIZE``, set by ``accelerate launch`` / ``torchrun``)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def steps_per_epoch(n_tasks: int, tasks_per_step: int, world: int | None = None) -> int:
    return math.ceil(n_tasks / (tasks_per_step * (world or world_size())))


@dataclass
class Processes:
    """This process's place in a (possibly single-process) training run."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @classmethod
    def start(cls, device: str) -> Processes:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if world_size() == 1:
            return cls(0, 1, device)
        from accelerate import PartialState  # sets up the process group (nccl on GPUs, gloo on CPUs)

        state = PartialState(cpu=device == "cpu")
        return cls(state.process_index, state.num_processes, str(state.device))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over processes, in place (a no-op for one process)."""
        if self.world > 1:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def average_gradients(params: list[torch.nn.Parameter], n_local: int, procs: Processes) -> int:
    """Turn each process's summed task gradients into the mean over every task
    of the step, on every process (one flat all-reduce). Returns the task count."""
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
                     + [torch.tensor([float(n_local)], device=params[0].device)])
    procs.sum_(flat)
    count = int(round(float(flat[-1])))
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = (flat[offset: offset + n] / max(count, 1)).view_as(p).clone()
        offset += n
    return count


def lora_model(base_model, options: LoraOptions):
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in base_model.named_modules()}
    missing = [m for m in options.target_modules if m not in present]
    if missing:
        raise SynthgenError(f"lora.target_modules: {missing} not found in the model (it has e.g. {sorted(present)[:12]})")
    config = LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout,
                        target_modules=list(options.target_modules), task_type="CAUSAL_LM")
    from synthgen.engines.transformers import quiet_peft

    with quiet_peft():
        return get_peft_model(base_model, config)


@dataclass
class TrainResult:
    out_dir: Path
    epochs_run: int
    final_loss: float
    optimal_loss: float
    seconds: float
    stopped_early: bool


def train(config: TrainConfig, out_dir: str | Path,
          on_step: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a diffuse LoRA adapter and save it (safetensors) with ``training.json``."""
    from synthgen.engines.transformers import TransformersEngine

    unique_tasks = config_tasks(config)
    tasks = balanced(unique_tasks) if config.balance_families else unique_tasks
    preserve_prompts = read_prompts(config.preserve, config.source) if config.preserve else []
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "training.json").exists():
        raise SynthgenError(f"output directory {out_dir} exists and is not an adapter directory; choose another")
    procs = Processes.start(config.device)
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    model_name = config.model
    if model_name is None and config.recipe is not None:
        from synthgen.recipe import load_recipe

        model_name = load_recipe(config.recipe).model
    engine = TransformersEngine.load(model_name, adapter="none", device=procs.device)
    if config.init_adapter is not None:
        from peft import PeftModel

        from synthgen.adapters import resolve_adapter
        from synthgen.engines.transformers import quiet_peft

        start_from = resolve_adapter(config.init_adapter, model=model_name)
        if start_from is None:
            raise ConfigError(config.source, "init_adapter", f"model {engine.model_name} has no shipped adapter")
        with quiet_peft():
            model = PeftModel.from_pretrained(engine.model, str(start_from), is_trainable=True)
    else:
        model = lora_model(engine.model, config.lora)
    model.train()
    start = time.perf_counter()  # the wall time counts the preserve anchors' decoding too
    anchors = build_anchors(engine, model, preserve_prompts, config.preserve_tokens) if preserve_prompts else []
    encoded = {}
    weights = {}
    for t in tasks:
        text = engine.format_prompt(t.prompt)
        prompt_ids = engine.encode_prompt(t.prompt)
        encoded[t.id] = (prompt_ids, engine.encode_options(text, prompt_ids, t.targets))
        weights[t.id] = torch.tensor(t.weights, dtype=torch.float32)
    optimum = {t.id: t.entropy() for t in tasks}
    families = sorted({t.family for t in tasks})
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, eps=config.adam_eps, weight_decay=config.weight_decay)
    per_step = config.tasks_per_step * procs.world  # tasks in one optimizer step, over all processes
    total_steps = config.epochs * steps_per_epoch(len(tasks), config.tasks_per_step, procs.world)
    if config.lr_schedule == "cosine":
        # decays to 0 over the steps the run would take without early stopping
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    else:
        scheduler = None
    history: list[dict] = []
    epoch_losses: list[dict] = []
    active = set(families)
    step = 0
    slot = 0  # tasks visited so far over all processes: picks the preserve anchor and the target sample
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        order = [t for t in tasks if t.family in active]
        rng.shuffle(order)  # the same order on every process (same seed)
        fam_loss = {f: 0.0 for f in active}
        for begin in range(0, len(order), per_step):
            group = order[begin: begin + per_step]
            first = procs.rank * config.tasks_per_step
            mine = group[first: first + config.tasks_per_step]
            optimizer.zero_grad(set_to_none=True)
            # loss and preserve-KL of every task of the step, summed over processes
            stats = torch.zeros((len(group), 2), dtype=torch.float64, device=procs.device)
            for j, t in enumerate(mine, start=first):
                # one task per step: the run's own stream (as before data parallelism); else
                # a stream per task slot, so the split over processes does not change the sample
                draw = rng if per_step == 1 else random.Random(f"{config.seed}:{slot + j}")
                batch, w = subsample(encoded[t.id], weights[t.id], config.max_targets_per_step, draw)
                loss = task_loss(model, batch, w, config.chunk_size, config.renormalize)
                every = config.preserve_every
                kl = (anchor_kl(model, anchors[(slot + j) // every % len(anchors)])
                      if anchors and (slot + j) % every == 0 else None)
                (loss if kl is None else loss + config.preserve_weight * every * kl).backward()
                stats[j, 0] = float(loss.detach())
                stats[j, 1] = float(kl.detach()) if kl is not None else float("nan")
            if per_step > 1:
                average_gradients(params, len(mine), procs)
            procs.sum_(stats)
            torch.nn.utils.clip_grad_norm_(params, config.clip_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            slot += len(group)
            for j, t in enumerate(group):
                value = float(stats[j, 0])
                fam_loss[t.family] += value
                history.append({"step": step, "epoch": epoch, "task": t.id, "loss": value, "optimal": optimum[t.id],
                                **({"preserve_kl": float(stats[j, 1])}
                                   if anchors and not math.isnan(float(stats[j, 1])) else {})})
                if on_step:
                    on_step({"step": step, "epoch": epoch, "task": t.id, "loss": value, "steps_in_epoch": len(order)})
        record = {"epoch": epoch, "families": {}}
        for fam in sorted(fam_loss):
            opt = sum(optimum[t.id] for t in tasks if t.family == fam)
            slack = config.gamma if fam in config.open_families else config.tol
            done = family_done(fam_loss[fam], opt, sum(t.family == fam for t in order), slack)
            record["families"][fam] = {"loss": fam_loss[fam], "optimal": opt, "stopped": done}
            if done:
                active.discard(fam)
        record["loss"] = sum(fam_loss.values())
        record["optimal"] = sum(optimum[t.id] for t in order)
        epoch_losses.append(record)
        log.info("epoch %d: loss %.3f (optimum %.3f), families still training: %d",
                 epoch, record["loss"], record["optimal"], len(active))
        if not active:
            break
    seconds = time.perf_counter() - start
    result = TrainResult(out_dir, epoch, epoch_losses[-1]["loss"] if epoch_losses else 0.0,
                         sum(optimum.values()), seconds, not active)
    if not procs.main:  # process 0 saves; the others wait until it has
        procs.barrier()
        return result
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    summary = {
        "config": {k: v for k, v in asdict(config).items()},
        "model": engine.model_name,
        "tasks": [{"id": t.id, "family": t.family, "k": len(t.targets)} for t in tasks],
        "preserve": [{"prompt": a.prompt, "base_reply": a.reply} for a in anchors],
        "optimal_loss": sum(optimum.values()),
        "final_epoch_loss": epoch_losses[-1]["loss"] if epoch_losses else None,
        "epochs_run": epoch,
        "stopped_early": not active,
        "wall_seconds": seconds,
        "processes": procs.world,
        "device": procs.device,
        "epochs": epoch_losses,
        "steps": history,
    }
    save_tasks(unique_tasks, out_dir / "tasks.jsonl")  # what it was trained on: `synthgen audit DIR/tasks.jsonl`
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    procs.barrier()
    return result


# Defaults for ``synthgen train --from-recipe RECIPE`` without a config. Every
# recipe field is a closed set (generation only ever draws among its options),
# so each trains until its loss is within ``tol`` of the optimum H(w); since
# loss - H(w) = KL(w || p) >= the KL of the renormalised distribution, a
# family that stops has KL <= tol * H(w) on its training prompts.
RECIPE_DEFAULTS = {"epochs": 30, "lr": 3e-3, "tol": 0.005, "max_targets_per_step": None}


def recipe_config(recipe: str | Path, **overrides) -> TrainConfig:
    """The training config ``--from-recipe`` uses when no config file is given."""
    values = {**RECIPE_DEFAULTS, **overrides}
    config = TrainConfig(recipe=str(recipe), source=f"--from-recipe {recipe}", **values)
    config.validate()
    return config
