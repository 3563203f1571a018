"""The main job (``synthgen generate``): recipe -> records -> dedup -> report.

Column-wise: records are made in shards of ``batch_size``; inside a shard every
field is filled for the whole batch before the next field, in the recipe's
dependency order, each prompt rendered from the record so far.

* ``choice`` / ``integer``: the engine scores every option after the prompt and
  a value is drawn exactly from the renormalised distribution, so no invalid
  value can appear (integer ranges wider than ``MAX_CLOSED_VALUES`` are sampled
  as text and validated instead);
* ``text``: sampled, validated (non-empty, length, pattern), retried; records
  that still fail are dropped and counted;
* ``sample``: drawn without the model.

Per-record seeding: every random choice for record ``i`` and field ``f`` comes
from a generator seeded by ``(run seed, i, stable id of f)`` (text fields: one
engine seed per ``(run seed, i, f, attempt)``), so a record does not depend on
the batch size, the sharding, the executor or the other fields, and a resumed
run produces the same records as an uninterrupted one.

Where the records are made is the executor's business (:mod:`synthgen.executors`:
``local`` in this process, ``ray`` on a Ray cluster); both write shards under
``shards/`` as they go, ``--resume`` skips finished ones, and the merged result
goes through the same dedup and report here (:func:`finish`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from synthgen.dedup import dedup
from synthgen.errors import SynthgenError
from synthgen.io import atomic_write
from synthgen.provenance import adapter_digest
from synthgen.recipe import FieldSpec, Recipe
from synthgen.report import FieldInfo, build_report, write_report
from synthgen.seeding import attempt_seed, record_rng

if TYPE_CHECKING:
    from synthgen.engines.base import Engine

log = logging.getLogger(__name__)

@dataclass
class FieldStats:
    drawn: int = 0
    valid: int = 0

    def add(self, other: FieldStats) -> None:
        self.drawn += other.drawn
        self.valid += other.valid


@dataclass
class ShardResult:
    records: list[dict]
    invalid: int = 0
    stats: dict[str, FieldStats] = field(default_factory=dict)


# ------------------------------------------------------------------ filling
class FieldFiller:
    """Fills one field for a batch of records with one engine.

    A choice field's distribution depends only on its rendered prompt, and
    column-wise many records share a prompt (the biography recipe's 1000
    records ask 112 distinct ones), so distributions are kept in an LRU cache
    of ``cache_size`` prompts (0 = score every record, the naive loop); the
    records are the same either way.
    """

    def __init__(self, engine: Engine | None, cache_size: int = 4096):
        self.engine = engine
        self.cache_size = cache_size
        self._scores: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self.score_calls = 0

    def distribution(self, spec: FieldSpec, prompt: str, options: tuple[str, ...]) -> np.ndarray:
        key = (spec.name, prompt)
        if key in self._scores:
            self._scores.move_to_end(key)
            return self._scores[key]
        logp = np.asarray(self.engine.score(prompt, list(options), use_adapter=spec.use_adapter), dtype=np.float64)
        self.score_calls += 1
        probs = np.exp(logp - logp.max())
        probs /= probs.sum()
        if self.cache_size > 0:
            self._scores[key] = probs
            if len(self._scores) > self.cache_size:
                self._scores.popitem(last=False)
        return probs

    def fill(self, spec: FieldSpec, records: list[dict], indices: list[int], seed: int) -> tuple[list[bool], list[int]]:
        """Set ``record[spec.name]`` for each record (``indices[k]`` is record ``k``'s index in
        the run). Returns which records are valid and how many samples each one drew."""
        if spec.kind == "sample":
            for rec, index in zip(records, indices):
                rec[spec.name] = spec.draw(record_rng(seed, index, spec.name))
            return [True] * len(records), [1] * len(records)
        options = spec.closed_values
        if options is not None:
            for rec, index in zip(records, indices):
                probs = self.distribution(spec, spec.template.render(rec), options)
                value = options[record_rng(seed, index, spec.name).choice(len(options), p=probs)]
                rec[spec.name] = int(value) if spec.kind == "integer" else value
            return [True] * len(records), [1] * len(records)
        return self._free(spec, records, indices, seed)

    def _free(self, spec: FieldSpec, records: list[dict], indices: list[int], seed: int) -> tuple[list[bool], list[int]]:
        pending = list(range(len(records)))
        ok, drawn = [False] * len(records), [0] * len(records)
        for attempt in range(spec.retries + 1):
            if not pending:
                break
            prompts = [spec.template.render(records[i]) for i in pending]
            seeds = [attempt_seed(seed, indices[i], spec.name, attempt) for i in pending]
            outs = self.engine.generate(prompts, n=1, temperature=spec.temperature, top_p=spec.top_p,
                                        max_new_tokens=spec.max_tokens, stop=list(spec.stop) or None,
                                        seed=seeds, use_adapter=spec.use_adapter)
            still = []
            for i, (text,) in zip(pending, outs):
                value = spec.parse_value(" ".join(text.split()) if spec.kind == "text" else text)
                drawn[i] += 1
                if value is None:
                    still.append(i)
                else:
                    records[i][spec.name] = value
                    ok[i] = True
            pending = still
        return ok, drawn


def make_records(recipe: Recipe, filler: FieldFiller, indices: list[int] | range) -> ShardResult:
    """Make the records with these run indices, column-wise, in the recipe's field order."""
    indices = list(indices)
    records: list[dict] = [{} for _ in indices]
    alive = list(range(len(indices)))
    stats = {name: FieldStats() for name in recipe.order}
    for name in recipe.order:
        ok, drawn = filler.fill(recipe.fields[name], [records[i] for i in alive], [indices[i] for i in alive],
                                recipe.seed)
        stats[name].drawn += sum(drawn)
        stats[name].valid += sum(ok)
        alive = [i for i, good in zip(alive, ok) if good]
    kept = [{name: records[i][name] for name in recipe.order} for i in alive]
    return ShardResult(kept, len(indices) - len(alive), stats)


