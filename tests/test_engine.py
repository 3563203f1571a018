from __future__ import annotations

import math

import pytest
import torch

from synthgen.engine import (
    TransformersEngine,
    create_engine,
    cut_at_stop,
    naive_option_logprobs,
    option_logprobs,
)
from synthgen.errors import SynthgenError

OPTIONS = ["1", "10", "100", "2", "Emma", "marine biologist", "Paris, France", "7"]


@pytest.fixture(scope="module", params=["chat", "plain"])
def engine(request, tiny_model_dir, tiny_plain_model_dir):
    path = tiny_model_dir if request.param == "chat" else tiny_plain_model_dir
    return TransformersEngine.load(str(path), adapter="none", device="cpu")


def test_chat_template_is_applied(engine):
    text = engine.format_prompt("Pick a number.")
    if engine.chat:
        assert text.startswith("<|im_start|>user\nPick a number.") and text.endswith("<|im_start|>assistant\n")
        assert engine.end_id == engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    else:
        assert text == "Pick a number.\n"
        assert engine.end_id == engine.tokenizer.eos_token_id


def test_options_have_different_lengths_and_shared_prefixes(engine):
    text = engine.format_prompt("Pick a number between 1 and 100.")
    ids = engine.encode_options(text, engine.encode_prompt("Pick a number between 1 and 100."), OPTIONS)
    lengths = {len(i) for i in ids}
    assert len(lengths) >= 3
    assert ids[1][: len(ids[0]) - 1] == ids[0][:-1]  # "1" is a token prefix of "10"
    assert all(i[-1] == engine.end_id for i in ids)


def test_score_matches_naive_full_sequence(engine):
    prompt = "Pick a random number between 1 and 100. Reply with only the number."
    fast = torch.tensor(engine.score(prompt, OPTIONS))
    prompt_ids = engine.encode_prompt(prompt)
    options_ids = engine.encode_options(engine.format_prompt(prompt), prompt_ids, OPTIONS)
    with torch.no_grad():
        naive = naive_option_logprobs(engine.model, prompt_ids, options_ids)
    assert torch.allclose(fast, naive, atol=1e-4), (fast - naive).abs().max()


def test_score_is_independent_of_chunking(engine):
    prompt = "Name a city."
    prompt_ids = engine.encode_prompt(prompt)
    options_ids = engine.encode_options(engine.format_prompt(prompt), prompt_ids, OPTIONS)
    with torch.no_grad():
        one = option_logprobs(engine.model, prompt_ids, options_ids, chunk_size=256)
        small = option_logprobs(engine.model, prompt_ids, options_ids, chunk_size=3)
    assert torch.allclose(one, small, atol=1e-5)


def test_complete_option_set_probabilities(engine):
    # Every option of a complete set is a probability in [0, 1] and they sum to at most 1.
    options = [str(i) for i in range(1, 11)]
    probs = [math.exp(v) for v in engine.score("Pick a number between 1 and 10.", options)]
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert 0.0 < sum(probs) <= 1.0 + 1e-6


def test_generate_same_seed_same_text(engine):
    prompts = ["Give me a name.", "Pick a fruit."]
    a = engine.generate(prompts, n=3, max_new_tokens=12, seed=123)
    b = engine.generate(prompts, n=3, max_new_tokens=12, seed=123)
    c = engine.generate(prompts, n=3, max_new_tokens=12, seed=124)
    assert a == b
    assert a != c
    assert len(a) == 2 and all(len(row) == 3 for row in a)


def test_generate_left_padding_matches_unbatched(engine):
    # Greedy decoding in a batch with prompts of different lengths gives the same
    # text as decoding each prompt alone: left padding is handled.
    prompts = ["Hi.", "Write a short biography of a person born in 1950 in Paris."]
    batched = engine.generate(prompts, temperature=0, max_new_tokens=8)
    alone = [engine.generate([p], temperature=0, max_new_tokens=8)[0] for p in prompts]
    assert batched == alone


def test_stop_strings_cut_output():
    assert cut_at_stop("Emma\nSmith", ["\n"]) == "Emma"
    assert cut_at_stop("abc", ["x"]) == "abc"
    assert cut_at_stop("a.b,c", [",", "."]) == "a"


def test_generate_respects_stop(engine):
    outs = engine.generate(["Say something."], n=4, max_new_tokens=20, stop=["a", "e"], seed=1)[0]
    assert all("a" not in o and "e" not in o for o in outs)


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(SynthgenError, match="unknown engine"):
        create_engine("nope")


def test_bad_adapter_path_is_a_clear_error(tiny_model_dir, tmp_path):
    with pytest.raises(SynthgenError, match="adapter_config.json"):
        TransformersEngine.load(str(tiny_model_dir), adapter=str(tmp_path))
