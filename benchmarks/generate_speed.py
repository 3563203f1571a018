"""Generation speed and memory of the biography recipe on the default model.

Both ways make the same records (every record's randomness comes from its own
seed), so the ratio compares equal work:

* **column-wise** (what ``synthgen generate`` does): records in shards of the
  recipe's ``batch_size``; each field filled for the whole shard before the
  next; choice/integer fields scored once per distinct prompt (the scores of a
  prompt are cached), text fields generated as one batch;
* **naive loop**: record after record, field after field, one engine call per
  record per field (``score`` for a choice/integer field, batch-1 ``generate``
  for the text field, retries included), no cache: what a hand-written loop
  over the same model does.

Both run in this process on the same engine, one after the other (side by
side, so the ratio is robust to a noisy machine). The naive loop runs on the
first ``--naive`` record indices; its records are compared with the
column-wise run's records of the same indices (``agreement``: share identical
in every field; batching changes float rounding in the text decoder, so a
biography can differ). Peak memory is measured in child processes
(``ru_maxrss``) for two run sizes, to show it is flat in the number of records
(shards go to disk).

    python benchmarks/generate_speed.py --column 1000 --naive 16 --memory 32,256

writes ``benchmarks/results/generate_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from synthgen.engines.transformers import TransformersEngine
from synthgen.executors import LocalExecutor
from synthgen.fill import FieldFiller, make_records
from synthgen.generation import generate
from synthgen.recipe import load_recipe

try:
    from benchmarks._common import stamp
except ImportError:  # run as a script (python benchmarks/generate_speed.py): its folder is on sys.path
    from _common import stamp

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/biography.yaml"


def naive_loop(recipe, engine, n: int) -> tuple[list[dict], int, float, int]:
    """Records 0..n-1 one at a time, one engine call per record per field (no score cache).

    Returns the valid records, the number dropped, the seconds and the engine calls."""
    filler = FieldFiller(engine, cache_size=0)
    calls = 0
    original = engine.generate

    def counted(*args, **kwargs):
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    engine.generate = counted
    start = time.perf_counter()
    try:
        records, dropped = [], 0
        for i in range(n):
            result = make_records(recipe, filler, [i])
            records += result.records
            dropped += result.invalid
    finally:
        del engine.generate
    return records, dropped, time.perf_counter() - start, calls + filler.score_calls


def peak_rss_child(n: int) -> float:
    """Peak RSS (MiB) of a child process running `synthgen generate` for n records.

    The child reads its own high-water mark (``VmHWM`` in /proc/self/status, kB):
    ``ru_maxrss`` would not do, since Linux carries it over ``exec`` from the
    forked copy of this (large) parent process, so every child would report at
    least the parent's size."""
    with tempfile.TemporaryDirectory() as tmp:
        code = (
            "import re, resource, sys; from pathlib import Path; from synthgen.cli import main; "
            f"rc = main(['generate', {str(RECIPE)!r}, '-n', '{n}', '-o', {tmp + '/out'!r}]); "
            "status = Path('/proc/self/status'); "
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', status.read_text()) if status.exists() else None; "
            "print('PEAK', int(hwm.group(1)) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); "
            "sys.exit(rc)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        line = [x for x in out.stdout.splitlines() if x.startswith("PEAK")][0]
        return int(line.split()[1]) / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--column", type=int, default=1000, help="records for the column-wise run")
    parser.add_argument("--naive", type=int, default=16, help="records for the naive loop")
    parser.add_argument("--memory", default="32,256", help="run sizes for the peak-memory check ('' to skip)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/generate_speed.json"))
    args = parser.parse_args(argv)
    recipe = load_recipe(RECIPE)
    engine = TransformersEngine.load(recipe.model, adapter="default", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        res = generate(recipe.with_overrides(count=args.column), Path(tmp) / "col", executor=LocalExecutor(engine))
        col_s = time.perf_counter() - start
        col_records = [json.loads(line) for line in (Path(tmp) / "col" / "records.jsonl").read_text().splitlines()]
    col_rate = res.report["n_generated"] / col_s
    naive_records, naive_dropped, naive_s, calls = naive_loop(recipe, engine, args.naive)
    naive_rate = args.naive / naive_s
    fields = list(recipe.order)
    column_set = {json.dumps({f: r.get(f) for f in fields}, sort_keys=True) for r in col_records}
    same = sum(json.dumps({f: r.get(f) for f in fields}, sort_keys=True) in column_set for r in naive_records)
    attrs = [f for f in fields if recipe.fields[f].kind != "text"]
    column_attrs = {json.dumps({f: r.get(f) for f in attrs}, sort_keys=True) for r in col_records}
    same_attrs = sum(json.dumps({f: r.get(f) for f in attrs}, sort_keys=True) in column_attrs for r in naive_records)
    memory = {n: peak_rss_child(n) for n in map(int, filter(None, args.memory.split(",")))}
    result = stamp({
        "load_average_at_end": os.getloadavg()[0],
        "adapter": engine.adapter_name,
        "column_wise": {"records": args.column, "generated": res.report["n_generated"],
                        "kept": res.report["n_kept"], "batch_size": recipe.batch_size, "seconds": col_s,
                        "records_per_second": col_rate},
        "naive_loop": {"records": args.naive, "valid": len(naive_records), "dropped": naive_dropped,
                       "engine_calls": calls, "seconds": naive_s, "records_per_second": naive_rate},
        "speedup": col_rate / naive_rate,
        "agreement": {"identical_records": same, "identical_attributes": same_attrs, "of": len(naive_records)},
        "peak_rss_mib_by_records": memory,
        "this_process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }, adapters={"adapter": engine.adapter_name}, args=argv)
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
