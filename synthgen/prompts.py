"""Prompt templates: sandboxed Jinja with strict undefined variables.

Recipes may come from strangers, so every template is compiled from its source
string by one :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (no
filesystem loader, no attribute access to dunders, no mutation of values) with
:class:`~jinja2.StrictUndefined`: a name the record does not have is an error,
never an empty string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from jinja2 import StrictUndefined, meta
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from synthgen.errors import ConfigError, SynthgenError

__all__ = [
    "PromptTemplate", "TemplateRenderError", "compile_template", "load_template_file",
    "render_string", "RESERVED_NAMES",
]

_MAX_REPEAT = 100_000  # longest string or list that ``*`` may build; larger ``**`` exponents


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus a cap on ``'x' * n`` and ``a ** b`` (memory/CPU bombs)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, int) and abs(right) > _MAX_REPEAT // 1000:
            raise SecurityError(f"exponent {right} is too large")
        if operator == "*" and isinstance(left, (str, list, tuple)) != isinstance(right, (str, list, tuple)):
            seq, times = (left, right) if isinstance(left, (str, list, tuple)) else (right, left)
            if isinstance(times, int) and len(seq) * times > _MAX_REPEAT:
                raise SecurityError(f"repetition to {len(seq) * times} items is too large")
        return super().call_binop(context, operator, left, right)


_ENV = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)

#: Names a field may not take: Jinja globals (``range``, ``dict``, …), the
#: literals Jinja reserves, and the names it binds inside templates.
RESERVED_NAMES: frozenset[str] = frozenset(_ENV.globals) | frozenset(
    {"true", "false", "none", "True", "False", "None", "loop", "self",
     "varargs", "kwargs", "caller", "super"}
)


class TemplateRenderError(SynthgenError):
    """A template failed to render; ``reason`` is the message without the location."""

    def __init__(self, where: str, reason: str):
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, eq=False)
class PromptTemplate:
    """A compiled, sandboxed template.

    ``origin`` and ``key`` say where it came from (the recipe file and the
    dotted key of the field, e.g. ``fields.first_name.template``) and
    ``filename`` the template file, if any; errors name all three.
    ``variables`` are the names the template reads from the record.
    """

    source: str
    origin: str
    key: str | None
    filename: str | None
    template: jinja2.Template = field(repr=False)
    variables: frozenset[str]

    @property
    def where(self) -> str:
        parts = [self.origin] + [p for p in (self.key, self.filename) if p]
        return ": ".join(parts)

    def render(self, record: Mapping[str, object]) -> str:
        """Render against ``record`` and strip surrounding whitespace.

        An undefined variable, an unsafe attribute access or any other render
        failure raises :class:`TemplateRenderError` (a :class:`SynthgenError`)
        naming the template and the cause.
        """
        try:
            return self.template.render(dict(record)).strip()
        except SecurityError as exc:
            reason = f"unsafe template operation: {exc}"
        except UndefinedError as exc:
            known = ", ".join(sorted(record)) or "nothing"
            reason = f"undefined template variable or attribute: {exc} (record has: {known})"
        except Exception as exc:  # a bug in the template itself (e.g. 1/0)
            reason = f"template failed to render: {type(exc).__name__}: {exc}"
        raise TemplateRenderError(self.where, reason)

    def dry_render(self, placeholders: Mapping[str, object]) -> None:
        """Render once with placeholder values (at load time, before any generation) so
        render-time mistakes and empty prompts surface as a ConfigError."""
        try:
            prompt = self.render(placeholders)
        except TemplateRenderError as exc:
            prefix = f"{self.filename}: " if self.filename else ""
            raise ConfigError(self.origin, self.key, f"{prefix}{exc.reason} "
                                                     "(in a dry render with placeholder values)") from None
        if not prompt:
            raise ConfigError(self.origin, self.key, "template renders to an empty prompt")

    def __reduce__(self):
        # Compiled Jinja templates do not pickle; rebuild from the source
        # (executors ship recipes to worker processes).
        return (compile_template, (self.source, self.origin, self.key, self.filename))


def compile_template(
    source: str, origin: str, key: str | None = None, filename: str | None = None
) -> PromptTemplate:
    """Compile ``source`` in the sandbox.

    A syntax error raises ``ConfigError(origin, key, "… template syntax error
    at line N: …")``, prefixed with ``filename`` when the source came from a file.
    """
    prefix = f"{filename}: " if filename else ""
    try:
        ast = _ENV.parse(source)
        template = _ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise ConfigError(
            origin, key, f"{prefix}template syntax error at line {exc.lineno}: {exc.message}"
        ) from None
    variables = frozenset(meta.find_undeclared_variables(ast)) - frozenset(_ENV.globals)
    return PromptTemplate(
        source=source,
        origin=str(origin),
        key=key,
        filename=filename,
        template=template,
        variables=variables,
    )


def load_template_file(
    value: str, search_dirs: list[Path], origin: str, key: str | None = None
) -> PromptTemplate:
    """Read the template ``value`` (absolute, or relative to each of ``search_dirs`` in turn)
    and compile it from its text. A missing file is a ConfigError listing the paths tried."""
    rel = Path(value)
    tried = [rel] if rel.is_absolute() else [d / rel for d in search_dirs]
    for path in tried:
        if path.is_file():
            try:
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(origin, key, f"cannot read template {path}: {exc}") from None
            return compile_template(source, origin, key, filename=str(path))
    raise ConfigError(origin, key, f"template file not found: {value} "
                                   f"(tried {', '.join(map(str, tried))})")


def render_string(source: str, record: Mapping[str, object], origin: str = "<string>") -> str:
    """Compile and render a one-off template (convenience for callers and tests)."""
    return compile_template(source, origin).render(record)
