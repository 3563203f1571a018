"""Engines: what runs the model (``transformers`` locally, ``vllm`` on a GPU).

The registry maps an engine name to the module and factory that build it; the
module is imported only when the engine is created, so naming or checking an
engine (a recipe's ``engine:`` key) imports neither torch nor vLLM, and a
missing optional dependency becomes an error naming its extra.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from synthgen.errors import MissingDependencyError, SynthgenError

if TYPE_CHECKING:
    from synthgen.engines.base import Engine

# name -> (module, factory attribute, pip extra or None)
_BUILTIN: dict[str, tuple[str, str, str | None]] = {
    "transformers": ("synthgen.engines.transformers", "load", None),
    "vllm": ("synthgen.engines.vllm", "load", "vllm"),
}
ENGINE_NAMES: tuple[str, ...] = tuple(_BUILTIN)
_FACTORIES: dict[str, Callable[..., Engine]] = {}


def engine_names() -> list[str]:
    """Every engine name that :func:`create_engine` accepts (built in and registered)."""
    return sorted({*ENGINE_NAMES, *_FACTORIES})


def register_engine(name: str, factory: Callable[..., Engine]) -> None:
    """Register an engine factory under ``name`` (called as ``factory(model=, adapter=, **kwargs)``)."""
    if not name.isidentifier():
        raise ValueError(f"invalid engine name {name!r}")
    _FACTORIES[name] = factory


def create_engine(name: str = "transformers", **kwargs) -> Engine:
    """Build an engine by name; heavy engines import their dependency only here."""
    if name not in _FACTORIES and name in _BUILTIN:
        module_name, attr, extra = _BUILTIN[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            if extra is None:
                raise
            raise MissingDependencyError(getattr(err, "name", None) or extra, extra) from err
        _FACTORIES[name] = getattr(module, attr)
    if name not in _FACTORIES:
        raise SynthgenError(f"unknown engine {name!r}; known engines: {', '.join(engine_names())}")
    return _FACTORIES[name](**kwargs)
