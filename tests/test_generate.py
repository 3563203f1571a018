from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time

import datasets
import polars as pl
import pytest

from synthgen.cli import main
from synthgen.errors import SynthgenError
from synthgen.executors import EngineSpec, LocalExecutor
from synthgen.fill import FieldFiller, make_records
from synthgen.generation import generate
from synthgen.recipe import load_recipe

RECIPE = """
name: people
seed: 7
count: 40
batch_size: 8
fields:
  color:
    kind: sample
    options: [red, green, blue]
  name:
    kind: choice
    template_inline: "Give me a name for someone who likes {{ color }}."
    options: [Anna, Bob, Carla, David, Emma, Frank, Grace, Henry]
    weights: [1, 1, 1, 1, 1, 1, 1, 1]
  age:
    kind: integer
    template_inline: "How old is {{ name }}? Reply with only the number."
    min: 18
    max: 60
  bio:
    kind: text
    template_inline: "Write about {{ name }}, {{ age }}, who likes {{ color }}."
    max_tokens: 16
    min_chars: 1
    retries: 1
dedup_keys: [color, name, age, bio]
"""


@pytest.fixture
def recipe_path(tmp_path):
    path = tmp_path / "people.yaml"
    path.write_text(RECIPE, encoding="utf-8")
    return path


@pytest.fixture
def local(tiny_engine):
    """A local executor that runs the session's loaded tiny engine."""
    return LocalExecutor(engine=tiny_engine)


def test_generate_writes_all_outputs_and_valid_values(recipe_path, local, tmp_path):
    recipe = load_recipe(recipe_path)
    result = generate(recipe, tmp_path / "out", executor=local)
    out = tmp_path / "out"
    df = pl.read_parquet(out / "records.parquet")
    rep = json.loads((out / "report.json").read_text())
    assert rep["n_requested"] == 40
    assert rep["n_generated"] + rep["removed"]["invalid"] == 40
    removed = rep["removed"]
    assert rep["n_kept"] == len(df) == rep["n_generated"] - removed["exact_duplicates"] - removed["near_duplicates"]
    assert set(df["name"]) <= {"Anna", "Bob", "Carla", "David", "Emma", "Frank", "Grace", "Henry"}
    assert df["age"].min() >= 18 and df["age"].max() <= 60
    assert set(df["color"]) <= {"red", "green", "blue"}
    assert all(b.strip() for b in df["bio"])
    for key in ("unique", "entropy_bits", "normalized_entropy", "top1_value", "top1_share", "valid_rate"):
        assert key in rep["fields"]["name"]
    # choice/integer fields are exact draws: every draw valid
    assert rep["fields"]["name"]["valid_rate"] == 1.0 and rep["fields"]["age"]["valid_rate"] == 1.0
    assert (out / "records.jsonl").read_text().count("\n") == len(df)
    assert datasets.load_from_disk(str(out / "dataset")).num_rows == len(df)
    assert (out / "report.md").is_file() and (out / "plot_name.png").is_file()
    assert result.report == rep


def test_same_seed_same_records(recipe_path, local, tmp_path):
    recipe = load_recipe(recipe_path).with_overrides(count=16)
    generate(recipe, tmp_path / "a", executor=local)
    generate(recipe, tmp_path / "b", executor=local)
    generate(recipe.with_overrides(seed=8), tmp_path / "c", executor=local)
    a, b, c = (pl.read_parquet(tmp_path / d / "records.parquet") for d in "abc")
    assert a.equals(b)
    assert not a.equals(c)


def test_choice_draws_follow_the_model_distribution(tmp_path, tiny_engine):
    # Exact sampling: the empirical frequencies of a choice field match the
    # renormalised scores of the options.
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: one\nseed: 1\ncount: 2000\nbatch_size: 500\nfields:\n"
        "  x:\n    kind: choice\n    template_inline: Pick a fruit.\n    options: [apple, banana, cherry, mango]\n"
        "dedup_keys: []\n",
        encoding="utf-8",
    )
    recipe = load_recipe(path)
    records = make_records(recipe, FieldFiller(tiny_engine), range(2000)).records
    logp = tiny_engine.score("Pick a fruit.", ["apple", "banana", "cherry", "mango"])
    z = sum(math.exp(v) for v in logp)
    for opt, lp in zip(["apple", "banana", "cherry", "mango"], logp):
        share = sum(r["x"] == opt for r in records) / 2000
        assert abs(share - math.exp(lp) / z) < 0.04


def test_existing_output_is_not_overwritten(recipe_path, local, tmp_path):
    recipe = load_recipe(recipe_path).with_overrides(count=8)
    generate(recipe, tmp_path / "o", executor=local)
    before = (tmp_path / "o" / "records.parquet").read_bytes()
    with pytest.raises(SynthgenError, match="--resume"):
        generate(recipe, tmp_path / "o", executor=local)
    with pytest.raises(SynthgenError, match="different"):
        generate(recipe.with_overrides(seed=99), tmp_path / "o", executor=local, resume=True)
    assert (tmp_path / "o" / "records.parquet").read_bytes() == before


