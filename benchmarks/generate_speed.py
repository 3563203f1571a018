"""Generation speed and memory of the biography recipe on the default model.

* column-wise (what ``synthgen generate`` does): every field filled for a batch
  of records at once, choice fields by exact scoring, text fields batched;
* naive loop: one ``generate`` call (batch 1) per record per field, the value
  parsed from the free reply (the usual hand-written loop).

Both run in this process on the same engine, one after the other, so the ratio
is side by side. Peak memory is measured in child processes (ru_maxrss) for two
run sizes to show it stays flat in the number of records (shards go to disk).

    python benchmarks/generate_speed.py --column 64 --naive 8 --memory 32,128
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from synthgen.engine import TransformersEngine
from synthgen.generate import generate
from synthgen.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/biography.yaml"


def naive_loop(recipe, engine, n: int, seed: int = 0) -> tuple[int, float]:
    """One batch-1 generate per record per field; a record counts if every field parses."""
    start = time.perf_counter()
    ok = 0
    for i in range(n):
        record: dict = {}
        for name in recipe.order:
            spec = recipe.fields[name]
            prompt = spec.template.render(record)
            tokens = spec.max_tokens if spec.kind == "text" else 16
            reply = engine.generate([prompt], n=1, max_new_tokens=tokens, seed=seed * 100003 + i)[0][0]
            value = spec.parse_value(" ".join(reply.split()))
            record[name] = value if value is not None else reply.strip()
        ok += all(recipe.fields[f].parse_value(str(record[f])) is not None for f in recipe.order)
    return ok, time.perf_counter() - start


def peak_rss_child(n: int) -> float:
    """Peak RSS (MiB) of a child process running `synthgen generate` for n records."""
    with tempfile.TemporaryDirectory() as tmp:
        code = (
            "import resource, sys; from synthgen.cli import main; "
            f"rc = main(['generate', {str(RECIPE)!r}, '-n', '{n}', '-o', {tmp + '/out'!r}]); "
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        line = [x for x in out.stdout.splitlines() if x.startswith("PEAK")][0]
        return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--column", type=int, default=64, help="records for the column-wise run")
    parser.add_argument("--naive", type=int, default=8, help="records for the naive loop")
    parser.add_argument("--memory", default="32,128", help="run sizes for the peak-memory check")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/generate_speed.json"))
    args = parser.parse_args()
    recipe = load_recipe(RECIPE)
    engine = TransformersEngine.load(recipe.model, adapter="default", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        res = generate(recipe.with_overrides(count=args.column), Path(tmp) / "col", engine)
        col_s = time.perf_counter() - start
    col_rate = res.report["n_generated"] / col_s
    ok, naive_s = naive_loop(recipe, engine, args.naive)
    naive_rate = args.naive / naive_s
    memory = {n: peak_rss_child(n) for n in map(int, args.memory.split(","))}
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "command": f"python benchmarks/generate_speed.py --column {args.column} --naive {args.naive} --memory {args.memory}",
        "adapter": engine.adapter_name,
        "column_wise": {"records": args.column, "generated": res.report["n_generated"], "seconds": col_s,
                        "records_per_second": col_rate},
        "naive_loop": {"records": args.naive, "all_fields_valid": ok, "seconds": naive_s,
                       "records_per_second": naive_rate},
        "speedup": col_rate / naive_rate,
        "peak_rss_mib_by_records": memory,
        "this_process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
