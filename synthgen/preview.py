"""Look at a recipe before a run: ``synthgen validate`` (no model) and ``synthgen preview`` (a few records).

:func:`preview` makes records ``0 .. n-1`` with the same seeding and filling as
``synthgen generate`` (:func:`synthgen.fill.make_records`), so record ``i`` of a
preview is record ``i`` of a full run with the same seed, and adds, per
choice/integer field, the distribution the model gives over the field's values
for the previewed prompts: a field whose distribution is collapsed
(:meth:`FieldDistribution.collapsed`) is flagged before a long run.
:func:`collapse_check` is the same measurement for ``synthgen generate``, which
warns about collapsed fields before it generates.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from synthgen.checks import ancestors
from synthgen.diversity import distribution_entropy, distribution_kl
from synthgen.errors import SynthgenError
from synthgen.fill import FieldFiller, make_records
from synthgen.recipe import Recipe, load_recipe

if TYPE_CHECKING:
    from synthgen.engines.base import Engine

#: A field is collapsed when the normalised entropy (H / log K) of its distribution
#: falls below this fraction of its target's (1 for uniform weights: a diffuse field is
#: near 1) ...
COLLAPSE_NORMALIZED_ENTROPY = 0.6
#: ... or when its KL to the target weights exceeds this many nats.
COLLAPSE_KL = 0.5
CHECK_RECORDS = 8  # records synthgen generate previews for its collapse check
TOP_K = 5


# ---------------------------------------------------------------- validate
def describe_values(recipe: Recipe, name: str) -> str:
    """What a field draws from: its option count, its integer range, open values, or free text."""
    spec = recipe.fields[name]
    if spec.options is not None:
        weighted = ", weighted" if spec.weights is not None else ""
        return f"{len(spec.options)} options{weighted}"
    if spec.min is not None:
        return f"integers {spec.min}..{spec.max}"
    if spec.open is not None:
        seeds = spec.open.seeds
        return f"open, {len(seeds.union)} seed values" if seeds is not None else "open"
    return "free text"


def validate(path: str | Path, trust_paths: bool = False) -> list[str]:
    """Load and check a recipe without a model; return a one-screen summary of its fields.

    Raises ConfigError (one line naming the file and key) on any mistake, exactly
    as ``synthgen generate`` would before generating.
    """
    recipe = load_recipe(path, trust_paths=trust_paths)
    rows = [("field", "kind", "values", "depends on", "filled with")]
    for name in recipe.order:
        spec = recipe.fields[name]
        parents = ", ".join(n for n in recipe.order if n in spec.depends_on) or "-"
        how = "no model" if not spec.uses_model else ("adapter" if spec.use_adapter else "base model")
        rows.append((name, spec.kind, describe_values(recipe, name), parents, how))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"{recipe.path}: recipe '{recipe.name}' is valid: {len(recipe.fields)} fields, "
             f"{recipe.count} records by default, seed {recipe.seed}"]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.append(f"fill order: {' -> '.join(recipe.order)}")
    return lines


# ----------------------------------------------------------------- preview
@dataclass
class FieldDistribution:
    """The model's distribution over a closed field's values, averaged over the previewed prompts."""

    name: str
    prompts: int
    k: int
    top: list[tuple[str, float]]
    normalized_entropy: float | None
    kl_to_target: float
    target_normalized_entropy: float = 1.0  # of the weights (1: uniform)

    @property
    def collapsed(self) -> bool:
        """Normalised entropy below :data:`COLLAPSE_NORMALIZED_ENTROPY` × the target's, or KL to
        the target above :data:`COLLAPSE_KL` nats: the one definition for preview and generate."""
        low = (self.normalized_entropy is not None
               and self.normalized_entropy < COLLAPSE_NORMALIZED_ENTROPY * self.target_normalized_entropy)
        return low or self.kl_to_target > COLLAPSE_KL

    def warning(self) -> str:
        """One line: the figures, what they mean, and the fix."""
        entropy = "-" if self.normalized_entropy is None else f"{self.normalized_entropy:.2f}"
        return (f"warning: {self.name} looks collapsed (normalised entropy {entropy}, KL to its weights "
                f"{self.kl_to_target:.2f} nats over {self.prompts} prompts; collapsed below "
                f"{COLLAPSE_NORMALIZED_ENTROPY} of the target's entropy or above {COLLAPSE_KL} nats): its values "
                "will repeat; generate with --tune (or train an adapter: synthgen train --from-recipe)")


@dataclass
class Preview:
    """Records ``0 .. n-1`` (a dead record keeps the values it got before failing, the rest None),
    which of them are valid, the shown fields, and the closed fields' distributions."""

    recipe: Recipe
    records: list[dict]
    alive: list[bool]
    fields: tuple[str, ...]
    distributions: dict[str, FieldDistribution] = field(default_factory=dict)
    valid_rates: dict[str, float] = field(default_factory=dict)


