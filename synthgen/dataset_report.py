"""Reports on datasets synthgen did not make (``synthgen report DATA``): reading parquet, jsonl
and Hugging Face dataset folders, inferring each column's kind, and the same report as a run's."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from synthgen.errors import SynthgenError
from synthgen.io import writable_dir
from synthgen.report import TEXT_MIN_MEAN_WORDS, FieldInfo, build_report
from synthgen.report_files import write_report

log = logging.getLogger(__name__)



# ---------------------------------------------------------------- existing datasets

_EXPECTED = ("a .parquet or .jsonl file, a datasets directory (save_to_disk) "
             "or a generate output directory with records.parquet")


def _read_file(path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".jsonl", ".ndjson", ".json"):
        raise SynthgenError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected {_EXPECTED}")
    try:
        if suffix in (".parquet", ".pq"):
            return pl.read_parquet(path)
        with path.open("rb") as fh:
            head = fh.read(4096).lstrip()
        if not head:
            return pl.DataFrame()
        if suffix == ".json" and head.startswith(b"["):
            return pl.read_json(path)
        return pl.read_ndjson(path)
    except (pl.exceptions.PolarsError, OSError, ValueError) as e:
        kind = "parquet" if suffix in (".parquet", ".pq") else "JSON lines"
        raise SynthgenError(f"{path}: cannot read as {kind}: {e}") from e


def _read_hf(path: Path) -> pl.DataFrame:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            split = "train" if "train" in ds else next(iter(ds)) if len(ds) == 1 else None
            if split is None:
                raise SynthgenError(f"{path}: a DatasetDict with splits {list(ds)}; "
                                    "pass one split's directory (e.g. .../train)")
            ds = ds[split]
        return ds.to_polars()
    except (OSError, ValueError, KeyError, pl.exceptions.PolarsError) as e:
        raise SynthgenError(f"{path}: cannot load as a datasets directory: {e}") from e


def load_dataset_table(path: Path) -> pl.DataFrame:
    """Load a parquet/jsonl file, an HF ``save_to_disk`` directory or a generate output dir."""
    path = Path(path)
    if not path.exists():
        raise SynthgenError(f"{path}: no such file or directory; expected {_EXPECTED}")
    if path.is_dir():
        if (path / "records.parquet").is_file():
            df = _read_file(path / "records.parquet")
        elif any((path / n).is_file() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
            df = _read_hf(path)
        elif (path / "dataset" / "state.json").is_file():
            df = _read_hf(path / "dataset")
        else:
            raise SynthgenError(f"{path}: directory holds no dataset; expected {_EXPECTED}")
    else:
        df = _read_file(path)
    if df.height == 0 or df.width == 0:
        raise SynthgenError(f"{path}: the dataset is empty (no records)")
    return df


def infer_field(series: pl.Series) -> FieldInfo:
    """Kind of an existing column: long strings are text, integers 'integer', the rest open categories."""
    if series.dtype == pl.String:
        mean_words = series.drop_nulls().str.extract_all(r"\S+").list.len().mean()
        return FieldInfo(series.name, "text" if (mean_words or 0) > TEXT_MIN_MEAN_WORDS else "unknown")
    if series.dtype.is_integer():
        return FieldInfo(series.name, "integer")
    return FieldInfo(series.name, "unknown")


REPORT_FILES = ("report.json", "report.md")


def report_dataset(path: Path, out_dir: Path | None = None, fields: Sequence[str] | None = None,
                   overwrite: bool = False, given: Mapping[str, Sequence[str]] | None = None) -> dict:
    """Report on an existing dataset (no dedup) and return the report.

    Writes into ``out_dir`` (default: a ``report`` folder beside the file, or inside the
    directory). A folder that already holds a report (a finished ``generate`` run's own,
    or an earlier ``synthgen report``) is refused unless ``overwrite``. ``given`` maps a
    column to the columns it is conditioned on (``{"first_name": ["gender"]}``): those
    fields get a ``coherence`` entry, as a generated field with parents does.
    """
    path = Path(path)
    out = Path(out_dir) if out_dir is not None else (path if path.is_dir() else path.parent) / "report"
    existing = [name for name in REPORT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise SynthgenError(f"{out} already holds a report ({', '.join(existing)}); pass --overwrite to "
                            "replace it or choose another -o")
    df = load_dataset_table(path)
    if fields:
        wanted = list(dict.fromkeys(fields))
        unknown = [f for f in wanted if f not in df.columns]
        if unknown:
            raise SynthgenError(f"{path}: unknown field(s) {', '.join(unknown)}; "
                                f"available columns: {', '.join(df.columns)}")
        df = df.select(wanted)
    parents = _given_parents(path, df.columns, given or {}, selected=bool(fields))
    writable_dir(out, "report directory")
    infos = [dataclasses.replace(infer_field(df[c]), parents=parents.get(c, ())) for c in df.columns]
    report = build_report(df, infos, recipe=None, n_requested=df.height, n_generated=df.height, removed={})
    report["source"] = str(path)
    report["report_dir"] = str(out)
    write_report(report, out)
    log.info("report on %s (%d records) written to %s", path, df.height, out)
    return report


def _given_parents(path: Path, columns: Sequence[str], given: Mapping[str, Sequence[str]],
                   selected: bool) -> dict[str, tuple[str, ...]]:
    """Check ``given`` (column -> the columns it is conditioned on) against the dataset's columns."""
    parents: dict[str, tuple[str, ...]] = {}
    for child, names in given.items():
        names = tuple(dict.fromkeys(names))
        if not names:
            raise SynthgenError(f"given: {child!r} names no parent column")
        if child in names:
            raise SynthgenError(f"given: {child!r} cannot be its own parent")
        parents[child] = names
    named = list(dict.fromkeys([*parents, *(p for names in parents.values() for p in names)]))
    unknown = [c for c in named if c not in columns]
    if unknown:
        where = "among the selected fields" if selected else "in the dataset"
        raise SynthgenError(f"{path}: given: column(s) not {where}: {', '.join(unknown)}; "
                            f"available columns: {', '.join(columns)}")
    return parents
