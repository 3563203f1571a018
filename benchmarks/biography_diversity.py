"""Biography diversity: synthgen's diffuse adapters vs prompting baselines, with a quality guard.

The biography recipe's attributes (gender, first_name, last_name, birth_year,
birth_place, occupation), N records and one seed, under each method:

  a  base        base model, free generation, temperature 1.0
  b  hot_minp    base model, free generation, temperature 1.5 and min-p 0.1
  c  list_pick   "list then pick" (verbalized sampling): the model lists 5 candidates with
                 probabilities, one is drawn with the stated probabilities
  d  persona     free generation at temperature 1.0, every prompt prefixed
                 "You are {persona}. " with a persona drawn per record from recipes/data/personas.txt
  e  adapter     synthgen's own pipeline (``generate``) with the shipped diffuse adapter
  f  recipe      the same with a recipe-tuned adapter (``--recipe-adapter DIR``; skipped if absent)
  g  base_exact  reference: synthgen's pipeline with no adapter (exact sampling from the base
                 model over the options); not a prompting baseline, the base model's own
                 distribution over valid values

Prompting baselines (a-d) and what counts as a valid reply: ``benchmarks/baselines.py``.
Methods e-g run :func:`synthgen.generation.generate` on the recipe without its text
field (choice fields and birth_year are drawn exactly over the options, so their
valid rate is 1 by construction; ``n_kept`` counts records after exact-duplicate
removal). Every metric comes from ``synthgen.report.build_report`` and counts
valid values only: unique values, normalised entropy H / log K (K = the field's
option count), top-1 share, valid rate = valid / drawn.

Quality guard (``benchmarks/quality.py``): per method, the first ``--bio-n``
records whose six attributes are all valid get a biography from one writer for
every method, the base model filling the recipe's biography field
(:class:`synthgen.fill.FieldFiller`); each text is checked for the record's
names and occupation. Beside it, over all N records: the share of valid
female/male records whose first name is in that gender's name list.

Run from the repository root::

    python -m benchmarks.biography_diversity -n 500 --recipe-adapter smollm2-135m-biography-flat \\
        --work-dir out/bio-div-500

The result (``--out``, and its table as ``.md`` beside it) is rewritten after
every method. Each method keeps its records as run directories in ``--work-dir``
(a ``generate`` run, or a prompting baseline's shards); the same command
resumes each where it stopped and writes the biographies again (the same ones).
Seconds count the work of the invocation that finished a method.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks import baselines
from benchmarks.quality import name_gender_rate, quality_rate
from synthgen import shards
from synthgen.adapters import AdapterError, resolve_adapter
from synthgen.executors import LocalExecutor
from synthgen.fill import FieldFiller
from synthgen.generation import field_infos, generate
from synthgen.io import atomic_write, sha256_file
from synthgen.provenance import provenance
from synthgen.report import build_report
from synthgen.shards import INDEX

log = logging.getLogger("biography_diversity")

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/biography_flat.yaml"
PERSONAS = ROOT / "recipes/data/personas.txt"
NAME_LISTS = {g: ROOT / f"recipes/data/first_names_{g}.txt" for g in ("female", "male")}
TABLE_FIELDS = ("first_name", "last_name", "birth_place", "occupation")
KEEP = ("n", "unique", "normalized_entropy", "entropy_bits", "top1_value", "top1_share", "valid_rate",
        "coverage_ratio", "k")


@dataclasses.dataclass(frozen=True)
class Method:
    key: str
    letter: str
    label: str
    kind: str  # "free", "list", "pipeline"
    temperature: float = 1.0
    min_p: float | None = None
    persona: bool = False
    adapter: str | None = None  # pipeline methods: "default", "none" or "recipe" (the --recipe-adapter)


METHODS = (
    Method("base", "a", "(a) base, T=1.0", "free"),
    Method("hot_minp", "b", f"(b) base, T=1.5, min-p {baselines.MIN_P}", "free", temperature=1.5,
           min_p=baselines.MIN_P),
    Method("list_pick", "c", "(c) list then pick", "list"),
    Method("persona", "d", "(d) persona, T=1.0", "free", persona=True),
    Method("adapter", "e", "(e) shipped adapter", "pipeline", adapter="default"),
    Method("recipe", "f", "(f) recipe-tuned adapter", "pipeline", adapter="recipe"),
    Method("base_exact", "g", "(g) base, exact over options (ref.)", "pipeline", adapter="none"),
)


def parse_methods(text: str) -> list[Method]:
    by_name = {m.key: m for m in METHODS} | {m.letter: m for m in METHODS}
    chosen = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part not in by_name:
            raise SystemExit(f"unknown method {part!r}; choose from {', '.join(m.key for m in METHODS)} (or a-g)")
        chosen.append(by_name[part])
    return [m for m in METHODS if m in chosen]


@dataclasses.dataclass
class Setup:
    """What every method shares."""

    args: argparse.Namespace
    recipe: Any  # the biography recipe without its text field
    bio_spec: Any  # the recipe's text field
    base: Any  # the base-model engine: the prompting baselines and the biography writer
    personas: list[str]
    names_by_gender: dict[str, list[str]]
    work: Path


def resumable(run_dir: Path, identity: dict, count: int, block: int,
              make: Callable[[list[int]], pl.DataFrame]) -> pl.DataFrame:
    """Rows ``0 .. count-1``, made ``block`` at a time by ``make(indices)`` (a frame with an ``_index``
    column) and kept as shards of a run directory (:mod:`synthgen.shards`): rerun with the same
    ``identity``, only the missing rows are made; with another, the run directory is refused."""
    fingerprint = {**identity, "seeding": shards.SEEDING, "shard_format": shards.SHARD_FORMAT}
    shards_dir = shards.prepare_out_dir(run_dir, fingerprint, resume=True)
    todo = shards.pending_indices(shards_dir, count, resume=True)
    for lo in range(0, len(todo), block):
        shards.write_shard(shards_dir, make(todo[lo : lo + block]))
        log.info("  %s: %d/%d", run_dir.name, count - len(todo) + min(lo + block, len(todo)), count)
    return pl.read_parquet(shards.shard_files(shards_dir)).sort(INDEX)


def field_metrics(recipe, df: pl.DataFrame) -> dict[str, dict]:
    """The report's per-field metrics of a frame of values (null = invalid; one draw per record)."""
    stats = {f: {"drawn": len(df), "valid": int(df[f].is_not_null().sum())} for f in df.columns}
    return build_report(df, field_infos(recipe), recipe=recipe.name, n_requested=len(df), n_generated=len(df),
                        removed={}, field_stats=stats)["fields"]


