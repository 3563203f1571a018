"""Task suites: a prompt and the set of valid replies the model should spread over.

A task file is JSONL, one task per line:

    {"id": "numbers-1-10-a", "family": "numbers", "prompt": "...", "targets": ["1", ...], "weights": null}

``prompt`` is the user message (wrapped in the model's chat template when it
has one); a target is an exact reply, and a reply is valid when it equals a
target after stripping surrounding whitespace. ``weights`` may be null or
omitted (uniform). Other tools read and write this format, so it only grows:
keys are added, never renamed. Every mistake in a file raises
:class:`~synthgen.errors.ConfigError` naming the file, the line and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from synthgen import _validate
from synthgen.errors import ConfigError

REQUIRED_KEYS = ("id", "family", "prompt", "targets")
ALLOWED_KEYS = (*REQUIRED_KEYS, "weights")


@dataclass(frozen=True)
class Task:
    """One prompt and its valid targets, with target weights normalised to sum 1.

    ``weights`` may be given as ``None`` or empty (uniform) or as non-negative
    numbers with a positive sum; they are stored normalised.
    """

    id: str
    family: str
    prompt: str
    targets: tuple[str, ...]
    weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        targets = tuple(self.targets)
        if not targets:
            raise ValueError(f"task {self.id!r} has no targets")
        weights = _normalise(self.weights, len(targets))
        if weights is None:
            raise ValueError(
                f"task {self.id!r}: weights must be {len(targets)} finite non-negative "
                "numbers with a positive sum"
            )
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "_target_set", frozenset(targets))

    @property
    def k(self) -> int:
        """Number of valid targets."""
        return len(self.targets)

    @property
    def is_uniform(self) -> bool:
        return len(set(self.weights)) == 1

    def entropy(self) -> float:
        """Entropy H(w) of the target weights, in nats (log K when uniform)."""
        return -math.fsum(w * math.log(w) for w in self.weights if w > 0)

    def is_valid(self, reply: str) -> bool:
        """A reply is valid when it equals a target after stripping surrounding whitespace."""
        return reply.strip() in self._target_set


def _normalise(weights, k: int) -> tuple[float, ...] | None:
    """Uniform for None/empty; normalised copy for valid weights; None when invalid."""
    if weights is None or len(weights) == 0:
        return (1.0 / k,) * k
    values = [float(w) for w in weights]
    if len(values) != k or any(not math.isfinite(w) or w < 0 for w in values) or max(values) <= 0:
        return None
    try:
        total = math.fsum(values)
    except OverflowError:  # finite weights whose sum is not: scale them down first
        total = math.inf
    if not math.isfinite(total):
        values = [v / max(values) for v in values]
        total = math.fsum(values)
    if abs(total - 1.0) <= 1e-12:  # already normalised: keep as is, so save/load round-trips exactly
        return tuple(values)
    return tuple(w / total for w in values)


def _check(path: Path, where: str, obj: dict) -> None:
    """Raise a ConfigError (``path``, ``where: field``) for the first problem in one parsed line."""
    unknown = sorted(set(obj) - set(ALLOWED_KEYS))
    if unknown:
        raise ConfigError(path, f"{where}: {unknown[0]}", f"unknown key; allowed in a task: {', '.join(ALLOWED_KEYS)}")
    for key in REQUIRED_KEYS:
        if key not in obj:
            raise ConfigError(path, f"{where}: {key}", "missing required key")
    for key in ("id", "family", "prompt"):
        _validate.string(path, f"{where}: {key}", obj[key], non_empty=True)
    problem = _targets_problem(obj["targets"]) or _weights_problem(obj.get("weights"), len(obj["targets"]))
    if problem is not None:
        raise ConfigError(path, f"{where}: {problem[0]}", problem[1])


def _targets_problem(targets: object) -> tuple[str, str] | None:
    if not isinstance(targets, list):
        return "targets", f"expected a list of strings, got {_validate.show(targets)}"
    if not targets:
        return "targets", "must not be empty"
    seen: set[str] = set()
    for i, target in enumerate(targets):
        if not isinstance(target, str):
            return "targets", f"item {i}: expected a string, got {_validate.show(target)}"
        bare = target.strip()
        if not bare:
            return "targets", f"item {i}: empty target"
        if bare in seen:
            return "targets", f"item {i}: duplicate target {bare!r}"
        seen.add(bare)
    for i, target in enumerate(targets):
        if target != target.strip():
            return "targets", (
                f"item {i}: target {target!r} has surrounding whitespace "
                "(replies are compared after stripping, so it could never match)"
            )
    return None


def _weights_problem(weights: object, k: int) -> tuple[str, str] | None:
    if weights is None:
        return None
    if not isinstance(weights, list):
        return "weights", f"expected null or a list of numbers, got {_validate.show(weights)}"
    if len(weights) != k:
        return "weights", f"has {len(weights)} values but there are {k} targets"
    for i, w in enumerate(weights):
        if not _validate.is_number(w):
            return "weights", f"item {i}: expected a number, got {_validate.show(w)}"
        try:
            finite = math.isfinite(float(w))
        except OverflowError:
            finite = False
        if not finite:
            return "weights", f"item {i}: not a finite number ({w})"
        if w < 0:
            return "weights", f"item {i}: negative weight ({w})"
    if max(float(w) for w in weights) <= 0:
        return "weights", "weights sum to zero; at least one must be positive"
    return None


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(path, None, "task file not found") from None
    except IsADirectoryError:
        raise ConfigError(path, None, "expected a task file (JSONL), got a directory") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, f"not valid UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read task file ({exc.strerror})") from None


def _name_set(names: Iterable[str] | str | None) -> set[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        return {names}
    return set(names)


def load_tasks(
    path: str | Path,
    families: Iterable[str] | None = None,
    exclude_families: Iterable[str] | None = None,
) -> list[Task]:
    """Read and validate a task file; optionally keep or drop whole families.

    ``families`` keeps only the named families, ``exclude_families`` drops the
    named ones (the two can be combined). Naming a family the file does not
    have is an error that lists the families it does have.
    """
    path = Path(path)
    tasks: list[Task] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(path, where, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise ConfigError(path, where, f"expected a JSON object, got {type(obj).__name__}")
        _check(path, where, obj)
        if obj["id"] in first_line:
            raise ConfigError(
                path, f"{where}: id",
                f"duplicate task id {obj['id']!r} (first on line {first_line[obj['id']]})",
            )
        first_line[obj["id"]] = number
        tasks.append(Task(obj["id"], obj["family"], obj["prompt"], tuple(obj["targets"]), obj.get("weights")))
    if not tasks:
        raise ConfigError(path, None, "the task file has no tasks")

    known = sorted({t.family for t in tasks})
    keep, drop = _name_set(families), _name_set(exclude_families)
    for key, names in (("families", keep), ("exclude_families", drop)):
        unknown = sorted((names or set()) - set(known))
        if unknown:
            raise ConfigError(
                path, key, f"unknown famil{'y' if len(unknown) == 1 else 'ies'} "
                f"{', '.join(unknown)}; the file has: {', '.join(known)}",
            )
    return [
        t for t in tasks
        if (keep is None or t.family in keep) and (drop is None or t.family not in drop)
    ]


def task_to_dict(task: Task) -> dict:
    """The JSON object for one task; uniform weights are written as null."""
    return {
        "id": task.id,
        "family": task.family,
        "prompt": task.prompt,
        "targets": list(task.targets),
        "weights": None if task.is_uniform else list(task.weights),
    }


def save_tasks(tasks: Iterable[Task], path: str | Path) -> None:
    """Write tasks as JSONL (UTF-8, one task per line) in the task file format."""
    path = Path(path)
    lines = [json.dumps(task_to_dict(t), ensure_ascii=False) for t in tasks]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
