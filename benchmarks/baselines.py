"""Prompting baselines: what a user gets from a base model without synthgen.

Each attribute is generated freely with the recipe's own template, fields in the
recipe's order, each prompt rendered from the record so far. A reply is
**valid** when, after :func:`normalise`, it equals one of the field's options
(case-insensitively, counted under the option's own spelling), or, for an
integer field, it is an integer in [min, max] (:class:`Validator`). An invalid
reply stays in the record (it conditions the next fields, as it would for a
user) but counts against the valid rate. :class:`Extractor` is the lenient
reading (a supplementary metric). "List then pick" (verbalized sampling) asks
for candidates with probabilities (:func:`list_prompt`) and draws one with
them (:func:`parse_candidates`, :func:`pick_candidate`).

Engine seeds come from :mod:`synthgen.seeding`, one per record and field, so a
record depends only on its index.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl

from synthgen.seeding import attempt_seed, record_rng
from synthgen.shards import INDEX, field_dtype

FREE_MAX_TOKENS = 16  # free replies: a name, "City, Country", an occupation, a year
LIST_MAX_TOKENS = 48
LIST_SIZE = 5
MIN_P = 0.1

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
    """Lenient reading: the option that occurs first in the reply as a whole phrase, case-insensitive
    (longest option at the same position); an integer field: the first integer in range. What a user
    who regex-searches replies for known values would keep."""

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


# ------------------------------------------------------------------ records
def _shown(reply: str) -> str:
    return " ".join(reply.split())[:100]


def invalid_examples(replies: dict[str, list[str]], list_pick: bool, k: int = 5) -> dict[str, list[str]]:
    """Up to ``k`` distinct invalid replies per field, in record order (free replies collapsed and cut)."""
    return {f: list(dict.fromkeys(r if list_pick else _shown(r) for r in rs))[:k] for f, rs in replies.items()}


def list_parse_counts(replies: Iterable[str]) -> dict[str, int]:
    """How many list replies there were, how many had a candidate, how many a stated probability."""
    parsed = [parse_candidates(r) for r in replies]
    return {"replies": len(parsed), "with_candidates": sum(bool(c) for c in parsed),
            "with_probabilities": sum(any(p is not None for _, p in c) for c in parsed)}


def prompt_records(recipe, engine, indices: Sequence[int], seed: int, *, temperature: float = 1.0,
                   min_p: float | None = None, list_pick: bool = False,
                   personas: Sequence[str] | None = None) -> list[dict]:
    """Records ``indices`` of a prompting baseline, one row per record.

    Row keys: ``_index``, ``_persona`` (a persona drawn per record, prefixed to
    every prompt as "You are {persona}. ", or None), and per field ``f``: ``f``
    (the valid value or None), ``_lenient_f`` (the :class:`Extractor`'s value)
    and ``_reply_f`` (the raw reply). The base model answers (no adapter),
    stopping at a newline (free replies) or after ``LIST_MAX_TOKENS`` (lists).
    """
    rows = [{INDEX: i, "_persona": None} for i in indices]
    context: list[dict] = [{} for _ in indices]  # what the next prompts see: valid values, else the shown reply
    if personas:
        for row, i in zip(rows, indices):
            row["_persona"] = personas[int(record_rng(seed, i, "_persona").integers(len(personas)))]
    for name in recipe.order:
        spec = recipe.fields[name]
        validate, extract = Validator(spec), Extractor(spec)
        prompts = []
        for row, ctx in zip(rows, context):
            task = spec.template.render(ctx)
            task = f"You are {row['_persona']}. {task}" if row["_persona"] else task
            prompts.append(list_prompt(task) if list_pick else task)
        outs = engine.generate(prompts, n=1, seed=[attempt_seed(seed, i, name, 0) for i in indices],
                               temperature=temperature, top_p=1.0, min_p=min_p, use_adapter=False,
                               max_new_tokens=LIST_MAX_TOKENS if list_pick else FREE_MAX_TOKENS,
                               stop=None if list_pick else ["\n"])
        for row, ctx, i, (reply,) in zip(rows, context, indices, outs):
            text = pick_candidate(parse_candidates(reply), record_rng(seed, i, name)) if list_pick else reply
            value = validate(text) if text is not None else None
            row[name], row[f"_reply_{name}"] = value, reply
            row[f"_lenient_{name}"] = extract(text) if text is not None else None
            ctx[name] = value if value is not None else (text if list_pick and text is not None else _shown(reply))
    return rows


def prompt_frame(recipe, engine, indices: Sequence[int], seed: int, **kwargs) -> pl.DataFrame:
    """:func:`prompt_records` as a frame with fixed column types (a shard of a prompting run)."""
    schema = {INDEX: pl.Int64(), "_persona": pl.String()}
    for f in recipe.order:
        dtype = field_dtype(recipe.fields[f])
        schema |= {f: dtype, f"_lenient_{f}": dtype, f"_reply_{f}": pl.String()}
    return pl.DataFrame(prompt_records(recipe, engine, indices, seed, **kwargs), schema=schema)