def run_prompting(m: Method, s: Setup) -> tuple[dict, list[dict], list[tuple[int, dict]]]:
    """A prompting baseline: its result entry, its records and the fully valid ones with their indices."""
    recipe, args, attrs = s.recipe, s.args, list(s.recipe.order)

    def make(indices: list[int]) -> pl.DataFrame:
        return baselines.prompt_frame(recipe, s.base, indices, args.seed, temperature=m.temperature, min_p=m.min_p,
                                      list_pick=m.kind == "list", personas=s.personas if m.persona else None)

    identity = {"method": m.key, "n": args.n, "seed": args.seed, "model": s.base.model_name,
                "recipe_sha256": sha256_file(RECIPE), "personas_sha256": sha256_file(PERSONAS)}
    start = time.perf_counter()
    df = resumable(s.work / m.key, identity, args.n, args.block, make)
    invalid = {f: df.filter(pl.col(f).is_null())[f"_reply_{f}"].to_list() for f in attrs}
    r: dict[str, Any] = {"label": m.label, "attr_seconds": time.perf_counter() - start,
                         "invalid_examples": baselines.invalid_examples(invalid, list_pick=m.kind == "list")}
    if m.kind == "list":
        r["list_parse"] = baselines.list_parse_counts(x for f in attrs for x in df[f"_reply_{f}"])
    r["fields"] = field_metrics(recipe, df.select(attrs))
    r["lenient_fields"] = field_metrics(recipe, df.select([pl.col(f"_lenient_{f}").alias(f) for f in attrs]))
    records = df.select(attrs).to_dicts()
    pool = [(i, rec) for i, rec in zip(df[INDEX], records) if all(v is not None for v in rec.values())]
    r["fully_valid_records"] = len(pool)
    return r, records, pool


def pipeline_adapter(m: Method, args: argparse.Namespace) -> tuple[str, str | None]:
    """The adapter of a pipeline method ("none" for the base model), or why the method is skipped."""
    if m.adapter == "recipe":
        if not args.recipe_adapter:
            return "", "no --recipe-adapter given"
        try:
            return str(resolve_adapter(args.recipe_adapter)), None
        except AdapterError as err:
            return "", str(err)
    if m.adapter == "default":
        from synthgen.store import default_adapter

        path = default_adapter(None)
        if path is None:
            raise SystemExit("the default model has no shipped adapter (synthgen/adapters/)")
        return str(path), None
    return "none", None


