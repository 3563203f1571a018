"""The training config (``synthgen train CONFIG.yaml``) and the tasks it selects.

Every key is a field of :class:`TrainConfig` (or of :class:`LoraOptions`, under
``lora:``) whose help text lives in the field's metadata; the table of keys in
``docs/training.md`` is generated from it::

    python -m synthgen.training.config docs/training.md

A config is validated when it is built, so a bad value fails with the file, the
key and what was expected.
"""

from __future__ import annotations

import logging
import math
import re
import sys
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from synthgen import _validate
from synthgen.errors import ConfigError
from synthgen.training.tasks import Task, load_tasks

if TYPE_CHECKING:
    from synthgen.recipe import Recipe

log = logging.getLogger(__name__)

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEVICES = ("auto", "cpu", "cuda")  # or "cuda:N"
LR_SCHEDULES = ("cosine", "constant")
PATH_KEYS = ("tasks", "recipe", "preserve", "init_adapter")  # resolved relative to the config file

Check = Callable[[str, str, object], object]  # (source, key, value) -> raises ConfigError when bad


# ------------------------------------------------------------------ checks
def _path(src: str, key: str, value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(src, key, f"expected a path or name (a non-empty string), got {_validate.show(value)}")


def _count(src: str, key: str, value: object) -> None:
    _validate.number(src, key, value, int, low=1)


def _optional_count(src: str, key: str, value: object) -> None:
    if value is not None:
        _validate.number(src, key, value, int, low=1)


def _optional_non_negative(src: str, key: str, value: object) -> None:
    if value is not None:
        _validate.number(src, key, value, float, low=0)


def _integer(src: str, key: str, value: object) -> None:
    _validate.number(src, key, value, int)


def _non_negative(src: str, key: str, value: object) -> None:
    _validate.number(src, key, value, float, low=0)


def _positive(src: str, key: str, value: object) -> None:
    _validate.number(src, key, value, float, low=0, open_low=True)


def _fraction(src: str, key: str, value: object) -> None:
    _validate.number(src, key, value, float, low=0, high=1)


def _families(src: str, key: str, value: object) -> None:
    _validate.string_list(src, key, value, optional=key == "families")  # None: every family


def _modules(src: str, key: str, value: object) -> None:
    if not _validate.string_list(src, key, value):
        raise ConfigError(src, key, "expected at least one module name")


def _schedule(src: str, key: str, value: object) -> None:
    _validate.one_of(src, key, value, LR_SCHEDULES, "schedule")


def _device(src: str, key: str, value: object) -> None:
    if not isinstance(value, str) or not (value in DEVICES or re.fullmatch(r"cuda:\d+", value)):
        raise ConfigError(src, key, f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {_validate.show(value)}")


def _key(default: object = MISSING, *, help: str, check: Check | None = None,
         default_factory: Callable[[], object] | None = None) -> Field:
    """A config key: its default, its help text and its check, declared once."""
    metadata = {"help": help, "check": check}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _validate_fields(obj: object, source: str, prefix: str = "") -> None:
    for f in fields(obj):
        check = f.metadata.get("check")
        if check is not None:
            check(source, prefix + f.name, getattr(obj, f.name))


# ------------------------------------------------------------------ the config
@dataclass
class LoraOptions:
    """The fresh LoRA adapter's shape (``lora:`` in a config; unused with ``init_adapter``)."""

    rank: int = _key(8, help="LoRA rank r.", check=_count)
    alpha: int = _key(16, help="LoRA scaling alpha (the update is scaled by alpha / rank).", check=_positive)
    dropout: float = _key(0.0, help="Dropout on the LoRA input (0 to 1).", check=_fraction)
    target_modules: list[str] = _key(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES), check=_modules,
        help="Names of the linear layers that get an adapter (the last component of the module name).")


@dataclass
class TrainConfig:
    """A training config (YAML). Paths are relative to the config file.

    The keys, by group (each one's help text is in its field's metadata):

    * tasks: ``tasks`` or ``recipe`` (exactly one), ``prompts_per_field``,
      ``families``, ``exclude_families``, ``balance_families``;
    * model and adapter: ``model``, ``init_adapter``, ``lora``, ``device``;
    * optimiser: ``epochs``, ``lr``, ``lr_schedule``, ``weight_decay``,
      ``adam_eps``, ``clip_norm``, ``seed``, ``tasks_per_step``;
    * loss: ``renormalize``, ``max_targets_per_step``, ``chunk_size``;
    * early stopping: ``open_families``, ``gamma``, ``tol``;
    * preserving ordinary answers: ``preserve``, ``preserve_weight``,
      ``preserve_tokens``, ``preserve_every``.

    ``source`` names where the config came from (the file) in error messages.
    """

    tasks: str | None = _key(None, check=_path, help="Task file (JSONL) to train on. Give this or `recipe`.")
    recipe: str | None = _key(
        None, check=_path,
        help="Recipe (YAML) whose choice and integer fields become the tasks, with the prompts generation will ask "
             "and the recipe's weights. Give this or `tasks`.")
    prompts_per_field: int = _key(
        8, check=_count,
        help="With `recipe`: distinct prompts per field whose prompt reads earlier fields (upstream values drawn "
             "as the recipe draws them).")
    every_condition: bool = _key(
        False, check=_validate.boolean,
        help="With `recipe`: a field whose options depend on earlier fields gets a task for every reachable "
             "condition (each set of its option parents' values, in the prompt), besides its `prompts_per_field` "
             "drawn prompts; otherwise the conditions its drawn prompts happen to meet.")
    model: str | None = _key(
        None, check=_path,
        help="Registered model name, HF directory, .gguf file or hub id (default: the recipe's model).")
    init_adapter: str | None = _key(
        None, check=_path,
        help="Start from this adapter (a directory, or `default` for the model's shipped diffuse adapter) "
             "instead of a fresh LoRA; `lora` is then ignored.")
    preserve: str | None = _key(
        None, check=_path,
        help="Text file of ordinary prompts, one per line, on which the adapter is held close to the base model: "
             "`preserve_weight` × KL(base ‖ adapter) along the base model's greedy reply, added to the loss.")
    preserve_weight: float = _key(1.0, check=_non_negative, help="Weight of the preserve term.")
    preserve_tokens: int = _key(32, check=_count, help="Length (tokens) of the base model's reply to each "
                                                      "preserve prompt.")
    preserve_every: int = _key(
        1, check=_count,
        help="Apply the preserve term on every k-th task only, weighted k times (the same expected penalty for "
             "about 1/k of its cost).")
    families: list[str] | None = _key(None, check=_families,
                                     help="Train only these task families (default: all).")
    exclude_families: list[str] = _key(default_factory=list, check=_families,
                                      help="Task families not to train on (held out).")
    open_families: list[str] = _key(
        default_factory=list, check=_families,
        help="Families whose answers are an open set (names, cities): they stop training once their epoch loss is "
             "within (1 + `gamma`) of the optimum, so the model does not learn to say only the listed targets.")
    epochs: int = _key(20, check=_count, help="At most this many epochs (passes over the tasks of the families "
                                                  "still training).")
    lr: float = _key(1e-3, check=_non_negative, help="AdamW learning rate.")
    lr_schedule: str = _key("cosine", check=_schedule,
                           help="`cosine` (decays to 0 over the steps of all `epochs`) or `constant`.")
    weight_decay: float = _key(0.01, check=_non_negative, help="AdamW weight decay.")
    adam_eps: float = _key(1e-5, check=_non_negative, help="AdamW epsilon.")
    clip_norm: float = _key(1.0, check=_non_negative, help="Gradient norm clipping.")
    gamma: float = _key(0.2, check=_non_negative, help="Early-stopping slack of the `open_families`.")
    tol: float = _key(
        0.02, check=_non_negative,
        help="Early-stopping slack of the other families: within (1 + `tol`) of the optimum; a family of "
             "one-answer tasks (optimum 0, e.g. facts) at a mean loss of at most `tol` nats per task.")
    seed: int = _key(0, check=_integer, help="Seed of the LoRA initialisation, the task order, the target "
                                            "samples and a recipe's prompts.")
    chunk_size: int = _key(256, check=_count, help="Targets scored in one forward pass after the shared "
                                                  "prompt (memory only; the loss is the same).")
    max_targets_per_step: int | None = _key(
        None, check=_optional_count,
        help="Score at most this many targets of a task per step, drawn without replacement and reweighted so "
             "the loss stays unbiased (null: every target, the full objective).")
    renormalize: bool = _key(
        False, check=_validate.boolean,
        help="Train the distribution renormalised over the targets, H(w) + KL(w ‖ p / Σp), instead of the "
             "absolute probabilities: for adapters used only by choice and integer fields, which sample over "
             "their options. With `max_targets_per_step`, the distribution renormalised over each step's "
             "sample of targets (and its weights renormalised alike): the same optimum, p ∝ w.")
    balance_families: bool = _key(
        False, check=_validate.boolean,
        help="Repeat each family's tasks so every family gets as many steps per epoch as the largest one (a "
             "recipe field without template variables is a single task).")
    family_min_tasks: int | None = _key(
        None, check=_optional_count,
        help="Repeat the tasks of a family that has fewer so that it gets at least this many per epoch (a cheaper "
             "balance than `balance_families` when one family has many more tasks than the others).")
    family_target_visits: float | None = _key(
        None, check=_optional_non_negative,
        help="With `max_targets_per_step`: repeat the tasks of a family so that it gets at least this many times "
             "its mean number of targets / `max_targets_per_step` tasks per epoch (beside `family_min_tasks`): a "
             "field whose prompts share a long list gets steps enough to score each target about this often.")
    stop_kl: float | None = _key(
        None, check=_optional_non_negative,
        help="Stop once, in one epoch, every family's mean KL(model ‖ weights) of the distribution renormalised "
             "over the targets scored is at most this many nats (null: the loss-based stops above). Families "
             "then train together until all are there.")
    save_every: int | None = _key(
        None, check=_optional_count,
        help="Also save the adapter after every k-th epoch, in `epoch-N/` of the output directory (the adapter "
             "files and the epochs so far in `training.json`), to compare checkpoints (null: only the final one).")
    tasks_per_step: int = _key(
        1, check=_count,
        help="Tasks per optimizer step on each process (their gradients are averaged); N processes under "
             "`accelerate launch` take the steps one process takes with N times as many.")
    device: str = _key("auto", check=_device,
                      help="`auto` (cuda if available, else cpu), `cpu`, `cuda` or `cuda:N`; under `accelerate "
                           "launch` each process uses the device accelerate assigns it.")
    lora: LoraOptions = _key(default_factory=LoraOptions, help="Shape of a fresh LoRA adapter (the `lora.*` keys).")
    source: str = ""

    def __post_init__(self) -> None:
        src = self.source or "<config>"
        if (self.tasks is None) == (self.recipe is None):
            raise ConfigError(src, "tasks", "give exactly one of 'tasks' (a task file, JSONL) "
                                            "and 'recipe' (a recipe YAML to build tasks from)")
        _validate_fields(self, src)
        _validate_fields(self.lora, src, "lora.")
        if self.renormalize and self.max_targets_per_step is not None and self.stop_kl is None:
            raise ConfigError(src, "renormalize", "with max_targets_per_step, the loss of a sample of targets is "
                                                  "not comparable to the optimum of all of them: set stop_kl")

    @classmethod
    def from_dict(cls, data: dict, source: str = "<config>") -> TrainConfig:
        """A config from the mapping of a YAML file; unknown keys are errors."""
        _validate.check_keys(source, None, data, config_keys(cls), "a training config")
        lora = data.get("lora") or {}
        if not isinstance(lora, dict):
            raise ConfigError(source, "lora", f"expected a mapping, got {_validate.show(lora)}")
        _validate.check_keys(source, "lora", lora, config_keys(LoraOptions), "lora")
        values = {k: value for k, value in data.items() if k != "lora"}
        return cls(**values, lora=LoraOptions(**lora), source=source)


def config_keys(cls: type) -> list[str]:
    """The keys a config file may set for ``cls`` (its documented fields)."""
    return [f.name for f in fields(cls) if "help" in f.metadata]


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a training config file.

    Args:
        path: The YAML file.

    Returns:
        The config, with ``tasks``, ``recipe``, ``preserve`` and ``init_adapter``
        resolved relative to the file (``init_adapter: default`` stays a name).

    Raises:
        ConfigError: The file is missing or not YAML, or a key is unknown or has
            a bad value (the message names the file and the key).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, None, "config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(path, None, _validate.yaml_error(err)) from None
    if not isinstance(data, dict):
        raise ConfigError(path, None, "expected a mapping of config keys")
    config = TrainConfig.from_dict(data, source=str(path))
    for name in PATH_KEYS:
        value = getattr(config, name)
        if value is not None and value != "default" and not Path(value).is_absolute():
            setattr(config, name, str((path.parent / value).resolve()))
    return config


# Defaults for ``synthgen train --from-recipe RECIPE`` without a config. Every
# recipe field is a closed set (generation only ever draws among its options),
# so each trains until its loss is within ``tol`` of the optimum H(w); since
# loss - H(w) = KL(w || p) >= the KL of the renormalised distribution, a
# family that stops has KL <= tol * H(w) on its training prompts.
RECIPE_DEFAULTS = {"epochs": 30, "lr": 3e-3, "tol": 0.005, "max_targets_per_step": None}


def recipe_config(recipe: str | Path, **overrides) -> TrainConfig:
    """The training config ``--from-recipe`` uses when no config file is given."""
    values = {**RECIPE_DEFAULTS, **overrides}
    return TrainConfig(recipe=str(recipe), source=f"--from-recipe {recipe}", **values)


def command_config(path: str | Path | None = None, recipe: str | Path | None = None) -> TrainConfig:
    """The config of ``synthgen train [CONFIG] [--from-recipe RECIPE]``: the file's,
    with its tasks replaced by the recipe's when both are given; the recipe
    defaults (:data:`RECIPE_DEFAULTS`) when only the recipe is."""
    if path is None and recipe is None:
        raise ValueError("give a config file, a recipe, or both")
    if path is None:
        return recipe_config(recipe)
    config = load_config(path)
    return config if recipe is None else replace(config, tasks=None, recipe=str(recipe))


# ------------------------------------------------------------------ the tasks
def config_tasks(config: TrainConfig, recipe: Recipe | None = None) -> list[Task]:
    """The tasks a config trains on, after family selection (``recipe``: the
    config's recipe, already loaded)."""
    if config.recipe is not None:
        from synthgen.recipe import load_recipe
        from synthgen.training.recipe_tasks import tasks_from_recipe

        built = tasks_from_recipe(recipe or load_recipe(config.recipe), config.prompts_per_field, config.seed,
                                  every_condition=config.every_condition)
        # open fields trained on their seed values stop early like open families: (1 + gamma) H(w)
        config.open_families = list(dict.fromkeys([*config.open_families, *built.open_families]))
        for name, why in built.skipped.items():
            log.info("recipe field %s: not trained (%s)", name, why)
        every, origin = built.tasks, config.recipe
        if not every:
            raise ConfigError(config.recipe, "fields",
                              "no choice, integer or seeded open field to build training tasks from")
    else:
        if not Path(config.tasks).is_file():
            raise ConfigError(config.source, "tasks", f"task file not found: {config.tasks}")
        every, origin = load_tasks(config.tasks), config.tasks
    known = {t.family for t in every}
    for name in ("families", "exclude_families", "open_families"):
        for fam in getattr(config, name) or ():
            if fam not in known:
                raise ConfigError(config.source, name,
                                  f"unknown family {fam!r}; {origin} has: {', '.join(sorted(known))}")
    keep = set(config.families or known) - set(config.exclude_families)
    tasks = [t for t in every if t.family in keep]
    if not tasks:
        raise ConfigError(config.source, "families", "no tasks left after family selection")
    return tasks


def epoch_tasks(config: TrainConfig, tasks: list[Task]) -> list[Task]:
    """The tasks of one epoch: ``tasks`` with the repeats ``balance_families``, ``family_min_tasks``
    and ``family_target_visits`` ask for."""
    if config.balance_families:
        return balanced(tasks)
    if config.family_min_tasks is None and config.family_target_visits is None:
        return tasks
    return balanced(tasks, config.family_min_tasks, config.family_target_visits, config.max_targets_per_step)


def balanced(tasks: list[Task], at_least: int | None = None, visits: float | None = None,
             per_step: int | None = None) -> list[Task]:
    """Each family's tasks cycled up to the size of the largest family (``at_least``:
    up to that many instead, a family with more keeping its own; ``visits`` with
    ``per_step``: also up to ``visits`` × the family's mean targets / ``per_step``);
    repeats get ids ``ID#2``, ``ID#3``, … (the same prompt, targets and weights)."""
    by_family: dict[str, list[Task]] = {}
    for t in tasks:
        by_family.setdefault(t.family, []).append(t)
    most = max(len(own) for own in by_family.values()) if at_least is None and visits is None else at_least or 0
    out = list(tasks)
    for own in by_family.values():
        need = most
        if visits is not None and per_step:
            need = max(need, math.ceil(visits * sum(len(t.targets) for t in own) / len(own) / per_step))
        for k in range(len(own), need):
            t = own[k % len(own)]
            out.append(replace(t, id=f"{t.id}#{k // len(own) + 1}"))
    return out


# ------------------------------------------------------------------ the docs
TABLE_START = "<!-- config keys: generated by `python -m synthgen.training.config docs/training.md` -->"
TABLE_END = "<!-- end of config keys -->"


def _default(f: Field) -> str:
    value = f.default_factory() if f.default_factory is not MISSING else f.default
    if isinstance(value, LoraOptions):
        return "see `lora.*`"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]"
    return str(value)


def markdown_table() -> str:
    """The table of every config key (key, default, help) in Markdown."""
    rows = ["| key | default | what it does |", "|---|---|---|"]
    for cls, prefix in ((TrainConfig, ""), (LoraOptions, "lora.")):
        for f in fields(cls):
            if "help" in f.metadata and f.name != "lora":
                text = f.metadata["help"].replace("|", "\\|")
                rows.append(f"| `{prefix}{f.name}` | `{_default(f)}` | {text} |")
    return "\n".join(rows)


def update_docs(path: str | Path) -> bool:
    """Replace the table between the markers in ``path`` with :func:`markdown_table`;
    True when the file changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    head, start, rest = text.partition(TABLE_START)
    _, end, tail = rest.partition(TABLE_END)
    if not start or not end:
        raise ValueError(f"{path} lacks the markers {TABLE_START!r} and {TABLE_END!r}")
    new = f"{head}{TABLE_START}\n{markdown_table()}\n{TABLE_END}{tail}"
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for target in sys.argv[1:] or ["docs/training.md"]:
        log.info("%s: %s", target, "updated" if update_docs(target) else "up to date")
