"""Executors: where the records are made.

The engine says *what* runs the model (transformers, vLLM); the executor says
*where* the column-wise job runs. Both make the same records for the same seed,
because every record's randomness derives from (run seed, record index, field)
(:mod:`synthgen.seeding`), and both write the same shards and resume the same
way (:mod:`synthgen.shards`).

* :class:`LocalExecutor` (``local``): batches of ``recipe.batch_size`` records,
  filled one after the other in this process with one engine (built from the
  :class:`EngineSpec` once and cached, or handed in already loaded); each batch
  is written as one shard, so an interruption loses at most one batch.
* :class:`RayExecutor` (``ray``): the records flow as a ``ray.data`` dataset of
  record indices; each field is one ``map_batches`` stage, over a pool of actors
  that each build an engine from the :class:`EngineSpec` (model loaded once per
  actor) for model fields, over plain tasks for ``sample`` fields. The driver
  streams the finished blocks into shards as they arrive.

Ray is an optional dependency (``pip install 'synthgen[ray]'``), imported only
when the Ray executor runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import polars as pl

from synthgen.adapters import resolve_adapter
from synthgen.engines import create_engine
from synthgen.errors import MissingDependencyError, SynthgenError
from synthgen.fill import FieldFiller, make_records
from synthgen.recipe import RayOptions, Recipe
from synthgen.shards import (
    ALIVE,
    INDEX,
    RunOutput,
    check_names,
    drawn_column,
    fail_column,
    field_dtype,
    merge_shards,
    pending_indices,
    shard_frame,
    write_shard,
)

if TYPE_CHECKING:
    from synthgen.engines.base import Engine

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None] | None
FieldProgress = Callable[[str], None] | None  # called with a field's name as it starts filling


# ---------------------------------------------------------------- engine spec
@dataclass
class EngineSpec:
    """How to build an engine where it will run: ``create_engine(name, model=, adapter=, **kwargs)``.

    ``model``: a registered name, directory or hub id (None = the default model);
    ``adapter``: a resolved adapter directory, or None for the base model.
    """

    name: str = "transformers"
    model: str | None = None
    adapter: str | None = None
    kwargs: dict = field(default_factory=dict)

    @classmethod
    def for_recipe(cls, recipe: Recipe, **kwargs) -> EngineSpec:
        """The recipe's engine, model and adapter (``None`` adapter = the shipped default)."""
        path = resolve_adapter(recipe.adapter or "default", model=recipe.model)
        return cls(recipe.engine, recipe.model, str(path) if path else None, kwargs)

    @classmethod
    def from_engine(cls, engine: Engine) -> EngineSpec:
        """The spec of a loaded engine: the same engine name, model and adapter."""
        return cls(engine.name, engine.model_name or None, engine.adapter_name)

    @property
    def model_name(self) -> str:
        from synthgen.store import DEFAULT_MODEL

        return str(self.model or DEFAULT_MODEL)

    def same_engine(self, other: EngineSpec) -> bool:
        """Whether both specs build the same engine (the default model named or not)."""
        return (self.name, self.model_name, self.adapter, self.kwargs) == \
            (other.name, other.model_name, other.adapter, other.kwargs)

    def prepare(self) -> None:
        """Fetch / check the model once in the driver, so actors neither race to pull
        it into the cache nor each fail on a bad ``--model`` deep inside Ray."""
        if self.name == "transformers":
            from synthgen.store import resolve

            resolve(self.model)

    def build(self) -> Engine:
        return create_engine(self.name, model=self.model, adapter=self.adapter or "none", **self.kwargs)


# ------------------------------------------------------------------- protocol
class Executor(Protocol):
    """Where a run's records are made.

    ``name`` is recorded in the run's fingerprint (a run is resumed with the
    executor that started it).
    """

    name: str

    def check(self) -> None:
        """Raise a SynthgenError if this executor cannot run here (e.g. a missing optional
        dependency); called before anything is written."""
        ...

    def run(self, recipe: Recipe, engine_spec: EngineSpec | None, shards_dir: Path, *, resume: bool,
            on_progress: Progress = None, on_field: FieldProgress = None) -> RunOutput:
        """Make records ``0 .. recipe.count-1`` and return them merged.

        Writes the records as shards into ``shards_dir`` as they are made (the
        format and the resume rule of :mod:`synthgen.shards`); with ``resume``,
        makes only the indices no shard holds yet. ``engine_spec`` is None when
        no field uses the model. ``on_progress(done, total)`` is called as
        records are finished, ``on_field(name)`` (where the executor knows) as a field starts.
        """
        ...


def get_executor(executor: str | Executor, recipe: Recipe) -> Executor:
    """An executor by name (options from the recipe), or the given executor object."""
    if not isinstance(executor, str):
        return executor
    if executor == "local":
        return LocalExecutor()
    if executor == "ray":
        return RayExecutor(recipe.ray)
    raise SynthgenError(f"unknown executor {executor!r}; expected one of: local, ray")


