"""Local executor vs Ray Data executor, side by side in one run, same recipe and seed.

1. local: ``generate`` in this process with one loaded engine, at each of
   ``--batch-sizes`` (the first is the reference; per-record seeding means the
   others should make the same records);
2. ray: a local Ray cluster with ``--num-cpus`` CPUs (started here, its start
   timed apart), ``--concurrency`` actors per model field, each loading the model.

Each run's wall time includes loading the model(s) (and, for Ray, starting the
actors). Agreement = the share of records (whole rows) two runs have in common,
as a multiset, over the larger run; "identical" = the same records in the same
order. The machine's load average is recorded because the machine may be shared.

    python benchmarks/executor_speed.py --tiny -n 64 --concurrency 2
    python benchmarks/executor_speed.py -n 16 --concurrency 1    # default model + shipped adapter
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import polars as pl

from synthgen.executors import EngineSpec, LocalExecutor, RayExecutor
from synthgen.generation import generate
from synthgen.recipe import RayOptions, load_recipe

try:
    from benchmarks._common import stamp
except ImportError:  # run as a script (python benchmarks/executor_speed.py): its folder is on sys.path
    from _common import stamp

ROOT = Path(__file__).resolve().parents[1]

TINY_RECIPE = """
name: people
seed: 0
count: 64
batch_size: 16
fields:
  color: {kind: sample, options: [red, green, blue]}
  name:
    kind: choice
    template_inline: "Give me a name for someone who likes {{ color }}."
    options: [Anna, Bob, Carla, David, Emma, Frank, Grace, Henry]
  age: {kind: integer, template_inline: "How old is {{ name }}? Reply with only the number.", min: 18, max: 60}
  bio:
    kind: text
    template_inline: "Write about {{ name }}, {{ age }}, who likes {{ color }}."
    max_tokens: 32
    pattern: '\\d'
    retries: 1
dedup_keys: [color, name, age, bio]
"""


def agreement(a: pl.DataFrame, b: pl.DataFrame) -> float:
    rows_a, rows_b = Counter(a.rows()), Counter(b.rows())
    return sum((rows_a & rows_b).values()) / max(len(a), len(b), 1)


def timed_run(recipe, out: Path, spec: EngineSpec, executor) -> tuple[dict, pl.DataFrame]:
    start = time.perf_counter()
    executor = LocalExecutor() if executor == "local" else executor  # local: model load counted in the run
    report = generate(recipe, out, spec, executor=executor).report
    seconds = time.perf_counter() - start
    records = pl.read_parquet(out / "records.parquet")
    return {"seconds": seconds, "n_generated": report["n_generated"], "n_kept": report["n_kept"],
            "invalid": report["removed"]["invalid"], "records_per_second": report["n_generated"] / seconds}, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=str(ROOT / "recipes/biography.yaml"))
    parser.add_argument("--tiny", action="store_true", help="a tiny random llama (built here) and a 4-field recipe")
    parser.add_argument("--model", default=None)
    parser.add_argument("--adapter", default=None, help="directory, 'default' or 'none' (default: the recipe's)")
    parser.add_argument("-n", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-sizes", default="32", help="local runs' batch sizes, comma-separated")
    parser.add_argument("--concurrency", type=int, default=2, help="Ray actors per model field")
    parser.add_argument("--ray-batch-size", type=int, default=None, help="records per map_batches call")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/executor_speed.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        recipe_path, model = Path(args.recipe), args.model
        if args.tiny:
            from synthgen.testing import build_tiny_model

            model = str(build_tiny_model(tmp / "tiny-model"))
            recipe_path = tmp / "people.yaml"
            recipe_path.write_text(TINY_RECIPE, encoding="utf-8")
        recipe = load_recipe(recipe_path).with_overrides(count=args.n, seed=args.seed, model=model,
                                                         adapter="none" if args.tiny else args.adapter)
        spec = EngineSpec.for_recipe(recipe)
        load_before = os.getloadavg()
        sizes = [int(s) for s in args.batch_sizes.split(",")]
        local, frames = {}, {}
        for size in sizes:
            local[size], frames[size] = timed_run(dataclasses.replace(recipe, batch_size=size),
                                                  tmp / f"local-{size}", spec, "local")
            print(f"local batch {size}: {json.dumps(local[size])}", file=sys.stderr)
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, configure_logging=False)
        ray_init = time.perf_counter() - start
        try:
            options = RayOptions(concurrency=args.concurrency, batch_size=args.ray_batch_size)
            ray_run, ray_frame = timed_run(dataclasses.replace(recipe, batch_size=sizes[0]), tmp / "ray", spec,
                                           RayExecutor(options))
            actors_cpus = RayExecutor(options).cpus_per_actor(ray, recipe)
        finally:
            ray.shutdown()
        print(f"ray: {json.dumps(ray_run)}", file=sys.stderr)
        reference = frames[sizes[0]]
        result = stamp({
            "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()},
            "model": "tiny random llama (synthgen/testing.py)" if args.tiny else spec.model_name,
            "adapter": spec.adapter,
            "recipe": recipe.name,
            "n": args.n,
            "seed": args.seed,
            "local": {str(size): run for size, run in local.items()},
            "ray": {**ray_run, "cluster_cpus": args.num_cpus, "cluster_start_seconds": ray_init,
                    "actors_per_model_field": args.concurrency, "cpus_per_actor": actors_cpus,
                    "model_fields": sum(recipe.fields[f].uses_model for f in recipe.order),
                    "records_per_call": args.ray_batch_size or sizes[0]},
            "ray_over_local_throughput": ray_run["records_per_second"] / local[sizes[0]]["records_per_second"],
            "agreement_with_local_batch_" + str(sizes[0]): {
                **{f"local batch {size}": agreement(reference, frames[size]) for size in sizes[1:]},
                "ray": agreement(reference, ray_frame),
            },
            "identical_with_local_batch_" + str(sizes[0]): {
                **{f"local batch {size}": reference.equals(frames[size]) for size in sizes[1:]},
                "ray": reference.equals(ray_frame),
            },
        }, adapters={"adapter": spec.adapter})
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
