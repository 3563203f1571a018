"""GPU check of the vLLM engine: score agreement with transformers, and records/s of both.

On a machine with an NVIDIA GPU (vLLM needs Python >= 3.11 and installs its own
CUDA build of torch, so use a separate virtual environment):

    python3 -m venv .venv-gpu && .venv-gpu/bin/pip install -e '.[vllm]'
    .venv-gpu/bin/python benchmarks/gpu_check.py                 # ~3-6 min on one H100
    .venv-gpu/bin/python benchmarks/gpu_check.py --model smollm2-135m   # the real default model (cached or online)
    .venv-gpu/bin/python benchmarks/gpu_check.py --model DIR --adapter none

What it does, all in one process, writing ``--out`` (JSON) after every stage:

1. **Model.** ``--model`` (a registered name or a Hugging Face directory), or by
   default a llama with the default model's shapes (SmolLM2-135M: 30 layers,
   hidden 576, 9 heads of 64, 3 KV heads) and random weights, with the test
   suite's tokenizer and chat template (``synthgen/testing.py``), built in a
   temporary directory: nothing is downloaded, so it runs offline. The shipped
   SmolLM2 adapter fits those shapes, so the LoRA path runs too.
2. **Score agreement** on the first ``--tasks`` tasks of
   ``recipes/diffuse/tasks.jsonl``, with the adapter and without: the
   reference is the transformers engine in float32; vLLM runs in ``--dtype``.
   *Tolerance*, over all options: ``max |vLLM - ref| <= max(FLOOR, FACTOR *
   max |hf - ref|)`` and ``mean |vLLM - ref| <= max(FLOOR, FACTOR * mean |hf -
   ref|)``, where ``hf`` is the transformers engine run in ``--dtype``: vLLM
   may drift from float32 a few times as much as transformers itself does in
   the same dtype (nothing in float32). FLOOR = 0.02 nats covers kernel and
   summation-order differences in float32 (typically 1e-4..1e-3); FACTOR = 3
   leaves room for vLLM's other (fused) kernels in bf16. What the check must
   catch (a wrong span, a missing or extra token, the adapter not applied, the
   prompt misread) moves scores by whole tokens' log-probs, i.e. nats, on
   every option. So that a model insensitive to everything cannot pass by
   accident, the check is *conclusive* only if the reference scores move, on
   average, at least ``MIN_SENSITIVITY`` (2) times the mean tolerance when the
   same options follow another task's prompt (``context_sensitivity``) and,
   with an adapter, when the adapter is switched off (``adapter_effect``).
3. **Records/s** of the biography recipe (``--records`` records, same seed) on
   the transformers engine (GPU, ``--dtype``) and on vLLM.

Exit status: 0 = agreement passed; 1 = agreement failed; 2 = incomplete (vLLM
not installed or failed to start, no GPU, time budget spent, inconclusive).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tempfile
import time
import traceback
from pathlib import Path

try:
    from benchmarks._common import stamp
except ImportError:  # run as a script (python benchmarks/gpu_check.py): its folder is on sys.path
    from _common import stamp

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "recipes/diffuse/tasks.jsonl"
RECIPE = ROOT / "recipes/biography.yaml"
FLOOR = 0.02
FACTOR = 3.0
MIN_SENSITIVITY = 2.0
# The default model's shapes (SmolLM2-135M-Instruct), so its shipped adapter applies.
DEFAULT_SHAPES = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, head_dim=64, max_position_embeddings=2048, rms_norm_eps=1e-5)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="registered name or HF directory (default: build a random SmolLM2-shaped llama)")
    p.add_argument("--adapter", default="default",
                   help="'default' (the shipped adapter; for the built model: SmolLM2's), 'none', or a directory")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                   help="dtype of vLLM and of the timed transformers engine (the reference is always float32)")
    p.add_argument("--tasks", type=int, default=0, help="score the first N tasks of the task file (0 = all)")
    p.add_argument("--task-file", default=str(TASKS))
    p.add_argument("--records", type=int, default=64, help="biography records per engine for records/s")
    p.add_argument("--budget", type=float, default=540.0,
                   help="seconds; stages that would start after it are skipped (the run is then incomplete)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.45,
                   help="vLLM's share of GPU memory (the transformers engines use the rest)")
    p.add_argument("--eager", action="store_true", help="vLLM without CUDA graphs / compilation (faster start)")
    p.add_argument("--allow-cpu", action="store_true", help="run without a GPU (transformers side only; a dry run)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/gpu_check.json"))
    return p.parse_args(argv)


# ------------------------------------------------------------------ pieces
def build_random_model(path: Path, seed: int = 0) -> Path:
    """Save a random llama with the default model's shapes and the tests' tokenizer under ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from synthgen.testing import build_tokenizer  # the test suite's tokenizer (BPE + ChatML template)

    tokenizer = build_tokenizer(chat_template=True)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **DEFAULT_SHAPES)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # peaked, prompt-dependent distributions (as synthgen/testing.py does)
        model.model.embed_tokens.weight.normal_(0.0, 0.15)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def agreement(reference: list[list[float]], candidate: list[list[float]], same_dtype: list[list[float]] | None,
              shifted: list[list[float]] | None = None) -> dict:
    """Compare per-task option scores (log-probs) against the float32 reference; see the module docstring."""
    diffs = _abs_diffs(reference, candidate)
    drift = _abs_diffs(reference, same_dtype) if same_dtype is not None else [0.0]
    out = {
        "tasks": len(reference), "options": len(diffs),
        "max_abs_diff": max(diffs, default=0.0), "mean_abs_diff": _mean(diffs),
        "max_total_variation": max((total_variation(r, c) for r, c in zip(reference, candidate)), default=0.0),
        "transformers_dtype_drift": {"max": max(drift), "mean": _mean(drift)},
        "tolerance": {"max": max(FLOOR, FACTOR * max(drift)), "mean": max(FLOOR, FACTOR * _mean(drift))},
    }
    out["passed"] = bool(diffs) and out["max_abs_diff"] <= out["tolerance"]["max"] \
        and out["mean_abs_diff"] <= out["tolerance"]["mean"]
    if shifted is not None:
        out["context_sensitivity"] = _mean(_abs_diffs(reference, shifted))
        out["conclusive"] = out["context_sensitivity"] >= MIN_SENSITIVITY * out["tolerance"]["mean"]
    return out