def preview(recipe: Recipe, n: int = 5, engine: Engine | None = None, fields: list[str] | None = None) -> Preview:
    """Make records ``0 .. n-1`` of ``recipe`` and the model's distributions over its closed fields.

    Args:
        recipe: The recipe (its seed, model and adapter are used).
        n: How many records (at least 1).
        engine: A loaded engine to use; None builds the recipe's (only when a field needs the model).
        fields: Show only these fields; they and the fields they depend on are filled, the rest skipped.
    """
    if n < 1:
        raise SynthgenError(f"preview needs at least one record, got {n}")
    unknown = [f for f in fields or () if f not in recipe.fields]
    if unknown:
        raise SynthgenError(f"{recipe.path}: --fields: unknown field(s) {', '.join(unknown)}; "
                            f"the recipe has: {', '.join(recipe.order)}")
    if fields:
        needed = set(fields).union(*(ancestors(recipe.fields, f) for f in fields))
        order = tuple(n for n in recipe.order if n in needed)
    else:
        order = recipe.order
    partial = dataclasses.replace(recipe, order=order)
    if engine is None and any(recipe.fields[f].uses_model for f in order):
        from synthgen.executors import EngineSpec

        engine = EngineSpec.for_recipe(recipe).build()
    filler = FieldFiller(engine)
    filled = make_records(partial, filler, range(n))
    records = [{name: filled.values[name][k] for name in order} for k in range(n)]
    shown = tuple(fields) if fields else order
    result = Preview(recipe, records, list(filled.alive), shown)
    for name in order:
        spec = recipe.fields[name]
        drawn = sum(filled.drawn[name])
        if spec.uses_model and spec.closed_values is None and drawn:  # sampled and validated
            valid = sum(1 for k in range(n) if records[k][name] is not None)
            result.valid_rates[name] = valid / drawn
        if spec.uses_model and spec.closed_values is not None:
            result.distributions[name] = _distribution(recipe, name, records, filler)
    return result


def _distribution(recipe: Recipe, name: str, records: list[dict], filler: FieldFiller) -> FieldDistribution:
    """Mean of the previewed records' distributions over the field's values.

    A plain field's normalised entropy is that of the mean distribution (H / log K);
    a conditional field's (whose records draw over sets of their own) is the mean of
    each record's normalised entropy over its own set, and its KL the mean KL to its
    own set's weights.
    """
    spec = recipe.fields[name]
    before = recipe.order[: recipe.order.index(name)]
    mass: dict[str, float] = {}
    prompts, entropies, kls, targets = set(), [], [], []
    live = [rec for rec in records if rec[name] is not None]
    for rec in live:
        upstream = {f: rec[f] for f in before if f in rec}  # a preview of some fields fills only their ancestors
        if spec.is_conditional:
            options, weights = spec.options_for(upstream)
        else:
            options, weights = spec.closed_values, spec.weights
        prompt = spec.template.render(upstream)
        prompts.add(prompt)
        probs = filler.distribution(spec, prompt, options)
        for option, p in zip(options, probs):
            mass[option] = mass.get(option, 0.0) + float(p) / len(live)
        target = np.asarray(weights, dtype=float) if weights is not None else np.full(len(options), 1 / len(options))
        entropies.append(distribution_entropy(probs) / math.log(len(options)) if len(options) > 1 else None)
        targets.append(distribution_entropy(target) / math.log(len(options)) if len(options) > 1 else None)
        kls.append(distribution_kl(probs, target))
    values = spec.closed_values
    if not spec.is_conditional:  # the marginal over the shared option set
        mean = np.array([mass.get(v, 0.0) for v in values])
        target = np.asarray(spec.weights, dtype=float) if spec.weights is not None else np.full(len(values),
                                                                                             1 / len(values))
        entropy = distribution_entropy(mean) / math.log(len(values)) if len(values) > 1 else None
        ideal = distribution_entropy(target) / math.log(len(values)) if len(values) > 1 else None
        kl = distribution_kl(mean, target)
    else:
        known = [e for e in entropies if e is not None]
        entropy = float(np.mean(known)) if known else None
        ideal = float(np.mean([t for t in targets if t is not None])) if known else None
        kl = float(np.mean(kls))
    top = sorted(mass.items(), key=lambda item: (-item[1], item[0]))[:TOP_K]
    return FieldDistribution(name=name, prompts=len(prompts), k=len(values), top=top,
                             normalized_entropy=entropy, kl_to_target=kl,
                             target_normalized_entropy=1.0 if ideal is None else ideal)


