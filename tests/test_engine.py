from __future__ import annotations

import math

import pytest
import torch

from synthgen.engines import create_engine
from synthgen.engines.base import cut_at_stop
from synthgen.engines.scoring import naive_option_logprobs, option_logprobs
from synthgen.engines.transformers import TransformersEngine
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
    stop = ["a", "e"]
    full = engine.generate(["Say something."], n=4, max_new_tokens=20, seed=1)[0]
    outs = engine.generate(["Say something."], n=4, max_new_tokens=20, stop=stop, seed=1)[0]
    assert any("a" in f or "e" in f for f in full), "the unstopped samples never reach a stop string"
    assert all("a" not in o and "e" not in o for o in outs)
    # the same draws, cut where the first stop string begins
    assert outs == [cut_at_stop(f, stop) for f in full]


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(SynthgenError, match="unknown engine"):
        create_engine("nope")


def test_bad_adapter_path_is_a_clear_error(tiny_model_dir, tmp_path):
    with pytest.raises(SynthgenError, match="adapter_config.json"):
        TransformersEngine.load(str(tiny_model_dir), adapter=str(tmp_path))


def test_shipped_adapters_resolve_by_name(tmp_path, monkeypatch):
    from synthgen.adapters import SHIPPED_DIR, default_adapter, resolve_adapter

    shipped = SHIPPED_DIR / "smollm2-135m-biography-flat"
    assert resolve_adapter("smollm2-135m-biography-flat") == shipped
    assert resolve_adapter("default") == default_adapter(None)
    assert resolve_adapter("none") is None
    # a directory of that name in the working directory wins over the shipped one
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2-135m-biography-flat").mkdir()
    with pytest.raises(SynthgenError, match="no adapter_config.json"):
        resolve_adapter("smollm2-135m-biography-flat")
    with pytest.raises(SynthgenError, match=r"a shipped adapter \(.*smollm2-135m-biography-flat"):
        resolve_adapter("no-such-adapter")


# ------------------------------------------------------------ per-prompt seeds
SEEDED = ["Give me a name.", "Pick a fruit.", "Hi.", "Write a short biography of a person born in 1950 in Paris."]


def test_per_prompt_seeds_do_not_depend_on_batch_neighbours(engine):
    # A prompt's samples depend on its own seed only: alone, in another order, or
    # with the engine splitting the rows into batches of 3, it gets the same text.
    seeds = [11, 12, 13, 14]
    together = engine.generate(SEEDED, n=2, max_new_tokens=8, seed=seeds)
    alone = [engine.generate([p], n=2, max_new_tokens=8, seed=[s])[0] for p, s in zip(SEEDED, seeds)]
    reordered = engine.generate(SEEDED[::-1], n=2, max_new_tokens=8, seed=seeds[::-1])[::-1]
    batch_size, engine.batch_size = engine.batch_size, 3
    try:
        split = engine.generate(SEEDED, n=2, max_new_tokens=8, seed=seeds)
    finally:
        engine.batch_size = batch_size
    assert together == alone == reordered == split
    # the two samples of a prompt use different streams, and a different seed changes the text
    assert any(a != b for a, b in together)
    assert engine.generate(SEEDED, n=2, max_new_tokens=8, seed=[21, 22, 23, 24]) != together


def test_finished_rows_leave_the_batch(engine):
    # Rows stop at different steps (stop strings); a finished row is dropped from
    # the batch and its KV cache, and the rows still decoding get the same text
    # as when each prompt decodes alone.
    seeds = [31, 32, 33, 34]
    calls: list[int] = []
    hook = engine.model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        together = engine.generate(SEEDED, n=2, max_new_tokens=16, stop=["e", "a"], seed=seeds)
    finally:
        hook.remove()
    alone = [engine.generate([p], n=2, max_new_tokens=16, stop=["e", "a"], seed=[s])[0]
             for p, s in zip(SEEDED, seeds)]
    assert together == alone
    lengths = sorted(len(o) for row in together for o in row)
    assert lengths[0] < lengths[-1]  # the rows did finish at different steps
    assert calls[0] == 8 and min(calls) < 8  # ... and the batch shrank as they did
    assert calls == sorted(calls, reverse=True)


def test_int_seed_gives_each_prompt_its_own_seed(engine):
    # An int seed stands for per-prompt seeds derived from (seed, prompt index):
    # two copies of one prompt get different samples, and the engine's batch
    # size does not matter.
    a = engine.generate(["Pick a fruit.", "Pick a fruit."], max_new_tokens=10, seed=5)
    batch_size, engine.batch_size = engine.batch_size, 1
    try:
        b = engine.generate(["Pick a fruit.", "Pick a fruit."], max_new_tokens=10, seed=5)
    finally:
        engine.batch_size = batch_size
    assert a == b and a[0] != a[1]


def test_one_seed_per_prompt_is_checked(engine):
    with pytest.raises(ValueError, match="one seed per prompt"):
        engine.generate(["a", "b"], seed=[1, 2, 3])


def test_tiny_top_p_and_full_min_p_are_greedy(engine):
    greedy = engine.generate(SEEDED, temperature=0, max_new_tokens=8)
    assert engine.generate(SEEDED, top_p=1e-6, max_new_tokens=8, seed=1) == greedy
    assert engine.generate(SEEDED, min_p=1.0, max_new_tokens=8, seed=2) == greedy


