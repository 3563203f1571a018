"""Run directories and shards: the one file format and the one resume rule of every executor.

A run directory holds ``run.json`` (the run's fingerprint, :func:`run_fingerprint`)
and ``shards/``. A shard is a parquet file ``shards/part-<first index:09d>.parquet``
with one row per record index it covers, dead records included:

* ``_index`` (int64): the record's index in the run, ``0 .. count-1``;
* ``_alive`` (bool): whether every field got a valid value;
* per field ``f``, in fill order: ``f`` (int64 for integer fields, else string;
  null where the record died at or before ``f``) and ``_drawn_f`` (int64, the
  samples drawn for ``f``, retries included; 0 once the record is dead),
  then, for a text field with checks (:mod:`synthgen.checks`), per check ``c``
  in :attr:`~synthgen.checks.TextChecks.names` order, ``_fail_f_c`` (int64, how
  many of those samples failed ``c``).

Shards are written whole through :func:`synthgen.io.atomic_write`, so a shard
under its final name is complete. **Resume rule**: the record indices that the
shards hold are done; a resumed run makes only the missing ones. A record depends
only on ``(seed, index, field)`` (:mod:`synthgen.seeding`), so neither the batch
size nor the executor's way of grouping records matters, and the merged result
(:func:`merge_shards`) equals that of an uninterrupted run.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from synthgen.errors import SynthgenError
from synthgen.fields import FieldSpec
from synthgen.fill import FieldStats, FilledRecords
from synthgen.io import atomic_write
from synthgen.provenance import adapter_digest
from synthgen.recipe import Recipe

__all__ = ["ALIVE", "INDEX", "RunOutput", "check_names", "drawn_column", "fail_column", "field_dtype",
           "merge_shards", "pending_indices", "prepare_out_dir", "run_fingerprint", "shard_files", "shard_frame",
           "write_shard"]

INDEX, ALIVE = "_index", "_alive"
SEEDING = "per-record-v1"  # how record i's randomness is derived; runs seeded otherwise cannot be resumed
NOT_COMPARED = ("recipe",)  # recorded in run.json for the reader, not required to match on resume
SHARD_FORMAT = "parquet-by-index-v1"  # the shard layout above; runs written in another layout cannot be resumed
_PATTERN = "part-*.parquet"


def drawn_column(name: str) -> str:
    """The column counting the samples drawn for field ``name``."""
    return f"_drawn_{name}"


def fail_column(name: str, check: str) -> str:
    """The column counting the samples drawn for field ``name`` that failed ``check``."""
    return f"_fail_{name}_{check}"


def check_names(spec: FieldSpec) -> tuple[str, ...]:
    """The field's checks (none but for a text field with ``must_mention`` or ``consistent_year``)."""
    return spec.checks.names if spec.checks is not None else ()


def field_dtype(spec: FieldSpec) -> pl.DataType:
    """The column type of a field's values (the same for every executor)."""
    return pl.Int64() if spec.is_integer else pl.String()


@dataclass
class RunOutput:
    """What an executor hands back: the valid records in index order, the invalid count, the counters,
    and where this process's time went per field (``vars`` of :class:`synthgen.fill.FieldTiming`, in
    fill order; empty when the executor does not measure it)."""

    records: pl.DataFrame
    invalid: int
    stats: dict[str, FieldStats]
    field_timing: dict[str, dict] = field(default_factory=dict)


# ----------------------------------------------------------------- run dir
def run_fingerprint(recipe: Recipe, engine_spec, executor: str) -> dict:
    """What a resumed run must share with the run it continues.

    ``recipe_sha256`` covers the content of the recipe and of every template and
    options file it reads (:meth:`Recipe.digest`), so an edited file is noticed;
    ``recipe`` (the resolved path) is recorded but not compared, so the same
    recipe given by another path is the same recipe. ``engine_spec``: the
    :class:`synthgen.executors.EngineSpec` of the run, or None when no field uses the model.
    """
    adapter = engine_spec.adapter if engine_spec is not None else None
    return {
        "recipe": str(Path(recipe.path).resolve()),
        "recipe_sha256": recipe.digest(),
        "n": recipe.count,
        "seed": recipe.seed,
        "model": engine_spec.model_name if engine_spec is not None else None,
        "adapter": adapter,
        "adapter_sha256": adapter_digest(adapter),
        "engine": engine_spec.name if engine_spec is not None else None,
        "executor": executor,
        "seeding": SEEDING,
        "shard_format": SHARD_FORMAT,
    }


