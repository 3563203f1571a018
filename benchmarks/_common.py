"""What the benchmark scripts share: where results live and the provenance block each result carries.

Every result file written by a script here holds ``"provenance"``
(:func:`synthgen.provenance.provenance`: the command, git commit, package
versions, machine, date and the sha256 of each adapter used) and, where torch
is loaded, ``"torch_threads"``. ``benchmarks/results_tables.py`` reads them
into ``docs/results.md``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from synthgen.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# Environment variables that change a benchmark's timings; recorded in the command when set.
TIMING_ENV = ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")


def _relative(path: str | Path) -> str:
    """``path`` relative to the repository root when it lies inside it, else as given."""
    resolved = Path(path).resolve()
    return resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else str(path)


def command(args: list[str] | None = None) -> list[str]:
    """The command as typed from the repository root: ``[VAR=value ...] python benchmarks/x.py ARGS``.

    ``args`` are the script's arguments (default: ``sys.argv[1:]``); the script is ``sys.argv[0]``.
    """
    script = _relative(sys.argv[0]) if sys.argv and sys.argv[0] else "?"
    env = [f"{name}={os.environ[name]}" for name in TIMING_ENV if name in os.environ]
    return [*env, "python", script, *(sys.argv[1:] if args is None else args)]


def stamp(result: dict, adapters: dict[str, str | Path | None] | None = None,
          args: list[str] | None = None) -> dict:
    """``result`` with its provenance first: ``{"provenance": ..., "torch_threads": ..., **result}``.

    ``adapters`` maps a role ("adapter", "recipe adapter", ...) to the adapter directory
    used (None = the base model); the block records each one's sha256, with paths inside
    the repository written relative to it.
    """
    block = provenance(command(args), adapters=adapters)
    for entry in block["adapters"].values():
        if entry["path"]:
            entry["path"] = _relative(entry["path"])
    head: dict = {"provenance": block}
    if "torch" in sys.modules:  # never import torch only to count its threads
        head["torch_threads"] = sys.modules["torch"].get_num_threads()
    return {**head, **result}
