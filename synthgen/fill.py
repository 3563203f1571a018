"""Filling fields: how one field's values are drawn for a batch of records.

Column-wise: every field is filled for the whole batch before the next field,
in the recipe's dependency order, each prompt rendered from the record so far.

* ``choice`` / ``integer`` (a closed value set, :attr:`FieldSpec.closed_values`):
  the engine scores every option after the prompt and a value is drawn exactly
  from the renormalised distribution, so no invalid value can appear;
* ``text``, ``open`` (and integer ranges too wide to score): sampled, validated
  (:meth:`FieldSpec.parse_value`, then the field's checks against the record,
  :mod:`synthgen.checks`) and retried; records that still fail die and are
  counted. A ``reply_prefix`` is rendered from the record and given to the
  engine as the start of the reply; the value is the prefix followed by the
  model's continuation (an empty continuation is invalid);
* ``sample``: drawn from the recipe's own distribution, without the model.

A conditional field (a templated ``options_file``) draws over the record's own
set (:meth:`FieldSpec.options_for`): a choice field scores exactly that set after
its prompt, a sample field draws from it by its weights.

Every random choice for record ``i`` and field ``f`` comes from
:mod:`synthgen.seeding` (``record_rng(seed, i, f)``; text attempts:
``attempt_seed(seed, i, f, attempt)``), so a record depends neither on the
batch it is made in nor on the other records.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from synthgen.diversity import softmax
from synthgen.engines.base import Engine
from synthgen.fields import FieldSpec
from synthgen.recipe import Recipe
from synthgen.seeding import attempt_seed, record_rng

__all__ = ["FieldFiller", "FieldStats", "FieldTiming", "FilledRecords", "make_records", "peak_rss_mib"]


def peak_rss_mib() -> float:
    """This process's peak resident memory so far in MiB (0.0 where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


@dataclass
class FieldStats:
    """Per-field counters of a run: samples drawn (retries included), valid values, and per check
    of a text field (:attr:`synthgen.checks.TextChecks.names`) the samples that passed it."""

    drawn: int = 0
    valid: int = 0
    passed: dict[str, int] = field(default_factory=dict)

    def add(self, other: FieldStats) -> None:
        self.drawn += other.drawn
        self.valid += other.valid
        for name, count in other.passed.items():
            self.passed[name] = self.passed.get(name, 0) + count


@dataclass
class FieldTiming:
    """Where a field's time went in one process (``report.json`` ``timing.fields.<name>``):
    wall seconds, distinct prompts scored, the options forwarded after them and the tokens
    that took (prompts and options; 0 for an engine that does not count them), new tokens
    sampled, samples drawn and how many of them were retries, and how far filling the field
    raised the process's peak memory (``peak_rss_rise_mib``, summed over the batches; the
    fields' rises add up to the growth of the peak while records were made, so the field with
    the largest one sets the run's memory; 0 where the platform does not report it)."""

    seconds: float = 0.0
    prompts_scored: int = 0
    options_scored: int = 0
    tokens_scored: int = 0
    tokens_generated: int = 0
    samples: int = 0
    retries: int = 0
    peak_rss_rise_mib: float = 0.0

    def add(self, other: FieldTiming) -> None:
        for key, value in vars(other).items():
            setattr(self, key, getattr(self, key) + value)


