"""User-facing errors.

Anything a user can cause (a bad recipe, a missing file, an unknown model name)
raises :class:`SynthgenError` with a message that names the file, the key and
what was expected. The CLI turns it into one line on stderr and exit code 1;
every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class SynthgenError(Exception):
    """An error caused by user input, reported without a traceback."""


class ConfigError(SynthgenError):
    """A recipe, task file or training config is invalid.

    ``source`` is the file, ``key`` the dotted key path inside it.
    """

    def __init__(self, source: object, key: str | None, message: str):
        self.source = str(source)
        self.key = key
        where = f"{self.source}: {key}" if key else self.source
        super().__init__(f"{where}: {message}")


class ModelStoreError(SynthgenError):
    """A model could not be found, fetched, verified or converted."""


class MissingDependencyError(SynthgenError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str):
        super().__init__(
            f"{package} is not installed; install it with: pip install 'synthgen[{extra}]'"
        )