# ---------------------------------------------------------------------- local
class LocalExecutor:
    """Batches of ``recipe.batch_size`` records, one after the other, in this process.

    The engine is built from the run's :class:`EngineSpec` on first use and kept
    for later runs with the same spec. A caller that already holds a loaded engine
    hands it in, ``LocalExecutor(engine=loaded)``; :func:`synthgen.generation.generate`
    given such an executor and no spec runs with that engine and records its spec
    (:meth:`EngineSpec.from_engine`) in the run's fingerprint.
    """

    name = "local"

    def __init__(self, engine: Engine | None = None):
        self._engine = engine
        self._spec = EngineSpec.from_engine(engine) if engine is not None else None

    @property
    def engine(self) -> Engine | None:
        """The engine held (handed in or built by an earlier run), or None."""
        return self._engine

    def engine_for(self, spec: EngineSpec) -> Engine:
        """The engine ``spec`` describes: the held one if it matches, else a new one (then held)."""
        if self._spec is None or not self._spec.same_engine(spec):
            log.debug("loading %s engine: model %s, adapter %s", spec.name, spec.model_name, spec.adapter or "none")
            self._engine, self._spec = spec.build(), spec
        return self._engine

    def check(self) -> None:
        """The local executor runs anywhere."""

    def run(self, recipe: Recipe, engine_spec: EngineSpec | None, shards_dir: Path, *, resume: bool,
            on_progress: Progress = None, on_field: FieldProgress = None) -> RunOutput:
        """See :meth:`Executor.run`; one shard per batch of ``recipe.batch_size`` pending indices,
        and the per-field timing of the records made here."""
        n = recipe.count
        todo = pending_indices(shards_dir, n, resume)
        done = n - len(todo)
        if on_progress:
            on_progress(done, n)
        filler = FieldFiller(self.engine_for(engine_spec) if engine_spec is not None and todo else None,
                             on_field=on_field)
        for start in range(0, len(todo), recipe.batch_size):
            batch = todo[start : start + recipe.batch_size]
            write_shard(shards_dir, shard_frame(recipe, make_records(recipe, filler, batch)))
            done += len(batch)
            if on_progress:
                on_progress(done, n)
        output = merge_shards(recipe, shards_dir)
        output.field_timing = {name: vars(filler.timing[name]) for name in recipe.order if name in filler.timing}
        return output


# ------------------------------------------------------------------------ ray
def fill_batch(batch, recipe: Recipe, name: str, filler: FieldFiller):
    """One ``map_batches`` call: fill field ``name`` for the live rows of an arrow batch.

    Adds the field's column (null where a record is dead), ``_drawn_<name>``
    (samples drawn per record) and its checks' ``_fail_<name>_<check>`` counts,
    and marks records whose value failed as dead.
    """
    import pyarrow as pa

    rows = batch.to_pylist()
    live = [k for k, row in enumerate(rows) if row[ALIVE]]
    prior = recipe.order[: recipe.order.index(name)]
    records = [{f: rows[k][f] for f in prior} for k in live]
    fails: dict[str, list[int]] = {}
    ok, drawn = filler.fill(recipe.fields[name], records, [rows[k][INDEX] for k in live], recipe.seed, fails)
    values, drawn_col, alive = [None] * len(rows), [0] * len(rows), [row[ALIVE] for row in rows]
    for k, rec, good, count in zip(live, records, ok, drawn):
        values[k], drawn_col[k], alive[k] = (rec[name] if good else None), count, good
    dtype = pa.int64() if field_dtype(recipe.fields[name]) == pl.Int64() else pa.string()
    batch = batch.set_column(batch.schema.get_field_index(ALIVE), ALIVE, pa.array(alive, pa.bool_()))
    batch = batch.append_column(name, pa.array(values, dtype))
    batch = batch.append_column(drawn_column(name), pa.array(drawn_col, pa.int64()))
    for check in check_names(recipe.fields[name]):
        column = [0] * len(rows)
        for k, count in zip(live, fails.get(check, ())):
            column[k] = count
        batch = batch.append_column(fail_column(name, check), pa.array(column, pa.int64()))
    return batch


class FieldStage:
    """A Ray actor's callable: holds one engine (built once per actor) and fills one field."""

    def __init__(self, recipe: Recipe, name: str, engine_spec: EngineSpec):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one "Loading weights" bar per actor is noise in the driver's log
        self.recipe, self.name = recipe, name
        self.filler = FieldFiller(engine_spec.build())

    def __call__(self, batch):
        return fill_batch(batch, self.recipe, self.name, self.filler)


def fill_sample_batch(batch, recipe: Recipe, name: str):
    """A Ray task for a ``sample`` field (no model)."""
    return fill_batch(batch, recipe, name, FieldFiller(None))


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError("ray", "ray") from err
    return ray


