"""Normalisation, exact de-duplication and MinHash near-duplicate removal.

Two passes over a polars frame, both keeping the first occurrence and the
original row order:

1. exact: rows whose *normalised* key tuple (NFKC, lower case, whitespace
   collapsed, stripped; non-string columns as they are) was seen before;
2. near: rows whose concatenated long text is a near-duplicate (estimated
   word-shingle Jaccard ≥ threshold, ``datasketch`` MinHash + LSH, fixed seed)
   of a row already kept. Texts shorter than ``min_words`` words are skipped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

_WS = re.compile(r"\s+")
_MINHASH_SEED = 1


def normalize_text(s: str) -> str:
    """NFKC, casefold, collapse runs of whitespace to one space, strip."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", s).casefold()).strip()


def normalized(col: str | pl.Expr) -> pl.Expr:
    """The polars version of :func:`normalize_text` for a string column.

    polars lower-cases rather than case-folds, so a few letters differ from
    :func:`normalize_text` (German "ß" stays "ß" here, casefold gives "ss").
    """
    expr = pl.col(col) if isinstance(col, str) else col
    return expr.str.normalize("NFKC").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


@dataclass
class DedupResult:
    df: pl.DataFrame
    exact_duplicates: int
    near_duplicates: int


def _exact(df: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    key_exprs = []
    for i, name in enumerate(keys):
        expr = normalized(name) if df.schema[name] == pl.String else pl.col(name)
        key_exprs.append(expr.alias(f"__key{i}"))
    first = (
        df.select(key_exprs)
        .with_row_index("__row")
        .unique(subset=[f"__key{i}" for i in range(len(keys))], keep="first", maintain_order=True)
        .get_column("__row")
    )
    return df.with_row_index("__row").filter(pl.col("__row").is_in(first.implode())).drop("__row")


def _shingles(text: str, shingle: int) -> set[bytes]:
    words = text.split()
    return {" ".join(words[i : i + shingle]).encode("utf-8") for i in range(len(words) - shingle + 1)}


def _near_keep_mask(
    texts: Sequence[str | None], threshold: float, num_perm: int, shingle: int, min_words: int
) -> list[bool]:
    from datasketch import MinHash, MinHashLSH

    # Bands tuned against misses (weights fp 0.1 / fn 0.9): LSH only proposes
    # candidates, each confirmed below with the estimated Jaccard.
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
    kept: dict[str, MinHash] = {}
    keep: list[bool] = []
    for i, text in enumerate(texts):
        if text is None or len(text.split()) < max(min_words, shingle):
            keep.append(True)
            continue
        mh = MinHash(num_perm=num_perm, seed=_MINHASH_SEED)
        mh.update_batch(sorted(_shingles(text, shingle)))
        if any(mh.jaccard(kept[c]) >= threshold for c in lsh.query(mh)):
            keep.append(False)
            continue
        key = str(i)
        lsh.insert(key, mh)
        kept[key] = mh
        keep.append(True)
    return keep


def dedup(
    df: pl.DataFrame,
    keys: Sequence[str],
    near_dup_fields: Sequence[str] = (),
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle: int = 3,
    min_words: int = 8,
) -> DedupResult:
    """Drop exact duplicates on the normalised ``keys`` (all columns when empty),
    then near-duplicates of the normalised, space-joined ``near_dup_fields`` text.

    Keeps the first row of each group, in the original order. Column names that
    do not exist raise ``KeyError`` (a bug in the caller, not user input).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    keys = list(keys) or list(df.columns)
    missing = [c for c in [*keys, *near_dup_fields] if c not in df.columns]
    if missing:
        raise KeyError(f"dedup: unknown column(s) {missing}; columns are {df.columns}")

    n0 = df.height
    out = _exact(df, keys) if keys and n0 else df
    exact_removed = n0 - out.height

    near_removed = 0
    if near_dup_fields and out.height:
        parts = [normalized(pl.col(c).cast(pl.String)) for c in near_dup_fields]
        texts = out.select(pl.concat_str(parts, separator=" ", ignore_nulls=True).alias("t"))["t"].to_list()
        mask = _near_keep_mask(texts, threshold, num_perm, shingle, min_words)
        near_removed = mask.count(False)
        if near_removed:
            out = out.filter(pl.Series(mask))
    return DedupResult(df=out, exact_duplicates=exact_removed, near_duplicates=near_removed)
