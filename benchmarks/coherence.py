"""Are the biography records coherent, and how diverse do they stay? Three methods side by side.

    python -m benchmarks.coherence -n 1000            # N = 1000, seed 0, all three methods
    python -m benchmarks.coherence -n 100 --methods flat,base_exact

Methods (all with the run seed 0 and record indices 0 .. N-1):

* ``flat``: what a list sampler does: every attribute drawn independently and uniformly from one
  flat list (the union of the recipe's lists over all countries and genders; gender by the
  recipe's weights), no model and no text;
* ``base_exact``: ``recipes/biography.yaml`` with the base model (``--adapter none``), attributes
  only, each drawn exactly over the record's own conditional set;
* ``shipped``: ``recipes/biography.yaml`` exactly as ``make biography`` runs it (the recipe's
  adapter, the checked biography).

Per method: first-name/gender agreement against two independent references, each judging only
the names it knows (their share is reported): the 1990 US census lists in
``benchmarks/data/census_first_names.tsv`` (a name counts as female or male by the list it ranks
higher in), and, country-aware, Jörg Michael's name dictionary as packaged by ``gender-guesser``
(the ``test`` extra: 61,306 name entries with their gender per country, so "Andrea" is male in
Italy and female in the United States; the birth country's own verdict where the dictionary has
one, else its verdict over all countries; "mostly" counts as the gender, androgynous names are not
judged), first and last names from the birth country's own lists, the number of countries, the
text checks' pass rates and the text valid rate (``shipped``), and per field the unique count
and coverage ratio (unique / what the ideal sampler over the same sets reaches), exact
duplicates and wall time. The model runs write into ``out/bench_coherence/<method>`` and resume
there, so a long run can be continued by running the same command again. The result goes to
``benchmarks/results/coherence.json``.

``--shipped-from DIR`` takes the ``shipped`` records from a finished run of the same recipe, count
and seed made elsewhere (``benchmarks/generate_speed.py --keep-new DIR``) instead of making them
again: the run is resumed there, so its fingerprint (recipe and files, count, seed, model, adapter
weights) must match, and the generation time is that run's own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import polars as pl

from synthgen.generation import generate
from synthgen.recipe import Recipe, load_recipe
from synthgen.report import FieldInfo, build_report

try:
    from benchmarks._common import RESULTS, ROOT, stamp
except ImportError:  # run as a script: its folder is on sys.path
    from _common import RESULTS, ROOT, stamp

RECIPE = ROOT / "recipes/biography.yaml"
CENSUS = ROOT / "benchmarks/data/census_first_names.tsv"
PEOPLE = ROOT / "recipes/data/people"
METHODS = ("flat", "base_exact", "shipped")
ATTRIBUTES = ("gender", "birth_country", "birth_place", "first_name", "last_name", "birth_year", "occupation")


def census_genders(path: Path = CENSUS) -> dict[str, str]:
    """First name (case-folded) -> the gender whose census list ranks it higher."""
    best: dict[str, tuple[int, str]] = {}
    ranks = {"female": 0, "male": 0}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        gender, name = line.split("\t")
        ranks[gender] += 1
        key = name.casefold()
        if key not in best or ranks[gender] < best[key][0]:
            best[key] = (ranks[gender], gender)
    return {name: gender for name, (_, gender) in best.items()}


def _lines(path: Path) -> set[str]:
    return {line for line in path.read_text(encoding="utf-8").splitlines() if line}


def country_lists(country: str, gender: str) -> tuple[set[str], set[str]]:
    """The first and last names of ``country``'s (and ``gender``'s) own lists."""
    stem = country.replace(" ", "_")
    return (_lines(PEOPLE / "first_names" / f"{stem}_{gender}.txt"),
            _lines(PEOPLE / "last_names" / f"{stem}_{gender}.txt"))


# the recipe's countries as gender-guesser names them (the others are judged over all countries)
DICTIONARY_COUNTRIES = {
    "Algeria": "arabia", "Armenia": "armenia", "Austria": "austria", "Azerbaijan": "azerbaijan",
    "Belgium": "belgium", "China": "china", "Croatia": "croatia", "Czech Republic": "czech_republic",
    "Denmark": "denmark", "Estonia": "estonia", "Finland": "finland", "France": "france", "Georgia": "georgia",
    "Germany": "germany", "Greece": "greece", "Hungary": "hungary", "India": "india", "Ireland": "ireland",
    "Italy": "italy", "Japan": "japan", "Latvia": "latvia", "Luxembourg": "luxembourg",
    "Netherlands": "the_netherlands", "Norway": "norway", "Poland": "poland", "Portugal": "portugal",
    "Romania": "romania", "Russia": "russia", "Slovakia": "slovakia", "Slovenia": "slovenia", "Spain": "spain",
    "Sweden": "sweden", "Switzerland": "swiss", "Turkey": "turkey", "Ukraine": "ukraine",
    "United Kingdom": "great_britain", "United States": "usa", "Uzbekistan": "the_stans", "Vietnam": "vietnam",
}
DICTIONARY_VERDICTS = {"female": "female", "mostly_female": "female", "male": "male", "mostly_male": "male"}


class NameDictionary:
    """Country-aware first-name genders from gender-guesser (``female``, ``male`` or None: not judged)."""

    def __init__(self):
        try:
            from gender_guesser.detector import Detector
        except ImportError as err:
            raise SystemExit("the coherence benchmark needs gender-guesser: pip install -e '.[test]'") from err
        self.detector = Detector(case_sensitive=False)

    def gender(self, name: str, country: str) -> str | None:
        code = DICTIONARY_COUNTRIES.get(country)
        verdict = self.detector.get_gender(name, code) if code else "andy"
        if verdict not in DICTIONARY_VERDICTS:  # not known in that country: over all countries
            verdict = self.detector.get_gender(name)
        return DICTIONARY_VERDICTS.get(verdict)


def agreement(df: pl.DataFrame, dictionary: NameDictionary | None = None) -> dict:
    """Name/gender agreement by the census and by the name dictionary, and name/country agreement
    by the country's own lists."""
    census = census_genders()
    dictionary = dictionary or NameDictionary()
    judged = agree = 0
    by_country = by_country_agree = 0
    first_in = last_in = 0
    cache: dict[tuple[str, str], tuple[set[str], set[str]]] = {}
    for row in df.select("gender", "birth_country", "first_name", "last_name").iter_rows(named=True):
        if row["gender"] in ("female", "male") and row["first_name"].casefold() in census:
            judged += 1
            agree += census[row["first_name"].casefold()] == row["gender"]
        if row["gender"] in ("female", "male"):
            verdict = dictionary.gender(row["first_name"], row["birth_country"])
            if verdict is not None:
                by_country += 1
                by_country_agree += verdict == row["gender"]
        key = (row["birth_country"], row["gender"])
        if key not in cache:
            cache[key] = country_lists(*key)
        first_in += row["first_name"] in cache[key][0]
        last_in += row["last_name"] in cache[key][1]
    binary = df.filter(pl.col("gender").is_in(["female", "male"])).height
    n = df.height
    return {"gender_agreement": agree / judged if judged else None, "gender_judged": judged,
            "gender_judged_share": judged / binary if binary else None,
            "gender_agreement_by_country": by_country_agree / by_country if by_country else None,
            "gender_judged_by_country": by_country,
            "gender_judged_by_country_share": by_country / binary if binary else None,
            "first_name_in_country_lists": first_in / n if n else None,
            "last_name_in_country_lists": last_in / n if n else None,
            "countries": df["birth_country"].n_unique()}