SAMPLE_TASK_CPUS = 0.1  # a sample field is a few microseconds per record


class RayExecutor:
    """Records as a ``ray.data`` dataset, one ``map_batches`` stage per field.

    ``options.concurrency`` actors per model field, each with its own engine;
    ``options.batch_size`` records per call (default: the recipe's batch_size);
    ``options.num_cpus`` CPUs per actor (default: the cluster's CPUs divided
    among all actors, so every stage fits at once); ``options.address``: an
    existing cluster (default: a local one, started here and shut down after).
    """

    name = "ray"

    def __init__(self, options: RayOptions | None = None):
        self.options = options or RayOptions()

    def check(self) -> None:
        """Ray must be installed (the ``ray`` extra)."""
        import_ray()

    def run(self, recipe: Recipe, engine_spec: EngineSpec | None, shards_dir: Path, *, resume: bool,
            on_progress: Progress = None, on_field: FieldProgress = None) -> RunOutput:
        """See :meth:`Executor.run`; one shard per block the dataset streams back (all fields stream
        at once, so ``on_field`` is not called and no per-field timing is measured)."""
        ray = import_ray()
        n = recipe.count
        todo = pending_indices(shards_dir, n, resume)
        if on_progress:
            on_progress(n - len(todo), n)
        if todo:
            if engine_spec is not None:
                engine_spec.prepare()
            started = not ray.is_initialized()
            if started:
                ray.init(address=self.options.address, include_dashboard=False, configure_logging=False)
            try:
                self._stream(ray, recipe, engine_spec, todo, shards_dir, n - len(todo), on_progress)
            finally:
                if started:
                    ray.shutdown()
        return merge_shards(recipe, shards_dir)

    def _dataset(self, ray, recipe: Recipe, spec: EngineSpec | None, todo: list[int]):
        """The lazy dataset: blocks of pending indices, then one ``map_batches`` stage per field."""
        import pyarrow as pa

        opts = self.options
        size = opts.batch_size or recipe.batch_size
        blocks = [pa.table({INDEX: pa.array(todo[i : i + size], pa.int64()),
                            ALIVE: pa.array([True] * len(todo[i : i + size]), pa.bool_())})
                  for i in range(0, len(todo), size)]
        ds = ray.data.from_arrow(blocks)
        num_cpus = self.cpus_per_actor(ray, recipe)
        for name in recipe.order:
            if recipe.fields[name].uses_model:
                ds = ds.map_batches(FieldStage, fn_constructor_kwargs={"recipe": recipe, "name": name,
                                                                       "engine_spec": spec},
                                    batch_size=size, batch_format="pyarrow",
                                    compute=ray.data.ActorPoolStrategy(size=opts.concurrency),
                                    num_cpus=num_cpus, num_gpus=opts.num_gpus or None)
            else:
                ds = ds.map_batches(fill_sample_batch, fn_kwargs={"recipe": recipe, "name": name},
                                    batch_size=size, batch_format="pyarrow", num_cpus=SAMPLE_TASK_CPUS)
        return ds

    def _stream(self, ray, recipe: Recipe, spec: EngineSpec | None, todo: list[int], shards_dir: Path,
                done: int, on_progress: Progress) -> None:
        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = self._dataset(ray, recipe, spec, todo)
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                if not batch.num_rows:
                    continue
                write_shard(shards_dir, pl.from_arrow(batch))
                done += batch.num_rows
                if on_progress:
                    on_progress(done, recipe.count)
        except Exception as err:  # a user error inside an actor arrives wrapped by Ray
            cause, seen = err, set()
            while cause is not None and not isinstance(cause, SynthgenError) and id(cause) not in seen:
                seen.add(id(cause))
                cause = cause.__cause__ or getattr(cause, "cause", None)
            if not isinstance(cause, SynthgenError):
                raise
            raise cause from None

    def cpus_per_actor(self, ray, recipe: Recipe) -> float:
        """CPUs per actor such that every stage's actors and the sample tasks fit at once.

        All stages stream at the same time, so a cluster that cannot hold every
        actor (plus a sliver for the ``sample`` tasks) would wait forever.
        """
        actors = sum(recipe.fields[f].uses_model for f in recipe.order) * self.options.concurrency
        if not actors:
            return self.options.num_cpus or 1.0
        total = ray.cluster_resources().get("CPU", 0.0)
        room = total - SAMPLE_TASK_CPUS * any(not recipe.fields[f].uses_model for f in recipe.order)
        wanted = self.options.num_cpus if self.options.num_cpus is not None else min(1.0, room / actors)
        if wanted <= 0 or actors * wanted > room + 1e-9:
            raise SynthgenError(
                f"the Ray cluster has {total:g} CPUs, too few for {actors} actors "
                f"({self.options.concurrency} per model field) at {wanted:g} CPUs each; "
                "lower ray.concurrency / --concurrency or ray.num_cpus")
        return wanted
