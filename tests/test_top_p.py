"""The top-p filter's fast path keeps exactly the tokens a full stable sort keeps (ties included)."""

from __future__ import annotations

import pytest
import torch

from synthgen.engines.transformers import TOP_P_CANDIDATES, _top_p_filter


def full_sort_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
    return probs.masked_fill(drop.scatter(-1, order, drop), 0.0)


@pytest.mark.parametrize("vocab", [5, TOP_P_CANDIDATES + 44, 8192])
@pytest.mark.parametrize("scale", [0.05, 1.0, 4.0, 12.0])
@pytest.mark.parametrize("ties", [False, True])
def test_fast_top_p_equals_the_full_sort(vocab, scale, ties):
    gen = torch.Generator().manual_seed(vocab + int(10 * scale))
    logits = torch.randn(6, vocab, generator=gen) * scale
    probs = torch.softmax(logits.round() if ties else logits, dim=-1)
    for top_p in (0.3, 0.9, 0.999):
        expected = full_sort_filter(probs, top_p)
        assert torch.equal(_top_p_filter(probs, top_p), expected)
        assert torch.equal(_top_p_filter(probs, top_p, candidates=0), expected)  # the whole-vocabulary sort
        assert (expected > 0).any(dim=-1).all()