def _abs_diffs(a: list[list[float]], b: list[list[float]]) -> list[float]:
    return [abs(x - y) for xs, ys in zip(a, b) for x, y in zip(xs, ys)]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def total_variation(a: list[float], b: list[float]) -> float:
    """TV distance between the option distributions renormalised from two score lists."""
    def probs(xs):
        m = max(xs)
        e = [math.exp(x - m) for x in xs]
        s = sum(e)
        return [v / s for v in e]
    return 0.5 * sum(abs(p - q) for p, q in zip(probs(a), probs(b)))


class Run:
    """Collects results, writes them after every stage, keeps the time budget."""

    def __init__(self, args, argv=None):
        self.args, self.start = args, time.perf_counter()
        self.result = {**stamp({}, args=argv),
                       "tolerance_rule": f"max and mean of |vllm - hf_fp32| <= max({FLOOR}, {FACTOR} * the same "
                                         f"statistic of |hf_dtype - hf_fp32|); conclusive when context sensitivity "
                                         f"(and adapter effect) >= {MIN_SENSITIVITY} * mean tolerance",
                       "stages": {}, "errors": [], "skipped": []}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def stage(self, name, fn, *a, **kw):
        if self.elapsed() > self.args.budget:
            self.result["skipped"].append(f"{name}: time budget of {self.args.budget:.0f} s spent")
            print(f"[gpu_check] skip {name}: budget spent", flush=True)
            return None
        print(f"[gpu_check] {name} ... ({self.elapsed():.0f} s)", flush=True)
        t = time.perf_counter()
        try:
            value = fn(*a, **kw)
        except Exception as err:  # noqa: BLE001 - a check script records every failure and goes on
            self.result["errors"].append(f"{name}: {type(err).__name__}: {err}")
            traceback.print_exc()
            value = None
        self.result["stages"][name] = round(time.perf_counter() - t, 2)
        self.save()
        return value

    def save(self):
        self.result["elapsed_s"] = round(self.elapsed(), 2)
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.result, indent=2))


