"""Generation speed and memory of the shipped biography recipe: today's code path against the previous one.

One run of this script makes the same ``--n`` records twice, each in a fresh child
process (model load excluded from the timed part, peak memory = the child's own
``VmHWM``), one after the other on the same machine:

* **new**: option sets scored as token tries, several prompts packed into one
  forward pass (``scoring="trie"``), the adapter merged into the weights while it
  is on, top-p over the largest tokens first, text
  retries in a continuously full decode batch of 64 rows, shards as the recipe sets them;
* **old**: the previous path (``scoring="padded"``: the prompt once, the options as
  right-padded chunks on its expanded KV cache, one prompt at a time; top-p by
  sorting the whole vocabulary; the LoRA layers beside the base ones, ``merge=False``;
  retries in rounds, ``continuous=False``; decode
  batches of 32 rows and shards of 32 records).

Both fill the same fields with the same seeds in fp32, so the choice/integer
fields must be identical record by record (the biographies may differ where
float rounding of a different batch picks another token); ``agreement`` also gives, for every
prompt both runs scored, the KL divergence between the old and the new option
distribution (the bound is 1e-3). More children run the new path on each
``--memory-n`` count of records, to show how peak memory depends on the number of
records (shards go to disk; the decode batch and one shard's records bound the rest).
Per-field timing comes from each run's ``report.json``.

    python benchmarks/generate_speed.py --n 1000 --memory-n 100
    python benchmarks/generate_speed.py --n 1000 --memory-n 100,300 --old-n 100 --keep-new out/speed_new

``--old-n`` runs the old path on fewer records (its first ``--old-n`` records are
compared with the new path's); the speedup is then taken against the new run of
the same size (``--memory-n`` equal to ``--old-n``), never across sizes.
``--keep-new`` keeps the new path's ``--n``-record run folder (a finished run of
``synthgen generate``, which ``benchmarks/coherence.py --shipped-from`` can read).

writes ``benchmarks/results/generate_speed.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from benchmarks._common import RESULTS, ROOT, stamp
except ImportError:  # run as a script (python benchmarks/generate_speed.py): its folder is on sys.path
    from _common import RESULTS, ROOT, stamp

RECIPE = ROOT / "recipes/biography.yaml"
PATHS = {"new": {}, "old": {"scoring": "padded", "top_p_candidates": 0, "continuous": False, "batch_size": 32,
                           "merge": False}}
SHARD_RECORDS = {"old": 32}  # the old path filled shards of 32 records (the new one: the recipe's batch_size)
KL_BOUND = 1e-3


class Recording:
    """An engine that records the log-probabilities of every prompt it scores (the agreement check)."""

    def __init__(self, engine):
        self._engine = engine
        self.scores: list[dict] = []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def score_many(self, requests, use_adapter=True):
        values = self._engine.score_many(requests, use_adapter)
        self.scores += [{"prompt": p, "options": list(o), "logprobs": v} for (p, o), v in zip(requests, values)]
        return values


def child(path: str, n: int, out_dir: Path) -> dict:
    """Generate ``n`` records on one code path in this process; the seconds exclude the model load."""
    from synthgen.engines.transformers import TransformersEngine
    from synthgen.executors import LocalExecutor
    from synthgen.generation import generate
    from synthgen.recipe import load_recipe

    recipe = load_recipe(RECIPE).with_overrides(count=n)
    if path in SHARD_RECORDS:
        recipe = dataclasses.replace(recipe, batch_size=SHARD_RECORDS[path])
    engine = TransformersEngine.load(recipe.model, adapter=recipe.adapter or "default", device="cpu",
                                     **PATHS[path])
    recorder = Recording(engine)
    start = time.perf_counter()
    result = generate(recipe, out_dir, executor=LocalExecutor(engine=recorder))
    seconds = time.perf_counter() - start
    (out_dir / "scores.json").write_text(json.dumps(recorder.scores), encoding="utf-8")
    status = Path("/proc/self/status")
    hwm = re.search(r"VmHWM:\s+(\d+)", status.read_text()) if status.exists() else None
    return {"path": path, "records": n, "seconds": seconds, "records_per_second": n / seconds,
            "kept": result.report["n_kept"], "invalid": result.report["removed"]["invalid"],
            "peak_rss_mib": int(hwm.group(1)) / 1024 if hwm else None,
            "fields": result.report["timing"]["fields"], "adapter": engine.adapter_name,
            "engine_options": PATHS[path], "shard_records": recipe.batch_size}


def run_child(path: str, n: int, out_dir: Path) -> dict:
    code = ("import json, sys; from pathlib import Path; from benchmarks.generate_speed import child; "
            f"print('RESULT', json.dumps(child({path!r}, {n}, Path({str(out_dir)!r}))))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"the {path} run failed:\n{out.stderr[-3000:]}")
    return json.loads(next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))[7:])


def attribute_fields() -> tuple[list[str], list[str]]:
    """The recipe's choice/integer fields (identical on both paths) and its other model fields."""
    from synthgen.recipe import load_recipe

    recipe = load_recipe(RECIPE)
    closed = [f for f in recipe.order
              if recipe.fields[f].closed_values is not None or recipe.fields[f].kind == "sample"]
    return closed, [f for f in recipe.order if f not in closed]


