"""Continuous batching with retries samples what the rounds would, with fewer decode steps wasted."""

from __future__ import annotations

import pytest

from synthgen.engines.base import Engine
from synthgen.engines.transformers import TransformersEngine

PROMPTS = [f"Write one sentence about the number {i}." for i in range(7)]


@pytest.fixture(scope="module", params=["chat", "plain"])
def engine(request, tiny_model_dir, tiny_plain_model_dir):
    path = tiny_model_dir if request.param == "chat" else tiny_plain_model_dir
    return TransformersEngine.load(str(path), adapter="none", device="cpu", batch_size=4)


def sample(engine, run, prefixes=None, attempts=4):
    """Every (prompt, attempt) -> reply the run produced; a reply is accepted when its length is even."""
    seen: dict[tuple[int, int], str] = {}
    counts = [0] * len(PROMPTS)

    def accept(k, text):
        seen[(k, counts[k])] = text
        counts[k] += 1
        return len(text) % 2 == 0

    run(PROMPTS, lambda k, a: 1000 * k + a, accept, attempts, prefixes=prefixes, temperature=1.0, top_p=0.9,
        max_new_tokens=12, stop=["."])
    return seen


@pytest.mark.parametrize("prefixed", [False, True])
def test_continuous_batching_samples_what_the_rounds_sample(engine, prefixed):
    prefixes = [f"Number {i} is" if i % 2 else None for i in range(len(PROMPTS))] if prefixed else None
    continuous = sample(engine, engine.generate_with_retries, prefixes)
    rounds = sample(engine, lambda *a, **k: Engine.generate_with_retries(engine, *a, **k), prefixes)
    assert continuous == rounds
    assert any(attempt > 0 for _, attempt in rounds)  # some replies were rejected and retried
    # each attempt samples as a single generate call with that attempt's seed would
    for (k, attempt), text in list(rounds.items())[:5]:
        extra = {"prefixes": [prefixes[k]]} if prefixes else {}
        alone = engine.generate([PROMPTS[k]], seed=[1000 * k + attempt], top_p=0.9, max_new_tokens=12, stop=["."],
                                **extra)
        assert alone == [[text]]


def test_attempts_stop_at_the_limit(engine):
    tried = []
    engine.generate_with_retries(PROMPTS[:3], lambda k, a: k + 10 * a, lambda k, text: tried.append(k) is not None,
                                 3, max_new_tokens=4)
    assert sorted(tried) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_shared_prefix_length_leaves_each_prompt_a_token():
    from synthgen.engines.batching import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # the last token is always forwarded per prompt
    assert shared_prefix_length([[7], [7, 8]]) == 0
    assert shared_prefix_length([]) == 0


def test_the_prompts_shared_tokens_are_forwarded_once(engine):
    from synthgen.engines.batching import MIN_SHARED, RetryingDecoder

    texts = [engine.format_prompt(p, None) for p in PROMPTS]
    decoder = RetryingDecoder(engine, texts, [False] * len(texts), lambda k, a: k, lambda k, t: True, 1,
                              {"temperature": 1.0, "top_p": 1.0, "min_p": None, "max_new_tokens": 3, "stop": []})
    assert decoder.shared >= MIN_SHARED  # "Write one sentence about the number" (and the chat turn) is shared
    decoder.run()
    assert decoder.prefix_cache is not None and decoder.prefix_cache.layers[0].keys.shape[2] == decoder.shared


def test_a_retry_reuses_its_prompts_kv_cache(engine):
    from synthgen.engines.batching import RetryingDecoder

    texts = [engine.format_prompt(p, None) for p in PROMPTS]
    tried: list[tuple[int, str]] = []

    def accept(k, text):  # every first reply is rejected
        tried.append((k, text))
        return sum(1 for j, _ in tried if j == k) > 1

    decoder = RetryingDecoder(engine, texts, [False] * len(texts), lambda k, a: 100 * k + a, accept, 3,
                              {"temperature": 1.0, "top_p": 1.0, "min_p": None, "max_new_tokens": 5, "stop": []})
    forwarded = {"prefill": [], "resume": []}
    for name in forwarded:
        method = getattr(decoder, name)

        def counted(jobs, method=method, name=name):
            forwarded[name] += jobs
            return method(jobs)
        setattr(decoder, name, counted)
    decoder.run()
    assert sorted(forwarded["prefill"]) == [(k, 0) for k in range(len(PROMPTS))]  # each prompt forwarded once
    assert sorted(forwarded["resume"]) == [(k, 1) for k in range(len(PROMPTS))]
    assert decoder.kept == {}  # nothing left behind
    # the retry samples what a fresh forward of its prompt samples
    for k in range(len(PROMPTS)):
        second = [text for j, text in tried if j == k][1]
        assert engine.generate([PROMPTS[k]], seed=[100 * k + 1], max_new_tokens=5) == [[second]]


def test_a_slack_layer_appends_in_place_and_grows_when_full():
    import torch

    from synthgen.engines.batching import SLACK, SlackLayer

    keys, values = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    layer = SlackLayer(keys.clone(), values.clone(), 3)  # 3 columns used, 1 spare
    new_k, new_v = torch.randn(2, 3, 1, 5), torch.randn(2, 3, 1, 5)
    buffer = layer.key_buffer
    k, v = layer.update(new_k, new_v)
    assert layer.key_buffer is buffer  # written into the spare column
    assert torch.equal(k, torch.cat([keys[:, :, :3], new_k], 2))
    assert torch.equal(v, torch.cat([values[:, :, :3], new_v], 2))
    more_k, more_v = torch.randn(2, 3, 2, 5), torch.randn(2, 3, 2, 5)
    k, v = layer.update(more_k, more_v)  # no room: moved to a larger buffer, nothing lost
    assert layer.key_buffer is not buffer and layer.key_buffer.shape[2] == 6 + SLACK
    assert torch.equal(k, torch.cat([keys[:, :, :3], new_k, more_k], 2))
    assert torch.equal(v, torch.cat([values[:, :, :3], new_v, more_v], 2))
    assert layer.get_seq_length() == 6