def score_tasks(engine, tasks, use_adapter, run: Run) -> list[list[float]]:
    scores = []
    for task in tasks:
        if run.elapsed() > run.args.budget:
            break
        scores.append(engine.score(task.prompt, list(task.targets), use_adapter=use_adapter))
    return scores


def biography_rate(engine, n: int) -> dict:
    from synthgen.executors import LocalExecutor
    from synthgen.generation import generate
    from synthgen.recipe import load_recipe

    recipe = load_recipe(RECIPE).with_overrides(count=n)
    engine.score("Pick a fruit.", ["apple", "pear"])  # warm-up (CUDA kernels, allocator)
    engine.generate(["Pick a fruit."], max_new_tokens=4, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        res = generate(recipe, Path(tmp) / "out", executor=LocalExecutor(engine))
        wall = time.perf_counter() - t
    report = res.report
    seconds = report["timing"]["seconds"]
    return {"records": n, "generated": report["n_generated"], "kept": report["n_kept"], "fill_seconds": seconds,
            "records_per_second": report["timing"]["records_per_second"],  # valid records (all fields passed)
            "attempted_records_per_second": n / seconds if seconds else None,
            "wall_seconds_with_outputs": wall}


# -------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run = Run(args, argv)
    res = run.result
    import torch

    from synthgen import store
    from synthgen.engines import create_engine
    from synthgen.engines.transformers import TransformersEngine
    from synthgen.errors import MissingDependencyError, SynthgenError
    from synthgen.training.tasks import load_tasks

    gpu = torch.cuda.is_available()
    if not gpu and not args.allow_cpu:
        res["errors"].append("no CUDA GPU visible (pass --allow-cpu for a transformers-only dry run)")
        run.save()
        print("[gpu_check] no GPU; nothing checked", flush=True)
        return 2

    # 1. model and adapter
    tmp = tempfile.TemporaryDirectory(prefix="synthgen-gpu-check-")
    if args.model:
        try:
            model = store.resolve(args.model)
        except SynthgenError as err:
            res["errors"].append(f"model: {err}")
            run.save()
            print(f"[gpu_check] {err}", flush=True)
            return 2
        adapter = args.adapter
        res["model"] = {"name": args.model, "path": model, "built": False}
    else:
        built = run.stage("build_model", build_random_model, Path(tmp.name) / "model")
        if built is None:
            print("[gpu_check] could not build the model; nothing checked", flush=True)
            return 2
        model = str(built)
        adapter = store.default_adapter(store.DEFAULT_MODEL) if args.adapter == "default" else args.adapter
        res["model"] = {"name": "random llama, SmolLM2-135M shapes", "path": model, "built": True,
                        "shapes": DEFAULT_SHAPES}
    adapter = "none" if adapter is None else str(adapter)
    res["adapter"], res["dtype"] = adapter, args.dtype

    # 2. vLLM first: it starts its engine process before CUDA is touched here
    vllm_engine = None
    try:
        import vllm

        res["vllm_version"] = vllm.__version__
        vllm_engine = run.stage("load_vllm", create_engine, "vllm", model=model, adapter=adapter, dtype=args.dtype,
                                gpu_memory_utilization=args.gpu_memory_utilization, enforce_eager=args.eager,
                                max_model_len=2048)
    except (ImportError, MissingDependencyError) as err:
        res["errors"].append(f"vllm unavailable: {err}")
    if gpu:
        res["gpu"] = torch.cuda.get_device_name(0)
    # the provenance again, now with the adapter's sha256 and the GPU in its machine line
    res.update(stamp({}, adapters={"adapter": None if adapter == "none" else adapter}, args=argv))
    device = "cuda" if gpu else "cpu"
    dtype = getattr(torch, args.dtype)
    reference = run.stage("load_transformers_fp32", TransformersEngine.load, model, adapter, device=device,
                          dtype=torch.float32)
    hf = reference if dtype == torch.float32 else run.stage(
        f"load_transformers_{args.dtype}", TransformersEngine.load, model, adapter, device=device, dtype=dtype)

    # 3. score agreement
    tasks = load_tasks(args.task_file)[: args.tasks or None]
    settings = [True, False] if adapter != "none" else [False]
    res["score"] = {}
    refs = {}
    if reference is not None:
        for use_adapter in settings:
            key = "adapter" if use_adapter else "base"
            ref = run.stage(f"score_{key}_fp32", score_tasks, reference, tasks, use_adapter, run) or []
            refs[key] = ref
            # the same targets after another task's prompt: how much scores depend on the prompt
            shifted_tasks = [dataclasses.replace(t, prompt=tasks[(i + 1) % len(tasks)].prompt)
                             for i, t in enumerate(tasks[: len(ref)])]
            shifted = run.stage(f"score_{key}_shifted", score_tasks, reference, shifted_tasks, use_adapter, run)
            same = None
            if hf is not reference and hf is not None:
                same = run.stage(f"score_{key}_{args.dtype}", score_tasks, hf, tasks[: len(ref)], use_adapter, run)
            if vllm_engine is not None and ref:
                got = run.stage(f"score_{key}_vllm", score_tasks, vllm_engine, tasks[: len(ref)], use_adapter, run)
                if got is not None and len(got) == len(ref) and (same is None or len(same) == len(ref)):
                    shift = shifted if shifted is not None and len(shifted) == len(ref) else None
                    res["score"][key] = agreement(ref, got, same, shift)
                    print(f"[gpu_check] score {key}: {json.dumps(res['score'][key])}", flush=True)
            run.save()
    check = res["score"].get("adapter")
    if check is not None and len(refs.get("base", [])) == len(refs["adapter"]):
        # the adapter's own effect must be visible above the tolerance too
        check["adapter_effect"] = _mean(_abs_diffs(refs["adapter"], refs["base"]))
        check["conclusive"] = check.get("conclusive", False) and \
            check["adapter_effect"] >= MIN_SENSITIVITY * check["tolerance"]["mean"]
    elif check is not None:
        check["conclusive"] = False

    # 4. records/s of the biography recipe
    res["biography"] = {}
    if hf is not None:
        res["biography"]["transformers"] = run.stage("biography_transformers", biography_rate, hf, args.records)
    if vllm_engine is not None:
        res["biography"]["vllm"] = run.stage("biography_vllm", biography_rate, vllm_engine, args.records)
    times = {k: v["fill_seconds"] for k, v in res["biography"].items() if v}
    if len(times) == 2 and times["vllm"] > 0:  # same recipe, records and seed on both
        res["biography"]["vllm_speedup"] = times["transformers"] / times["vllm"]

    # verdict
    checks = [res["score"].get(k) for k in ("adapter" if adapter != "none" else None, "base") if k]
    if any(c is not None and not c["passed"] for c in checks):
        res["status"], code = "failed", 1
    elif vllm_engine is None or any(c is None for c in checks) or res["skipped"] or res["errors"]:
        res["status"], code = "incomplete", 2
    elif not all(c.get("conclusive", False) for c in checks):
        res["status"], code = "inconclusive", 2
    else:
        res["status"], code = "passed", 0
    run.save()
    print(f"[gpu_check] {res['status']} in {run.elapsed():.0f} s; results in {args.out}", flush=True)
    for key, c in res["score"].items():
        print(f"[gpu_check]   score {key}: max|diff| {c['max_abs_diff']:.4g} (tolerance {c['tolerance']['max']:.3g}), "
              f"mean|diff| {c['mean_abs_diff']:.4g} (tolerance {c['tolerance']['mean']:.3g}), "
              f"context sensitivity {c.get('context_sensitivity', float('nan')):.3g}, "
              f"adapter effect {c.get('adapter_effect', float('nan')):.3g}", flush=True)
    for key, v in res["biography"].items():
        if isinstance(v, dict):
            print(f"[gpu_check]   biography {key}: {v['records_per_second']:.2f} records/s "
                  f"({v['kept']}/{v['records']} kept)", flush=True)
    for err in res["errors"]:
        print(f"[gpu_check]   error: {err}", flush=True)
    tmp.cleanup()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
