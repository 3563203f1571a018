"""Engine benchmark on the default model (SmolLM2-135M-Instruct, CPU).

1. ``score`` with prefix sharing (prompt encoded once, K options on its KV
   cache) vs the naive computation (one full forward per option), for K = 10,
   100, 200 options after a ~60-token prompt: time, ratio, max difference.
2. ``generate``: new tokens per second at batch 1, 16, 64.

    python benchmarks/engine.py            # writes benchmarks/results/engine.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from synthgen.engines.scoring import naive_option_logprobs, option_logprobs
from synthgen.engines.transformers import TransformersEngine

try:
    from benchmarks._common import stamp
except ImportError:  # run as a script (python benchmarks/engine.py): its folder is on sys.path
    from _common import stamp

PROMPT = ("You are filling in a record for a synthetic dataset of fictional people. "
          "Choose a random English first name for a person, picked completely at random from all common names. "
          "Reply with only the name.")


def timed(fn, repeats: int):
    times, value = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), value


def bench_score(engine, ks, repeats):
    names = Path(__file__).resolve().parents[1].joinpath("recipes/data/first_names.txt").read_text().split("\n")
    names = [n for n in names if n]
    prompt_ids = engine.encode_prompt(PROMPT)
    rows = []
    for k in ks:
        options = names[:k]
        options_ids = engine.encode_options(engine.format_prompt(PROMPT), prompt_ids, options)
        with torch.inference_mode():
            fast_t, fast = timed(lambda ids=options_ids: option_logprobs(engine.model, prompt_ids, ids), repeats)
            naive_t, naive = timed(lambda ids=options_ids: naive_option_logprobs(engine.model, prompt_ids, ids), 1)
        rows.append({"k": k, "prompt_tokens": len(prompt_ids), "shared_s": fast_t, "naive_s": naive_t,
                     "speedup": naive_t / fast_t, "max_abs_diff": float((fast - naive).abs().max())})
        print(rows[-1], flush=True)
    return rows


def bench_generate(engine, batches, new_tokens):
    rows = []
    for b in batches:
        prompts = [f"Write one sentence about person number {i}." for i in range(b)]
        t = time.perf_counter()
        with torch.inference_mode():
            torch.manual_seed(0)
            batch = engine.tokenizer([engine.format_prompt(p) for p in prompts], return_tensors="pt",
                                     padding=True, add_special_tokens=False)
            out = engine.model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                        do_sample=True, top_k=0, pad_token_id=engine.tokenizer.pad_token_id)
        seconds = time.perf_counter() - t
        produced = (out.shape[1] - batch["input_ids"].shape[1]) * b
        rows.append({"batch": b, "new_tokens": produced, "seconds": seconds, "tokens_per_s": produced / seconds})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine.json"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    engine = TransformersEngine.load(None, adapter="none", device="cpu")
    result = stamp({
        "model": engine.model_name,
        "score": bench_score(engine, [10, 100, 200], args.repeats),
        "generate": bench_generate(engine, [1, 16, 64], args.new_tokens),
    })
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