class FieldFiller:
    """Fills one field for a batch of records with one engine (None when no field uses the model).

    A choice field's distribution depends only on its rendered prompt (and, for a
    conditional field, the record's option set), and column-wise many records
    share a prompt, so distributions are kept in an LRU cache of ``cache_size``
    prompts (0 = score every record, the naive loop); the records are the same
    either way. The prompts a batch still needs are scored in one
    ``engine.score_many`` call (packed into shared forward passes by the local
    engine). ``score_calls`` counts the prompts scored, ``timing`` holds a
    :class:`FieldTiming` per field filled, and ``on_field(name)``, when given, is
    called as each field starts.
    """

    def __init__(self, engine: Engine | None, cache_size: int = 4096,
                 on_field: Callable[[str], None] | None = None):
        self.engine = engine
        self.cache_size = cache_size
        self._scores: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.score_calls = 0
        self.timing: dict[str, FieldTiming] = {}
        self.on_field = on_field

    def _key(self, spec: FieldSpec, prompt: str, options: Sequence[str]) -> tuple:
        return (spec.name, prompt, tuple(options)) if spec.is_conditional else (spec.name, prompt)

    def distributions(self, spec: FieldSpec, requests: Sequence[tuple[str, Sequence[str]]]) -> list[np.ndarray]:
        """The model's probabilities of each request's options after its prompt, renormalised over them.

        Prompts not in the cache are scored in one ``score_many`` call (each distinct one once,
        unless the cache is off)."""
        keys = [self._key(spec, prompt, options) for prompt, options in requests]
        known: dict[tuple, np.ndarray] = {}
        for key in keys:
            if key in self._scores and key not in known:
                self._scores.move_to_end(key)
                known[key] = self._scores[key]
        if self.cache_size <= 0:  # no cache: every request is scored
            todo = list(range(len(keys)))
        else:  # each missing prompt once (its first request)
            firsts = {key: k for k, key in reversed(list(enumerate(keys))) if key not in known}
            todo = sorted(firsts.values())
        fresh: dict[int, np.ndarray] = {}
        if todo:
            batch = [(requests[k][0], list(requests[k][1])) for k in todo]
            score_many = getattr(self.engine, "score_many", None)
            scored = self._counter("tokens_scored")
            scores = score_many(batch, use_adapter=spec.use_adapter) if score_many else \
                [self.engine.score(p, o, use_adapter=spec.use_adapter) for p, o in batch]
            self.score_calls += len(todo)
            timing = self.timing.setdefault(spec.name, FieldTiming())
            timing.prompts_scored += len(todo)
            timing.options_scored += sum(len(o) for _, o in batch)
            timing.tokens_scored += self._counter("tokens_scored") - scored
            for k, values in zip(todo, scores):
                fresh[k] = known[keys[k]] = softmax(values)
                self._remember(keys[k], fresh[k])
        return [fresh[k] if k in fresh else known[key] for k, key in enumerate(keys)]

    def _remember(self, key: tuple, probs: np.ndarray) -> None:
        if self.cache_size > 0:
            self._scores[key] = probs
            self._scores.move_to_end(key)
            if len(self._scores) > self.cache_size:
                self._scores.popitem(last=False)

    def distribution(self, spec: FieldSpec, prompt: str, options: Sequence[str]) -> np.ndarray:
        """The model's probabilities of ``options`` after ``prompt``, renormalised over them."""
        return self.distributions(spec, [(prompt, options)])[0]

    def fill(self, spec: FieldSpec, records: list[dict], indices: Sequence[int],
             seed: int, failures: dict[str, list[int]] | None = None) -> tuple[list[bool], list[int]]:
        """Set ``record[spec.name]`` for each record (``indices[k]`` is record ``k``'s index in the run).

        Returns which records got a valid value and how many samples each one drew. A text field
        with checks sets ``failures[check][k]``: how many of record ``k``'s samples failed that check.
        """
        if self.on_field:
            self.on_field(spec.name)
        start, tokens, peak = time.perf_counter(), self._tokens(), peak_rss_mib()
        ok, drawn = self._fill(spec, records, indices, seed, failures)
        timing = self.timing.setdefault(spec.name, FieldTiming())
        timing.add(FieldTiming(seconds=time.perf_counter() - start, tokens_generated=self._tokens() - tokens,
                               samples=sum(drawn), retries=sum(drawn) - sum(1 for d in drawn if d),
                               peak_rss_rise_mib=peak_rss_mib() - peak))
        return ok, drawn

    def _tokens(self) -> int:
        return self._counter("tokens_generated")

    def _counter(self, name: str) -> int:
        """The engine's running count ``name`` (0 for an engine without it)."""
        value = getattr(self.engine, name, 0)
        return value if isinstance(value, int) else 0

    def _fill(self, spec: FieldSpec, records: list[dict], indices: Sequence[int],
              seed: int, failures: dict[str, list[int]] | None) -> tuple[list[bool], list[int]]:
        if spec.kind == "sample":
            for rec, index in zip(records, indices):
                rec[spec.name] = spec.draw(record_rng(seed, index, spec.name), rec)
            return [True] * len(records), [1] * len(records)
        closed = spec.closed_values
        if closed is not None:
            sets = [spec.options_for(rec)[0] if spec.is_conditional else closed for rec in records]
            probs = self.distributions(spec, [(spec.template.render(rec), options)
                                              for rec, options in zip(records, sets)])
            for rec, index, options, p in zip(records, indices, sets, probs):
                value = options[record_rng(seed, index, spec.name).choice(len(options), p=p)]
                rec[spec.name] = int(value) if spec.kind == "integer" else value
            return [True] * len(records), [1] * len(records)
        return self._sample_and_validate(spec, records, indices, seed, failures)

    def _sample_and_validate(self, spec: FieldSpec, records: list[dict], indices: Sequence[int],
                             seed: int, failures: dict[str, list[int]] | None = None) -> tuple[list[bool], list[int]]:
        """Sample a reply per record, keep the valid ones, and retry the rest up to ``spec.retries`` times."""
        ok, drawn = [False] * len(records), [0] * len(records)
        fails = {name: [0] * len(records) for name in (spec.checks.names if spec.checks else ())}
        if failures is not None:
            failures.update(fails)
        prefixes = [spec.reply_prefix.render(rec) for rec in records] if spec.reply_prefix else None

        def accept(i: int, text: str) -> bool:
            continued = not prefixes or bool(text.strip())  # a prefix alone is no reply
            text = prefixes[i] + text if prefixes and continued else text
            text = " ".join(text.split()) if spec.kind == "text" else text
            value = spec.parse_value(text) if continued else None
            drawn[i] += 1
            for name in spec.checks.failed(text, records[i]) if spec.checks else ():
                fails[name][i] += 1
                value = None
            if value is not None:
                records[i][spec.name] = value
                ok[i] = True
            return value is not None

        run = getattr(self.engine, "generate_with_retries", None) or \
            (lambda *a, **k: Engine.generate_with_retries(self.engine, *a, **k))
        run([spec.template.render(rec) for rec in records],
            lambda i, attempt: attempt_seed(seed, indices[i], spec.name, attempt), accept, spec.retries + 1,
            prefixes=prefixes, temperature=spec.temperature, top_p=spec.top_p, max_new_tokens=spec.max_tokens,
            stop=list(spec.stop) or None, use_adapter=spec.use_adapter,
            **({"min_p": spec.min_p} if spec.min_p else {}))
        return ok, drawn


