"""The main job (``synthgen generate``): recipe -> records -> dedup -> report.

The records are made column-wise (:mod:`synthgen.fill`) by an executor
(:mod:`synthgen.executors`: ``local`` in this process, ``ray`` on a Ray
cluster), which writes them as shards of a run directory as it goes
(:mod:`synthgen.shards`: one format, resumed per record index). A record
depends only on (run seed, record index, field), so the batch size, the
executor and an interruption followed by ``--resume`` leave the records
unchanged. The merged records then go through dedup and the report here
(:func:`finish`).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from synthgen.dedup import dedup
from synthgen.errors import SynthgenError
from synthgen.executors import EngineSpec, Executor, LocalExecutor, get_executor
from synthgen.fields import FieldSpec
from synthgen.fill import peak_rss_mib
from synthgen.io import atomic_write
from synthgen.recipe import Recipe
from synthgen.report import FieldInfo, build_report
from synthgen.report_files import write_report
from synthgen.shards import RunOutput, prepare_out_dir, run_fingerprint

__all__ = ["GenerateResult", "add_messages", "check_out_dir", "field_infos", "finish", "generate", "write_outputs"]

log = logging.getLogger(__name__)


@dataclass
class GenerateResult:
    """A finished run: its directory, its report (the ``report.json`` dict) and the files written."""

    out_dir: Path
    report: dict
    files: list[Path]


def generate(recipe: Recipe, out_dir: str | Path, engine_spec: EngineSpec | None = None, *,
             executor: str | Executor | None = None, resume: bool = False,
             on_progress: Callable[[int, int], None] | None = None, tune: dict | None = None,
             check_collapse: bool = False,
             on_field: Callable[[str], None] | None = None) -> GenerateResult:
    """Generate ``recipe.count`` records into ``out_dir``, deduplicate them and write the report.

    Args:
        recipe: A loaded recipe (:func:`synthgen.recipe.load_recipe`).
        out_dir: The run directory: missing or empty for a new run, or the
            directory of the run to continue with ``resume``.
        engine_spec: The engine the model fields use, built where the executor
            runs the model. None: the engine of a ``LocalExecutor(engine=...)``
            passed as ``executor`` if it holds one (reuse a loaded engine this
            way), else the recipe's engine, model and adapter
            (:meth:`EngineSpec.for_recipe`). Ignored when no field uses the model.
        executor: ``"local"``, ``"ray"``, an executor object, or None for the
            recipe's ``executor``. The records do not depend on it.
        resume: Continue the run in ``out_dir``: the records its shards hold are
            kept and only the missing ones are made. The run must have been
            started with the same recipe file, count, seed, model, adapter,
            engine and executor.
        on_progress: Called as ``on_progress(done, total)`` while records are made.
        tune: The recipe adapter's block (:attr:`synthgen.tune.TuneResult.info`) when the
            run uses one tuned for it: recorded in ``run.json`` and the report.
        check_collapse: With the local executor, first log a warning per collapsed
            choice/integer field (:func:`synthgen.preview.collapse_check`).
        on_field: Called with a field's name as the executor starts filling it (the local executor).

    Returns:
        The run directory, the report and the files written: ``records.parquet``,
        ``records.jsonl``, ``dataset/``, ``report.json``, ``report.md`` and plots.

    Raises:
        SynthgenError: ``out_dir`` holds another run, or a run that cannot be resumed.
    """
    out_dir = Path(out_dir)
    runner = get_executor(recipe.executor if executor is None else executor, recipe)
    spec = _engine_spec(recipe, engine_spec, runner)
    runner.check()
    fingerprint = run_fingerprint(recipe, spec, runner.name)
    if tune is not None:
        fingerprint["tune"] = tune
    shards_dir = prepare_out_dir(out_dir, fingerprint, resume)
    if spec is not None:
        log.info("engine: %s  model: %s  adapter: %s  executor: %s", spec.name, spec.model_name,
                 spec.adapter or "none", runner.name)
        if check_collapse and isinstance(runner, LocalExecutor):
            from synthgen.preview import collapse_check

            for dist in collapse_check(recipe, runner.engine_for(spec)):
                log.warning("%s", dist.warning())
    start = time.perf_counter()
    output = runner.run(recipe, spec, shards_dir, resume=resume, on_progress=on_progress,
                        **({"on_field": on_field} if on_field else {}))
    return finish(recipe, out_dir, output, time.perf_counter() - start, tune)


def check_out_dir(out_dir: str | Path, resume: bool) -> None:
    """Refuse, before anything slow (loading a model, tuning an adapter), an output folder that
    :func:`synthgen.shards.prepare_out_dir` would refuse for what it holds: another run without
    ``resume``, or files that are not a run. Writes nothing."""
    out_dir = Path(out_dir)
    if (out_dir / "run.json").exists():
        if not resume:
            raise SynthgenError(f"{out_dir} already holds a run; pass --resume to continue it or choose another "
                                "output directory")
    elif out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise SynthgenError(f"{out_dir} exists and is not a synthgen run directory; choose another output directory")


def _engine_spec(recipe: Recipe, given: EngineSpec | None, runner: Executor) -> EngineSpec | None:
    """The run's engine spec: None without model fields, else ``given``, a held engine's, or the recipe's."""
    if not any(recipe.fields[name].uses_model for name in recipe.order):
        return None
    if given is not None:
        return given
    if isinstance(runner, LocalExecutor) and runner.engine is not None:
        return EngineSpec.from_engine(runner.engine)
    return EngineSpec.for_recipe(recipe)