def summary(report: dict, df: pl.DataFrame, seconds: float) -> dict:
    """The method's row: agreement, text checks, and unique / coverage ratio per attribute."""
    fields = report["fields"]
    row = {**agreement(df), "n_kept": report["n_kept"], "removed": report["removed"], "seconds": seconds,
           "fields": {name: {"unique": fields[name]["unique"], "coverage_ratio": fields[name].get("coverage_ratio")}
                      for name in ATTRIBUTES}}
    if "biography" in fields:
        bio = fields["biography"]
        row["text"] = {"valid_rate": bio.get("valid_rate"), "checks": bio.get("checks")}
        row["text"]["kept_all_checks"] = all_checks_share(df)
    return row


def all_checks_share(df: pl.DataFrame) -> float | None:
    """Share of kept records whose biography passes every check of the recipe, re-checked here."""
    recipe = load_recipe(RECIPE)
    checks = recipe.fields["biography"].checks
    if not df.height or checks is None:
        return None
    rows = df.to_dicts()
    return sum(not list(checks.failed(r["biography"], r)) for r in rows) / len(rows)


def flat_records(recipe: Recipe, n: int, seed: int) -> tuple[pl.DataFrame, list[FieldInfo]]:
    """Independent uniform draws from flat lists (a list sampler); gender by the recipe's weights."""
    rng = np.random.default_rng(seed)
    unions = {name: sorted(recipe.fields[name].options or ()) for name in ("birth_place", "first_name", "last_name")}
    gender = recipe.fields["gender"]
    weights = np.array(gender.weights, dtype=float) / sum(gender.weights)
    columns = {
        "gender": [gender.options[i] for i in rng.choice(len(gender.options), n, p=weights)],
        "birth_country": [recipe.fields["birth_country"].options[i]
                          for i in rng.integers(0, len(recipe.fields["birth_country"].options), n)],
        **{name: [values[i] for i in rng.integers(0, len(values), n)] for name, values in unions.items()},
        "birth_year": [int(v) for v in rng.integers(recipe.fields["birth_year"].min,
                                                    recipe.fields["birth_year"].max + 1, n)],
        "occupation": [recipe.fields["occupation"].options[i]
                       for i in rng.integers(0, len(recipe.fields["occupation"].options), n)],
    }
    infos = [FieldInfo(name=name, kind="choice", options=tuple(recipe.fields[name].options),
                       weights=recipe.fields[name].weights if name == "gender" else None)
             if name != "birth_year" else
             FieldInfo(name=name, kind="integer", options=tuple(str(v) for v in recipe.fields[name].known_values))
             for name in ATTRIBUTES]
    return pl.DataFrame(columns), infos


