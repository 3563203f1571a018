"""Prompt templates: sandboxed Jinja with strict undefined variables.

Recipes may come from strangers, so every template is compiled from its source
string by one :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (no
filesystem loader, no attribute access to dunders, no mutation of values) with
:class:`~jinja2.StrictUndefined`: a name the record does not have is an error,
never an empty string. A render is bounded in time and in the size of the text
it may build (:class:`_Sandbox`), and template files are read only from the
recipe's search directories.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
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
_MAX_TEXT = 1_000_000  # longest string a template may build, pass to a call or return
RENDER_SECONDS = 2.0  # wall-clock budget of one render
_PRINTF_WIDTH = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_NUMBER = re.compile(r"\{[^{}]*:[^{}]*?(\d+)[^{}]*\}")
_SIZED_STR_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs", "format", "format_map", "replace"}


class TemplateTimeout(SecurityError):
    """A render ran past :data:`RENDER_SECONDS`."""


def _check_size(size: int, what: str) -> None:
    if size > _MAX_TEXT:
        raise SecurityError(f"{what} would build {size} characters (the limit is {_MAX_TEXT})")


def _check_printf(fmt: str) -> None:
    """Refuse ``%`` formats whose width or precision could build a huge string."""
    for match in _PRINTF_WIDTH.finditer(fmt):
        for part in match.groups():
            if part == "*" or (part and int(part) > _MAX_REPEAT):
                raise SecurityError(f"format width {part} is too large")


def _check_format(fmt: str) -> None:
    """Refuse ``str.format`` specs with a huge width or precision."""
    for match in _FORMAT_NUMBER.finditer(fmt):
        if int(match.group(1)) > _MAX_REPEAT:
            raise SecurityError(f"format width {match.group(1)} is too large")


def _sized(name: str, text: str, args: tuple, kwargs: dict) -> None:
    """Check a size-changing string operation (a method or filter named ``name``) before it runs."""
    values = [*args, *kwargs.values()]
    if name in ("format", "format_map"):
        _check_format(text)
    elif name == "replace":
        old, new = (values + ["", ""])[:2]
        if isinstance(old, str) and isinstance(new, str) and old:
            _check_size(len(text) + text.count(old) * len(new), "replace")
    else:
        lines = text.count("\n") + 1 if name == "indent" else 1
        for value in values:
            if isinstance(value, int) and not isinstance(value, bool):
                _check_size(len(text) + abs(value) * lines, name)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with bounds on what one render may cost.

    Caps ``'x' * n``, ``a ** b``, ``%`` and ``str.format`` widths, the size-changing
    string methods and filters (``center``, ``indent``, ``replace``, ...) and the
    size of strings passed to calls (recursive macros), and gives each render a
    wall-clock budget (:data:`RENDER_SECONDS`). ``namespace`` and ``lipsum`` are
    not available: prompts never need them and both can build unbounded text.
    """

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("namespace", "lipsum"):
            self.globals.pop(name, None)
        for name in ("center", "indent", "format", "replace"):
            self.filters[name] = self._sized_filter(name, self.filters[name])

    @staticmethod
    def _sized_filter(name, func):
        passes_context = hasattr(func, "jinja_pass_arg")  # the first argument is jinja's, not the value

        def checked(*args, **kwargs):
            rest = args[1:] if passes_context else args
            if rest and isinstance(rest[0], str):
                if name == "format":
                    _check_printf(rest[0])
                else:
                    _sized(name, rest[0], rest[1:], kwargs)
            return func(*args, **kwargs)

        checked.__name__ = func.__name__
        if passes_context:
            checked.jinja_pass_arg = func.jinja_pass_arg
        return checked

    def wrap_str_format(self, value):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def checked(*args, **kwargs):
            _check_format(fmt)
            return wrapped(*args, **kwargs)

        return checked

    def call_binop(self, context, operator, left, right):
        _check_deadline()
        if operator == "**" and isinstance(right, int) and abs(right) > _MAX_REPEAT // 1000:
            raise SecurityError(f"exponent {right} is too large")
        if operator == "*" and isinstance(left, (str, list, tuple)) != isinstance(right, (str, list, tuple)):
            seq, times = (left, right) if isinstance(left, (str, list, tuple)) else (right, left)
            if isinstance(times, int) and len(seq) * times > _MAX_REPEAT:
                raise SecurityError(f"repetition to {len(seq) * times} items is too large")
        if operator == "%" and isinstance(left, str):
            _check_printf(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's signature)
        _check_deadline()
        for value in (*args, *kwargs.values()):
            if isinstance(value, str):
                _check_size(len(value), "a call argument")
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and getattr(__obj, "__name__", "") in _SIZED_STR_METHODS:
            _sized(__obj.__name__, owner, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


_deadline = threading.local()


def _check_deadline() -> None:
    end = getattr(_deadline, "end", None)
    if end is not None and time.monotonic() > end:
        raise TemplateTimeout(f"rendering took more than {RENDER_SECONDS:g} s")


@contextlib.contextmanager
def _render_budget(seconds: float):
    """Bound one render's wall-clock time: checked at every call and operator in the template,
    and, in the main thread on Unix, by a timer signal (which also stops loops without calls)."""
    _deadline.end = time.monotonic() + seconds
    use_timer = (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
                 and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0))
    previous = None
    if use_timer:
        def on_timer(signum, frame):
            raise TemplateTimeout(f"rendering took more than {seconds:g} s")

        previous = signal.signal(signal.SIGALRM, on_timer)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        if use_timer:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        _deadline.end = None


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
            with _render_budget(RENDER_SECONDS):
                text = self.template.render(dict(record))
            _check_size(len(text), "the prompt")
            return text.strip()
        except TemplateTimeout as exc:
            reason = f"template too expensive: {exc} (a loop or recursion without bound?)"
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


def inside(path: Path, roots: list[Path]) -> bool:
    """Whether ``path`` (symlinks resolved) lies under one of ``roots``."""
    real = path.resolve()
    return any(real.is_relative_to(root.resolve()) for root in roots)


def load_template_file(
    value: str, search_dirs: list[Path], origin: str, key: str | None = None, allow_outside: bool = False
) -> PromptTemplate:
    """Read the template ``value`` (relative to each of ``search_dirs`` in turn) and compile it
    from its text. The file must lie inside one of ``search_dirs`` (no absolute path, no ``..``
    out of them) unless ``allow_outside``. A missing file is a ConfigError listing the paths tried."""
    rel = Path(value)
    if not allow_outside and rel.is_absolute():
        raise ConfigError(origin, key, f"template {value}: an absolute path is not allowed; templates are read "
                                       f"from {' or '.join(map(str, search_dirs))} (pass --trust-paths to allow it)")
    tried = [rel] if rel.is_absolute() else [d / rel for d in search_dirs]
    for path in tried:
        if path.is_file():
            if not allow_outside and not inside(path, search_dirs):
                raise ConfigError(origin, key, f"template {value}: {path.resolve()} is outside the recipe's "
                                               f"template folders ({', '.join(map(str, search_dirs))}); "
                                               "pass --trust-paths to allow it")
            try:
                source = path.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(origin, key, f"cannot read template {path}: {exc}") from None
            return compile_template(source, origin, key, filename=str(path))
    raise ConfigError(origin, key, f"template file not found: {value} "
                                   f"(tried {', '.join(map(str, tried))})")


def render_string(source: str, record: Mapping[str, object], origin: str = "<string>") -> str:
    """Compile and render a one-off template (convenience for callers and tests)."""
    return compile_template(source, origin).render(record)
