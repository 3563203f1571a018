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

Prompting baselines (a-d) are what a user does without synthgen: each attribute
is generated freely with the recipe's own Jinja template, fields in the recipe's
order, each prompt rendered from the record so far (stop at a newline, top-p 1).
A reply is **valid** when, after normalisation, it equals one of the field's
options; birth_year when it is an integer in [min, max]. Normalisation:
whitespace runs collapsed, surrounding whitespace, quotes, backticks and
asterisks removed, one trailing ``.``/``,``/``;`` removed, compared
case-insensitively (``casefold``); a valid value is counted under the option's
own spelling. An invalid reply stays in the record (conditioning the next
fields, as it would for a user) but counts against the valid rate, and unique
counts and entropies count valid values only (the design doc's counting rule).
For list-then-pick, the drawn candidate is validated the same way; a reply with
no parsable candidate is invalid (see :func:`parse_candidates`).

Methods e-g run ``synthgen.generate.generate`` on the recipe without its text
field; choice fields and birth_year are drawn exactly over the options, so
their valid rate is 1 by construction. Their metrics are read from its
``report.json`` (kept records after exact-duplicate removal; ``n_kept`` is
recorded).

All metrics come from ``synthgen.report.build_report``: unique valid values,
normalised entropy H / log K (K = the field's option count; 106 years for
birth_year), top-1 share among valid values, valid rate = valid / drawn.

Quality guard (``synthgen.quality``): per method, biographies are written for the
first ``--bio-n`` records whose six attributes are all valid, by one identical
writer for every method: the base model with the recipe's biography field
(template, temperature, top-p, max tokens, stop, pattern, retries). Each text is
checked for the record's first and last name and its occupation; the rate per
method is reported with its n (small when a baseline rarely produces a fully
valid record; then (g) is the reference that has one). Beside it, over all N
records: the share of valid female/male records whose first name is in that
gender's name list (``synthgen.quality.name_fits_gender``).

Records, raw replies and biographies of every method stay in ``--work-dir``.

    python benchmarks/biography_diversity.py -n 500 --recipe-adapter out/adapters/biography-tuned \
        --work-dir out/bio-div-500

writes the result after every method; rerun the same command after a stop and
the finished methods are reused from ``--work-dir`` (only while n, seed, bio-n,
block, the recipe's files and the adapter's weights are unchanged), the
pipeline methods resume their generation run. It ``benchmarks/results/biography_diversity.json`` and ``.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/biography.yaml"
PERSONAS = ROOT / "recipes/data/personas.txt"
NAME_LISTS = {g: ROOT / f"recipes/data/first_names_{g}.txt" for g in ("female", "male")}
TABLE_FIELDS = ("first_name", "last_name", "birth_place", "occupation")
TARGET_FIELDS = ("first_name", "birth_place", "occupation")
FREE_MAX_TOKENS = 16  # free replies: a name, "City, Country", an occupation, a year
LIST_MAX_TOKENS = 48
LIST_SIZE = 5
MIN_P = 0.1


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
    Method("hot_minp", "b", f"(b) base, T=1.5, min-p {MIN_P}", "free", temperature=1.5, min_p=MIN_P),
    Method("list_pick", "c", "(c) list then pick", "list"),
    Method("persona", "d", "(d) persona, T=1.0", "free", persona=True),
    Method("adapter", "e", "(e) shipped adapter", "pipeline", adapter="default"),
    Method("recipe", "f", "(f) recipe-tuned adapter", "pipeline", adapter="recipe"),
    Method("base_exact", "g", "(g) base, exact over options (ref.)", "pipeline", adapter="none"),
)
PROMPTING = ("base", "hot_minp", "list_pick", "persona")
ADAPTERS = ("adapter", "recipe")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- validity
_EDGE = "\"'`*“”‘’ \t"


