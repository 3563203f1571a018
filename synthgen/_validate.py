"""Checks shared by the recipe, training-config and task-file loaders.

Each check returns the value (converted where said) or raises a
:class:`~synthgen.errors.ConfigError` naming the file, the dotted key and what
was expected, in one wording for all loaders.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from synthgen.errors import ConfigError


def yaml_error(exc: Exception) -> str:
    """A YAML parse error in one line: where, and what."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"YAML syntax error{where}: {problem}"


def show(value: object) -> str:
    """A short description of a bad value: its type and (truncated) repr."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def check_keys(src: object, key: str | None, data: dict, allowed: Iterable[str], what: str) -> None:
    """Every key of ``data`` is one of ``allowed`` (``key`` is the mapping's own dotted path)."""
    allowed = tuple(allowed)
    for k in data:
        if k not in allowed:
            raise ConfigError(src, f"{key}.{k}" if key else str(k),
                              f"unknown key; allowed in {what}: {', '.join(allowed)}")


def is_number(value: object) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(src: object, key: str, value: object, kind: type = int, low: float | None = None,
           high: float | None = None, open_low: bool = False):
    """An int (or, with ``kind=float``, a finite number) within [low, high] (``open_low``: > low)."""
    ok = (isinstance(value, int) and not isinstance(value, bool)) if kind is int else is_number(value)
    ok = ok and math.isfinite(value) and (low is None or (value > low if open_low else value >= low))
    if not ok or (high is not None and value > high):
        bounds = [f"{'>' if open_low else '>='} {low}"] * (low is not None) + [f"<= {high}"] * (high is not None)
        what = ("an integer" if kind is int else "a number") + (" " + " and ".join(bounds) if bounds else "")
        raise ConfigError(src, key, f"expected {what}, got {show(value)}")
    return kind(value)


def string(src: object, key: str, value: object, optional: bool = False, non_empty: bool = False) -> str | None:
    """A string (or None when ``optional``); ``non_empty`` also refuses blank strings."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or (non_empty and not value.strip()):
        raise ConfigError(src, key, f"expected a {'non-empty ' * non_empty}string, got {show(value)}")
    return value


def boolean(src: object, key: str, value: object) -> bool:
    """true or false (YAML booleans only, not 0/1 or strings)."""
    if not isinstance(value, bool):
        raise ConfigError(src, key, f"expected true or false, got {show(value)}")
    return value


def string_list(src: object, key: str, value: object, optional: bool = False) -> list[str] | None:
    """A list of strings (or None when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(src, key, f"expected a list of strings, got {show(value)}")
    return value


def one_of(src: object, key: str, value: object, allowed: Iterable[str], what: str = "value") -> str:
    """One of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        shown = repr(value) if isinstance(value, str) else show(value)
        raise ConfigError(src, key, f"unknown {what} {shown}; expected one of: {', '.join(allowed)}")
    return value
