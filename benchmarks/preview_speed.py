"""How long the recipe-iteration loop takes: ``synthgen validate`` and ``synthgen preview`` from a cold start.

Each command runs in a fresh process (imports and model load included, the model
already in the cache), ``--repeats`` times; the medians are recorded with the
provenance of the run. Also checks that ``validate`` never imports torch.

    python benchmarks/preview_speed.py --recipe recipes/biography.yaml -n 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from benchmarks._common import RESULTS, ROOT, stamp
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from _common import RESULTS, ROOT, stamp


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/biography.yaml")
    parser.add_argument("-n", type=int, default=5, help="records to preview")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "preview_speed.json"))
    args = parser.parse_args(argv)
    recipe = str(ROOT / args.recipe) if not Path(args.recipe).is_absolute() else args.recipe
    cli = [sys.executable, "-m", "synthgen.cli"]
    probe = (f"import sys; from synthgen.cli import main; main(['validate', {recipe!r}]); "
             "print('torch' in sys.modules)")
    imports_torch = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                   check=True).stdout.strip().endswith("True")
    validate = [timed([*cli, "validate", recipe]) for _ in range(args.repeats)]
    with tempfile.TemporaryDirectory() as scratch:
        preview = [timed([*cli, "preview", recipe, "-n", str(args.n), "-o", f"{scratch}/p{i}"])
                   for i in range(args.repeats)]
    result = stamp({
        "recipe": args.recipe, "n": args.n, "repeats": args.repeats,
        "validate_seconds": validate, "validate_median_s": statistics.median(validate),
        "validate_imports_torch": imports_torch,
        "preview_seconds": preview, "preview_median_s": statistics.median(preview),
        "load_average_at_end": os.getloadavg()[0], "cpus": os.cpu_count(),
    })
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k.endswith(("median_s", "torch"))}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
