"""Validity and novelty of an open field's values (``report.json``: ``fields.<name>.open``).

An open field's value is *valid* when it lies in the record's reference set
(the field's ``reference_file``, chosen per record when the path is a
template), or, without a reference, when it passed the field's checks
(pattern, ``max_words``, reject list: every kept value did). A valid value is
*novel* when it is not among its record's seed values (the set the record's
parents select, when the seed file is a template): beyond what the model was
shown for that prompt. Counted over the values given (a run's kept records; a
benchmark's samples), nulls skipped.

Pure functions; imports neither torch nor polars.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from synthgen import diversity as dv
from synthgen.open_fields import ValueSets

__all__ = ["open_metrics"]


def open_metrics(values: Sequence[Any], seeds: ValueSets | None = None, reference: ValueSets | None = None,
                 rows: Sequence[Mapping[str, Any]] | None = None, checks_valid_rate: float | None = None) -> dict:
    """The ``open`` entry of a field: ``validity`` (``reference`` or ``checks``), ``n`` (non-null values),
    ``valid``, ``valid_rate`` (with a reference: valid / n; else ``checks_valid_rate``, the samples that
    passed the checks / samples drawn), ``unique_valid``, ``valid_entropy_bits``, ``seed_values``
    (distinct seeds, all sets together), ``seeds_reached`` (distinct valid values that are a seed of
    their record), ``novel_valid`` (distinct valid values that are not a seed of their record, in at
    least one record), ``novel_share`` (novel / unique valid) and ``novel_value_share`` (valid values
    that are novel / valid values); the novelty keys are None without seeds. ``rows[k]`` holds value
    ``k``'s parent values (those of conditional seed or reference sets)."""
    conditional = [vs.key for vs in (seeds, reference) if vs is not None and vs.parents]
    if conditional and (rows is None or len(rows) != len(values)):
        raise ValueError(f"{conditional[0]}: a conditional value set needs one row of parent values per value")
    n = 0
    valid: Counter = Counter()
    novel: Counter = Counter()
    reached: set[str] = set()
    for k, value in enumerate(values):
        if value is None:
            continue
        n += 1
        text, row = str(value), rows[k] if rows is not None else {}
        if reference is not None and text not in reference.for_record(row):
            continue
        valid[text] += 1
        if seeds is not None:
            if text in seeds.for_record(row):
                reached.add(text)
            else:
                novel[text] += 1
    valid_n = sum(valid.values())
    out: dict[str, Any] = {
        "validity": "reference" if reference is not None else "checks",
        "n": n,
        "valid": valid_n,
        "valid_rate": (valid_n / n if n else None) if reference is not None else checks_valid_rate,
        "unique_valid": len(valid),
        "valid_entropy_bits": dv.entropy_bits(valid) if valid else None,
        **dict.fromkeys(("seed_values", "seeds_reached", "novel_valid", "novel_share", "novel_value_share")),
    }
    if seeds is not None:
        out.update(seed_values=len(seeds.union), seeds_reached=len(reached), novel_valid=len(novel),
                   novel_share=len(novel) / len(valid) if valid else None,
                   novel_value_share=sum(novel.values()) / valid_n if valid_n else None)
    return out
