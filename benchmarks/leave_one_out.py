"""Leave-one-out (the paper's generalisation experiment).

For each family F: train an adapter on every other family (the shipped
training config, with F added to ``exclude_families``), then audit base model
and adapter on F's tasks. Writes a table of exact normalised entropy, valid
mass and sampled coverage, base vs adapter, per held-out family.

    python benchmarks/leave_one_out.py --families colors,fruits --epochs 4 --samples 30

Each family costs one training run (minutes to tens of minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from synthgen.audit import audit, summarize
from synthgen.engine import TransformersEngine
from synthgen.tasks import load_tasks
from synthgen.train import load_config, train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "recipes/diffuse/smollm2-135m.yaml"))
    parser.add_argument("--families", default=None, help="families to hold out, comma-separated (default: all)")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/leave_one_out.json"))
    args = parser.parse_args()
    config = load_config(args.config)
    all_tasks = load_tasks(config.tasks)
    families = args.families.split(",") if args.families else sorted({t.family for t in all_tasks})
    base = TransformersEngine.load(config.model, adapter="none", device="cpu")
    rows = []
    for fam in families:
        held = [t for t in all_tasks if t.family == fam]
        config.exclude_families = sorted(set(config.exclude_families) | {fam})
        if args.epochs:
            config.epochs = args.epochs
        with tempfile.TemporaryDirectory() as tmp:
            result = train(config, Path(tmp) / "adapter")
            tuned = TransformersEngine.load(config.model, adapter=str(Path(tmp) / "adapter"), device="cpu")
            after = summarize(audit(tuned, held, samples=args.samples)["tasks"])
        before = summarize(audit(base, held, samples=args.samples)["tasks"])
        row = {"family": fam, "tasks": len(held), "train_seconds": result.seconds, "base": before, "adapter": after}
        rows.append(row)
        print(f"{fam:<12} H_norm {before['exact']['normalized_entropy']:.3f} -> {after['exact']['normalized_entropy']:.3f}  "
              f"valid mass {before['exact']['valid_mass']:.3f} -> {after['exact']['valid_mass']:.3f}  "
              f"coverage {before['sampled'].get('coverage', 0):.3f} -> {after['sampled'].get('coverage', 0):.3f}",
              flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"command": "python benchmarks/leave_one_out.py", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
