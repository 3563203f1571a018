"""Scoring with the adapter merged into the weights against the LoRA layers kept apart, side by side.

One process, one engine with the shipped biography recipe's adapter: the
first-name option sets of ``--prompts`` (country, gender) conditions, as the
recipe asks them, are scored alternately with the adapter merged
(``engine.merge = True``, the default) and kept apart (``merge = False``),
``--repeats`` times each; the fastest time of each is kept (the first prompt after a
switch, which in merged mode pays for the merge, is timed apart). Also the largest
difference between the two in any option's log-probability and in the KL
between the two renormalised distributions, and the same after a round trip
with the adapter off (the base weights after merge and unmerge).

    python benchmarks/adapter_merge.py --prompts 24 --repeats 2

Writes ``benchmarks/results/adapter_merge.json``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

try:
    from benchmarks._common import RESULTS, ROOT, stamp
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from _common import RESULTS, ROOT, stamp

from jinja2.sandbox import SandboxedEnvironment

from synthgen.engines.transformers import TransformersEngine, _merged
from synthgen.recipe import load_recipe

RECIPE = ROOT / "recipes/biography.yaml"


def requests(count: int) -> list[tuple[str, list[str]]]:
    """The first-name prompts and option sets of the first ``count`` (country, gender) conditions."""
    template = SandboxedEnvironment().from_string(
        (ROOT / "templates/biography/first_name_by_country.j2").read_text(encoding="utf-8"))
    countries = [line.split(",")[0] for line in
                 (ROOT / "recipes/data/people/countries.csv").read_text(encoding="utf-8").splitlines()[1:]]
    out = []
    for country in countries:
        for gender in ("female", "male"):
            path = ROOT / "recipes/data/people/first_names" / f"{country.replace(' ', '_')}_{gender}.txt"
            if path.is_file() and len(out) < count:
                names = [n for n in path.read_text(encoding="utf-8").splitlines() if n.strip()]
                out.append((template.render(birth_country=country, gender=gender).strip(), names))
    return out


def log_softmax(values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    return x - np.logaddexp.reduce(x)


def compare(a: list[list[float]], b: list[list[float]]) -> dict:
    """The largest log-probability difference and KL(a || b) of the renormalised distributions."""
    diff = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))
    kls = []
    for x, y in zip(a, b):
        p, q = log_softmax(x), log_softmax(y)
        kls.append(float(np.sum(np.exp(p) * (p - q))))
    return {"max_abs_logprob_diff": diff, "max_kl": max(kls)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    recipe = load_recipe(RECIPE)
    engine = TransformersEngine.load(recipe.model, adapter=recipe.adapter, device="cpu")
    batch = requests(args.prompts)
    times: dict[str, list[float]] = {"merged": [], "apart": []}
    switch: dict[str, list[float]] = {"merged": [], "apart": []}
    scores: dict[str, list] = {}
    base_before = engine.score_many(batch[:4], use_adapter=False)
    for _ in range(args.repeats):
        for mode in ("merged", "apart"):
            engine.merge = mode == "merged"
            engine.score_many(batch[:1], use_adapter=False)  # unmerged before each mode
            start = time.perf_counter()
            engine.score_many(batch[:1])  # the switch (the merge, in merged mode) and one prompt
            switch[mode].append(time.perf_counter() - start)
            start = time.perf_counter()
            scores[mode] = engine.score_many(batch)
            times[mode].append(time.perf_counter() - start)
            assert _merged(engine.model) == (mode == "merged")
    base_after = engine.score_many(batch[:4], use_adapter=False)
    merged_s, apart_s = min(times["merged"]), min(times["apart"])
    result = stamp({
        "recipe": "recipes/biography.yaml", "field": "first_name", "prompts": len(batch),
        "options": sum(len(o) for _, o in batch), "repeats": args.repeats,
        "merged_seconds": merged_s, "apart_seconds": apart_s, "speedup": apart_s / merged_s,
        "all_seconds": times, "first_prompt_seconds": switch,
        "merged_vs_apart": compare(scores["merged"], scores["apart"]),
        "base_after_round_trips": {**compare(base_before, base_after), "round_trips": 2 * args.repeats},
    }, adapters={"adapter": engine.adapter_name})
    (RESULTS / "adapter_merge.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