def normalise(text: str) -> str:
    """Whitespace collapsed, surrounding quotes/backticks/asterisks and one trailing . , ; removed."""
    s = " ".join(str(text).split()).strip(_EDGE)
    if s[-1:] in ".,;":
        s = s[:-1].strip(_EDGE)
    return s


class Validator:
    """Maps a reply to the field's canonical value (option spelling, or int), or None if invalid."""

    def __init__(self, spec):
        self.spec = spec
        self.options = ({o.casefold(): o for o in spec.options} if spec.options is not None else None)

    def __call__(self, reply: str) -> str | int | None:
        s = normalise(reply)
        if self.options is not None:
            return self.options.get(s.casefold())
        if re.fullmatch(r"[+-]?\d+", s):
            v = int(s)
            return v if self.spec.min <= v <= self.spec.max else None
        return None


class Extractor:
    """Lenient reading (a supplementary metric): the option that occurs first in the reply as a whole
    phrase, case-insensitive (longest option at the same position); birth_year: the first integer
    in range. What a user who regex-searches replies for known values would keep."""

    def __init__(self, spec):
        self.spec = spec
        if spec.options is not None:
            self.options = {o.casefold(): o for o in spec.options}
            alternatives = "|".join(re.escape(o) for o in sorted(spec.options, key=len, reverse=True))
            self.pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def __call__(self, reply: str) -> str | int | None:
        text = " ".join(str(reply).split())
        if self.spec.options is not None:
            m = self.pattern.search(text)
            return self.options[m.group(0).casefold()] if m else None
        for m in re.finditer(r"(?<!\d)\d+(?!\d)", text):
            if self.spec.min <= int(m.group(0)) <= self.spec.max:
                return int(m.group(0))
        return None


# ------------------------------------------------------------ list then pick
_BULLET = re.compile(r"^\s*(?:[-*•]+|\(?\d{1,2}[.):])\s*")
_PROB = re.compile(
    r"(?:\s*[—–\-:|=,(\[]\s*|\s+)(?:probability|prob\.?|p)?\s*[:=]?\s*(\d*\.?\d+)\s*(%)?\s*[)\]]?\s*$",
    re.IGNORECASE,
)


def list_prompt(task: str, k: int = LIST_SIZE) -> str:
    """The verbalized-sampling prompt around a field's own rendered prompt."""
    return (f"Task: {task}\n\nGive {k} different possible answers to this task, one per line, each "
            f"followed by the probability that you would give it, in the format:\nanswer — probability\n"
            f"Reply with only the {k} lines.")


def parse_candidates(text: str) -> list[tuple[str, float | None]]:
    """``(candidate, probability or None)`` per non-empty line of a list reply.

    A leading bullet or number ("1.", "-", "(2)") is removed. A probability is a
    number at the end of the line after a separator (— – - : | = , ( [ or
    whitespace), optionally written "probability 0.3", "p=0.3" or "30%"; numbers
    above 1 are read as percents. A line without one keeps ``None``. Candidates
    are normalised like replies (:func:`normalise`); empty ones are dropped.
    """
    out: list[tuple[str, float | None]] = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip()
        if not line:
            continue
        prob = None
        m = _PROB.search(line)
        if m:
            value = float(m.group(1))
            value = value / 100 if (m.group(2) or value > 1) else value
            if 0 <= value <= 1:
                prob, line = value, line[: m.start()]
        cand = normalise(line)
        if cand:
            out.append((cand, prob))
    return out


def pick_candidate(cands: Sequence[tuple[str, float | None]], rng: np.random.Generator) -> str | None:
    """Draw one candidate with its stated probabilities (renormalised).

    If any candidate has a probability, only those are kept (lines without one
    are preambles or a line cut by the token limit); if none has one, or the
    stated ones sum to 0, the draw is uniform. None when there is no candidate.
    """
    with_p = [(c, p) for c, p in cands if p is not None]
    pool = with_p if with_p else [(c, 0.0) for c, _ in cands]
    if not pool:
        return None
    p = np.asarray([w for _, w in pool], dtype=float)
    p = p / p.sum() if p.sum() > 0 else np.full(len(pool), 1.0 / len(pool))
    return pool[int(rng.choice(len(pool), p=p))][0]


