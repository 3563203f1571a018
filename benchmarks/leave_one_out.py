"""Leave-one-out (the paper's generalisation experiment).

For each family F: train an adapter on every other family of the suite (the
shipped training config, with ``exclude_families: [F]``), then audit the base
model and that adapter on F's tasks. Writes a table of exact normalised
entropy, valid mass and sampled coverage, base vs adapter, per held-out family.

    python benchmarks/leave_one_out.py --families numbers,first_names,countries,days_dates,fruits,occupations \\
        --epochs 4 --no-preserve --samples 30

Each family costs one training run (minutes to tens of minutes on 2 CPU
cores). Finished families are kept in the output file and skipped when the
same command runs again (a stopped run continues); ``--fresh`` starts over.
``--epochs`` and ``--no-preserve`` shorten the runs below the shipped
config's; the output records what was used.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path

from synthgen.engines.transformers import TransformersEngine
from synthgen.training.audit import audit, summarize
from synthgen.training.config import load_config
from synthgen.training.loop import train
from synthgen.training.tasks import load_tasks

try:
    from benchmarks._common import stamp
except ImportError:  # run as a script (python benchmarks/leave_one_out.py): its folder is on sys.path
    from _common import stamp

ROOT = Path(__file__).resolve().parents[1]


def row_line(row: dict) -> str:
    before, after = row["base"], row["adapter"]
    return (f"{row['family']:<12} H_norm {before['exact']['normalized_entropy']:.3f} -> "
            f"{after['exact']['normalized_entropy']:.3f}  valid mass {before['exact']['valid_mass']:.3f} -> "
            f"{after['exact']['valid_mass']:.3f}  coverage {before['sampled'].get('coverage', 0):.3f} -> "
            f"{after['sampled'].get('coverage', 0):.3f}  ({row['train_seconds']:.0f} s training)")


def table(rows: list[dict]) -> str:
    lines = ["| held-out family | tasks | H_norm base → adapter | valid mass base → adapter | "
             "coverage base → adapter | training s |", "|---|---|---|---|---|---|"]
    for r in rows:
        b, a = r["base"], r["adapter"]
        lines.append(
            f"| {r['family']} | {r['tasks']} | {b['exact']['normalized_entropy']:.3f} → "
            f"{a['exact']['normalized_entropy']:.3f} | {b['exact']['valid_mass']:.3f} → "
            f"{a['exact']['valid_mass']:.3f} | {b['sampled'].get('coverage', 0):.3f} → "
            f"{a['sampled'].get('coverage', 0):.3f} | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "recipes/diffuse/smollm2-135m.yaml"))
    parser.add_argument("--families", default=None, help="families to hold out, comma-separated (default: all)")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    parser.add_argument("--no-preserve", action="store_true", help="train without the config's preserve term")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/leave_one_out.json"))
    parser.add_argument("--fresh", action="store_true", help="ignore families already in --out")
    args = parser.parse_args()
    config = load_config(args.config)
    if args.epochs:
        config = dataclasses.replace(config, epochs=args.epochs)
    if args.no_preserve:
        config = dataclasses.replace(config, preserve=None)
    all_tasks = load_tasks(config.tasks)
    families = args.families.split(",") if args.families else sorted({t.family for t in all_tasks})
    unknown = sorted(set(families) - {t.family for t in all_tasks})
    if unknown:
        raise SystemExit(f"{config.tasks}: no tasks of family {', '.join(unknown)}")
    out = Path(args.out)
    setup = {"config": str(Path(args.config).resolve().relative_to(ROOT)) if Path(args.config).resolve()
             .is_relative_to(ROOT) else args.config, "epochs": config.epochs, "preserve": config.preserve is not None,
             "samples": args.samples,
             # results are reused only for the same suite: a changed task file reruns every family
             "tasks_sha256": hashlib.sha256(Path(config.tasks).read_bytes()).hexdigest()}
    rows: list[dict] = []
    if out.is_file() and not args.fresh:
        old = json.loads(out.read_text())
        if old.get("setup") == setup:
            rows = [r for r in old["rows"] if r["family"] in families]
            for r in rows:
                print(row_line(r) + "  [from " + str(out) + "]", flush=True)
    done = {r["family"] for r in rows}
    base = TransformersEngine.load(config.model, adapter="none", device="cpu")
    for fam in families:
        if fam in done:
            continue
        held = [t for t in all_tasks if t.family == fam]
        # the paper's protocol: every other family of the suite, F alone held out
        run_config = dataclasses.replace(config, exclude_families=[fam])
        with tempfile.TemporaryDirectory() as tmp:
            result = train(run_config, Path(tmp) / "adapter")
            tuned = TransformersEngine.load(config.model, adapter=str(Path(tmp) / "adapter"), device="cpu")
            after = summarize(audit(tuned, held, samples=args.samples)["tasks"])
        before = summarize(audit(base, held, samples=args.samples)["tasks"])
        row = {"family": fam, "tasks": len(held), "train_seconds": result.seconds,
               "epochs_run": result.epochs_run, "base": before, "adapter": after}
        rows.append(row)
        print(row_line(row), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(stamp({"setup": setup, "rows": rows}), indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
