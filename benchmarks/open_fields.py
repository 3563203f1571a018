"""Open fields: how many valid, novel values free generation reaches, by method.

The paper's biography measurement, on ``recipes/biography_open.yaml``: first
names (by country and gender), birth places (by country) and occupations are
generated freely, one sample per record, no retries, from the recipe's own
prompts. The upstream values (gender, birth country, birth year) are drawn from
the recipe's own distribution with the run seed, so every method answers the
same N prompts. Seeds are the recipe's seed files (a random half of each
reference list, ``recipes/build_open_seeds.py``); a value is valid when its
normalised reply (:func:`synthgen.open_fields.normalise_reply`) lies in the
record's full reference list, and novel when valid and not among that record's
seeds (:func:`synthgen.novelty.open_metrics`).

Methods: ``base`` (the base model, T=1), ``base_hot`` (T=1.5, min-p 0.1),
``general`` (the shipped general diffuse adapter, T=1), ``recipe`` (an adapter
trained on this recipe with ``synthgen train --from-recipe``, T=1; skipped when
it is missing), ``seeds`` (an exact uniform draw over the record's seeds: novel
is 0 by definition).

Per method and field: valid rate, unique valid, novel valid and their share of
unique valid, ``normalized_entropy`` = entropy of the valid values / log K
(K = the distinct reference values the N prompts allow; as the audit does) and
``normalized_entropy_at_n`` = the same / log min(K, valid values) (N draws can
reach at most log N: 1 = every valid value distinct), the share of replies
that pass the field's own checks, wall time; for first names, agreement with
gender on an independent reference (the 1990 US census lists,
``benchmarks/data/census_first_names.tsv``: names listed under one gender only;
the share of the generated names it covers is recorded).

And the instruction-tuning recipe (``--instruction-n`` records, 100 by
default; 0 skips it): its ``topic`` and ``persona`` open fields filled as
``synthgen generate`` fills them (the general adapter, checks and retries), and
the unique topics set against what a uniform sampler over the former topic list
(the seeds) reaches with as many draws, L * (1 - (1 - 1/L) ** n).

    python benchmarks/open_fields.py                 # N = 1000, seed 0, every method
    python benchmarks/open_fields.py -n 50 --methods base,seeds --instruction-n 20 --out /tmp/open.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections import Counter
from pathlib import Path

from synthgen.adapters import resolve_adapter
from synthgen.novelty import open_metrics
from synthgen.open_fields import normalise_reply
from synthgen.recipe import load_recipe
from synthgen.seeding import attempt_seed, record_rng

try:
    from benchmarks._common import RESULTS, ROOT, stamp
except ImportError:  # run as a script (python benchmarks/open_fields.py): its folder is on sys.path
    from _common import RESULTS, ROOT, stamp

RECIPE = ROOT / "recipes/biography_open.yaml"
INSTRUCTION = ROOT / "recipes/instruction_tuning.yaml"
CENSUS = ROOT / "benchmarks/data/census_first_names.tsv"
FIELDS = ("first_name", "birth_place", "occupation")
UPSTREAM = ("gender", "birth_country", "birth_year")
RECIPE_ADAPTER = "smollm2-135m-biography-open"
#: method -> (adapter role or None for the seeds, sampling)
METHODS = {
    "base": ("base", {"temperature": 1.0}),
    "base_hot": ("base", {"temperature": 1.5, "min_p": 0.1}),
    "general": ("general", {"temperature": 1.0}),
    "recipe": ("recipe", {"temperature": 1.0}),
    "seeds": (None, {}),
}
#: the issue's targets: recipe adapter vs the base model's free generation
TARGETS = {"unique_valid_ratio": {"first_name": 4.0, "birth_place": 3.0, "occupation": 1.5},
           "valid_rate": 0.8, "novel_share": {"first_name": 0.25, "birth_place": 0.25},
           "gender_agreement": 0.95, "instruction_topics_vs_uniform": 2.0, "instruction_topics_novel_share": 0.25}


def census_genders() -> dict[str, str]:
    """Name -> gender for names the census lists under one gender only."""
    seen: dict[str, set[str]] = {}
    for line in CENSUS.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            gender, name = line.split("\t")
            seen.setdefault(name, set()).add(gender)
    return {name: next(iter(g)) for name, g in seen.items() if len(g) == 1}


def records(recipe, n: int, seed: int) -> list[dict]:
    """The N upstream records every method answers (the recipe's own distribution, seeded per record)."""
    out = []
    for i in range(n):
        rec: dict = {}
        for name in UPSTREAM:
            rec[name] = recipe.fields[name].draw(record_rng(seed, i, name), rec)
        out.append(rec)
    return out


def value_of(spec, raw: str) -> str:
    """The reply as the field would store it (normalised; lower-cased where the field says so)."""
    return normalise_reply(raw.lower() if spec.open.lowercase else raw)


def generate_values(engine, spec, rows: list[dict], seed: int, sampling: dict, use_adapter: bool,
                    batch: int) -> list[str]:
    """One reply per row, no retries, sampled as generation samples an open field's first attempt
    (``generate_with_retries``: the local engine forwards the prompts' shared first tokens once and
    keeps its decode batch full; ``batch`` is its decode batch)."""
    prompts = [spec.template.render(r) for r in rows]
    replies: list[str] = [""] * len(prompts)

    def keep(k: int, text: str) -> bool:
        replies[k] = text
        return True

    engine.batch_size = batch
    engine.generate_with_retries(prompts, lambda k, a: attempt_seed(seed, k, spec.name, a), keep, 1,
                                 top_p=1.0, max_new_tokens=spec.max_tokens, stop=list(spec.stop) or None,
                                 use_adapter=use_adapter, **sampling)
    return replies


def seed_values(spec, rows: list[dict], seed: int) -> list[str]:
    out = []
    for i, r in enumerate(rows):
        seeds = spec.open.seeds.values_for(r)
        out.append(seeds[record_rng(seed, i, spec.name).choice(len(seeds))])
    return out


def field_metrics(spec, rows: list[dict], replies: list[str], census: dict[str, str] | None) -> dict:
    values = [value_of(spec, r) for r in replies]
    m = open_metrics(values, spec.open.seeds, spec.open.reference, rows)
    keys = {tuple(r[p] for p in spec.open.reference.parents) for r in rows}
    k = len({v for key in keys for v in spec.open.reference.sets[key]})
    valid = Counter(v for v, r in zip(values, rows) if v in spec.open.reference.for_record(r))
    h = -sum(c / m["valid"] * math.log(c / m["valid"]) for c in valid.values()) if m["valid"] else None
    at_n = min(k, m["valid"])
    m.update(normalized_entropy=h / math.log(k) if h is not None and k > 1 else None, reference_values=k,
             normalized_entropy_at_n=h / math.log(at_n) if h is not None and at_n > 1 else None,
             checks_pass_rate=sum(spec.parse_value(r) is not None for r in replies) / len(replies),
             top_values=[[v, c] for v, c in Counter(values).most_common(8)],
             invalid_examples=list(dict.fromkeys(v for v, r in zip(values, rows)
                                                 if v not in spec.open.reference.for_record(r)))[:8])
    if census is not None:
        checked = [(census[v], r["gender"]) for v, r in zip(values, rows)
                   if r["gender"] in ("female", "male") and v in census]
        binary = sum(r["gender"] in ("female", "male") for r in rows)
        m["gender_agreement"] = sum(a == b for a, b in checked) / len(checked) if checked else None
        m["gender_checked"] = len(checked)
        m["gender_checked_share"] = len(checked) / binary if binary else None
    return m


def goal(measured: float | None, target: float) -> dict:
    return {"measured": measured, "goal": target, "met": None if measured is None else measured >= target}


def targets(results: dict) -> dict:
    """Each target of the issue: the measured value, the goal and whether it is met (None = not measured)."""
    out: dict = {}
    base, tuned = results.get("base"), results.get("recipe")
    for field in FIELDS:
        t, b = (tuned or {}).get(field), (base or {}).get(field)
        ratio = t["unique_valid"] / b["unique_valid"] if t and b and b["unique_valid"] else None
        rows = {"unique_valid_ratio": (ratio, TARGETS["unique_valid_ratio"][field]),
                "valid_rate": (t["valid_rate"] if t else None, TARGETS["valid_rate"])}
        if field in TARGETS["novel_share"]:
            rows["novel_share"] = (t["novel_share"] if t else None, TARGETS["novel_share"][field])
        if field == "first_name":
            rows["gender_agreement"] = (t.get("gender_agreement") if t else None, TARGETS["gender_agreement"])
        out[field] = {k: goal(v, g) for k, (v, g) in rows.items()}
    return out


def instruction_run(engine, n: int, seed: int) -> dict:
    """Topics and personas of ``n`` instruction-tuning records, filled as generation fills them."""
    from synthgen.fill import FieldFiller, make_records

    recipe = load_recipe(INSTRUCTION)
    recipe = dataclasses.replace(recipe, seed=seed, order=("category", "topic", "persona"))
    t0 = time.perf_counter()
    made = make_records(recipe, FieldFiller(engine), range(n))
    wall = time.perf_counter() - t0
    out: dict = {"n": n, "wall_s": wall, "records": len(made.records)}
    stats = made.stats
    for name in ("topic", "persona"):
        spec = recipe.fields[name]
        values = [v for v in made.values[name] if v is not None]  # every record that got one, dead later or not
        m = open_metrics(values, spec.open.seeds, None, checks_valid_rate=stats[name].valid / stats[name].drawn)
        lists = len(spec.open.seeds.union)
        m["uniform_over_seeds_unique"] = lists * (1 - (1 - 1 / lists) ** n)
        m["unique_vs_uniform"] = m["unique_valid"] / m["uniform_over_seeds_unique"]
        m["top_values"] = [[v, c] for v, c in Counter(values).most_common(8)]
        m["records_with_value"] = len(values)
        m["novel_examples"] = [v for v in dict.fromkeys(values) if v not in spec.open.seeds.union][:12]
        out[name] = m
    return out


def load_engines(wanted: set[str], recipe_adapter: str | None):
    """Engines by role: ``base`` and ``general`` share one (the adapter switched off for the base)."""
    from synthgen.engines.transformers import TransformersEngine

    engines, paths = {}, {}
    if wanted & {"base", "general"}:
        engines["general"] = engines["base"] = TransformersEngine.load(None, adapter="default", device="cpu")
        paths["general adapter"] = engines["general"].adapter_name
    if "recipe" in wanted and recipe_adapter is not None:
        engines["recipe"] = TransformersEngine.load(None, adapter=recipe_adapter, device="cpu")
        paths["recipe adapter"] = recipe_adapter
    return engines, paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1000, help="prompts (records) per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--fields", default=",".join(FIELDS))
    parser.add_argument("--recipe-adapter", default=RECIPE_ADAPTER, help="shipped name or directory")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--instruction-n", type=int, default=100, help="instruction-tuning records (0: skip)")
    parser.add_argument("--out", default=str(RESULTS / "open_fields.json"))
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; expected {', '.join(METHODS)}")
    recipe = load_recipe(RECIPE)
    fields = [f for f in args.fields.split(",") if f]
    rows = records(recipe, args.n, args.seed)
    census = census_genders()
    try:
        recipe_adapter = str(resolve_adapter(args.recipe_adapter)) if "recipe" in methods else None
    except Exception as err:  # a missing adapter skips the method, with the reason recorded
        recipe_adapter, skipped = None, {"recipe": str(err)}
    else:
        skipped = {}
    start = time.perf_counter()
    roles = {METHODS[m][0] for m in methods if METHODS[m][0]} | ({"general"} if args.instruction_n else set())
    engines, adapter_paths = load_engines(roles, recipe_adapter)
    load_s = time.perf_counter() - start
    results: dict = {}
    for method in methods:
        role, sampling = METHODS[method]
        if role is not None and role not in engines:
            skipped.setdefault(method, "no engine for this method")
            continue
        results[method] = {}
        for field in fields:
            spec = recipe.fields[field]
            t0 = time.perf_counter()
            if role is None:
                replies = seed_values(spec, rows, args.seed)
            else:
                replies = generate_values(engines[role], spec, rows, args.seed, sampling, role != "base", args.batch)
            wall = time.perf_counter() - t0
            results[method][field] = {**field_metrics(spec, rows, replies, census if field == "first_name" else None),
                                      "wall_s": wall, "sampling": sampling}
            print(f"{method:9s} {field:12s} valid {results[method][field]['valid_rate']:.3f} "
                  f"unique valid {results[method][field]['unique_valid']:4d} "
                  f"novel {results[method][field]['novel_valid']} ({wall:.0f} s)", flush=True)
    instruction = instruction_run(engines["general"], args.instruction_n, args.seed) if args.instruction_n else None
    goals = targets(results)
    if instruction is not None:
        topic = instruction["topic"]
        goals["instruction_topic"] = {
            "unique_vs_uniform": goal(topic["unique_vs_uniform"], TARGETS["instruction_topics_vs_uniform"]),
            "novel_share": goal(topic["novel_share"], TARGETS["instruction_topics_novel_share"])}
    result = {"n": args.n, "seed": args.seed, "recipe": str(RECIPE.relative_to(ROOT)), "fields": fields,
              "load_s": load_s, "skipped": skipped, "results": results, "instruction": instruction,
              "targets": goals}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stamp(result, adapters=adapter_paths, args=argv), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