# ------------------------------------------------------------------ seeding
def _field_id(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def record_seed(seed: int, index: int, name: str, attempt: int = 0) -> int:
    """Engine seed of record ``index`` for field ``name`` (same for every method)."""
    state = np.random.SeedSequence([seed, index, _field_id(name), attempt]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def record_rng(seed: int, index: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, index, _field_id(name), 1])


class Sampler:
    """engine.generate with one seed per prompt; falls back to one seed per call if the engine refuses."""

    def __init__(self, engine):
        self.engine = engine
        self.per_prompt = True

    def __call__(self, prompts: list[str], seeds: list[int], **kw) -> list[str]:
        if self.per_prompt:
            try:
                return [o[0] for o in self.engine.generate(prompts, n=1, seed=seeds, **kw)]
            except (TypeError, ValueError, RuntimeError) as err:
                log(f"engine refused per-prompt seeds ({type(err).__name__}: {err}); using one seed per call")
                self.per_prompt = False
        return [o[0] for o in self.engine.generate(prompts, n=1, seed=seeds[0] if seeds else None, **kw)]


# -------------------------------------------------------- prompting methods
def run_prompting(method: Method, recipe, sampler: Sampler, n: int, seed: int, personas: list[str],
                  block: int, checkpoint: Path | None = None, key: dict | None = None) -> dict[str, Any]:
    """Free / list-then-pick generation of every attribute field; returns records and counters.

    With ``checkpoint``, the state is saved after every block of records and a
    run with the same ``key`` continues after the last saved block (every
    record's draws depend only on its index, so the result is the same)."""
    attrs = [f for f in recipe.order if recipe.fields[f].kind != "text"]
    validators = {f: Validator(recipe.fields[f]) for f in attrs}
    extractors = {f: Extractor(recipe.fields[f]) for f in attrs}
    raw: list[dict] = [{} for _ in range(n)]       # what conditions the next prompts
    valid: list[dict] = [{} for _ in range(n)]     # canonical value or None
    lenient: list[dict] = [{} for _ in range(n)]   # Extractor's value or None (supplementary)
    replies_kept: list[dict] = [{} for _ in range(n)]
    stats = {f: {"drawn": 0, "valid": 0} for f in attrs}
    examples: dict[str, list[str]] = {f: [] for f in attrs}
    list_stats = {"replies": 0, "with_candidates": 0, "with_probabilities": 0}
    if method.persona:
        for i in range(n):
            raw[i]["_persona"] = personas[int(record_rng(seed, i, "_persona").integers(len(personas)))]
    start = time.perf_counter()
    first, before = 0, 0.0
    if checkpoint is not None and checkpoint.is_file():
        try:
            saved = json.loads(checkpoint.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            saved = {}
        if saved.get("key") == key:
            raw, valid, lenient, replies_kept = saved["raw"], saved["valid"], saved["lenient"], saved["replies"]
            stats, examples, list_stats = saved["stats"], saved["examples"], saved["list_stats"]
            first, before = saved["done"], saved["seconds"]
            log(f"  {method.key}: continuing after {first}/{n} records saved in {checkpoint}")
    for lo in range(first, n, block):
        idx = range(lo, min(n, lo + block))
        for name in attrs:
            spec = recipe.fields[name]
            prompts = []
            for i in idx:
                task = spec.template.render({k: v for k, v in raw[i].items() if not k.startswith("_")})
                if method.persona:
                    task = f"You are {raw[i]['_persona']}. {task}"
                prompts.append(list_prompt(task) if method.kind == "list" else task)
            seeds = [record_seed(seed, i, name) for i in idx]
            if method.kind == "list":
                replies = sampler(prompts, seeds, temperature=method.temperature, top_p=1.0, min_p=method.min_p,
                                  max_new_tokens=LIST_MAX_TOKENS, stop=None, use_adapter=False)
            else:
                replies = sampler(prompts, seeds, temperature=method.temperature, top_p=1.0, min_p=method.min_p,
                                  max_new_tokens=FREE_MAX_TOKENS, stop=["\n"], use_adapter=False)
            for i, reply in zip(idx, replies):
                if method.kind == "list":
                    cands = parse_candidates(reply)
                    list_stats["replies"] += 1
                    list_stats["with_candidates"] += bool(cands)
                    list_stats["with_probabilities"] += any(p is not None for _, p in cands)
                    chosen = pick_candidate(cands, record_rng(seed, i, name))
                    value = validators[name](chosen) if chosen is not None else None
                    loose = extractors[name](chosen) if chosen is not None else None
                    shown = chosen if chosen is not None else " ".join(reply.split())[:100]
                else:
                    value = validators[name](reply)
                    loose = extractors[name](reply)
                    shown = " ".join(reply.split())[:100]
                stats[name]["drawn"] += 1
                stats[name]["valid"] += value is not None
                valid[i][name] = value
                lenient[i][name] = loose
                replies_kept[i][name] = reply
                raw[i][name] = value if value is not None else shown
                example = reply if method.kind == "list" else shown
                if value is None and len(examples[name]) < 5 and example not in examples[name]:
                    examples[name].append(example)
        log(f"  {method.key}: {min(n, lo + block)}/{n} records ({before + time.perf_counter() - start:.0f} s)")
        if checkpoint is not None:
            state = {"key": key, "done": min(n, lo + block), "seconds": before + time.perf_counter() - start,
                     "raw": raw, "valid": valid, "lenient": lenient, "replies": replies_kept, "stats": stats,
                     "examples": examples, "list_stats": list_stats}
            tmp = checkpoint.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
            tmp.replace(checkpoint)
    lenient_stats = {f: {"drawn": n, "valid": sum(r[f] is not None for r in lenient)} for f in attrs}
    out = {"records": valid, "lenient": lenient, "lenient_stats": lenient_stats, "replies": replies_kept,
           "raw": raw, "stats": stats, "invalid_examples": examples,
           "seconds": before + time.perf_counter() - start}
    if method.kind == "list":
        out["list_parse"] = list_stats
    return out


def prompting_metrics(recipe, records: list[dict], stats: dict) -> dict[str, dict]:
    import polars as pl

    from synthgen.generate import field_infos
    from synthgen.report import build_report

    attrs = [f for f in recipe.order if recipe.fields[f].kind != "text"]
    infos = [i for i in field_infos(recipe) if i.name in attrs]
    schema = {f: (pl.Int64 if recipe.fields[f].kind == "integer" else pl.String) for f in attrs}
    df = pl.DataFrame({f: [r.get(f) for r in records] for f in attrs}, schema=schema)
    rep = build_report(df, infos, recipe=recipe.name, n_requested=len(records), n_generated=len(records),
                       removed={}, field_stats=stats)
    return rep["fields"]


# -------------------------------------------------------- pipeline methods
def run_pipeline(method: Method, recipe, engine, work: Path) -> dict[str, Any]:
    from synthgen.generate import generate

    out_dir = work / method.key
    start = time.perf_counter()
    rep = generate(recipe, out_dir, engine, resume=True).report  # a killed benchmark continues where it stopped
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in (out_dir / "records.jsonl").read_text(encoding="utf-8").splitlines()
               if line]
    return {"records": records, "fields_report": rep["fields"], "n_kept": rep["n_kept"], "removed": rep["removed"],
            "seconds": seconds, "out_dir": str(out_dir)}


# -------------------------------------------------------------- biographies
def write_biographies(bio_spec, sampler: Sampler, records: list[dict], indices: list[int], seed: int) -> dict[str, int]:
    """Fill ``record['biography']`` like the recipe's text field (validate, retry); the base model writes."""
    pending = list(range(len(records)))
    drawn = valid = 0
    for attempt in range(bio_spec.retries + 1):
        if not pending:
            break
        prompts = [bio_spec.template.render(records[k]) for k in pending]
        seeds = [record_seed(seed, indices[k], bio_spec.name, attempt) for k in pending]
        replies = sampler(prompts, seeds, temperature=bio_spec.temperature, top_p=bio_spec.top_p,
                          max_new_tokens=bio_spec.max_tokens, stop=list(bio_spec.stop) or None, use_adapter=False)
        still = []
        for k, text in zip(pending, replies):
            drawn += 1
            value = bio_spec.parse_value(" ".join(text.split()))
            if value is None:
                still.append(k)
            else:
                valid += 1
                records[k][bio_spec.name] = value
        pending = still
    return {"drawn": drawn, "valid": valid, "failed_records": len(pending)}


# ------------------------------------------------------------------ output
def _f(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x + 0.0:.{digits}f}" if isinstance(x, float) else str(x)  # + 0.0: no "-0.000"


def _beats(mine: dict, others: list[dict]) -> dict[str, bool] | None:
    if not others:
        return None
    return {metric: all((mine[metric] or 0) > (o[metric] or 0) for o in others)
            for metric in ("unique", "normalized_entropy")}


def check_targets(results: dict[str, dict]) -> dict[str, Any]:
    """The issue's targets, evaluated on whatever methods ran.

    "Beats" = strictly more unique valid values and strictly higher normalised
    entropy than every prompting baseline that ran, per field; checked against
    the strict metrics and, as a harder test, against the baselines' lenient
    ones. Quality is compared with the base model two ways: (a) free
    generation (only its fully valid records, often few) and (g) exact
    sampling over the options (``base_exact``).
    """
    baselines = [m for m in PROMPTING if results.get(m, {}).get("fields")]
    out: dict[str, Any] = {"baselines_compared": baselines}
    for m in ADAPTERS:
        r = results.get(m)
        if not r or not r.get("fields"):
            continue
        q = r.get("quality", {}).get("ok")
        entry: dict[str, Any] = {
            "beats_every_baseline": {f: _beats(r["fields"][f], [results[b]["fields"][f] for b in baselines])
                                     for f in TARGET_FIELDS},
            "beats_every_baseline_lenient": {
                f: _beats(r["fields"][f], [results[b]["lenient_fields"][f] for b in baselines]) for f in TARGET_FIELDS},
            "valid_rate_ge_0.95": all((r["fields"][f]["valid_rate"] or 0) >= 0.95 for f in TABLE_FIELDS),
        }
        for ref in ("base", "base_exact"):
            rq = results.get(ref, {}).get("quality") or {}
            ok = rq.get("ok")
            entry[f"quality_minus_{ref}"] = (q - ok) if q is not None and ok is not None else None
            entry[f"quality_within_5_points_of_{ref}"] = (q >= ok - 0.05) if q is not None and ok is not None else None
            entry[f"quality_n_{ref}"] = rq.get("n")
        out[m] = entry
    return out


def markdown(result: dict) -> str:
    lines = ([] if result.get("complete", True) else
             ["**Partial result** (the run is still going or was stopped; rerun the command: finished methods "
              "are reused from the work dir).", ""])
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
        q = r.get("quality") or {}
        qcell = (f"{_f(q.get('mentions_name'), 2)} / {_f(q.get('fits_occupation'), 2)} / {_f(q.get('ok'), 2)} "
                 f"({q.get('n', 0)})")
        wall = f"{_f(r['attr_seconds'], 0)} + {_f(r.get('bio_seconds'), 0)}"
        g = r.get("name_fits_gender") or {}
        gcell = f"{_f(g.get('rate'), 2)} ({g.get('n', 0)})"
        for j, f in enumerate(TABLE_FIELDS):
            x = r["fields"][f]
            lines.append(f"| {m.label if j == 0 else ''} | {f} | {x['unique']} | {_f(x['normalized_entropy'])} "
                         f"| {_f(x['top1_share'])} | {_f(x['valid_rate'])} | {qcell if j == 0 else ''} "
                         f"| {gcell if j == 0 else ''} | {wall if j == 0 else ''} |")
    lines += ["", "Valid = the normalised reply equals an option (case-insensitive); unique, entropy and top-1 "
              "count valid values only; normalised entropy = H / log K, K the field's option count; quality = "
              "share of biographies that name the record's first and last name / its occupation (head noun or "
              "stem) / both (`synthgen/quality.py`), written by the same base-model writer for every method from "
              "records whose six attributes are all valid; first name fits gender = share of valid female/male "
              "records whose first name is in that gender's list (`recipes/data/first_names_{female,male}.txt`), "
              "over all N."]
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
    t = result.get("targets", {})
    if any(m in t for m in ADAPTERS):
        lines += ["", "Targets (computed from the numbers above):"]
    for m in ADAPTERS:
        if m not in t:
            continue
        e = t[m]

        def verdict(beats):
            parts = [f"{f} {'yes' if b['unique'] and b['normalized_entropy'] else 'no'}"
                     for f, b in beats.items() if b is not None]
            return ", ".join(parts) or "no baseline ran"

        lines.append(f"- {m}: beats every prompting baseline on unique and entropy — strict: "
                     f"{verdict(e['beats_every_baseline'])}; lenient: {verdict(e['beats_every_baseline_lenient'])}; "
                     f"valid ≥ 0.95: {e['valid_rate_ge_0.95']}; quality − (a) base: {_f(e['quality_minus_base'])} "
                     f"(n = {e['quality_n_base']}); quality − (g) base exact: {_f(e['quality_minus_base_exact'])} "
                     f"(n = {e['quality_n_base_exact']})")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ caching
CACHE_VERSION = 1  # bump when a method's procedure changes; cached results then no longer match


def _digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def method_key(method: Method, args: argparse.Namespace, adapter_dir: str | None) -> dict[str, Any]:
    """What a method's result depends on: a cached result is reused only when all of it matches."""
    inputs = [RECIPE, PERSONAS, *NAME_LISTS.values(), *(ROOT / "templates/biography").glob("*.j2"),
              *(RECIPE.parent / "data").glob("*.txt")]
    key: dict[str, Any] = {"version": CACHE_VERSION, "method": method.key, "n": args.n, "seed": args.seed,
                           "bio_n": args.bio_n, "block": args.block,
                           "inputs": _digest([p for p in set(inputs) if p.is_file()])}
    if adapter_dir is not None:
        key["adapter"] = _digest([Path(adapter_dir) / "adapter_model.safetensors"])
    return key


def load_cached(work: Path, method: Method, key: dict[str, Any]) -> dict[str, Any] | None:
    path = work / f"{method.key}.result.json"
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return saved["result"] if saved.get("key") == key else None


def save_cached(work: Path, method: Method, key: dict[str, Any], result: dict[str, Any]) -> None:
    path = work / f"{method.key}.result.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "result": result}, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)


def shipped_adapter_dir() -> str:
    from synthgen.store import default_adapter

    path = default_adapter(None)
    if path is None:
        raise SystemExit("the default model has no shipped adapter (synthgen/adapters/)")
    return str(path)


# -------------------------------------------------------------------- main
def parse_methods(text: str) -> list[Method]:
    by_name = {m.key: m for m in METHODS} | {m.letter: m for m in METHODS}
    chosen = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part not in by_name:
            raise SystemExit(f"unknown method {part!r}; choose from {', '.join(m.key for m in METHODS)} (or a-g)")
        chosen.append(by_name[part])
    return [m for m in METHODS if m in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=500, help="records per method (attributes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(m.key for m in METHODS),
                        help="comma list of methods (names or letters a-g)")
    parser.add_argument("--bio-n", type=int, default=100, help="biographies per method for the quality guard")
    parser.add_argument("--recipe-adapter", default=None, help="adapter dir for method f (skipped without it)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/biography_diversity.json"),
                        help="JSON result; the markdown table goes beside it (.md)")
    parser.add_argument("--work-dir", default=None, help="where records and pipeline runs go (default: a temp dir)")
    parser.add_argument("--block", type=int, default=32, help="records per generate call (prompting methods)")
    parser.add_argument("--fresh", action="store_true",
                        help="recompute every method (default: reuse a method's result saved in --work-dir when "
                             "n, seed, bio-n, block, the recipe's files and the adapter are unchanged)")
    args = parser.parse_args(argv)
    methods = parse_methods(args.methods)

    import torch

    from benchmarks.quality import name_gender_rate, quality_rate
    from synthgen.engines.transformers import TransformersEngine
    from synthgen.recipe import load_recipe

    command = "python benchmarks/biography_diversity.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bio-diversity-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"work dir: {work}")
    full = load_recipe(RECIPE).with_overrides(count=args.n, seed=args.seed)
    bio_name = next(f for f in full.order if full.fields[f].kind == "text")
    bio_spec = full.fields[bio_name]
    attrs = tuple(f for f in full.order if full.fields[f].kind != "text")
    recipe = dataclasses.replace(full, fields={f: full.fields[f] for f in attrs}, order=attrs, near_dup_fields=())
    personas = [line.strip() for line in PERSONAS.read_text(encoding="utf-8").splitlines() if line.strip()]
    names_by_gender = {g: [x.strip() for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
                       for g, p in NAME_LISTS.items()}

    t0 = time.perf_counter()
    base = TransformersEngine.load(None, adapter="none", device="cpu")
    load_base = time.perf_counter() - t0
    sampler = Sampler(base)
    results: dict[str, dict] = {}
    out = Path(args.out)

    def write_result(final: bool) -> dict:
        result = {
            "command": command,
            "complete": final,
            "machine": (f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
                        f"torch {torch.__version__}, load average at end {os.getloadavg()[0]:.1f}"),
            "config": {"n": args.n, "seed": args.seed, "bio_n": args.bio_n, "recipe": str(RECIPE.relative_to(ROOT)),
                       "model": base.model_name, "free_max_new_tokens": FREE_MAX_TOKENS,
                       "list_max_new_tokens": LIST_MAX_TOKENS, "list_size": LIST_SIZE, "min_p": MIN_P,
                       "seeding": "per record" if sampler.per_prompt else "per generate call",
                       "personas": str(PERSONAS.relative_to(ROOT)), "recipe_adapter": args.recipe_adapter,
                       "work_dir": str(work), "base_load_seconds": load_base},
            "methods": results,
        }
        result["targets"] = check_targets(results)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
        return result

    for m in methods:
        log(f"method {m.label}")
        r: dict[str, Any] = {"label": m.label}
        adapter_dir = None
        if m.kind == "pipeline" and m.adapter == "recipe" and args.recipe_adapter:
            adapter_dir = args.recipe_adapter
        elif m.kind == "pipeline" and m.adapter not in ("none", "recipe"):
            adapter_dir = shipped_adapter_dir()
        cache_key = None
        if adapter_dir is None or (Path(adapter_dir) / "adapter_model.safetensors").is_file():
            cache_key = method_key(m, args, adapter_dir)
            cached = None if args.fresh else load_cached(work, m, cache_key)
            if cached is not None:
                results[m.key] = cached
                log(f"  reused the saved result in {work / (m.key + '.result.json')} (same inputs; --fresh recomputes)")
                write_result(final=False)
                continue
        if m.kind == "pipeline":
            adapter = m.adapter
            if adapter == "recipe":
                if not args.recipe_adapter:
                    results[m.key] = {"label": m.label, "skipped": "no --recipe-adapter given"}
                    log(f"  skipped: {results[m.key]['skipped']}")
                    continue
                if not (Path(args.recipe_adapter) / "adapter_config.json").is_file():
                    results[m.key] = {"label": m.label,
                                      "skipped": f"{args.recipe_adapter} is not an adapter directory"}
                    log(f"  skipped: {results[m.key]['skipped']}")
                    continue
                adapter = args.recipe_adapter
            t = time.perf_counter()
            engine = base if adapter == "none" else TransformersEngine.load(None, adapter=adapter, device="cpu")
            r["load_seconds"] = time.perf_counter() - t
            run = run_pipeline(m, recipe, engine, work)
            r.update(adapter=engine.adapter_name, n_kept=run["n_kept"], removed=run["removed"],
                     attr_seconds=run["seconds"], run_dir=run["out_dir"])
            r["fields"] = {f: v for f, v in run["fields_report"].items()}
            records = run["records"]
            bio_pool = list(enumerate(records))
            if engine is not base:
                del engine
        else:
            run = run_prompting(m, recipe, sampler, args.n, args.seed, personas, args.block,
                                checkpoint=work / f"{m.key}.partial.json", key=cache_key)
            r.update(attr_seconds=run["seconds"], invalid_examples=run["invalid_examples"])
            if "list_parse" in run:
                r["list_parse"] = run["list_parse"]
            r["fields"] = prompting_metrics(recipe, run["records"], run["stats"])
            r["lenient_fields"] = prompting_metrics(recipe, run["lenient"], run["lenient_stats"])
            (work / f"{m.key}.replies.jsonl").write_text(
                "".join(json.dumps({"persona": raw.get("_persona"), "replies": rep, "valid": val}, ensure_ascii=False)
                        + "\n" for raw, rep, val in zip(run["raw"], run["replies"], run["records"])),
                encoding="utf-8")
            records = run["records"]
            bio_pool = [(i, rec) for i, rec in enumerate(records) if all(rec.get(f) is not None for f in attrs)]
            r["fully_valid_records"] = len(bio_pool)
        keep = ("n", "unique", "normalized_entropy", "entropy_bits", "top1_value", "top1_share", "valid_rate",
                "coverage_ratio", "k")
        for key in ("fields", "lenient_fields"):
            if key in r:
                r[key] = {f: {k: v.get(k) for k in keep} for f, v in r[key].items()}
        r["name_fits_gender"] = name_gender_rate(records, names_by_gender)
        chosen = bio_pool[: args.bio_n]
        bio_records = [dict(rec) for _, rec in chosen]
        t = time.perf_counter()
        r["bio_stats"] = write_biographies(bio_spec, sampler, bio_records, [i for i, _ in chosen], args.seed)
        r["bio_seconds"] = time.perf_counter() - t
        r["quality"] = quality_rate(bio_records, text_field=bio_name)
        (work / f"{m.key}.bios.jsonl").write_text(
            "".join(json.dumps(x, ensure_ascii=False, default=str) + "\n" for x in bio_records), encoding="utf-8")
        (work / f"{m.key}.records.jsonl").write_text(
            "".join(json.dumps(x, ensure_ascii=False, default=str) + "\n" for x in records), encoding="utf-8")
        results[m.key] = r
        if cache_key is not None:
            save_cached(work, m, cache_key, r)
        write_result(final=False)
        fs = r["fields"]
        log(f"  done: attributes {r['attr_seconds']:.0f} s, bios {r['bio_seconds']:.0f} s; "
            + "; ".join(f"{f} unique {fs[f]['unique']} valid {_f(fs[f]['valid_rate'], 2)}" for f in TABLE_FIELDS)
            + f"; quality {_f(r['quality']['ok'], 2)} (n={r['quality']['n']})")

    result = write_result(final=True)
    print(markdown(result))
    log(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