def prepare_out_dir(out_dir: Path, fingerprint: dict, resume: bool) -> Path:
    """Create or reopen a run directory and return its ``shards/`` folder.

    A new run needs a missing or empty ``out_dir``. A directory holding a run
    (``run.json``) is continued only with ``resume`` and only if its fingerprint
    equals this one (same recipe file, count, seed, model, adapter weights,
    engine, executor and shard format); anything else raises SynthgenError.
    """
    shards = out_dir / "shards"
    manifest = out_dir / "run.json"
    if manifest.exists() or manifest.is_symlink():
        previous = _read_manifest(manifest)
        if not resume:
            raise SynthgenError(
                f"{out_dir} already holds a run ({len(shard_files(shards))} finished shards); "
                "pass --resume to continue it or choose another output directory"
            )
        if previous.get("shard_format") != SHARD_FORMAT or previous.get("seeding") != SEEDING:
            raise SynthgenError(f"cannot resume {out_dir}: it was started by an older synthgen whose shards this "
                                "version cannot read; delete it or choose another output directory")
        changed = [k for k in fingerprint if k not in NOT_COMPARED and previous.get(k) != fingerprint[k]]
        if changed:
            raise SynthgenError(f"cannot resume {out_dir}: the run was started with different {', '.join(changed)}")
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise SynthgenError(f"{out_dir} exists and is not a synthgen run directory; choose another output directory")
    try:
        shards.mkdir(parents=True, exist_ok=True)
        atomic_write(manifest, json.dumps(fingerprint, indent=2).encode("utf-8"))
    except OSError as exc:
        raise SynthgenError(f"cannot write the output directory {out_dir}: {exc.strerror or exc}") from None
    return shards


def _read_manifest(manifest: Path) -> dict:
    """The fingerprint a run directory was started with; a damaged one is a one-line error."""
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SynthgenError(f"{manifest} is damaged ({type(exc).__name__}: {exc}); this run cannot be resumed: "
                            "delete the directory or choose another output directory") from None
    if not isinstance(previous, dict):
        raise SynthgenError(f"{manifest} is damaged (not a JSON object); delete the directory or choose another")
    return previous


# ------------------------------------------------------------------ shards
def shard_files(shards_dir: Path) -> list[Path]:
    """The finished shards of a run, in file-name order."""
    return sorted(shards_dir.glob(_PATTERN))


def pending_indices(shards_dir: Path, count: int, resume: bool) -> list[int]:
    """The record indices still to make: all of ``0 .. count-1``, less those the shards hold when resuming."""
    files = shard_files(shards_dir) if resume else []
    done: set[int] = set()
    for file in files:
        done.update(_read_shard(file, [INDEX]).get_column(INDEX).to_list())
    return [i for i in range(count) if i not in done]


def _read_shard(file: Path, columns: list[str] | None = None) -> pl.DataFrame:
    """One shard (or some of its columns), or a one-line error naming it when it cannot be read."""
    try:
        return pl.read_parquet(file, columns=columns)
    except Exception as exc:  # polars raises its own error types for damaged files
        raise SynthgenError(f"shard {file} is damaged ({type(exc).__name__}); delete it and resume to make "
                            "its records again") from None


def shard_frame(recipe: Recipe, filled: FilledRecords) -> pl.DataFrame:
    """The shard table of records made by :func:`synthgen.fill.make_records`."""
    columns = [pl.Series(INDEX, filled.indices, pl.Int64()), pl.Series(ALIVE, filled.alive, pl.Boolean())]
    for name in recipe.order:
        columns.append(pl.Series(name, filled.values[name], field_dtype(recipe.fields[name])))
        columns.append(pl.Series(drawn_column(name), filled.drawn[name], pl.Int64()))
        fails = filled.failures.get(name, {})
        for check in check_names(recipe.fields[name]):
            columns.append(pl.Series(fail_column(name, check), fails.get(check, [0] * len(filled.indices)),
                                     pl.Int64()))
    return pl.DataFrame(columns)


def write_shard(shards_dir: Path, table: pl.DataFrame) -> Path:
    """Write one shard atomically, named after the smallest record index it holds."""
    buffer = io.BytesIO()
    table.write_parquet(buffer)
    first = int(table[INDEX].min())
    return atomic_write(shards_dir / f"part-{first:09d}.parquet", buffer.getvalue())


def merge_shards(recipe: Recipe, shards_dir: Path) -> RunOutput:
    """Merge a finished run's shards with polars: the valid records in index order (the recipe's
    columns only), the number of dead records and the per-field counters."""
    files = shard_files(shards_dir)
    schema = {name: field_dtype(recipe.fields[name]) for name in recipe.order}
    if not files:
        return RunOutput(pl.DataFrame(schema=schema), 0,
                         {name: FieldStats(passed=dict.fromkeys(check_names(recipe.fields[name]), 0))
                          for name in recipe.order})
    df = pl.concat([_read_shard(file) for file in files], how="vertical").sort(INDEX)
    if df[INDEX].n_unique() != len(df) or len(df) != recipe.count:
        raise SynthgenError(f"{shards_dir}: the shards hold {df[INDEX].n_unique()} distinct of {len(df)} records, "
                            f"expected {recipe.count} distinct")
    stats = {name: FieldStats(drawn=int(df[drawn_column(name)].sum()), valid=int(df[name].is_not_null().sum()),
                              passed={c: int(df[drawn_column(name)].sum() - df[fail_column(name, c)].sum())
                                      for c in check_names(recipe.fields[name])})
             for name in recipe.order}
    kept = df.filter(pl.col(ALIVE)).select([pl.col(name).cast(dtype) for name, dtype in schema.items()])
    return RunOutput(kept, int((~df[ALIVE]).sum()), stats)
