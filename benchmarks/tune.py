"""`synthgen generate --tune` on a recipe: the collapse check before, the tuning time, the audit and coverage after.

For a recipe (its text fields left out: only the attributes are generated):

1. with the recipe's adapter (``--adapter`` overrides it): the fields the collapse
   check flags, and an ``-n``-record run's coverage ratio per choice/integer field;
2. ``--tune`` into a fresh cache folder: the wall time (model load, training and
   audit), the epochs, the held-out audit (exact KL to the weights per field);
3. the same run with the tuned adapter: the collapse check and coverage ratios;
4. ``--tune`` again: the cache hit and its time.

    python benchmarks/tune.py --recipe recipes/support_tickets.yaml -n 1000
    python benchmarks/tune.py --recipe recipes/biography.yaml --adapter default -n 1000

Writes ``benchmarks/results/tune_<recipe name>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

try:
    from benchmarks._common import RESULTS, ROOT, stamp
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from _common import RESULTS, ROOT, stamp

from synthgen.checks import ancestors
from synthgen.executors import EngineSpec, LocalExecutor
from synthgen.generation import generate
from synthgen.preview import collapse_check
from synthgen.recipe import load_recipe
from synthgen.tune import tune_recipe


def attributes_only(recipe):
    """The recipe without its text fields and what reads them."""
    texts = {n for n in recipe.order if recipe.fields[n].kind == "text"}
    keep = tuple(n for n in recipe.order if n not in texts and not (ancestors(recipe.fields, n) & texts))
    return dataclasses.replace(recipe, order=keep, fields={n: recipe.fields[n] for n in keep},
                               dedup_keys=tuple(k for k in recipe.dedup_keys if k in keep), near_dup_fields=(),
                               output={})


def measure(recipe, out_dir: Path) -> dict:
    """The collapse check and a generated run's per-field coverage ratio and KL to the weights."""
    engine = EngineSpec.for_recipe(recipe).build()
    start = time.perf_counter()
    collapsed = {d.name: {"normalized_entropy": d.normalized_entropy, "kl_to_target": d.kl_to_target}
                 for d in collapse_check(recipe, engine)}
    check_s = time.perf_counter() - start
    report = generate(recipe, out_dir, executor=LocalExecutor(engine=engine)).report
    fields = {n: {k: f.get(k) for k in ("unique", "expected_unique_ideal", "coverage_ratio", "normalized_entropy",
                                        "kl_to_target", "ideal_kl")}
              for n, f in report["fields"].items() if recipe.fields[n].closed_values is not None}
    return {"adapter": engine.adapter_name, "collapse_check_seconds": round(check_s, 1), "collapsed": collapsed,
            "n_kept": report["n_kept"], "generate_seconds": round(report["timing"]["seconds"], 1),
            "fields": fields}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/support_tickets.yaml")
    parser.add_argument("--adapter", default=None, help="the adapter to start from (default: the recipe's)")
    parser.add_argument("-n", type=int, default=1000, help="records per generated run")
    parser.add_argument("--work-dir", default="out/bench-tune")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/tune_<recipe name>.json")
    args = parser.parse_args(argv)
    recipe = load_recipe(ROOT / args.recipe).with_overrides(count=args.n, adapter=args.adapter)
    work = Path(args.work_dir) / recipe.name
    shutil.rmtree(work, ignore_errors=True)
    attrs = attributes_only(recipe)
    before = measure(attrs, work / "before")
    start = time.perf_counter()
    tuned = tune_recipe(recipe, cache=work / "tuned")
    tune_s = time.perf_counter() - start
    after = measure(attrs.with_overrides(adapter=str(tuned.adapter)), work / "after")
    start = time.perf_counter()
    again = tune_recipe(recipe, cache=work / "tuned")
    result = stamp({
        "recipe": args.recipe, "n": args.n, "start_adapter": tuned.info["init_adapter"],
        "before": before,
        "tune": {"seconds": round(tune_s, 1), "message": tuned.message, **tuned.info},
        "after": after,
        "second_run": {"cached": again.cached, "seconds": round(time.perf_counter() - start, 2),
                       "message": again.message},
    }, adapters={"start adapter": tuned.info["init_adapter"], "tuned adapter": tuned.adapter})
    out = Path(args.out) if args.out else RESULTS / f"tune_{recipe.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"collapsed before": list(before["collapsed"]), "tune seconds": result["tune"]["seconds"],
                      "audit KL": {n: round(f["kl_to_target"], 4) for n, f in tuned.info["audit"]["fields"].items()},
                      "coverage after": {n: f["coverage_ratio"] for n, f in after["fields"].items()},
                      "collapsed after": list(after["collapsed"]), "second run": result["second_run"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
