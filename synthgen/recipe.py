"""Recipes: the YAML schema, loading, validation and the field order.

A recipe names the model, a seed and the fields of a record. A field has a kind
(``choice``, ``integer``, ``text``, ``sample``) and, unless it is a ``sample``
(filled without the model), a Jinja template whose variables are other fields;
those references (and those of a templated ``options_file``, whose option set
then depends on earlier fields: :mod:`synthgen.option_sets`) define the fill
order. :func:`load_recipe` checks everything before any generation; each
mistake is a ConfigError naming the file, the dotted key
(``fields.birth_place.options_file``) and what was expected.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from synthgen._validate import boolean, check_keys, number, one_of, show, string, yaml_error
from synthgen.adapters import DEFAULT_ADAPTER, NO_ADAPTER, AdapterError, resolve_adapter
from synthgen.checks import check_references
from synthgen.engines import engine_names
from synthgen.errors import ConfigError
from synthgen.fields import FIELD_KINDS, FieldSpec, parse_field, read_options, read_values_file
from synthgen.open_fields import resolve_open_fields
from synthgen.option_sets import resolve_option_sets

__all__ = ["EXECUTORS", "FIELD_KINDS", "FieldSpec", "RayOptions", "Recipe", "load_recipe"]

TOP_KEYS = ("name", "description", "model", "adapter", "tune", "engine", "executor", "ray", "seed", "count",
            "batch_size", "dedup_keys", "near_dup_fields", "output", "fields")
EXECUTORS = ("local", "ray")
RAY_KEYS = ("concurrency", "batch_size", "num_cpus", "num_gpus", "address")
_MESSAGE_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class RayOptions:
    """Options of the Ray executor (recipe key ``ray``, all optional)."""

    concurrency: int = 2  # actors per model field (each loads the model once)
    batch_size: int | None = None  # records per map_batches call; None = the recipe's batch_size
    num_cpus: float | None = None  # CPUs per actor; None = the cluster's CPUs shared by all actors
    num_gpus: float = 0.0  # GPUs per actor
    address: str | None = None  # an existing cluster; None = start a local one


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. ``fields`` keeps declaration order; ``order`` is fill order."""

    name: str
    path: Path
    fields: dict[str, FieldSpec]
    order: tuple[str, ...]
    description: str = ""
    model: str | None = None
    adapter: str | None = None  # "none" = the base model alone
    tune: bool = False  # generate with a recipe adapter tuned from `adapter` (synthgen.tune)
    engine: str = "transformers"  # what runs the model (synthgen.engines.create_engine)
    executor: str = "local"  # where the records are made: "local" (this process) or "ray"
    ray: RayOptions = field(default_factory=RayOptions)
    seed: int = 0
    count: int = 100
    batch_size: int = 32
    dedup_keys: tuple[str, ...] = ()
    near_dup_fields: tuple[str, ...] = ()
    output: dict = field(default_factory=dict)  # {"messages": {"user": F, "assistant": F, ...}}

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def source_files(self) -> tuple[Path, ...]:
        """Every file the records depend on: the recipe, its template files and options files."""
        files = [self.path]
        for spec in self.fields.values():
            if spec.template is not None and spec.template.filename:
                files.append(Path(spec.template.filename))
            if spec.options_file is not None:
                files.append(spec.options_file)
            files.extend(spec.option_files)
            if spec.checks is not None:
                files.extend(spec.checks.files)
            files.extend(spec.open.files if spec.open is not None else ())
        return tuple(dict.fromkeys(files))

    def digest(self) -> str:
        """sha256 over the contents of :attr:`source_files` (not their paths), so a resumed run
        notices an edited template or options file, and the same recipe spelled by another
        path is the same recipe."""
        digest = hashlib.sha256()
        for path in self.source_files:
            data = path.read_bytes() if path.is_file() else b""
            digest.update(len(data).to_bytes(8, "little") + data)
        return digest.hexdigest()

    def with_overrides(self, count=None, seed=None, model=None, adapter=None, engine=None, executor=None,
                       concurrency=None) -> Recipe:
        """A copy with command-line overrides applied (None keeps the recipe's value)."""
        given = {"count": count, "seed": seed, "model": model, "adapter": adapter, "engine": engine,
                 "executor": executor}
        changes = {k: v for k, v in given.items() if v is not None}
        for key in ("model", "adapter"):
            if key in changes and (not isinstance(changes[key], str) or not changes[key].strip()):
                raise ConfigError(self.path, f"{key} (override)", f"expected a non-empty name or path, got "
                                                                  f"{show(changes[key])}")
        number(self.path, "count (override)", changes.get("count", 1), low=1)
        number(self.path, "seed (override)", changes.get("seed", 0), low=0)
        if engine is not None:
            _engine(self.path, "engine (override)", engine)
        if executor is not None:
            _executor(self.path, "executor (override)", executor)
        if concurrency is not None:
            changes["ray"] = dataclasses.replace(
                self.ray, concurrency=number(self.path, "ray.concurrency (override)", concurrency, low=1))
        return dataclasses.replace(self, **changes)


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects duplicate keys (two fields with one name) and keeps the
    text a number was written as (``02134`` reads as 1116: an option must not change silently)."""


class _YamlInt(int):
    yaml_text: str


class _YamlFloat(float):
    yaml_text: str


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False):
    seen: set = set()
    for key_node, _ in node.value:
        if key_node.tag.endswith(":merge"):
            continue
        key = loader.construct_object(key_node)
        if isinstance(key, (str, int, float)):
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"found duplicate key {key!r}",
                                                        key_node.start_mark)
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


def _construct_number(kind: type, loader: _Loader, node: yaml.ScalarNode):
    value = kind(loader.construct_yaml_int(node) if kind is _YamlInt else loader.construct_yaml_float(node))
    value.yaml_text = node.value
    return value


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:int", lambda loader, node: _construct_number(_YamlInt, loader, node))
_Loader.add_constructor("tag:yaml.org,2002:float", lambda loader, node: _construct_number(_YamlFloat, loader, node))


def load_recipe(path: str | Path, *, trust_paths: bool = False) -> Recipe:
    """Read, validate and order a recipe; raise ConfigError on any mistake.

    Args:
        path: the recipe YAML file.
        trust_paths: allow ``options_file`` and ``template`` paths outside the recipe's
            tree (the recipe's folder, and ``../templates`` for templates). Off by default:
            a recipe from a stranger must not read arbitrary files into prompts or records.

    Returns:
        The validated :class:`Recipe`, fields in fill order.
    """
    src = Path(path)
    try:
        data = yaml.load(src.read_text(encoding="utf-8-sig"), Loader=_Loader)  # a SafeLoader
    except FileNotFoundError:
        raise ConfigError(src, None, "recipe file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(src, None, f"cannot read recipe: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(src, None, yaml_error(exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(src, None, f"expected a mapping of recipe keys, got {show(data)}")
    check_keys(src, None, data, TOP_KEYS, "a recipe")
    if "name" not in data:
        raise ConfigError(src, "name", "missing required key (the recipe's name)")
    raw_fields = data.get("fields")
    if not isinstance(raw_fields, dict) or not raw_fields:
        raise ConfigError(src, "fields", "expected a non-empty mapping of field name to field "
                                         f"spec, got {show(raw_fields)}")
    fields = {name: parse_field(src, name, raw, trust_paths) for name, raw in raw_fields.items()}
    check_references(src, fields)
    order = _topological_order(src, fields)
    fields = resolve_option_sets(src, fields, order, lambda key, path: read_options(src, key, {"options_file": path},
                                                                                trust_paths))
    fields = resolve_open_fields(src, fields, order, lambda key, path: read_values_file(src, key, path, trust_paths))
    placeholders = {n: (f.known_values or ("lorem ipsum dolor",))[0] for n, f in fields.items()}
    for f in (fields[n] for n in order if fields[n].template is not None):
        f.template.dry_render({dep: placeholders[dep] for dep in f.depends_on})
    for f in (fields[n] for n in order if fields[n].reply_prefix is not None):
        f.reply_prefix.dry_render({dep: placeholders[dep] for dep in f.depends_on})
    text_fields = tuple(n for n, f in fields.items() if f.kind == "text")
    non_text = tuple(n for n in fields if n not in text_fields)
    return Recipe(
        name=string(src, "name", data["name"]), path=src, fields=fields, order=order,
        description=string(src, "description", data.get("description", "")),
        model=string(src, "model", data.get("model"), optional=True),
        adapter=_adapter(src, data.get("adapter")),
        tune=boolean(src, "tune", data.get("tune", False)),
        engine=_engine(src, "engine", data.get("engine", "transformers")),
        executor=_executor(src, "executor", data.get("executor", "local")),
        ray=_ray_options(src, data.get("ray", {})),
        seed=number(src, "seed", data.get("seed", 0), low=0),
        count=number(src, "count", data.get("count", 100), low=1),
        batch_size=number(src, "batch_size", data.get("batch_size", 32), low=1),
        dedup_keys=_names(src, "dedup_keys", data.get("dedup_keys", non_text), fields),
        near_dup_fields=_names(src, "near_dup_fields", data.get("near_dup_fields", text_fields),
                               {n: fields[n] for n in text_fields}, "text field"),
        output=_output(src, data.get("output", {}), fields),
    )


def _topological_order(src: Path, fields: dict[str, FieldSpec]) -> tuple[str, ...]:
    """Check the references; order dependencies first, else in declaration order (stable)."""
    for f in fields.values():
        if f.name in f.depends_on:
            raise ConfigError(src, _ref_key(f, f.name), f"field '{f.name}' refers to itself")
        unknown = sorted(f.depends_on - fields.keys())
        if unknown:
            raise ConfigError(src, _ref_key(f, unknown[0]), f"undefined template variable '{unknown[0]}' "
                                                            f"(known fields: {', '.join(fields)})")
    order: list[str] = []
    pending = list(fields)
    while pending:
        ready = next((n for n in pending if fields[n].depends_on <= set(order)), None)
        if ready is None:  # every pending field waits on another pending one: a cycle
            path = [pending[0]]
            while path.count(path[-1]) < 2:
                path.append(next(n for n in pending if n in fields[path[-1]].depends_on))
            cycle = path[path.index(path[-1]):]
            raise ConfigError(src, _ref_key(fields[cycle[0]], cycle[1]),
                              f"reference cycle: {' -> '.join(cycle)}")
        pending.remove(ready)
        order.append(ready)
    return tuple(order)


def _ref_key(f: FieldSpec, dep: str) -> str:
    """The key that makes field ``f`` read ``dep``: its template, else its templated options_file."""
    if f.template is not None and dep in f.template.variables:
        return f.template.key
    if f.options_template is None and f.open is not None:  # a templated seed or reference file
        return next(vs.key for vs in (f.open.seeds, f.open.reference) if vs is not None and vs.path_template
                    is not None and dep in vs.path_template.variables)
    return f.options_template.key


def _names(src: Path, key: str, value: object, known: dict, what: str = "field") -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(src, key, f"expected a list of field names, got {show(value)}")
    for i, name in enumerate(value):
        if name not in known or name in value[:i]:
            problem = f"'{name}' is listed twice" if name in known else f"unknown {what} '{name}'"
            raise ConfigError(src, f"{key}[{i}]", f"{problem} (expected one of: "
                                                  f"{', '.join(known) or 'none in this recipe'})")
    return tuple(value)


def _output(src: Path, value: object, fields: dict) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(src, "output", f"expected a mapping, got {show(value)}")
    check_keys(src, "output", value, ("messages",), "output")
    if "messages" not in value:
        return {}
    messages, key = value["messages"], "output.messages"
    if "messages" in fields:
        raise ConfigError(src, key, "the chat column 'messages' would replace the field of that name; "
                                    "rename the field")
    if not isinstance(messages, dict):
        raise ConfigError(src, key, f"expected a mapping of role to field, got {show(messages)}")
    check_keys(src, key, messages, _MESSAGE_ROLES, key)
    for role in _MESSAGE_ROLES:
        if (role in messages or role != "system") and messages.get(role) not in list(fields):
            raise ConfigError(src, f"{key}.{role}", f"expected a field name (one of: {', '.join(fields)})")
    return {"messages": {role: messages[role] for role in _MESSAGE_ROLES if role in messages}}


def _engine(src: Path, key: str, value: object) -> str:
    return one_of(src, key, value, engine_names(), "engine")


def _executor(src: Path, key: str, value: object) -> str:
    return one_of(src, key, value, EXECUTORS, "executor")


def _ray_options(src: Path, value: object) -> RayOptions:
    if not isinstance(value, dict):
        raise ConfigError(src, "ray", f"expected a mapping of Ray executor options, got {show(value)}")
    check_keys(src, "ray", value, RAY_KEYS, "ray")
    get = value.get
    batch_size, num_cpus = get("batch_size"), get("num_cpus")
    return RayOptions(
        concurrency=number(src, "ray.concurrency", get("concurrency", 2), low=1),
        batch_size=None if batch_size is None else number(src, "ray.batch_size", batch_size, low=1),
        num_cpus=None if num_cpus is None else number(src, "ray.num_cpus", num_cpus, float, low=0, open_low=True),
        num_gpus=number(src, "ray.num_gpus", get("num_gpus", 0.0), float, low=0),
        address=string(src, "ray.address", get("address"), optional=True),
    )


def _adapter(src: Path, value) -> str | None:
    """``none``, ``default`` (resolved with the run's model), or the resolved directory of a
    shipped adapter's name or a path relative to the recipe file."""
    value = string(src, "adapter", value, optional=True)
    if value is None or value in (NO_ADAPTER, DEFAULT_ADAPTER):
        return value
    try:
        return str(resolve_adapter(value, base_dir=src.parent))
    except AdapterError as err:
        raise ConfigError(src, "adapter", f"{err} (paths are relative to the recipe)") from None

