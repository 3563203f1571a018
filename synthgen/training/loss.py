"""The diffuse loss of one task, and the per-family stop rule.

A task's loss is ``-Σ_y w_y · log p(y + end | prompt)`` (:func:`task_loss`),
the prompt encoded once and shared by every target, the targets forwarded as a
token trie (:func:`synthgen.engines.trie.packed_option_logprobs`, gradient
through it). Its minimum is ``H(w)``. With ``renormalize``, ``p`` is renormalised over the
targets scored, so the loss is ``H(w) + KL(w ‖ p / Σp)``: the distribution that
exact sampling over a field's options draws from. Renormalised over a random
sample of the targets (``max_targets_per_step``, the weights renormalised over
the sample too), it has the same minimiser, ``p ∝ w``, since a distribution
proportional to ``w`` is proportional to it on every subset, and only then.
"""

from __future__ import annotations

import random

import torch


def option_logp(model, encoded: tuple[list[int], list[list[int]]], chunk_size: int) -> torch.Tensor:
    """``log p(y + end | prompt)`` of every target of an encoded task (under autograd).

    The targets are scored as a token trie after the prompt, one forward pass per
    ``chunk_size`` targets (:func:`synthgen.engines.trie.packed_option_logprobs`):
    equal to the padded scoring up to float rounding, with no padding and no copy
    of the prompt's cache per target."""
    from synthgen.engines.trie import packed_option_logprobs

    prompt_ids, options_ids = encoded
    return torch.cat([packed_option_logprobs(model, [(prompt_ids, options_ids[start: start + chunk_size])])[0]
                      for start in range(0, len(options_ids), chunk_size)])


def loss_from_logp(logp: torch.Tensor, weights: torch.Tensor, renormalize: bool = False) -> torch.Tensor:
    """``-Σ w_y log p_y``; with ``renormalize``, of ``p`` renormalised over these targets."""
    if renormalize:
        logp = logp - torch.logsumexp(logp, dim=0)
    return -(weights.to(logp.device) * logp).sum()


def task_loss(model, encoded: tuple[list[int], list[list[int]]], weights: torch.Tensor, chunk_size: int,
              renormalize: bool = False) -> torch.Tensor:
    """``-Σ w_y log p(y + end | prompt)`` with the prompt encoded once; with
    ``renormalize``, of ``p`` renormalised over the targets (``Σ w = 1``: the loss
    is then ``H(w) + KL(w ‖ p / Σ p)``)."""
    return loss_from_logp(option_logp(model, encoded, chunk_size), weights, renormalize)


@torch.no_grad()
def renormalized_kl(logp: torch.Tensor, weights: torch.Tensor) -> float:
    """KL(q ‖ w) in nats, ``q`` the distribution renormalised over these targets and ``w``
    the weights renormalised alike: the audit's ``kl_to_target`` for this task (or sample of it)."""
    logq = logp.detach().double() - torch.logsumexp(logp.detach().double(), dim=0)
    w = weights.to(logq.device, torch.float64)
    w = w / w.sum()
    q = logq.exp()
    keep = q > 0
    return float((q[keep] * (logq[keep] - torch.log(w[keep].clamp_min(1e-300)))).sum())


def family_done(loss: float, optimum: float, n_tasks: int, slack: float) -> bool:
    """Early stop of a family after an epoch: its loss within ``(1 + slack)`` of
    its optimum; a family of one-answer tasks (optimum 0: facts) stops once its
    mean loss per task is at most ``slack`` nats (each answer at p >= e^-slack)."""
    if optimum <= 1e-9:
        return loss <= slack * n_tasks + 1e-6
    return loss <= (1 + slack) * optimum + 1e-6


def subsample(encoded, weights: torch.Tensor, limit: int | None, rng: random.Random,
              renormalize: bool = False):
    """At most ``limit`` targets of a task, drawn without replacement (None = every
    target, the paper's full objective). The weights are scaled by K/limit, so the
    loss stays an unbiased estimate of the full one; with ``renormalize``, they are
    renormalised to sum 1 over the sample instead (the renormalised loss of the sample)."""
    prompt_ids, options_ids = encoded
    k = len(options_ids)
    if limit is None or k <= limit:
        return encoded, weights
    idx = sorted(rng.sample(range(k), limit))
    sample = weights[idx]
    return (prompt_ids, [options_ids[i] for i in idx]), sample / sample.sum() if renormalize else sample * (k / limit)