def collapse_check(recipe: Recipe, engine: Engine | None, n: int = CHECK_RECORDS) -> list[FieldDistribution]:
    """The collapsed fields among the choice/integer fields the model fills, measured as
    :func:`preview` measures them on records ``0 .. n-1`` (fields whose prompt reads a
    free-text field are left out: checking them would write text first)."""
    closed = [name for name in recipe.order if recipe.fields[name].uses_model
              and recipe.fields[name].closed_values is not None
              and not any(recipe.fields[a].closed_values is None and recipe.fields[a].uses_model
                          for a in ancestors(recipe.fields, name))]
    if not closed or engine is None:
        return []
    result = preview(recipe, n, engine=engine, fields=closed)
    return [d for d in result.distributions.values() if d.collapsed]


# --------------------------------------------------------------- formatting
def format_preview(result: Preview, width: int = 100) -> list[str]:
    """The preview as terminal lines: each record (long text wrapped), then the distributions."""
    label = max(len(name) for name in result.fields)
    lines = []
    for k, (rec, ok) in enumerate(zip(result.records, result.alive)):
        lines.append(f"record {k}" + ("" if ok else "  (invalid: dropped in a full run)"))
        for name in result.fields:
            value = "-" if rec[name] is None else str(rec[name])
            wrapped = textwrap.wrap(value, width - label - 4) or [""]
            lines.append(f"  {name.ljust(label)}  {wrapped[0]}")
            lines += [f"  {' ' * label}  {more}" for more in wrapped[1:]]
    for dist in result.distributions.values():
        if dist.name not in result.fields:
            continue
        top = ", ".join(f"{value} {share:.0%}" for value, share in dist.top)
        entropy = "-" if dist.normalized_entropy is None else f"{dist.normalized_entropy:.2f}"
        lines.append(f"{dist.name}: {dist.k} values, {dist.prompts} distinct prompts, normalised entropy "
                     f"{entropy}, KL to target {dist.kl_to_target:.2f} nats; top: {top}")
        if dist.collapsed:
            lines.append(f"  {dist.warning()}")
    for name, rate in result.valid_rates.items():
        if name in result.fields:
            lines.append(f"{name}: {rate:.0%} of samples valid (retries included)")
    return lines


def write_preview(result: Preview, out_dir: Path) -> list[Path]:
    """Write the previewed records (``preview.jsonl``, index order, dead ones flagged) and the
    distributions (``preview.json``) into ``out_dir``."""
    import json

    from synthgen.io import atomic_write, writable_dir

    out_dir = writable_dir(Path(out_dir), "preview directory")
    lines = [json.dumps({"_index": k, "_valid": ok, **rec}, ensure_ascii=False)
             for k, (rec, ok) in enumerate(zip(result.records, result.alive))]
    records = atomic_write(out_dir / "preview.jsonl", ("\n".join(lines) + "\n").encode("utf-8"))
    summary = {"recipe": str(result.recipe.path), "seed": result.recipe.seed, "n": len(result.records),
               "distributions": {n: {**dataclasses.asdict(d), "collapsed": d.collapsed}
                                 for n, d in result.distributions.items()},
               "valid_rates": result.valid_rates}
    stats = atomic_write(out_dir / "preview.json", (json.dumps(summary, indent=2, ensure_ascii=False) + "\n").encode())
    return [records, stats]
