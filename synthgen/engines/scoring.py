"""Scoring maths: sequence log-probabilities of options after one shared prompt.

The padded path of generation (``scoring="padded"``) and the reference the
trie scoring of :mod:`synthgen.engines.trie` is tested against; works under
autograd.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def option_logprobs(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    options_ids: Sequence[Sequence[int]],
    chunk_size: int = 256,
    pad_id: int = 0,
) -> torch.Tensor:
    """Sequence log-probabilities of each option after one shared prompt.

    The prompt runs once with ``use_cache=True``; its key/value tensors are
    expanded to a chunk of options, which run as one right-padded batch with
    positions continuing after the prompt. The first token of each option is
    scored from the prompt's last logits. Works under autograd (training): the
    gradient flows through the shared prompt encoding.
    """
    from transformers import DynamicCache

    device = next(model.parameters()).device
    prompt = torch.tensor([list(prompt_ids)], device=device)
    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)  # only the last position's logits
    first_logp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    kv = [(layer.keys, layer.values) for layer in out.cache.layers]
    plen = prompt.shape[1]
    config = model.config
    results = []
    for start in range(0, len(options_ids), chunk_size):
        chunk = options_ids[start : start + chunk_size]
        b, width = len(chunk), max(len(o) for o in chunk)
        ids = torch.full((b, width), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((b, plen + width), dtype=torch.long, device=device)
        mask[:, :plen] = 1
        for i, opt in enumerate(chunk):
            ids[i, : len(opt)] = torch.tensor(opt, device=device)
            mask[i, plen : plen + len(opt)] = 1
        lengths = torch.tensor([len(o) for o in chunk], device=device)
        total = first_logp[ids[:, 0]]
        if width > 1:
            cache = DynamicCache(config=config)
            for layer, (k, v) in enumerate(kv):
                cache.update(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1), layer)
            positions = torch.arange(plen, plen + width, device=device).unsqueeze(0).expand(b, -1)
            logits = model(
                input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], cache=cache
            ).logits.float()
            logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            valid = torch.arange(1, width, device=device).unsqueeze(0) < lengths.unsqueeze(1)
            total = total + (logp * valid).sum(dim=1)
        results.append(total)
    return torch.cat(results)


def naive_option_logprobs(
    model: torch.nn.Module, prompt_ids: Sequence[int], options_ids: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Reference implementation: one full forward pass per option (slow)."""
    device = next(model.parameters()).device
    scores = []
    for opt in options_ids:
        ids = torch.tensor([list(prompt_ids) + list(opt)], device=device)
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        plen = len(prompt_ids)
        positions = torch.arange(plen - 1, plen - 1 + len(opt), device=device)
        scores.append(logp[positions, torch.tensor(opt, device=device)].sum())
    return torch.stack(scores)
