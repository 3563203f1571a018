"""Shipped LoRA adapters, and the one rule that turns an ``adapter`` value into a directory.

An adapter value (``--adapter``, a recipe's ``adapter:``, a train config's
``init_adapter:``) is one of:

* ``none``: the base model alone;
* ``default``: the shipped diffuse adapter of the model (the model store knows
  which), or the base model when it has none;
* the name of a shipped adapter (a directory here, e.g. ``smollm2-135m-biography-flat``);
* a directory path, relative to ``base_dir`` (a recipe's or config's folder) or
  to the working directory.

A directory must hold ``adapter_config.json`` and ``adapter_model.safetensors``
(only safetensors weights are ever loaded). This module imports neither torch
nor the model store, so a recipe can check its adapter cheaply.
"""

from __future__ import annotations

import logging
from pathlib import Path

from synthgen.errors import SynthgenError

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parent
DEFAULT_ADAPTER = "default"
NO_ADAPTER = "none"


class AdapterError(SynthgenError):
    """An adapter value names no usable adapter."""


def shipped_names() -> list[str]:
    """The shipped adapters' names."""
    return sorted(d.name for d in SHIPPED_DIR.iterdir() if (d / "adapter_config.json").is_file())


def shipped(name: str) -> Path | None:
    """A shipped adapter by name (``smollm2-135m-biography-flat``), or None."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = SHIPPED_DIR / name
    return path if (path / "adapter_config.json").is_file() else None


def default_adapter(model: str | None) -> Path | None:
    """The shipped diffuse adapter of a registered model (``<name>-diffuse``), or None."""
    from synthgen.store import registered_name

    name = registered_name(model)
    return shipped(f"{name}-diffuse") if name else None


def resolve_adapter(value: str | Path | None, *, model: str | None = None,
                    base_dir: str | Path | None = None) -> Path | None:
    """The adapter directory ``value`` stands for, or None for the base model.

    ``model`` chooses the shipped adapter behind ``default``; ``base_dir`` is
    where relative paths start (default: the working directory). Raises
    :class:`AdapterError` when the value names no usable adapter.
    """
    if value is None or str(value) == NO_ADAPTER:
        return None
    if str(value) == DEFAULT_ADAPTER:
        path = default_adapter(model)
        if path is None:
            log.info("no shipped diffuse adapter for %s; using the base model", model or "the default model")
        return path
    text = str(value)
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.exists() and not any(c in text for c in "/\\"):
        path = shipped(text) or path
    if not (path / "adapter_config.json").is_file():
        raise AdapterError(f"no adapter at {text!r} (no adapter_config.json in {path}); expected "
                           f"'{DEFAULT_ADAPTER}', '{NO_ADAPTER}', a shipped adapter ({', '.join(shipped_names())}) "
                           "or a LoRA adapter directory")
    if not (path / "adapter_model.safetensors").is_file():
        raise AdapterError(f"adapter {path}: adapter_model.safetensors missing (only safetensors adapters are loaded)")
    return path
