"""Keep the base model's ordinary behaviour while training a diffuse adapter.

Diffuse training pushes "pick a random …" prompts towards flat distributions;
left alone, the adapter also flattens answers that should stay sharp ("What is
the capital of France?"). The regulariser here anchors the adapter to the base
model on ordinary prompts: for each prompt in a ``preserve`` file, the base
model's greedy reply is computed once (adapter off), with the base model's
next-token log-probabilities along it; during training each step adds

    preserve_weight · mean_t KL(p_base(· | prompt, reply<t) ‖ p_adapter(· | prompt, reply<t))

for one anchor (round robin), so the adapter is penalised for moving away from
the base model there. The KL is over the whole vocabulary, so it keeps the
base model's uncertainty as well as its top answer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from synthgen.errors import ConfigError


@dataclass
class Anchor:
    prompt: str
    ids: torch.Tensor  # (1, L): prompt + the base model's reply
    start: int  # first position whose next-token distribution is anchored (last prompt token)
    base_logp: torch.Tensor  # (L - 1 - start, V): base log-probs at those positions
    reply: str


def read_prompts(path: str | Path, source: str, key: str = "preserve") -> list[str]:
    """One prompt per line; blank lines and lines starting with ``#`` are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(source, key, f"prompt file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(source, key, f"cannot read {path}: {err}") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ConfigError(source, key, f"{path} has no prompts (one per line)")
    return prompts


def adapter_off(model):
    """A context where a peft model runs as its base model."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


@torch.no_grad()
def build_anchors(engine, model, prompts: list[str], max_new_tokens: int) -> list[Anchor]:
    """The base model's greedy reply to each prompt and its log-probs along it."""
    anchors = []
    was_training = model.training
    model.eval()
    with adapter_off(model):
        for prompt in prompts:
            prompt_ids = torch.tensor([engine.encode_prompt(prompt)])
            out = model.generate(input_ids=prompt_ids, attention_mask=torch.ones_like(prompt_ids),
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=engine.end_id, pad_token_id=engine.tokenizer.pad_token_id)
            ids = out[:, : prompt_ids.shape[1] + max_new_tokens]
            start = prompt_ids.shape[1] - 1
            logits = model(input_ids=ids).logits[0, start:-1].float()
            reply = engine.tokenizer.decode(ids[0, prompt_ids.shape[1]:], skip_special_tokens=True)
            anchors.append(Anchor(prompt, ids, start, torch.log_softmax(logits, dim=-1), reply))
    model.train(was_training)
    return anchors


def anchor_kl(model, anchor: Anchor) -> torch.Tensor:
    """Mean over the reply's positions of KL(base ‖ model) for the next token (nats)."""
    logits = model(input_ids=anchor.ids).logits[0, anchor.start:-1].float()
    logq = torch.log_softmax(logits, dim=-1)
    return (anchor.base_logp.exp() * (anchor.base_logp - logq)).sum(-1).mean()
