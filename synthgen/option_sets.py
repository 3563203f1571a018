"""Conditional option sets: an ``options_file`` whose path is a template over earlier fields.

A ``choice`` or ``sample`` field may give its ``options_file`` as a Jinja
template (a path containing ``{{`` or ``{%``), e.g.
``data/first_names/{{ birth_country }}_{{ gender }}.txt``. The fields the path
reads are the field's *option parents*: they join its ``depends_on`` (so fill
order and cycle detection include them), and each record draws from the set
its parents' values select.

Everything is resolved at load time (:func:`resolve_option_sets`, in fill
order): every parent must be a closed field (options, or an integer range of at
most :data:`MAX_PARENT_VALUES` values); every reachable combination of parent
values is enumerated (a parent that is itself conditional contributes only the
values its own parents allow), at most :data:`MAX_COMBINATIONS` of them; the
path is rendered for each combination and every distinct file is read once and
validated like any options file. A parent value goes into the path verbatim, so
a value that could change the path's shape (:func:`unsafe_path_value`) is
refused, and the rendered file must lie inside the recipe's folder unless paths
are trusted (checked by the reader, as for a plain ``options_file``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from synthgen.errors import ConfigError
from synthgen.prompts import PromptTemplate, TemplateRenderError, compile_template

if TYPE_CHECKING:
    from synthgen.fields import FieldSpec

__all__ = ["MAX_COMBINATIONS", "MAX_PARENT_VALUES", "OptionSet", "compile_options_path", "is_templated",
           "read_path_sets", "resolve_option_sets", "unsafe_path_value"]

MAX_COMBINATIONS = 10_000  # reachable combinations of parent values one templated path may have
MAX_PARENT_VALUES = 5_000  # the widest integer range that may be a parent of an option set

#: One option set: its options and their normalised weights (None = uniform).
OptionSet = tuple[tuple[str, ...], tuple[float, ...] | None]
#: Reads and validates one options file: ``read(field_key, path)`` -> its set, or a ConfigError.
Reader = Callable[[str, str], OptionSet]

_CLOSED = (f"a templated options_file may only read closed fields (choice or sample options, or an integer "
           f"range of at most {MAX_PARENT_VALUES} values)")


def is_templated(path: str) -> bool:
    """Whether an ``options_file`` value is a template rather than a plain path."""
    return "{{" in path or "{%" in path


def compile_options_path(src: Path, key: str, value: str) -> PromptTemplate:
    """Compile a templated ``options_file`` (``key`` is its dotted key) in the template sandbox."""
    return compile_template(value, str(src), key)


def unsafe_path_value(value: object) -> str | None:
    """Why a parent value cannot go into a path verbatim, or None when it can: it must be
    non-empty, hold no ``/``, ``\\``, ``..`` or control character, and not start with ``.`` or ``~``."""
    text = str(value)
    if not text:
        return "it is empty"
    for bad in ("/", "\\", ".."):
        if bad in text:
            return f"it contains {bad!r}"
    if text[0] in ".~":
        return f"it starts with {text[0]!r}"
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return "it contains a control character"
    return None


def parent_values(spec: FieldSpec) -> Sequence | None:
    """The values a field can take as a parent (options, the union of a conditional field's sets, or
    an integer range of at most ``MAX_PARENT_VALUES`` values), or None when its values are open."""
    if spec.options is not None:
        return spec.options
    if spec.min is not None and spec.max - spec.min < MAX_PARENT_VALUES:
        return range(spec.min, spec.max + 1)
    return None


def resolve_option_sets(src: Path, fields: dict[str, FieldSpec], order: Sequence[str],
                        read: Reader) -> dict[str, FieldSpec]:
    """Every field with a templated ``options_file`` with its sets loaded (``option_parents``,
    ``option_sets``, ``option_files``, and ``options`` = the union of the sets in first-seen order);
    ``fields`` must already be checked for unknown names and cycles, and ``order`` is the fill order."""
    out = dict(fields)
    for name in order:
        if out[name].options_template is not None:
            out[name] = _resolve_field(src, out, order, out[name], read)
    return out


def _resolve_field(src: Path, fields: dict[str, FieldSpec], order: Sequence[str], spec: FieldSpec,
                   read: Reader) -> FieldSpec:
    parents, sets, files = read_path_sets(src, fields, order, spec.options_template, spec.name, read)
    union = tuple(dict.fromkeys(option for options, _ in sets.values() for option in options))
    return dataclasses.replace(spec, options=union, weights=None, option_parents=parents, option_sets=sets,
                               option_files=files)


def read_path_sets(src: Path, fields: dict[str, FieldSpec], order: Sequence[str], template: PromptTemplate,
                   name: str, read: Reader) -> tuple[tuple[str, ...], dict[tuple, OptionSet], tuple[Path, ...]]:
    """Read the file a templated path names for every reachable combination of its parents' values:
    ``(parents, {combo: read(...)}, files)``. ``name`` is the field the path belongs to; errors name
    ``template.key``. Used for a templated ``options_file`` and an open field's value files."""
    key = template.key
    parents = tuple(n for n in order if n in template.variables)
    for parent in parents:
        values = parent_values(fields[parent])
        if values is None:
            what = {"text": "a text field", "open": "an open field"}.get(fields[parent].kind,
                                                                         "an integer field with a wider range")
            raise ConfigError(src, key, f"'{parent}' is {what}; {_CLOSED}")
        if not isinstance(values, range):
            for value in values:
                reason = unsafe_path_value(value)
                if reason is not None:
                    raise ConfigError(src, key, f"value {value!r} of field '{parent}' cannot be part of a path "
                                                f"({reason}); parent values go into the path verbatim")
    sets: dict[tuple, OptionSet] = {}
    files: dict[str, OptionSet] = {}  # rendered path -> its set: each distinct file is read once
    for combo in reachable(src, key, fields, order, parents):
        where = ", ".join(f"{p}={v!r}" for p, v in zip(parents, combo))
        try:
            path = template.render(dict(zip(parents, combo)))
        except TemplateRenderError as exc:
            raise ConfigError(src, key, f"for {where}: {exc.reason}") from None
        if path not in files:
            try:
                files[path] = read(f"fields.{name}", path)
            except ConfigError as exc:
                reason = str(exc).removeprefix(f"{exc.source}: {exc.key}: ")
                raise ConfigError(src, key, f"{path} (for {where}): {reason}") from None
            except RuntimeError as exc:  # expanduser of an unknown ~user
                raise ConfigError(src, key, f"{path} (for {where}): {exc}") from None
        sets[combo] = files[path]
    return parents, sets, tuple(src.parent / Path(p).expanduser() for p in files)