@dataclass
class FilledRecords:
    """The outcome for a list of run indices, one entry per index, dead records included.

    ``values[f][k]`` is record ``k``'s value of field ``f`` (None where the
    record died at or before ``f``), ``drawn[f][k]`` the samples it drew for
    ``f``, ``failures[f][c][k]`` how many of them failed check ``c`` (text
    fields with checks only), and ``alive[k]`` whether every field got a valid value.
    """

    indices: list[int]
    alive: list[bool]
    values: dict[str, list]
    drawn: dict[str, list[int]]
    failures: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    @property
    def records(self) -> list[dict]:
        """The valid records, in the order of ``indices``."""
        return [{name: column[k] for name, column in self.values.items()}
                for k, good in enumerate(self.alive) if good]

    @property
    def invalid(self) -> int:
        """How many records died (a field without a valid value after its retries)."""
        return self.alive.count(False)

    @property
    def stats(self) -> dict[str, FieldStats]:
        return {name: FieldStats(sum(self.drawn[name]), sum(v is not None for v in column),
                                 {c: sum(self.drawn[name]) - sum(n) for c, n in self.failures.get(name, {}).items()})
                for name, column in self.values.items()}


def make_records(recipe: Recipe, filler: FieldFiller, indices: Sequence[int]) -> FilledRecords:
    """Make the records with these run indices, column-wise, in the recipe's field order."""
    indices = list(indices)
    records: list[dict] = [{} for _ in indices]
    drawn = {name: [0] * len(indices) for name in recipe.order}
    failures: dict[str, dict[str, list[int]]] = {}
    alive = list(range(len(indices)))
    for name in recipe.order:
        fails: dict[str, list[int]] = {}
        ok, counts = filler.fill(recipe.fields[name], [records[k] for k in alive], [indices[k] for k in alive],
                                 recipe.seed, fails)
        for k, count in zip(alive, counts):
            drawn[name][k] = count
        for check, column in fails.items():
            failures.setdefault(name, {})[check] = [0] * len(indices)
            for k, count in zip(alive, column):
                failures[name][check][k] = count
        alive = [k for k, good in zip(alive, ok) if good]
    living = set(alive)
    values = {name: [rec.get(name) for rec in records] for name in recipe.order}
    return FilledRecords(indices, [k in living for k in range(len(indices))], values, drawn, failures)
