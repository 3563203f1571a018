"""synthgen: synthetic datasets with diverse attributes from diffuse language models.

The public API, imported lazily so that ``import synthgen`` stays light::

    from synthgen import load_recipe, generate
    result = generate(load_recipe("recipes/biography.yaml"), "out/biography")

* :func:`load_recipe` — read and validate a recipe (YAML);
* :func:`generate` — make a recipe's records, dedup them and write the report;
* :func:`create_engine` — load a model (+ adapter) behind the engine interface;
* :func:`train` — fine-tune a diffuse LoRA adapter from a training config;
* :func:`audit` — measure how diffuse a model is on a set of tasks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_API = {
    "load_recipe": "synthgen.recipe",
    "generate": "synthgen.generation",
    "create_engine": "synthgen.engines",
    "train": "synthgen.training.loop",
    "audit": "synthgen.training.audit",
}
__all__ = ["__version__", "audit", "create_engine", "generate", "load_recipe", "train"]

if TYPE_CHECKING:
    from synthgen.engines import create_engine
    from synthgen.generation import generate
    from synthgen.recipe import load_recipe
    from synthgen.training.audit import audit
    from synthgen.training.loop import train


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'synthgen' has no attribute {name!r}")