def reachable(src: Path, key: str, fields: dict[str, FieldSpec], order: Sequence[str],
              parents: tuple[str, ...]) -> list[tuple]:
    """Every combination of ``parents``' values that a record can reach, in first-seen order.

    The fields involved are the parents and, transitively, their own option parents; each takes
    its values (a conditional one: the set its own parents select) in fill order, and a field is
    dropped from the partial combinations once no later field needs it, so they stay small."""
    involved: set[str] = set()
    todo = list(parents)
    while todo:
        name = todo.pop()
        if name not in involved:
            involved.add(name)
            todo.extend(fields[name].option_parents)
    steps = [n for n in order if n in involved]
    live: tuple[str, ...] = ()
    states: Iterable[tuple] = [()]
    for i, name in enumerate(steps):
        spec = fields[name]
        at = [live.index(p) for p in spec.option_parents]
        needed = set(parents).union(*(fields[n].option_parents for n in steps[i + 1:]))
        keep = [j for j, n in enumerate((*live, name)) if n in needed]
        grown: dict[tuple, None] = {}
        for state in states:
            values = (spec.option_sets[tuple(state[j] for j in at)][0] if spec.option_sets is not None
                      else parent_values(spec))
            for value in values:
                full = (*state, value)
                grown[tuple(full[j] for j in keep)] = None
            if len(grown) > MAX_COMBINATIONS:
                raise ConfigError(src, key, f"more than {MAX_COMBINATIONS} combinations of "
                                            f"{', '.join(steps[: i + 1])} to enumerate; a templated "
                                            "options_file may depend on fewer or smaller fields")
        live, states = tuple(n for n in (*live, name) if n in needed), list(grown)
    return [tuple(state[live.index(p)] for p in parents) for state in states]