def test_cli_generate_bad_recipe_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfields:\n  a:\n    kind: nope\n", encoding="utf-8")
    assert main(["generate", str(bad), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml" in err[0] and "fields.a" in err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(recipe_path, tiny_model_dir, tmp_path):
    """Kill a real `synthgen generate` process mid-run, resume it, and compare
    with a run that was never interrupted: no record lost or duplicated."""
    args = [sys.executable, "-m", "synthgen.cli", "generate", str(recipe_path), "-n", "240",
            "--model", str(tiny_model_dir), "--adapter", "none"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(args + ["-o", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "shards").glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list((killed / "shards").glob("part-*.parquet")))
    assert 3 <= finished < 30, "the kill should land mid-run"
    assert not (killed / "records.parquet").exists()

    resumed = subprocess.run(args + ["-o", str(killed), "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    full = subprocess.run(args + ["-o", str(tmp_path / "full")], env=env, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    a = pl.read_parquet(killed / "records.parquet")
    b = pl.read_parquet(tmp_path / "full" / "records.parquet")
    assert a.equals(b)
    ra = json.loads((killed / "report.json").read_text())
    rb = json.loads((tmp_path / "full" / "report.json").read_text())
    assert ra["n_generated"] == rb["n_generated"] and ra["removed"] == rb["removed"]


def test_attribute_draws_do_not_depend_on_later_text_fields(recipe_path, tiny_engine):
    """Every field draws from its own per-record generator, so dropping the text
    field leaves the attribute values unchanged (what
    benchmarks/biography_compare.py --attributes-only relies on)."""
    recipe = load_recipe(recipe_path)
    keep = ("color", "name", "age")
    short = dataclasses.replace(recipe, fields={f: recipe.fields[f] for f in keep}, order=keep)
    full = make_records(recipe, FieldFiller(tiny_engine), range(24, 32))
    attrs = make_records(short, FieldFiller(tiny_engine), range(24, 32))
    assert full.invalid == 0
    assert [{k: r[k] for k in keep} for r in full.records] == attrs.records


# a text field that fails its pattern about 2 times in 3, so retries and dropped records happen
RETRY_RECIPE = RECIPE.replace("    min_chars: 1\n    retries: 1\n", "    pattern: '\\d'\n    retries: 1\n")


def test_records_do_not_depend_on_batch_size(tmp_path, local):
    """Per-record seeding: batch sizes 1, 7 and 32 give the same records, the same
    dropped records and the same per-field counters (retries included)."""
    path = tmp_path / "retry.yaml"
    path.write_text(RETRY_RECIPE, encoding="utf-8")
    recipe = load_recipe(path).with_overrides(count=16)
    frames, reports = [], []
    for size in (1, 7, 32):
        result = generate(dataclasses.replace(recipe, batch_size=size), tmp_path / f"b{size}", executor=local)
        frames.append(pl.read_parquet(tmp_path / f"b{size}" / "records.parquet"))
        reports.append(result.report)
    assert 0 < reports[0]["removed"]["invalid"] < 16, "the pattern should drop some records, not all"
    assert reports[0]["fields"]["bio"]["valid_rate"] < 1.0
    for frame, rep in zip(frames[1:], reports[1:]):
        assert frame.equals(frames[0])
        assert rep["removed"] == reports[0]["removed"]
        for name, info in rep["fields"].items():  # the same counters; entropies up to float summation order
            first = reports[0]["fields"][name]
            assert {k: v for k, v in info.items() if not isinstance(v, float)} == \
                {k: v for k, v in first.items() if not isinstance(v, float)}
            assert {k: v for k, v in info.items() if isinstance(v, float)} == \
                pytest.approx({k: v for k, v in first.items() if isinstance(v, float)}, rel=1e-12)


def test_a_record_depends_only_on_its_index(recipe_path, tiny_engine):
    """Record i is the same whether it is made alone or among others."""
    recipe = load_recipe(recipe_path)
    together = make_records(recipe, FieldFiller(tiny_engine), [3, 11, 12, 30])
    alone = [make_records(recipe, FieldFiller(tiny_engine), [i]) for i in (30, 12, 11, 3)][::-1]
    assert together.records == [r for res in alone for r in res.records]
    assert together.invalid == sum(res.invalid for res in alone)


def test_score_cache_is_bounded_and_does_not_change_the_records(recipe_path, tiny_engine):
    """Distributions are cached per rendered prompt (LRU); without the cache every
    record is scored on its own (the naive loop) and the records are the same."""
    recipe = load_recipe(recipe_path)
    indices = list(range(12))
    cached = FieldFiller(tiny_engine)
    small = FieldFiller(tiny_engine, cache_size=1)
    naive = FieldFiller(tiny_engine, cache_size=0)
    with_cache = make_records(recipe, cached, indices)
    assert make_records(recipe, small, indices).records == with_cache.records
    assert make_records(recipe, naive, indices).records == with_cache.records
    scored = [f for f in recipe.order if recipe.fields[f].kind in ("choice", "integer")]
    assert naive.score_calls == len(indices) * len(scored)  # one call per record per scored field
    assert cached.score_calls < naive.score_calls  # records share prompts
    assert len(small._scores) <= 1 and len(cached._scores) == cached.score_calls


def test_resume_refuses_a_run_with_another_executor(recipe_path, tiny_engine, tmp_path):
    recipe = load_recipe(recipe_path).with_overrides(count=8)
    spec = EngineSpec.from_engine(tiny_engine)
    generate(recipe, tmp_path / "o", spec, executor=LocalExecutor(engine=tiny_engine))
    with pytest.raises(SynthgenError, match="different executor"):
        generate(recipe, tmp_path / "o", spec, resume=True, executor="ray")


class Interrupt(Exception):
    pass


def test_local_resume_makes_only_the_missing_indices(recipe_path, local, tmp_path):
    """A local run stopped after two shards resumes per record index: with another
    batch size, it makes only the missing records and matches an uninterrupted run."""
    path = tmp_path / "retry.yaml"
    path.write_text(RETRY_RECIPE, encoding="utf-8")
    recipe = load_recipe(path).with_overrides(count=20)

    def stop_after_two_shards(done: int, total: int) -> None:
        if done >= 2 * recipe.batch_size:
            raise Interrupt

    with pytest.raises(Interrupt):
        generate(recipe, tmp_path / "cut", executor=local, on_progress=stop_after_two_shards)
    shards = tmp_path / "cut" / "shards"
    assert sorted(p.name for p in shards.glob("part-*.parquet")) == ["part-000000000.parquet",
                                                                   "part-000000008.parquet"]
    first = pl.read_parquet(shards / "part-000000008.parquet")
    assert first["_index"].to_list() == list(range(8, 16))
    assert first.columns == ["_index", "_alive", "color", "_drawn_color", "name", "_drawn_name", "age",
                             "_drawn_age", "bio", "_drawn_bio"]
    made = []
    resumed = generate(dataclasses.replace(recipe, batch_size=3), tmp_path / "cut", executor=local, resume=True,
                       on_progress=lambda done, total: made.append(done))
    assert made == [16, 19, 20]
    full = generate(recipe, tmp_path / "full", executor=local)
    a = pl.read_parquet(tmp_path / "cut" / "records.parquet")
    assert a.equals(pl.read_parquet(tmp_path / "full" / "records.parquet"))
    assert resumed.report["removed"] == full.report["removed"]
    assert resumed.report["fields"]["bio"]["valid_rate"] == full.report["fields"]["bio"]["valid_rate"]


def test_resuming_an_old_format_run_is_refused(recipe_path, local, tmp_path):
    """A run directory written by the jsonl shard format cannot be resumed: one clear line."""
    recipe = load_recipe(recipe_path).with_overrides(count=8)
    out = tmp_path / "old"
    (out / "shards").mkdir(parents=True)
    old = {"recipe": str(recipe.path), "n": 8, "seed": recipe.seed, "batch_size": 8, "executor": "local",
           "seeding": "per-record-v1"}
    (out / "run.json").write_text(json.dumps(old), encoding="utf-8")
    (out / "shards" / "shard-00000.jsonl").write_text('{"color": "red"}\n', encoding="utf-8")
    with pytest.raises(SynthgenError, match="started by an older synthgen") as err:
        generate(recipe, out, executor=local, resume=True)
    assert "\n" not in str(err.value) and str(out) in str(err.value)
    assert not (out / "records.parquet").exists()


def test_local_executor_builds_its_engine_once(recipe_path, tiny_engine, tmp_path, monkeypatch):
    """The local executor builds the engine of a spec once and reuses it for later runs;
    an engine handed in is used as it is."""
    builds = []

    def build(spec):
        builds.append(spec)
        return tiny_engine

    monkeypatch.setattr(EngineSpec, "build", build)
    recipe = load_recipe(recipe_path).with_overrides(count=4)
    spec = EngineSpec(model=str(tiny_engine.model_name))
    executor = LocalExecutor()
    generate(recipe, tmp_path / "a", spec, executor=executor)
    generate(recipe, tmp_path / "b", spec, executor=executor)
    assert builds == [spec] and executor.engine is tiny_engine
    generate(recipe, tmp_path / "c", executor=LocalExecutor(engine=tiny_engine))
    assert len(builds) == 1
    run = json.loads((tmp_path / "c" / "run.json").read_text())
    assert (run["model"], run["adapter"], run["engine"]) == (tiny_engine.model_name, None, "transformers")


def test_generation_modules_import_without_torch_or_a_cycle():
    code = ("import sys; import synthgen.executors; assert 'synthgen.generation' not in sys.modules; "
            "import synthgen.generation; assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