def run_pipeline(m: Method, s: Setup) -> tuple[dict, list[dict], list[tuple[int, dict]]]:
    """A synthgen pipeline method: ``generate`` (resumed if its run directory exists) on the attributes."""
    from synthgen.engines.transformers import TransformersEngine

    adapter, skipped = pipeline_adapter(m, s.args)
    if skipped:
        return {"label": m.label, "skipped": skipped}, [], []
    t = time.perf_counter()
    engine = s.base if adapter == "none" else TransformersEngine.load(None, adapter=adapter, device="cpu")
    r: dict[str, Any] = {"label": m.label, "load_seconds": time.perf_counter() - t}
    out_dir, start = s.work / m.key, time.perf_counter()
    rep = generate(s.recipe, out_dir, executor=LocalExecutor(engine), resume=True).report
    r.update(adapter=engine.adapter_name, n_kept=rep["n_kept"], removed=rep["removed"],
             attr_seconds=time.perf_counter() - start, run_dir=str(out_dir), fields=rep["fields"])
    records = pl.read_parquet(out_dir / "records.parquet").to_dicts()
    return r, records, list(enumerate(records))


def write_bios(s: Setup, pool: list[tuple[int, dict]]) -> tuple[list[dict], dict[str, int]]:
    """The first ``--bio-n`` records of ``pool`` with the recipe's biography field filled by the base model
    (deterministic: a rerun writes the same biographies)."""
    chosen = pool[: s.args.bio_n]
    records = [dict(rec) for _, rec in chosen]
    ok, drawn = FieldFiller(s.base).fill(s.bio_spec, records, [i for i, _ in chosen], s.args.seed)
    return records, {"drawn": sum(drawn), "valid": sum(ok), "failed_records": ok.count(False)}


def run_method(m: Method, s: Setup) -> dict[str, Any]:
    """One method's result entry: attribute metrics, first-name/gender fit, biographies and their quality."""
    r, records, pool = run_pipeline(m, s) if m.kind == "pipeline" else run_prompting(m, s)
    if r.get("skipped"):
        return r
    for key in ("fields", "lenient_fields"):
        if key in r:
            r[key] = {f: {k: v.get(k) for k in KEEP} for f, v in r[key].items()}
    r["name_fits_gender"] = name_gender_rate(records, s.names_by_gender)
    t = time.perf_counter()
    bios, r["bio_stats"] = write_bios(s, pool)
    r["bio_seconds"] = time.perf_counter() - t
    r["quality"] = quality_rate(bios, text_field=s.bio_spec.name)
    return r


# ------------------------------------------------------------------ output
def _f(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x + 0.0:.{digits}f}" if isinstance(x, float) else str(x)  # + 0.0: no "-0.000"


