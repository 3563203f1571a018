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
def build_anchors(engine, model, prompts: list[str], max_new_tokens: int, batch_size: int = 16) -> list[Anchor]:
    """The base model's greedy reply to each prompt and its log-probs along it.

    The replies are decoded ``batch_size`` prompts at a time (left-padded, one
    batched greedy decode); each prompt + reply is then scored alone, so an
    anchor's log-probs do not depend on its batch neighbours.
    """
    anchors = []
    was_training = model.training
    model.eval()
    end = engine.end_id
    pad = engine.tokenizer.pad_token_id
    pad = end if pad is None else pad
    with adapter_off(model):
        for begin in range(0, len(prompts), batch_size):
            group = prompts[begin: begin + batch_size]
            encoded = [engine.encode_prompt(prompt) for prompt in group]
            width = max(len(e) for e in encoded)
            ids = torch.full((len(group), width), pad, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for i, e in enumerate(encoded):
                ids[i, width - len(e):] = torch.tensor(e)
                mask[i, width - len(e):] = 1
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=end, pad_token_id=pad)
            for prompt, e, row in zip(group, encoded, out[:, width:].tolist()):
                reply_ids = row[: row.index(end) + 1] if end in row else row  # up to and with the end of turn
                seq = torch.tensor([e + reply_ids])
                start = len(e) - 1
                logits = model(input_ids=seq).logits[0, start:-1].float()
                reply = engine.tokenizer.decode(reply_ids, skip_special_tokens=True)
                anchors.append(Anchor(prompt, seq, start, torch.log_softmax(logits, dim=-1), reply))
    model.train(was_training)
    return anchors


def anchor_kl(model, anchor: Anchor) -> torch.Tensor:
    """Mean over the reply's positions of KL(base ‖ model) for the next token (nats)."""
    keep = anchor.ids.shape[1] - anchor.start  # logits from the last prompt position on
    logits = model(input_ids=anchor.ids, logits_to_keep=keep).logits[0, :-1].float()
    logq = torch.log_softmax(logits, dim=-1)
    return (anchor.base_logp.exp() * (anchor.base_logp - logq)).sum(-1).mean()