def make_shard(recipe: Recipe, filler: FieldFiller, shard: int, size: int) -> ShardResult:
    """Shard ``shard`` of ``recipe.batch_size`` records (the last one may be smaller)."""
    first = shard * recipe.batch_size
    return make_records(recipe, filler, range(first, first + size))


# ------------------------------------------------------------------ run files
SEEDING = "per-record-v1"  # how record i's randomness is derived; runs seeded otherwise cannot be resumed


def run_fingerprint(recipe: Recipe, n: int, engine, executor: str = "local") -> dict:
    """What a resumed run must share with the run it continues (``engine``: an Engine or an EngineSpec)."""
    text = Path(recipe.path).read_bytes() if recipe.path else b""
    return {
        "recipe": str(recipe.path),
        "recipe_sha256": hashlib.sha256(text).hexdigest(),
        "n": n,
        "seed": recipe.seed,
        "batch_size": recipe.batch_size,
        "model": getattr(engine, "model_name", None),
        "adapter": getattr(engine, "adapter_name", None),
        "adapter_sha256": adapter_digest(getattr(engine, "adapter_name", None)),
        "engine": getattr(engine, "name", None),
        "executor": executor,
        "seeding": SEEDING,
    }



def prepare_out_dir(out_dir: Path, fingerprint: dict, resume: bool) -> Path:
    shards = out_dir / "shards"
    manifest = out_dir / "run.json"
    if manifest.exists():
        previous = json.loads(manifest.read_text(encoding="utf-8"))
        if not resume:
            raise SynthgenError(
                f"{out_dir} already holds a run ({len(finished_shards(shards))} finished shards); "
                "pass --resume to continue it or choose another output directory"
            )
        changed = [k for k in fingerprint if previous.get(k) != fingerprint[k]]
        if changed:
            raise SynthgenError(f"cannot resume {out_dir}: the run was started with different {', '.join(changed)}")
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise SynthgenError(f"{out_dir} exists and is not a synthgen run directory; choose another output directory")
    shards.mkdir(parents=True, exist_ok=True)
    atomic_write(manifest, json.dumps(fingerprint, indent=2).encode("utf-8"))
    return shards


def finished_shards(shards: Path) -> list[Path]:
    """The shard files of a run directory: ``shard-*.jsonl`` (local) or ``part-*.parquet`` (ray)."""
    return sorted([*shards.glob("shard-*.jsonl"), *shards.glob("part-*.parquet")])


def write_shard(shards: Path, index: int, result: ShardResult) -> None:
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.records)
    meta = {"invalid": result.invalid, "stats": {k: vars(v) for k, v in result.stats.items()}}
    atomic_write(shards / f"shard-{index:05d}.meta.json", json.dumps(meta).encode("utf-8"))
    atomic_write(shards / f"shard-{index:05d}.jsonl", body.encode("utf-8"))


def read_shard(shards: Path, index: int) -> ShardResult | None:
    data, meta = shards / f"shard-{index:05d}.jsonl", shards / f"shard-{index:05d}.meta.json"
    if not (data.exists() and meta.exists()):
        return None
    info = json.loads(meta.read_text(encoding="utf-8"))
    records = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line]
    return ShardResult(records, info["invalid"], {k: FieldStats(**v) for k, v in info["stats"].items()})


# ----------------------------------------------------------------- the job
@dataclass
class GenerateResult:
    out_dir: Path
    report: dict
    files: list[Path]


def field_infos(recipe: Recipe) -> list[FieldInfo]:
    infos = []
    for name in recipe.order:
        spec = recipe.fields[name]
        options, weights = spec.options, spec.weights
        if spec.is_integer:
            options, weights = tuple(str(v) for v in range(spec.min, spec.max + 1)), None
        infos.append(FieldInfo(name=name, kind=spec.kind, options=options, weights=weights))
    return infos


