"""Training tasks built from a recipe (``synthgen train --from-recipe``).

A recipe-tuned adapter learns the exact prompts ``synthgen generate`` will ask.
For every field whose valid values are a closed set (a ``choice`` field's
options, an ``integer`` field's range), a task is made per distinct prompt:

* the prompt is the field's template rendered with upstream values drawn *as
  the recipe asks for them*: each earlier field drawn from its target
  distribution (the recipe's weights, else uniform over its options or range),
  so the adapter sees the conditioning it will meet at generation time;
* the targets are the field's options, the weights the recipe's weights
  (uniform when it gives none), so weighted fields (gender 49/49/2, cities by
  population) are trained towards those weights. A conditional field (a
  templated ``options_file``) targets the set its drawn parents select, with
  that set's weights, so a task is made per distinct (prompt, set).

A field with no template variables has one prompt; one that reads earlier
fields gets up to ``prompts_per_field`` distinct renderings. Fields that read a
free-text field cannot be rendered without the model and are skipped (listed
in the result), as are ``text`` and ``sample`` fields themselves.

An ``open`` field with seed values is trained on them (:func:`open_field_tasks`):
the targets are the record's seeds, uniform, and its family is listed in
``open_families`` so that it stops at ``(1+gamma)`` times its optimum, as the
paper does for open sets: the adapter spreads over the seeds without learning
to say only them. An open upstream field is drawn from its seeds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from synthgen.checks import ancestors
from synthgen.recipe import Recipe
from synthgen.training.tasks import Task

log = logging.getLogger(__name__)


@dataclass
class RecipeTasks:
    """The tasks built from a recipe, and the fields left without tasks."""

    tasks: list[Task]
    skipped: dict[str, str]  # field -> why it has no task
    open_families: list[str] = field(default_factory=list)  # open fields trained on their seeds


def tasks_from_recipe(recipe: Recipe, prompts_per_field: int = 8, seed: int = 0,
                      every_condition: bool = False) -> RecipeTasks:
    """Tasks for every closed-set field of ``recipe`` (see the module docstring), and the
    fields that get none with the reason. With ``every_condition``, a conditional field
    also gets a task for every reachable condition (:func:`condition_records`)."""
    rng = np.random.default_rng(seed)
    tasks: list[Task] = []
    open_families: list[str] = []
    skipped: dict[str, str] = {}
    for name in recipe.order:
        spec = recipe.fields[name]
        values = spec.closed_values
        seeded = spec.open is not None and spec.open.seeds is not None
        if (spec.kind in ("text", "sample") or values is None or spec.template is None) and not seeded:
            skipped[name] = f"{spec.kind} field (no closed set of values to train towards)"
            continue
        upstream = [f for f in recipe.order if f in ancestors(recipe.fields, name)]
        free = [f for f in upstream if recipe.fields[f].kind == "text"
                or recipe.fields[f].open is not None and recipe.fields[f].open.seeds is None]
        if free:
            what = "free-text" if recipe.fields[free[0]].kind == "text" else "unseeded open"
            skipped[name] = f"its prompt reads the {what} field {free[0]!r}"
            continue
        if seeded:
            own = open_field_tasks(recipe, name, upstream, prompts_per_field, rng)
            tasks += own
            if own:
                open_families.append(name)
            else:
                skipped[name] = "no seed value passes its checks"
            continue
        prompts: list[tuple] = []  # (prompt, targets, weights)
        for _ in range(prompts_per_field * 8 if upstream else 1):
            record: dict = {}
            for dep in upstream:
                record[dep] = recipe.fields[dep].draw(rng, record)
            targets, weights = spec.options_for(record) if spec.is_conditional else (values, spec.weights)
            item = (spec.template.render(record), targets, weights)
            if item not in prompts:
                prompts.append(item)
            if len(prompts) == prompts_per_field:
                break
        if every_condition and spec.is_conditional:
            seen = set(prompts)
            for record in condition_records(recipe, name, upstream, rng):
                item = (spec.template.render(record), *spec.options_for(record))
                if item not in seen:
                    seen.add(item)
                    prompts.append(item)
        for i, (prompt, targets, weights) in enumerate(prompts):
            tasks.append(Task(id=f"{recipe.name}.{name}.{i}", family=name, prompt=prompt,
                              targets=targets, weights=weights or ()))
        log.info("recipe field %s: %d prompts x %d targets", name, len(prompts), len(values))
    return RecipeTasks(tasks, skipped, open_families)


def condition_records(recipe: Recipe, name: str, upstream: list[str], rng: np.random.Generator) -> list[dict]:
    """One record of upstream values per reachable condition of a conditional field: its
    option parents set to the condition's values, the other upstream fields drawn as the
    recipe draws them (after the parents they read)."""
    spec = recipe.fields[name]
    records = []
    for key in spec.option_sets:
        forced = dict(zip(spec.option_parents, key))
        record: dict = {}
        for dep in upstream:
            record[dep] = forced[dep] if dep in forced else recipe.fields[dep].draw(rng, record)
        records.append(record)
    return records


def open_field_tasks(recipe: Recipe, name: str, upstream: list[str], prompts_per_field: int,
                     rng: np.random.Generator) -> list[Task]:
    """Tasks of the open field ``name``: its prompt rendered with ``upstream`` drawn as the recipe
    draws them, up to ``prompts_per_field`` distinct prompts; targets the record's seed values
    that pass the field's checks, uniform."""
    spec = recipe.fields[name]
    items: list[tuple[str, tuple[str, ...]]] = []
    for _ in range(prompts_per_field * 8 if upstream else 1):
        record: dict = {}
        for dep in upstream:
            record[dep] = recipe.fields[dep].draw(rng, record)
        targets = tuple(v for v in spec.open.seeds.values_for(record) if spec.parse_value(v) is not None)
        item = (spec.template.render(record), targets)
        if targets and item not in items:
            items.append(item)
        if len(items) == prompts_per_field:
            break
    log.info("recipe field %s (open): %d prompts x about %d seed values", name, len(items),
             round(sum(len(t) for _, t in items) / max(len(items), 1)))
    return [Task(id=f"{recipe.name}.{name}.{i}", family=name, prompt=prompt, targets=targets)
            for i, (prompt, targets) in enumerate(items)]
