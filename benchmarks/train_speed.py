"""Training speed: the loss ``synthgen train`` computes vs the earlier ways to compute it.

For every task of the suite (or the chosen families), the loss
``-Σ w_y log p(y + end | prompt)`` and its gradient are computed three ways on
the default model with a fresh LoRA adapter (no optimizer step, so all see the
same weights):

* trie: the prompt and the targets as a token trie in one forward pass
  (``synthgen.training.loop.task_loss``, what ``synthgen train`` does);
* padded: the prompt encoded once, the targets as right-padded continuations on
  its KV cache (``synthgen.engines.scoring.option_logprobs``);
* naive: the paper's implementation style, every target its own row holding
  the full prompt + target, in minibatches of 32 rows.

Reports seconds per epoch (one pass over the tasks, all targets) for each, the
ratios, and the largest loss difference from the naive loss.

    python benchmarks/train_speed.py --families numbers,days_dates,colors,countries
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from synthgen.engines.scoring import option_logprobs
from synthgen.engines.transformers import TransformersEngine
from synthgen.training.config import LoraOptions
from synthgen.training.loop import lora_model, task_loss
from synthgen.training.tasks import load_tasks

try:
    from benchmarks._common import stamp
except ImportError:  # run as a script (python benchmarks/train_speed.py): its folder is on sys.path
    from _common import stamp

ROOT = Path(__file__).resolve().parents[1]


def naive_loss(model, prompt_ids, options_ids, weights, batch=32, pad_id=0):
    """Each target a full row (prompt + target), right-padded, 32 rows a batch."""
    total = 0.0
    plen = len(prompt_ids)
    for start in range(0, len(options_ids), batch):
        chunk = options_ids[start : start + batch]
        width = plen + max(len(o) for o in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, opt in enumerate(chunk):
            row = list(prompt_ids) + list(opt)
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        tok = logp[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        target_mask = torch.zeros_like(tok)
        for i, opt in enumerate(chunk):
            target_mask[i, plen - 1 : plen - 1 + len(opt)] = 1
        seq = (tok * target_mask).sum(1)
        part = -(weights[start : start + batch] * seq).sum()
        part.backward()
        total += float(part)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=str(ROOT / "recipes/diffuse/tasks.jsonl"))
    parser.add_argument("--families", default=None, help="comma-separated (default: the whole suite)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/train_speed.json"))
    args = parser.parse_args()
    families = args.families.split(",") if args.families else None
    tasks = load_tasks(args.tasks, families=families)
    engine = TransformersEngine.load(None, adapter="none", device="cpu")
    torch.manual_seed(0)
    model = lora_model(engine.model, LoraOptions(rank=8, alpha=16))
    encoded = []
    for t in tasks:
        pid = engine.encode_prompt(t.prompt)
        encoded.append((pid, engine.encode_options(engine.format_prompt(t.prompt), pid, t.targets),
                        torch.tensor(t.weights)))
    seconds = {"trie": 0.0, "padded": 0.0, "naive": 0.0}
    max_diff = 0.0
    pad_id = engine.tokenizer.pad_token_id

    def timed(method: str, compute, *args) -> float:
        model.zero_grad()
        start = time.perf_counter()
        value = compute(*args)
        seconds[method] += time.perf_counter() - start
        return value

    def trie_step(pid, oids, w) -> float:
        loss = task_loss(model, (pid, oids), w, chunk_size=256)
        loss.backward()
        return float(loss)

    def padded_step(pid, oids, w) -> float:
        loss = -(w * option_logprobs(model, pid, oids, 256, pad_id)).sum()
        loss.backward()
        return float(loss)

    def naive_step(pid, oids, w) -> float:
        return naive_loss(model, pid, oids, w, pad_id=pad_id)

    for (pid, oids, w), t in zip(encoded, tasks):
        trie = timed("trie", trie_step, pid, oids, w)
        padded = timed("padded", padded_step, pid, oids, w)
        naive = timed("naive", naive_step, pid, oids, w)
        max_diff = max(max_diff, abs(trie - naive), abs(padded - naive))
        print(f"{t.id:<28} K={len(oids):<4} loss {trie:9.4f} padded {padded:9.4f} naive {naive:9.4f}", flush=True)
    result = stamp({
        "tasks": len(tasks),
        "targets": sum(len(t.targets) for t in tasks),
        "trie_seconds_per_epoch": seconds["trie"],
        "padded_seconds_per_epoch": seconds["padded"],
        "naive_seconds_per_epoch": seconds["naive"],
        "speedup": seconds["naive"] / seconds["trie"],
        "speedup_over_padded": seconds["padded"] / seconds["trie"],
        "max_abs_loss_diff": max_diff,
    })
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
