"""Validity and novelty of an open field's values (``report.json``: ``fields.<name>.open``).

An open field's value is *valid* when it lies in the record's reference set
(the field's ``reference_file``, chosen per record when the path is a
template), or, without a reference, when it passed the field's checks
(pattern, ``max_words``, reject list: every kept value did). A valid value is
*novel* when it is not among the field's seed values (any record's seeds: a
seed of one country is not novel in another). Counted over the values given
(a run's kept records; a benchmark's samples), nulls skipped.

Pure functions; imports neither torch nor polars.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from synthgen import diversity as dv
from synthgen.open_fields import ValueSets

__all__ = ["open_metrics"]


def open_metrics(values: Sequence[Any], seeds: Iterable[str] | None = None, reference: ValueSets | None = None,
                 rows: Sequence[Mapping[str, Any]] | None = None, checks_valid_rate: float | None = None) -> dict:
    """The ``open`` entry of a field: ``validity`` (``reference`` or ``checks``), ``n`` (non-null values),
    ``valid``, ``valid_rate`` (with a reference: valid / n; else ``checks_valid_rate``, the samples that
    passed the checks / samples drawn), ``unique_valid``, ``valid_entropy_bits``, ``seed_values``,
    ``seeds_reached`` (unique valid values that are seeds), ``novel_valid`` (unique valid values that are
    not), ``novel_share`` (novel / unique valid) and ``novel_value_share`` (valid values that are novel /
    valid values); the novelty keys are None without seeds. ``rows[k]`` holds value ``k``'s parents
    (the reference set's ``parents``), needed when the reference is conditional."""
    if reference is not None and reference.parents and (rows is None or len(rows) != len(values)):
        raise ValueError(f"{reference.key}: a conditional reference needs one row of parent values per value")
    n = valid_n = 0
    valid: Counter = Counter()
    for k, value in enumerate(values):
        if value is None:
            continue
        n += 1
        text = str(value)
        if reference is None or text in reference.for_record(rows[k] if reference.parents else {}):
            valid[text] += 1
            valid_n += 1
    seed_set = frozenset(seeds) if seeds is not None else None
    out: dict[str, Any] = {
        "validity": "reference" if reference is not None else "checks",
        "n": n,
        "valid": valid_n,
        "valid_rate": (valid_n / n if n else None) if reference is not None else checks_valid_rate,
        "unique_valid": len(valid),
        "valid_entropy_bits": dv.entropy_bits(valid) if valid else None,
        **dict.fromkeys(("seed_values", "seeds_reached", "novel_valid", "novel_share", "novel_value_share")),
    }
    if seed_set is not None:
        novel = [v for v in valid if v not in seed_set]
        out.update(seed_values=len(seed_set), seeds_reached=len(valid) - len(novel), novel_valid=len(novel),
                   novel_share=len(novel) / len(valid) if valid else None,
                   novel_value_share=sum(valid[v] for v in novel) / valid_n if valid_n else None)
    return out