def generate(recipe: Recipe, out_dir: str | Path, engine, *, resume: bool = False,
             on_progress: Callable[[int, int], None] | None = None, executor=None) -> GenerateResult:
    """Generate ``recipe.count`` records into ``out_dir`` and write the report.

    ``engine``: a loaded :class:`Engine`, or an :class:`synthgen.executors.EngineSpec`
    that the executor builds where the model runs (the Ray executor never ships a
    loaded engine; given one, it loads the same model and adapter in its actors).
    ``executor``: ``"local"``, ``"ray"``, an executor object, or None for the
    recipe's ``executor``. The records depend on neither choice.
    """
    from synthgen.executors import get_executor

    out_dir = Path(out_dir)
    n = recipe.count
    runner = get_executor(recipe.executor if executor is None else executor, recipe)
    needs_model = any(recipe.fields[f].kind != "sample" for f in recipe.order)
    if needs_model and engine is None:
        raise SynthgenError("this recipe has model fields but no engine was given")
    shards_dir = prepare_out_dir(out_dir, run_fingerprint(recipe, n, engine, runner.name), resume)
    start = time.perf_counter()
    output = runner.run(recipe, engine if needs_model else None, shards_dir, resume=resume, on_progress=on_progress)
    seconds = time.perf_counter() - start
    return finish(recipe, out_dir, output, n, seconds)


@dataclass
class RunOutput:
    """What an executor hands back: the valid records in run-index order and the counters."""

    records: pl.DataFrame
    invalid: int
    stats: dict[str, FieldStats]


def field_dtype(spec: FieldSpec) -> pl.DataType:
    """The column type of a field's values (the same for every executor)."""
    return pl.Int64() if spec.is_integer else pl.String()


def records_frame(recipe: Recipe, records: list[dict]) -> pl.DataFrame:
    schema = {name: field_dtype(recipe.fields[name]) for name in recipe.order}
    return pl.DataFrame(records, schema=schema, orient="row") if records else pl.DataFrame(schema=schema)


def merge_shards(recipe: Recipe, results: list[ShardResult]) -> RunOutput:
    stats = {name: FieldStats() for name in recipe.order}
    for res in results:
        for name, s in res.stats.items():
            stats[name].add(s)
    records = records_frame(recipe, [r for res in results for r in res.records])
    return RunOutput(records, sum(res.invalid for res in results), stats)


def finish(recipe: Recipe, out_dir: Path, output: RunOutput, n: int, seconds: float) -> GenerateResult:
    """Dedup and report the merged records of a run, and write every output file."""
    df = output.records
    result = dedup(df, keys=recipe.dedup_keys, near_dup_fields=recipe.near_dup_fields)
    kept = add_messages(result.df, recipe)
    report = build_report(
        kept.select(recipe.order) if len(kept) else result.df,
        field_infos(recipe),
        recipe=recipe.name,
        n_requested=n,
        n_generated=len(df),
        removed={"invalid": output.invalid, "exact_duplicates": result.exact_duplicates,
                 "near_duplicates": result.near_duplicates},
        field_stats={k: vars(v) for k, v in output.stats.items()},
        timing={"seconds": seconds, "records_per_second": len(df) / seconds if seconds > 0 else 0.0},
    )
    files = write_outputs(kept, out_dir)
    files += write_report(report, out_dir)
    return GenerateResult(out_dir, report, files)


def add_messages(df: pl.DataFrame, recipe: Recipe) -> pl.DataFrame:
    """Add a chat ``messages`` column (system/user/assistant) when the recipe asks for one."""
    roles = (recipe.output or {}).get("messages")
    if not roles or not len(df):
        return df
    parts = [pl.struct(pl.lit(role).alias("role"), pl.col(roles[role]).cast(pl.String).alias("content"))
             for role in ("system", "user", "assistant") if role in roles]
    return df.with_columns(pl.concat_list(parts).alias("messages"))


def write_outputs(df: pl.DataFrame, out_dir: Path) -> list[Path]:
    import datasets

    out_dir.mkdir(parents=True, exist_ok=True)
    parquet, jsonl, dataset_dir = out_dir / "records.parquet", out_dir / "records.jsonl", out_dir / "dataset"
    df.write_parquet(parquet.with_name("records.parquet.tmp"))
    parquet.with_name("records.parquet.tmp").replace(parquet)
    df.write_ndjson(jsonl.with_name("records.jsonl.tmp"))
    jsonl.with_name("records.jsonl.tmp").replace(jsonl)
    datasets.Dataset(df.to_arrow()).save_to_disk(str(dataset_dir))
    return [parquet, jsonl, dataset_dir]
