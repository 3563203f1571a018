"""Executors: the Ray Data executor on a local 2-CPU Ray cluster against the local
executor (same seed, same records), its resume, and the engine/executor settings."""

from __future__ import annotations

import json
import sys

import polars as pl
import pytest

from synthgen.cli import main
from synthgen.errors import ConfigError, MissingDependencyError, SynthgenError
from synthgen.executors import EngineSpec, LocalExecutor, RayExecutor, get_executor
from synthgen.generation import generate
from synthgen.recipe import RayOptions, load_recipe
from tests.testing_utils import require_ray

N = 20
# Two model fields (a choice and a text field whose pattern fails about 2 times in 3,
# so retries and dropped records happen) and two sample fields (a string and an
# integer column): few actors to start on a 2-CPU cluster, every code path.
RECIPE = """
name: people
seed: 7
count: 20
batch_size: 8
fields:
  color: {kind: sample, options: [red, green, blue]}
  age: {kind: sample, min: 18, max: 60}
  name:
    kind: choice
    template_inline: "Give me a name for someone who likes {{ color }}."
    options: [Anna, Bob, Carla, David, Emma, Frank, Grace, Henry]
  bio:
    kind: text
    template_inline: "Write about {{ name }}, {{ age }}, who likes {{ color }}."
    max_tokens: 16
    pattern: '\\d'
    retries: 1
dedup_keys: [color, name, age, bio]
"""


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster with 2 CPUs, started once for the module (Ray is the `ray` extra;
    the tests that use it are skipped without it)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def recipe_path(tmp_path):
    path = tmp_path / "people.yaml"
    path.write_text(RECIPE, encoding="utf-8")
    return path


class Interrupt(Exception):
    pass


@pytest.mark.slow
@require_ray
def test_ray_matches_local_and_resumes(ray_cluster, recipe_path, tiny_model_dir, tiny_engine, tmp_path):
    """A Ray run (2 actors per model field, 7 records per call) interrupted after its first
    shard and resumed from the CLI (1 actor per field) gives exactly the records,
    dropped records and counters of an uninterrupted local run (8 per shard), in the same shard format."""
    recipe = load_recipe(recipe_path).with_overrides(count=N)
    local = generate(recipe, tmp_path / "local", executor=LocalExecutor(engine=tiny_engine)).report

    def stop_after_first_shard(done: int, total: int) -> None:
        if 0 < done < total:
            raise Interrupt

    out = tmp_path / "ray"
    executor = RayExecutor(RayOptions(concurrency=2, batch_size=7))
    # the actors build their own engines from the spec of the loaded one (model + adapter)
    with pytest.raises(Interrupt):
        generate(recipe, out, EngineSpec.from_engine(tiny_engine), executor=executor,
                 on_progress=stop_after_first_shard)
    shards = sorted(p.name for p in (out / "shards").glob("part-*.parquet"))
    assert 1 <= len(shards) < 3 and not (out / "records.parquet").exists()
    ray_shard = pl.read_parquet(out / "shards" / shards[0])
    local_shard = pl.read_parquet(tmp_path / "local" / "shards" / "part-000000000.parquet")
    assert ray_shard.schema == local_shard.schema

    args = ["generate", str(recipe_path), "-n", str(N), "-o", str(out), "--model", str(tiny_model_dir),
            "--adapter", "none", "--executor", "ray", "--concurrency", "1", "--resume"]
    assert main(args) == 0
    assert set(shards) < {p.name for p in (out / "shards").glob("part-*.parquet")}

    a = pl.read_parquet(tmp_path / "local" / "records.parquet")
    b = pl.read_parquet(out / "records.parquet")
    assert a.equals(b)
    ray_report = json.loads((out / "report.json").read_text())
    assert 0 < local["removed"]["invalid"] < N, "the pattern should drop some records"
    assert ray_report["removed"] == local["removed"] and ray_report["n_generated"] == local["n_generated"]
    for name in recipe.order:
        assert ray_report["fields"][name]["valid_rate"] == local["fields"][name]["valid_rate"]


@pytest.mark.slow
@require_ray
def test_a_cluster_too_small_for_the_actors_is_a_clear_error(ray_cluster, recipe_path, tiny_model_dir, tmp_path):
    # 2 model fields x 2 actors x 1 CPU on a 2-CPU cluster would wait forever
    recipe = load_recipe(recipe_path).with_overrides(count=4)
    executor = RayExecutor(RayOptions(concurrency=2, num_cpus=1.0))
    with pytest.raises(SynthgenError, match="too few for 4 actors"):
        generate(recipe, tmp_path / "o", EngineSpec(model=str(tiny_model_dir)), executor=executor)


def test_missing_ray_names_the_extra(recipe_path, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    recipe = load_recipe(recipe_path).with_overrides(count=4)
    with pytest.raises(MissingDependencyError, match=r"synthgen\[ray\]"):
        generate(recipe, tmp_path / "o", EngineSpec(model="unused"), executor="ray")


def test_recipe_chooses_engine_and_executor(recipe_path):
    text = recipe_path.read_text(encoding="utf-8")
    recipe_path.write_text("engine: transformers\nexecutor: ray\nray: {concurrency: 3, batch_size: 5, num_cpus: 0.5}\n"
                           + text, encoding="utf-8")
    recipe = load_recipe(recipe_path)
    assert (recipe.engine, recipe.executor) == ("transformers", "ray")
    assert recipe.ray == RayOptions(concurrency=3, batch_size=5, num_cpus=0.5)
    assert isinstance(get_executor(recipe.executor, recipe), RayExecutor)
    local = recipe.with_overrides(executor="local", concurrency=1)
    assert isinstance(get_executor(local.executor, local), LocalExecutor) and local.ray.concurrency == 1
    plain = recipe_path.with_name("plain.yaml")
    plain.write_text(text, encoding="utf-8")
    assert (load_recipe(plain).engine, load_recipe(plain).executor) == ("transformers", "local")


@pytest.mark.parametrize("head, key, message", [
    ("engine: nope\n", "engine", "unknown engine"),
    ("executor: spark\n", "executor", "unknown executor"),
    ("ray: {concurrency: 0}\n", "ray.concurrency", "an integer >= 1"),
    ("ray: {replicas: 2}\n", "ray.replicas", "unknown key"),
    ("ray: 4\n", "ray", "expected a mapping"),
])
def test_bad_engine_or_executor_keys_name_file_and_key(recipe_path, head, key, message):
    recipe_path.write_text(head + recipe_path.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as err:
        load_recipe(recipe_path)
    assert str(err.value).startswith(f"{recipe_path}: {key}: ")


def test_cli_rejects_unknown_engine_and_executor(recipe_path, tmp_path, capsys):
    base = ["generate", str(recipe_path), "-o", str(tmp_path / "o")]
    assert main(base + ["--engine", "nope"]) == 1
    assert "engine (override): unknown engine 'nope'" in capsys.readouterr().err
    assert main(base + ["--executor", "spark"]) == 2
    assert "spark" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
