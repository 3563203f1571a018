"""Where a result came from: the command, the code, the versions, the machine, the adapters.

Every benchmark result file and ``synthgen audit --json`` carry this block, so a
number can be traced to the command and code that produced it.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from synthgen.io import sha256_file

_PACKAGES = ("synthgen", "torch", "transformers", "peft")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the checkout holding ``path`` (default: this package), with ``+dirty``
    when tracked files differ from it; None outside a git checkout."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def machine() -> str:
    """A one-line description of this machine: CPU model, cores, OS, accelerator if any."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{cpu}, {cores} cores, {platform.system()} {platform.machine()}"
    if "torch" in sys.modules:  # never import torch just to describe the machine
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
    return text


def adapter_digest(adapter: str | Path | None) -> str | None:
    """sha256 of an adapter directory's weights (None for no adapter or no weights file)."""
    weights = Path(adapter) / "adapter_model.safetensors" if adapter else None
    return sha256_file(weights) if weights is not None and weights.is_file() else None


def provenance(argv: list[str] | None = None, adapters: dict[str, str | Path | None] | None = None) -> dict:
    """The provenance block of a result: ``command`` (``argv``, default ``sys.argv``), ``git_commit``,
    ``versions``, ``machine``, ``date`` (UTC) and the sha256 of each named adapter's weights."""
    args = list(sys.argv if argv is None else argv)
    if args and args[0].endswith(("/synthgen", "\\synthgen")):
        args[0] = "synthgen"
    return {
        "command": shlex.join(args),
        "git_commit": git_commit(),
        "versions": {"python": platform.python_version(), **{p: _version(p) for p in _PACKAGES}},
        "machine": machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "adapters": {name: {"path": str(path) if path else None, "sha256": adapter_digest(path)}
                     for name, path in (adapters or {}).items()},
    }