def run_flat(recipe: Recipe, n: int, seed: int) -> dict:
    start = time.perf_counter()
    df, infos = flat_records(recipe, n, seed)
    unique = df.unique(subset=list(ATTRIBUTES))
    report = build_report(unique, infos, recipe="flat lists", n_requested=n, n_generated=n,
                          removed={"exact_duplicates": n - unique.height})
    return summary(report, unique, time.perf_counter() - start)


def run_model(recipe: Recipe, method: str, n: int, seed: int, out_root: Path,
              source: Path | None = None) -> tuple[dict, str | None]:
    """``base_exact`` or ``shipped`` through ``synthgen.generate`` (resumed in its own folder, or in
    ``source``, a finished run made elsewhere)."""
    recipe = recipe.with_overrides(count=n, seed=seed)
    if method == "base_exact":
        order = tuple(name for name in recipe.order if name != "biography")
        recipe = dataclasses.replace(recipe.with_overrides(adapter="none"), order=order,
                                     fields={k: v for k, v in recipe.fields.items() if k in order},
                                     near_dup_fields=())
    out_dir = out_root / method if source is None else source
    earlier = None
    if source is not None:
        if not (source / "report.json").is_file():
            raise SystemExit(f"{source} holds no finished run (no report.json)")
        earlier = json.loads((source / "report.json").read_text(encoding="utf-8"))
    start = time.perf_counter()
    result = generate(recipe, out_dir, resume=(out_dir / "run.json").exists())
    seconds = time.perf_counter() - start
    df = pl.read_parquet(out_dir / "records.parquet")
    if earlier is not None:
        if earlier["n_generated"] != result.report["n_generated"]:
            raise SystemExit(f"{source} was not finished: its report has {earlier['n_generated']} records, not "
                             f"{result.report['n_generated']}")
        seconds = earlier["timing"]["seconds"]
    row = summary(result.report, df, seconds)
    row["generation_seconds"] = (earlier or result.report)["timing"]["seconds"]
    if source is not None:
        row["records_from"] = str(source)
    run = json.loads((out_dir / "run.json").read_text()) if (out_dir / "run.json").exists() else {}
    return row, run.get("adapter") or (None if method == "base_exact" else _adapter(recipe))


def _adapter(recipe: Recipe) -> str | None:
    from synthgen.adapters import resolve_adapter

    path = resolve_adapter(recipe.adapter or "default", model=recipe.model)
    return str(path) if path else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out-root", type=Path, default=ROOT / "out/bench_coherence")
    parser.add_argument("--results", type=Path, default=RESULTS / "coherence.json")
    parser.add_argument("--shipped-from", type=Path, default=None,
                        help="a finished run of the shipped recipe (same -n, --seed) to take its records from")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    recipe = load_recipe(RECIPE)
    rows: dict[str, dict] = {}
    adapters: dict[str, str | None] = {}
    for method in methods:
        if method == "flat":
            rows[method] = run_flat(recipe, args.n, args.seed)
        else:
            rows[method], adapters[method] = run_model(recipe, method, args.n, args.seed,
                                                       args.out_root / f"n{args.n}_seed{args.seed}",
                                                       args.shipped_from if method == "shipped" else None)
        print(f"{method}: {json.dumps(rows[method], default=str)[:400]}")
    result = stamp({"benchmark": "coherence", "recipe": "recipes/biography.yaml", "n": args.n, "seed": args.seed,
                    "reference": "1990 US census first names (benchmarks/data/census_first_names.tsv)",
                    "reference_by_country": "gender-guesser 0.4.0 (Jörg Michael's name dictionary, per country)",
                    "methods": rows}, adapters=adapters)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
