"""Small file helpers: atomic writes and file hashes."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a crash
    never leaves a half-written file under the final name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def writable_dir(path: Path, what: str = "output directory") -> Path:
    """Create ``path`` if needed and check a file can be written in it, before any long work,
    so an impossible output path fails at once with one line instead of after the work."""
    from synthgen.errors import SynthgenError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".synthgen-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SynthgenError(f"cannot write the {what} {path}: {exc.strerror or exc}") from None
    return path


def writable_file(path: Path, what: str = "output file") -> Path:
    """Check that ``path``'s folder can take a new file (created if needed), before any long work."""
    writable_dir(Path(path).parent, f"folder of the {what} {path}")
    if Path(path).is_dir():
        from synthgen.errors import SynthgenError

        raise SynthgenError(f"the {what} {path} is a directory; expected a file path")
    return Path(path)


def json_safe(value):
    """A JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, keys -> str, unknown objects -> str."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if hasattr(value, "item"):  # numpy scalar
        return json_safe(value.item())
    return str(value)