def compare_records(new_dir: Path, old_dir: Path) -> dict:
    """Per record index (dead records included), how many records agree in the attribute fields and in
    all; the records compared are those both runs made (the first ``--old-n``)."""
    import polars as pl

    closed, others = attribute_fields()
    new, old = (pl.read_parquet(d / "shards" / "*.parquet").sort("_index").to_dicts() for d in (new_dir, old_dir))
    same_attr = sum(all(a[f] == b[f] for f in closed) for a, b in zip(new, old))
    same_all = sum(all(a[f] == b[f] for f in closed + others) for a, b in zip(new, old))
    return {"records": min(len(new), len(old)), "identical_attribute_fields": same_attr, "identical_records": same_all,
            "attribute_fields": closed}


def kl_agreement(new_dir: Path, old_dir: Path) -> dict:
    """KL(old || new) of the renormalised option distribution, per prompt scored by both runs."""
    def load(d: Path) -> dict:
        return {(s["prompt"], tuple(s["options"])): s["logprobs"] for s in json.loads((d / "scores.json").read_text())}

    new, old = load(new_dir), load(old_dir)
    kls = []
    for key in old.keys() & new.keys():
        p, q = _normalised(old[key]), _normalised(new[key])
        kls.append(sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0))
    kls = [max(k, 0.0) for k in kls]  # rounding can make a KL of equal distributions a hair negative
    return {"prompts_compared": len(kls), "old_prompts_not_in_new": len(old.keys() - new.keys()),
            "max_kl": max(kls, default=None), "mean_kl": sum(kls) / len(kls) if kls else None,
            "prompts_above_bound": sum(k > KL_BOUND for k in kls), "bound": KL_BOUND}


def _normalised(logprobs: list[float]) -> list[float]:
    top = max(logprobs)
    weights = [math.exp(v - top) for v in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="records per code path")
    parser.add_argument("--memory-n", default="100",
                        help="records of the extra new-path runs for the memory check, comma-separated (0 to skip)")
    parser.add_argument("--old-n", type=int, default=None,
                        help="records of the old-path run (default: --n); the speedup compares runs of equal size")
    parser.add_argument("--keep-new", type=Path, default=None,
                        help="copy the new path's --n-record run folder here (it must not exist yet)")
    parser.add_argument("--out", default=str(RESULTS / "generate_speed.json"))
    args = parser.parse_args(argv)
    old_n = args.n if args.old_n is None else args.old_n
    try:
        memory_n = [int(x) for x in args.memory_n.split(",") if x.strip() and int(x) > 0]
    except ValueError:
        parser.error(f"--memory-n: expected comma-separated record counts, got {args.memory_n!r}")
    if old_n != args.n and old_n not in memory_n:
        parser.error("with --old-n other than --n, give --memory-n the same value: the speedup needs a new run "
                     "of the old run's size")
    if args.keep_new is not None and args.keep_new.exists():
        parser.error(f"{args.keep_new} exists; --keep-new needs a new folder")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs["new"] = run_child("new", args.n, Path(tmp) / "new")
        if args.keep_new is not None:
            shutil.copytree(Path(tmp) / "new", args.keep_new)
        for k, size in enumerate(memory_n):
            name = "new_small" if k == 0 else f"new_{size}"
            runs[name] = run_child("new", size, Path(tmp) / name)
        runs["old"] = run_child("old", old_n, Path(tmp) / "old")
        records = compare_records(Path(tmp) / "new", Path(tmp) / "old")
        kl = kl_agreement(Path(tmp) / "new", Path(tmp) / "old")
    memory = {str(run["records"]): run["peak_rss_mib"] for key, run in runs.items() if key.startswith("new")}
    same_size = next(run for run in runs.values() if run["path"] == "new" and run["records"] == old_n)
    result = stamp({
        "recipe": RECIPE.relative_to(ROOT).as_posix(), "n": args.n, "old_n": old_n,
        "load_average_at_end": os.getloadavg()[0], "cpus": os.cpu_count(),
        "paths": runs,
        "speedup": same_size["records_per_second"] / runs["old"]["records_per_second"],
        "speedup_records": old_n,
        "agreement": {**records, **kl},
        "peak_rss_mib_by_records": memory,
    }, adapters={"adapter": runs["new"]["adapter"]}, args=argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k not in ("provenance", "paths")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
