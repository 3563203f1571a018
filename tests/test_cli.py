"""The command line, through ``synthgen.cli.main(argv) -> int`` on the tiny model."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from synthgen.cli import main
from synthgen.io import sha256_file
from synthgen.training.audit import EXACT_KEYS, SAMPLED_KEYS
from synthgen.training.tasks import Task, save_tasks

TASKS = [
    Task(id="numbers-1-5", family="numbers", prompt="Pick a random number between 1 and 5. Reply with only the number.",
         targets=("1", "2", "3", "4", "5")),
    Task(id="fruits-4", family="fruits", prompt="Pick a fruit. Reply with only the name.",
         targets=("apple", "banana", "cherry", "mango"), weights=(0.4, 0.3, 0.2, 0.1)),
]
SAMPLES = 5

NAMES = ["Anna", "Bob", "Anna", "Carla", "Bob", "Anna", "David"]
BIOS = [
    f"{name} was born in a small town near the sea and worked there as a {job} for many years."
    for name, job in zip(NAMES, ["carpenter", "teacher", "baker", "pilot", "nurse", "farmer", "writer"])
]


@pytest.fixture
def task_file(tmp_path):
    path = tmp_path / "tasks.jsonl"
    save_tasks(TASKS, path)
    return path


@pytest.fixture
def parquet_file(tmp_path):
    path = tmp_path / "people.parquet"
    pl.DataFrame({"name": NAMES, "age": [31, 45, 31, 27, 60, 45, 38], "bio": BIOS}).write_parquet(path)
    return path


def stderr_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def assert_one_line_error(capsys, code: int, *names: str) -> str:
    """Exit code 1, exactly one line on stderr, naming every one of ``names``; no traceback."""
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    lines = stderr_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert "Traceback" not in out + err
    return lines[0]


def check_audit_report(report: dict, model: str) -> None:
    assert report["model"] == model
    assert [row["id"] for row in report["tasks"]] == [t.id for t in TASKS]
    for row, task in zip(report["tasks"], TASKS):
        assert row["family"] == task.family
        assert row["k"] == len(task.targets)
        exact, sampled = row["exact"], row["sampled"]
        assert set(EXACT_KEYS) <= set(exact)
        assert {"n", *SAMPLED_KEYS} <= set(sampled)
        assert 0.0 < exact["valid_mass"] <= 1.0 + 1e-9
        assert 0.0 <= exact["normalized_entropy"] <= 1.0 + 1e-9
        assert exact["kl_to_target"] >= -1e-9
        assert 1.0 / row["k"] - 1e-9 <= exact["top1_share"] <= 1.0 + 1e-9
        assert sampled["n"] == SAMPLES
        assert 0.0 <= sampled["valid_rate"] <= 1.0
        assert 0.0 <= sampled["coverage"] <= 1.0
        assert 0 <= sampled["unique_valid"] <= min(row["k"], SAMPLES)
        assert sampled["coverage"] == pytest.approx(sampled["unique_valid"] / row["k"])
        assert 0.0 <= sampled["normalized_entropy"] <= 1.0 + 1e-9
    summary = report["summary"]
    for section, keys in (("exact", EXACT_KEYS), ("sampled", SAMPLED_KEYS)):
        assert set(keys) <= set(summary[section])
        for key in keys:
            mean = sum(row[section][key] for row in report["tasks"]) / len(report["tasks"])
            assert summary[section][key] == pytest.approx(mean), (section, key)
            assert math.isfinite(summary[section][key])


# ----------------------------------------------------------------------- help
def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("models", "train", "audit", "generate", "report"):
        assert command in out, command


# ---------------------------------------------------------------------- audit
def test_audit_base_model_writes_json_and_plot(tiny_model_dir, task_file, tmp_path, capsys):
    out_json, out_png = tmp_path / "out" / "audit.json", tmp_path / "out" / "audit.png"
    code = main(["audit", str(task_file), "--model", str(tiny_model_dir), "--adapter", "none",
                 "--samples", str(SAMPLES), "--json", str(out_json), "--plot", str(out_png)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in out + err
    report = json.loads(out_json.read_text(encoding="utf-8"))
    check_audit_report(report, str(tiny_model_dir))
    assert report["adapter"] is None
    assert "baseline" not in report  # nothing to compare with when the base model is audited
    assert {"command", "git_commit", "versions", "machine", "date"} <= set(report["provenance"])
    assert report["provenance"]["adapters"] == {}
    assert out_png.is_file() and out_png.stat().st_size > 0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out_json) in out and str(out_png) in out


def test_train_then_audit_with_the_adapter(tiny_model_dir, task_file, tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(
        f"tasks: {task_file.name}\nmodel: {tiny_model_dir}\nepochs: 2\nlr: 0.01\nlora: {{rank: 2, alpha: 4}}\n",
        encoding="utf-8",
    )
    adapter = tmp_path / "adapter"
    code = main(["train", str(config), "-o", str(adapter)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in out + err
    assert (adapter / "adapter_model.safetensors").is_file()
    info = json.loads((adapter / "training.json").read_text(encoding="utf-8"))
    assert {"optimal_loss", "epochs", "steps", "wall_seconds", "config"} <= set(info)
    assert info["optimal_loss"] == pytest.approx(sum(t.entropy() for t in TASKS))
    assert 1 <= len(info["epochs"]) <= 2
    # one step per task of each family still training in that epoch (one task per family here)
    assert len(info["steps"]) == sum(len(e["families"]) for e in info["epochs"])
    assert info["config"]["lora"]["rank"] == 2 and info["config"]["lr"] == 0.01
    assert info["wall_seconds"] >= 0

    out_json = tmp_path / "audit.json"
    code = main(["audit", str(task_file), "--model", str(tiny_model_dir), "--adapter", str(adapter),
                 "--samples", str(SAMPLES), "--json", str(out_json)])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out_json.read_text(encoding="utf-8"))
    check_audit_report(report, str(tiny_model_dir))
    assert report["adapter"] == str(adapter)
    assert "baseline" in report  # --compare is on by default
    assert report["baseline"]["adapter"] is None
    assert "provenance" not in report["baseline"]
    weights = adapter / "adapter_model.safetensors"
    assert report["provenance"]["adapters"]["adapter"] == {"path": str(adapter), "sha256": sha256_file(weights)}
    check_audit_report(report["baseline"], str(tiny_model_dir))
    # the adapter changed the model's distribution
    assert any(a["exact"] != b["exact"] for a, b in zip(report["tasks"], report["baseline"]["tasks"]))


# ---------------------------------------------------------------- error paths
def test_audit_missing_task_file(tiny_model_dir, tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    code = main(["audit", str(missing), "--model", str(tiny_model_dir), "--adapter", "none", "--samples", "0"])
    assert "not found" in assert_one_line_error(capsys, code, str(missing))


def test_audit_duplicate_target(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "dup.jsonl"
    rows = [
        {"id": "a", "family": "numbers", "prompt": "Pick 1, 2 or 3.", "targets": ["1", "2", "3"], "weights": None},
        {"id": "b", "family": "numbers", "prompt": "Pick 1 or 2.", "targets": ["1", "2", "1"], "weights": None},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code = main(["audit", str(path), "--model", str(tiny_model_dir), "--adapter", "none", "--samples", "0"])
    line = assert_one_line_error(capsys, code, str(path), "line 2", "targets")
    assert "duplicate" in line


def test_train_unknown_config_key(tiny_model_dir, task_file, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(f"tasks: {task_file.name}\nmodel: {tiny_model_dir}\nepochz: 2\n", encoding="utf-8")
    adapter = tmp_path / "adapter"
    code = main(["train", str(config), "-o", str(adapter)])
    assert "unknown key" in assert_one_line_error(capsys, code, str(config), "epochz")
    assert not adapter.exists()


def test_audit_adapter_empty_dir(tiny_model_dir, task_file, tmp_path, capsys):
    empty = tmp_path / "empty-adapter"
    empty.mkdir()
    code = main(["audit", str(task_file), "--model", str(tiny_model_dir), "--adapter", str(empty), "--samples", "0"])
    assert "adapter_config.json" in assert_one_line_error(capsys, code, str(empty))


def test_report_missing_path(tmp_path, capsys):
    missing = tmp_path / "nothing.parquet"
    code = main(["report", str(missing)])
    assert "no such file" in assert_one_line_error(capsys, code, str(missing))


def test_report_unknown_field(parquet_file, tmp_path, capsys):
    code = main(["report", str(parquet_file), "--fields", "nope", "-o", str(tmp_path / "rep")])
    line = assert_one_line_error(capsys, code, str(parquet_file), "nope")
    assert "name" in line and "bio" in line  # lists the available columns
    assert not (tmp_path / "rep").exists()


def test_generate_count_zero_is_a_usage_error(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: r\n", encoding="utf-8")
    code = main(["generate", str(recipe), "-n", "0", "-o", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code != 0
    assert "Traceback" not in out + err
    assert "-n" in err and "positive" in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------- report
def test_report_on_a_parquet(parquet_file, tmp_path, capsys):
    out_dir = tmp_path / "rep"
    code = main(["report", str(parquet_file), "-o", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in out + err
    rep = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    assert set(rep["fields"]) == {"name", "age", "bio"}
    assert rep["fields"]["name"]["unique"] == len(set(NAMES))
    assert rep["fields"]["name"]["top1_value"] == "Anna"
    assert rep["fields"]["age"]["unique"] == 5
    bio = rep["fields"]["bio"]
    assert bio["kind"] == "text"
    assert 0.0 < bio["distinct_1"] <= 1.0
    assert rep["n_kept"] == len(NAMES)
    assert (out_dir / "report.md").is_file()
    assert str(out_dir) in out
