"""Trie scoring (synthgen.engines.trie) equals one full forward per option, however it is packed."""

from __future__ import annotations

import pytest
import torch

from synthgen.engines.scoring import naive_option_logprobs
from synthgen.engines.transformers import TransformersEngine
from synthgen.engines.trie import build_segment, pack, packed_option_logprobs, split_request, trie_size
from synthgen.errors import SynthgenError

# option sets: shared first tokens, options that are prefixes of others, a duplicate, a set of one
SETS = [
    ("Pick a number between 1 and 100.", ["1", "10", "100", "2", "7", "10"]),
    ("Give a first name.", ["Ann", "Anna", "Anne", "Annabel", "Bob", "Bo", "B"]),
    ("Name a job.", ["marine biologist", "marine engineer", "marine", "nurse"]),
    ("Say yes.", ["yes"]),
]


@pytest.fixture(scope="module", params=["chat", "plain"])
def engine(request, tiny_model_dir, tiny_plain_model_dir):
    path = tiny_model_dir if request.param == "chat" else tiny_plain_model_dir
    return TransformersEngine.load(str(path), adapter="none", device="cpu")


def encoded(engine, prompt, options):
    prompt_ids = engine.encode_prompt(prompt)
    return prompt_ids, engine.encode_options(engine.format_prompt(prompt), prompt_ids, options)


@pytest.mark.parametrize("budget", [4096, 40, 1])
def test_packed_scores_equal_one_forward_per_option(engine, budget):
    requests = [encoded(engine, prompt, options) for prompt, options in SETS]
    with torch.inference_mode():
        packed = packed_option_logprobs(engine.model, requests, budget)
        for (prompt_ids, options_ids), got in zip(requests, packed):
            naive = naive_option_logprobs(engine.model, prompt_ids, options_ids)
            assert torch.allclose(got, naive, atol=1e-4), (got - naive).abs().max()


def test_tries_share_prefixes_and_split_to_fit(engine):
    prompt_ids, options_ids = encoded(engine, *SETS[1])
    seg = build_segment(0, prompt_ids, options_ids, range(len(options_ids)))
    assert len(seg.tokens) == trie_size(options_ids) < sum(len(o) - 1 for o in options_ids)
    assert all(p < i for i, p in enumerate(seg.parents))  # a parent comes before its children
    budget = len(prompt_ids) + 3
    parts = split_request(0, prompt_ids, options_ids, budget)
    assert len(parts) > 1
    assert sorted(k for part in parts for k in part.option_index) == list(range(len(options_ids)))
    assert all(part.length <= budget or len(part.option_index) == 1 for part in parts)
    rows = pack(parts, 10 * budget)
    assert sum(len(row) for row in rows) == len(parts)
    assert all(sum(s.length for s in row) <= 10 * budget or len(row) == 1 for row in rows)


def test_trie_and_padded_engines_agree_and_score_many_equals_score(engine):
    padded = TransformersEngine(engine.model, engine.tokenizer, scoring="padded")
    many = engine.score_many(SETS)
    for (prompt, options), values in zip(SETS, many):
        assert values == pytest.approx(engine.score(prompt, options), abs=1e-5)
        assert values == pytest.approx(padded.score(prompt, options), abs=1e-4)
    assert engine.score_many([("Say yes.", [])]) == [[]]


def test_unknown_scoring_is_a_clear_error(engine):
    with pytest.raises(SynthgenError, match="unknown scoring 'fast'"):
        TransformersEngine(engine.model, engine.tokenizer, scoring="fast")


def test_the_engine_counts_the_tokens_it_forwards_to_score(engine):
    trie = TransformersEngine(engine.model, engine.tokenizer)
    padded = TransformersEngine(engine.model, engine.tokenizer, scoring="padded", score_chunk=4)
    prompt, options = SETS[1]
    prompt_ids, options_ids = encoded(engine, prompt, options)
    trie.score(prompt, options)
    assert trie.tokens_scored == len(prompt_ids) + trie_size(options_ids)  # one segment: prompt + trie nodes
    padded.score(prompt, options)
    widest = [max(len(o) for o in options_ids[i:i + 4]) - 1 for i in range(0, len(options_ids), 4)]
    chunks = [len(options_ids[i:i + 4]) for i in range(0, len(options_ids), 4)]
    assert padded.tokens_scored == len(prompt_ids) + sum(w * c for w, c in zip(widest, chunks))
    trie.score_many(SETS)
    assert trie.tokens_scored > len(prompt_ids) + trie_size(options_ids)  # counts add up over calls