def test_first_token_frequencies_follow_the_model(engine):
    # The sampler draws from the model's distribution: the first token of 3000
    # samples (one generated token each) against softmax of the prompt's logits.
    prompt = "Pick a fruit."
    batch_size, engine.batch_size = engine.batch_size, 1000
    try:
        samples = engine.generate([prompt], n=3000, max_new_tokens=1, seed=0)[0]
    finally:
        engine.batch_size = batch_size
    ids = torch.tensor([engine.encode_prompt(prompt)])
    with torch.no_grad():
        probs = torch.softmax(engine.model(input_ids=ids).logits[0, -1].float(), dim=-1)
    expected: dict[str, float] = {}
    for token, p in enumerate(probs.tolist()):
        text = "" if token == engine.end_id else engine.tokenizer.decode([token], skip_special_tokens=True)
        expected[text] = expected.get(text, 0.0) + p
    top = sorted(expected, key=expected.get, reverse=True)[:5]
    assert expected[top[0]] > 0.02, "the check needs tokens with visible mass"
    for text in top:
        share = samples.count(text) / len(samples)
        assert abs(share - expected[text]) < 4 * (expected[text] * (1 - expected[text]) / len(samples)) ** 0.5 + 1e-3


def test_making_and_loading_an_adapter_prints_no_peft_deprecation_noise(tiny_model_dir, tmp_path):
    # peft reads transformers 5's deprecated `is_gradient_checkpointing` when it wraps
    # a model; synthgen hides that FutureWarning (users cannot act on it).
    import warnings

    from transformers import AutoModelForCausalLM

    from synthgen.training.loop import LoraOptions, lora_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = lora_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraOptions(rank=4, alpha=8))
        model.save_pretrained(tmp_path / "adapter")
        engine = TransformersEngine.load(str(tiny_model_dir), adapter=str(tmp_path / "adapter"), device="cpu")
    assert hasattr(engine.model, "disable_adapter")  # the adapter is attached
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]


@pytest.fixture(scope="module")
def adapted_pair(tiny_model_dir, tmp_path_factory):
    """Two engines on the same saved adapter (one that changes the outputs): one merges it while on, one does not."""
    from transformers import AutoModelForCausalLM

    from synthgen.testing import perturbed_lora

    folder = tmp_path_factory.mktemp("merge") / "adapter"
    perturbed_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), seed=3, std=0.2).save_pretrained(folder)
    merged = TransformersEngine.load(str(tiny_model_dir), adapter=str(folder), device="cpu")
    plain = TransformersEngine.load(str(tiny_model_dir), adapter=str(folder), device="cpu", merge=False)
    return merged, plain


def test_a_merged_adapter_scores_and_samples_as_the_unmerged_one(adapted_pair):
    from synthgen.engines.transformers import _merged

    merged, plain = adapted_pair
    requests = [("Pick a number between 1 and 100.", OPTIONS), ("Name a city.", ["Paris", "Lima", "Oslo"])]
    on = merged.score_many(requests)
    assert _merged(merged.model) and not _merged(plain.model)
    base = plain.score_many(requests, use_adapter=False)
    assert max(abs(a - b) for x, y in zip(on, plain.score_many(requests)) for a, b in zip(x, y)) < 1e-4
    assert max(abs(a - b) for x, y in zip(on, base) for a, b in zip(x, y)) > 0.05  # the adapter matters here
    assert merged.generate(["Tell me a story."], n=3, seed=5, max_new_tokens=12) == \
        plain.generate(["Tell me a story."], n=3, seed=5, max_new_tokens=12)


def test_switching_the_adapter_off_and_on_again_keeps_the_base_weights(adapted_pair):
    from synthgen.engines.transformers import _merged

    merged, plain = adapted_pair
    requests = [("Pick a number between 1 and 100.", OPTIONS)]
    base = plain.score_many(requests, use_adapter=False)[0]
    for _ in range(20):  # a long run switches at every field of every shard
        merged.score_many(requests)
        assert _merged(merged.model)  # merged again after every time it was off
        off = merged.score_many(requests, use_adapter=False)[0]
        assert not _merged(merged.model)
    assert max(abs(a - b) for a, b in zip(off, base)) < 1e-4
    assert max(abs(a - b) for a, b in zip(merged.score_many(requests)[0], plain.score_many(requests)[0])) < 1e-4


def test_an_adapter_being_trained_is_not_merged(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from synthgen.engines.transformers import _merged
    from synthgen.testing import perturbed_lora

    model = perturbed_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), seed=1)
    from peft import PeftModel

    assert isinstance(model, PeftModel) and any(p.requires_grad for p in model.parameters())
    engine = TransformersEngine(model, TransformersEngine.load(str(tiny_model_dir), adapter="none").tokenizer)
    engine.score("Pick a number.", ["1", "2"])
    assert not _merged(engine.model)


def test_a_bf16_adapter_is_not_merged(tiny_model_dir, adapted_pair):
    from synthgen.engines.transformers import _merged

    folder = adapted_pair[0].adapter_name
    engine = TransformersEngine.load(str(tiny_model_dir), adapter=folder, device="cpu", dtype=torch.bfloat16)
    first = engine.score_many([("Pick a number.", ["1", "2", "10"])])
    assert not _merged(engine.model)
    engine.score_many([("Pick a number.", ["1", "2", "10"])], use_adapter=False)
    assert engine.score_many([("Pick a number.", ["1", "2", "10"])]) == first
