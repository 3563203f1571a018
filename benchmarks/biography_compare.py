"""Biography recipe, N records, one seed: a diffuse adapter (the shipped one
unless ``--adapter DIR``) vs the base model.

Generates the recipe twice (shipped adapter, and ``adapter none``) with the
same seed and N, then writes per-field unique counts, normalised entropy, top-1
share and valid rates side by side, with the adapter-over-base ratio of unique values per field.

``--attributes-only`` drops the free-text ``biography`` field. The attribute
values are then exactly those of the full recipe: every record's draws for a
field come from its own generator, seeded by (run seed, record index, field),
so removing a field changes no other field's values. It saves the ~30 minutes per 1000 records that writing the
biographies costs on a 2-core CPU.

    python benchmarks/biography_compare.py -n 1000 --attributes-only
    python benchmarks/biography_compare.py -n 1000 --attributes-only \
        --adapter smollm2-135m-biography --out benchmarks/results/biography_compare_recipe_tuned.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from synthgen.engines.transformers import TransformersEngine
from synthgen.executors import LocalExecutor
from synthgen.generation import generate
from synthgen.recipe import load_recipe

try:
    from benchmarks._common import stamp
except ImportError:  # run as a script (python benchmarks/biography_compare.py): its folder is on sys.path
    from _common import stamp

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("gender", "first_name", "last_name", "birth_year", "birth_place", "occupation", "biography")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=str(ROOT / "out/bio-compare"))
    parser.add_argument("--attributes-only", action="store_true", help="drop the free-text biography field")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/biography_compare.json"))
    parser.add_argument("--adapter", default="default",
                        help="adapter of the first run (default: the shipped one); the base run is shared")
    args = parser.parse_args()
    recipe = load_recipe(ROOT / "recipes/biography_flat.yaml").with_overrides(count=args.n, seed=args.seed)
    if args.attributes_only:
        keep = tuple(f for f in recipe.order if recipe.fields[f].kind != "text")
        recipe = dataclasses.replace(recipe, fields={f: recipe.fields[f] for f in keep}, order=keep,
                                     near_dup_fields=())
    runs = {}
    adapter_dir = "adapter" if args.adapter == "default" else "adapter-" + Path(args.adapter).name
    for label, adapter, run_dir in (("adapter", args.adapter, adapter_dir), ("base", "none", "base")):
        out = Path(args.out_dir) / run_dir
        start = time.perf_counter()
        engine = TransformersEngine.load(recipe.model, adapter=adapter, device="cpu")
        rep = generate(recipe, out, executor=LocalExecutor(engine), resume=True).report
        runs[label] = {
            "adapter": engine.adapter_name,
            "wall_seconds": time.perf_counter() - start,
            "n_kept": rep["n_kept"],
            "removed": rep["removed"],
            "timing": rep["timing"],
            "fields": {f: {k: rep["fields"][f].get(k) for k in
                           ("unique", "normalized_entropy", "entropy_bits", "top1_value", "top1_share", "valid_rate")}
                       for f in FIELDS if f in rep["fields"]},
        }
    ratios = {f: runs["adapter"]["fields"][f]["unique"] / max(1, runs["base"]["fields"][f]["unique"])
              for f in FIELDS if f != "biography" and f in runs["base"]["fields"]}
    result = stamp({
        "n": args.n,
        "seed": args.seed,
        "unique_ratio_adapter_over_base": ratios,
        "runs": runs,
    }, adapters={"adapter": runs["adapter"]["adapter"]})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({"ratios": ratios, **{k: v["fields"] for k, v in runs.items()}}, indent=2))


if __name__ == "__main__":
    main()
