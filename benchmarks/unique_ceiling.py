"""How many unique values can a biography run of N records reach at all?

Choice fields are sampled exactly from the model's distribution renormalised
over the options, with or without an adapter. So the expected number of unique
values in N records follows from the exact scores alone:

    E[unique] = sum over options y of 1 - prod over genders g of (1 - p(y | g)) ** (N * p(g))

where p(g) is the engine's own (renormalised) distribution over the gender
field and p(y | g) over the options given that gender (first names; birth
places do not depend on gender, so there it is 1 - (1 - p(y)) ** N). The ideal
sampler (uniform over the options) reaches L * (1 - (1 - 1/L) ** N) with L
options: the ceiling of any adapter. This script computes E[unique] for the
base model and the adapters on the recipe's own lists and on larger name lists
(the 1990 US Census first names in ``benchmarks/data/census_first_names.tsv``),
so the adapter-over-base ratio a list allows can be read off without 1000-record
runs; the recipe's own rows sit next to the counts the real runs measured
(``biography_compare*.json``).

    python benchmarks/unique_ceiling.py -n 1000 --adapters none,default,smollm2-135m-biography-flat
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from synthgen.engines.transformers import TransformersEngine
from synthgen.recipe import load_recipe

try:
    from benchmarks._common import stamp
except ImportError:  # run as a script (python benchmarks/unique_ceiling.py): its folder is on sys.path
    from _common import stamp

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/biography_flat.yaml"
CENSUS = ROOT / "benchmarks/data/census_first_names.tsv"
RESULTS = ROOT / "benchmarks/results"


def census_names() -> dict[str, list[str]]:
    by_gender: dict[str, list[str]] = {"female": [], "male": []}
    for line in CENSUS.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            gender, name = line.split("\t")
            by_gender[gender].append(name)
    return by_gender


def name_lists(recipe_names: tuple[str, ...], census: dict[str, list[str]]) -> dict[str, list[str]]:
    lists = {"recipe (data/first_names.txt)": list(recipe_names)}
    for k in (250, 500, 750, 1000, 1200):
        lists[f"census top {k} per gender"] = list(dict.fromkeys(census["female"][:k] + census["male"][:k]))
    lists["recipe + census top 1000 per gender"] = list(
        dict.fromkeys(list(recipe_names) + census["female"][:1000] + census["male"][:1000]))
    return lists


def softmax(logp: np.ndarray) -> np.ndarray:
    p = np.exp(logp - logp.max())
    return p / p.sum()


def expected_unique(cond: list[tuple[float, np.ndarray]], n: int) -> float:
    """cond: (weight of the condition, option distribution under it)."""
    miss = np.ones_like(cond[0][1])
    for weight, p in cond:
        miss *= (1.0 - p) ** (n * weight)
    return float((1.0 - miss).sum())


def ideal_unique(size: int, n: int) -> float:
    return size * (1.0 - (1.0 - 1.0 / size) ** n)


def measured_counts() -> dict[str, dict[str, int]]:
    """Unique counts of the real 1000-record runs, where a result file has them."""
    out: dict[str, dict[str, int]] = {}
    for name, label in (("biography_compare.json", "default"),
                        ("biography_compare_recipe_tuned.json", "smollm2-135m-biography-flat")):
        path = RESULTS / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        for run, key in (("adapter", label), ("base", "none")):
            fields = data["runs"][run]["fields"]
            out[key] = {"n": data["n"], **{f: fields[f]["unique"] for f in ("first_name", "birth_place")}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1000, help="records per run")
    parser.add_argument("--adapters", default="none,default,smollm2-135m-biography-flat",
                        help="comma-separated: none, default, a shipped adapter's name or a directory")
    parser.add_argument("--out", default=str(RESULTS / "unique_ceiling.json"))
    args = parser.parse_args()
    recipe = load_recipe(RECIPE)
    fields = recipe.fields
    census = census_names()
    lists = name_lists(fields["first_name"].options, census)
    candidates = list(dict.fromkeys(n for names in lists.values() for n in names))
    index = {name: i for i, name in enumerate(candidates)}
    genders = list(fields["gender"].options)
    cities = list(fields["birth_place"].options)
    measured = measured_counts()
    results: dict[str, dict] = {}
    for adapter in args.adapters.split(","):
        start = time.perf_counter()
        engine = TransformersEngine.load(recipe.model, adapter=adapter, device="cpu")
        p_gender = softmax(np.array(engine.score(fields["gender"].template.render({}), genders)))
        name_logp = {g: np.array(engine.score(fields["first_name"].template.render({"gender": g}), candidates))
                     for g in genders}
        p_city = softmax(np.array(engine.score(fields["birth_place"].template.render({}), cities)))
        rows = []
        for label, names in lists.items():
            idx = np.array([index[name] for name in names])
            cond = [(float(w), softmax(name_logp[g][idx])) for g, w in zip(genders, p_gender)]
            rows.append({"field": "first_name", "list": label, "options": len(names),
                         "expected_unique": expected_unique(cond, args.n),
                         "ideal_unique": ideal_unique(len(names), args.n)})
        rows.append({"field": "birth_place", "list": "recipe (data/cities.txt)", "options": len(cities),
                     "expected_unique": expected_unique([(1.0, p_city)], args.n),
                     "ideal_unique": ideal_unique(len(cities), args.n)})
        results[adapter] = {"adapter": engine.adapter_name,
                            "gender_distribution": dict(zip(genders, p_gender.tolist())),
                            "rows": rows, "seconds": time.perf_counter() - start}
        if args.n == measured.get(adapter, {}).get("n"):
            results[adapter]["measured_recipe_runs"] = measured[adapter]
        del engine
    base = {(r["field"], r["list"]): r["expected_unique"] for r in results.get("none", {}).get("rows", [])}
    lines = [f"N = {args.n} records. E[unique] from exact scores; ideal = a uniform sampler over the list; "
             "ratios over the base model's E[unique] on the same list.", "",
             "| field | list | options | ideal | " + " | ".join(f"E[unique] {a}" for a in results)
             + " | ideal / base | " + " | ".join(f"{a} / base" for a in results if a != "none") + " |",
             "|---|---|---|---|" + "---|" * len(results) + "---|" + "---|" * sum(a != "none" for a in results)]
    first = next(iter(results.values()))["rows"]
    for i, row in enumerate(first):
        key = (row["field"], row["list"])
        cells = [f"{results[a]['rows'][i]['expected_unique']:.0f}" for a in results]
        ratios = []
        if key in base:
            ratios = [f"{row['ideal_unique'] / base[key]:.2f}×"] + [
                f"{results[a]['rows'][i]['expected_unique'] / base[key]:.2f}×" for a in results if a != "none"]
        lines.append(f"| {row['field']} | {row['list']} | {row['options']} | {row['ideal_unique']:.0f} | "
                     + " | ".join(cells) + (" | " + " | ".join(ratios) if ratios else "") + " |")
    for adapter, res in results.items():
        if "measured_recipe_runs" in res:
            m = res["measured_recipe_runs"]
            lines.append(f"\nMeasured in the real {m['n']}-record run with {adapter}: first_name {m['first_name']}, "
                         f"birth_place {m['birth_place']} unique (recipe lists).")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stamp({"n": args.n, "census_file": str(CENSUS.relative_to(ROOT)), "results": results},
                                    adapters={a: r["adapter"] for a, r in results.items()}), indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