REPORT_MAX_VALUES = 100_000  # integer ranges the report enumerates as a known value set


def field_info(spec: FieldSpec) -> FieldInfo:
    """What the report knows of a field: its valid values (integers: the whole range, as strings, up to
    ``REPORT_MAX_VALUES`` of them; a wider range is reported as an open set) and weights, and for a
    conditional field its option parents and sets."""
    if spec.is_integer:
        values = spec.known_values
        options = tuple(str(v) for v in values) if len(values) <= REPORT_MAX_VALUES else None
        return FieldInfo(name=spec.name, kind=spec.kind, options=options)
    if spec.open is not None:
        return FieldInfo(name=spec.name, kind=spec.kind, seeds=spec.open.seeds, reference=spec.open.reference)
    return FieldInfo(name=spec.name, kind=spec.kind, options=spec.options, weights=spec.weights,
                     option_parents=spec.option_parents, option_sets=spec.option_sets)


def field_infos(recipe: Recipe) -> list[FieldInfo]:
    """:func:`field_info` of every field, in fill order, with its parents: the fields it depends on, in
    fill order (the report's coherence)."""
    return [dataclasses.replace(field_info(recipe.fields[name]), parents=_parents(recipe, name))
            for name in recipe.order]


def _parents(recipe: Recipe, name: str) -> tuple[str, ...]:
    depends_on = recipe.fields[name].depends_on
    return tuple(n for n in recipe.order if n in depends_on)


def finish(recipe: Recipe, out_dir: Path, output: RunOutput, seconds: float,
           tune: dict | None = None) -> GenerateResult:
    """Dedup and report the merged records of a run (with the recipe adapter's block
    ``tune`` when it has one), and write every output file."""
    df = output.records
    result = dedup(df, keys=recipe.dedup_keys, near_dup_fields=recipe.near_dup_fields)
    kept = add_messages(result.df, recipe)
    report = build_report(
        kept.select(recipe.order) if len(kept) else result.df,
        field_infos(recipe),
        recipe=recipe.name,
        n_requested=recipe.count,
        n_generated=len(df),
        removed={"invalid": output.invalid, "exact_duplicates": result.exact_duplicates,
                 "near_duplicates": result.near_duplicates},
        field_stats={k: vars(v) for k, v in output.stats.items()},
        timing={"seconds": seconds, "records_per_second": len(df) / seconds if seconds > 0 else 0.0,
                "fields": output.field_timing, "peak_rss_mib": peak_rss_mib() or None},
    )
    if tune is not None:
        report["tune"] = tune
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
    """Write the kept records as ``records.parquet``, ``records.jsonl`` and a ``datasets`` directory."""
    import datasets

    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    df.write_parquet(buffer)
    parquet = atomic_write(out_dir / "records.parquet", buffer.getvalue())
    jsonl = atomic_write(out_dir / "records.jsonl", df.write_ndjson().encode("utf-8"))
    dataset_dir = out_dir / "dataset"
    datasets.Dataset(df.to_arrow()).save_to_disk(str(dataset_dir))
    return [parquet, jsonl, dataset_dir]