def markdown(result: dict) -> str:
    """The result as a markdown table (also reads result files written by earlier versions)."""
    lines = ([] if result.get("complete", True) else
             ["**Partial result** (the run is still going or was stopped; rerun the command with the same "
              "--work-dir and every method resumes).", ""])
    lines += [f"Biography recipe, N = {result['config']['n']} records per method, seed {result['config']['seed']}; "
              f"quality guard on up to {result['config']['bio_n']} fully valid records per method. "
              f"Machine: {result['machine']}.", "",
              f"Command: `{result['command']}`", "",
              "| method | field | unique | norm. entropy | top-1 share | valid rate "
              "| quality: name / occupation / both (n) | first name fits gender (n) | wall s (attributes + bios) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for m in METHODS:
        r = result["methods"].get(m.key)
        if r is None:
            continue
        if r.get("skipped"):
            lines.append(f"| {m.label} | – | skipped: {r['skipped']} | | | | | | |")
            continue
        q, g = r.get("quality") or {}, r.get("name_fits_gender") or {}
        cells = [f"{_f(q.get('mentions_name'), 2)} / {_f(q.get('fits_occupation'), 2)} / {_f(q.get('ok'), 2)} "
                 f"({q.get('n', 0)})", f"{_f(g.get('rate'), 2)} ({g.get('n', 0)})",
                 f"{_f(r['attr_seconds'], 0)} + {_f(r.get('bio_seconds'), 0)}"]
        for j, f in enumerate(TABLE_FIELDS):
            x = r["fields"][f]
            lines.append(f"| {m.label if j == 0 else ''} | {f} | {x['unique']} | {_f(x['normalized_entropy'])} "
                         f"| {_f(x['top1_share'])} | {_f(x['valid_rate'])} | "
                         + " | ".join(c if j == 0 else "" for c in cells) + " |")
    lines += ["", "Valid = the normalised reply equals an option (case-insensitive); unique, entropy and top-1 "
              "count valid values only; normalised entropy = H / log K, K the field's option count; quality = "
              "share of biographies that name the record's first and last name / its occupation (head noun or "
              "stem) / both (`benchmarks/quality.py`), written by the same base-model writer for every method "
              "from records whose six attributes are all valid; first name fits gender = share of valid "
              "female/male records whose first name is in that gender's list "
              "(`recipes/data/first_names_{female,male}.txt`), over all N."]
    lenient = [(m, result["methods"][m.key]) for m in METHODS
               if result["methods"].get(m.key, {}).get("lenient_fields")]
    if lenient:
        lines += ["", "Supplementary, prompting baselines read leniently (the first option found anywhere in the "
                  "reply counts as valid): unique / norm. entropy / valid rate", "",
                  "| method | " + " | ".join(TABLE_FIELDS) + " |", "|---|" + "---|" * len(TABLE_FIELDS)]
        for m, r in lenient:
            cells = [f"{x['unique']} / {_f(x['normalized_entropy'])} / {_f(x['valid_rate'])}"
                     for x in (r["lenient_fields"][f] for f in TABLE_FIELDS)]
            lines.append(f"| {m.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=500, help="records per method (attributes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(m.key for m in METHODS),
                        help="comma list of methods (names or letters a-g)")
    parser.add_argument("--bio-n", type=int, default=100, help="biographies per method for the quality guard")
    parser.add_argument("--recipe-adapter", default=None,
                        help="adapter for method f: a shipped adapter name or directory (skipped without it)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/biography_diversity.json"),
                        help="JSON result; the markdown table goes beside it (.md)")
    parser.add_argument("--work-dir", default=None,
                        help="where every method's run directory goes; rerun with it to resume (default: a temp dir)")
    parser.add_argument("--block", type=int, default=32, help="records per engine call and per shard")
    return parser.parse_args(argv)


def split_recipe(n: int, seed: int) -> tuple[Any, Any]:
    """The biography recipe for ``n`` records without its text field, and the text field."""
    from synthgen.recipe import load_recipe

    full = load_recipe(RECIPE).with_overrides(count=n, seed=seed)
    bio = next(f for f in full.order if full.fields[f].kind == "text")
    attrs = tuple(f for f in full.order if f != bio)
    recipe = dataclasses.replace(full, fields={f: full.fields[f] for f in attrs}, order=attrs, near_dup_fields=())
    return recipe, full.fields[bio]


def load_setup(args: argparse.Namespace) -> tuple[Setup, float]:
    """The shared setup and the seconds the base model took to load."""
    from synthgen.engines.transformers import TransformersEngine

    recipe, bio_spec = split_recipe(args.n, args.seed)
    lines = {p: [x.strip() for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
             for p in (PERSONAS, *NAME_LISTS.values())}
    t = time.perf_counter()
    base = TransformersEngine.load(None, adapter="none", device="cpu")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bio-diversity-"))
    setup = Setup(args, recipe, bio_spec, base, lines[PERSONAS],
                  {g: lines[p] for g, p in NAME_LISTS.items()}, work)
    return setup, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    methods = parse_methods(args.methods)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    s, load_base = load_setup(args)
    log.info("work dir: %s", s.work)
    adapters = {m.key: pipeline_adapter(m, args)[0] for m in methods if m.adapter in ("default", "recipe")}
    adapters = {key: path for key, path in adapters.items() if path}  # the weights the numbers came from
    out, results = Path(args.out), {}

    def write_result(final: bool) -> dict:
        prov = provenance(["python", "-m", "benchmarks.biography_diversity", *argv], adapters=adapters)
        config = {"n": args.n, "seed": args.seed, "bio_n": args.bio_n, "recipe": str(RECIPE.relative_to(ROOT)),
                  "model": s.base.model_name, "free_max_new_tokens": baselines.FREE_MAX_TOKENS,
                  "list_max_new_tokens": baselines.LIST_MAX_TOKENS, "list_size": baselines.LIST_SIZE,
                  "min_p": baselines.MIN_P, "seeding": "per record", "personas": str(PERSONAS.relative_to(ROOT)),
                  "recipe_adapter": args.recipe_adapter, "work_dir": str(s.work), "base_load_seconds": load_base}
        result = {"command": prov["command"], "complete": final, "machine": prov["machine"], "config": config,
                  "methods": results, "provenance": prov}
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, (json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8"))
        atomic_write(out.with_suffix(".md"), markdown(result).encode("utf-8"))
        return result

    for m in methods:
        log.info("method %s", m.label)
        results[m.key] = r = run_method(m, s)
        write_result(final=False)
        if r.get("skipped"):
            log.info("  skipped: %s", r["skipped"])
            continue
        log.info("  done: attributes %.0f s, bios %.0f s; %s; quality %s (n=%d)", r["attr_seconds"], r["bio_seconds"],
                 "; ".join(f"{f} unique {r['fields'][f]['unique']} valid {_f(r['fields'][f]['valid_rate'], 2)}"
                           for f in TABLE_FIELDS), _f(r["quality"]["ok"], 2), r["quality"]["n"])
    print(markdown(write_result(final=True)))
    log.info("wrote %s and %s", out, out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
