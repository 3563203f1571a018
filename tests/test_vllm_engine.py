"""The vLLM engine against a fake ``vllm`` package (no GPU, no vllm install).

The fake (``tests/fakes/vllm.py``) runs the real tiny llama with transformers,
so the engine's span sums are checked against the transformers engine's
KV-cache scoring, an independent computation.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import synthgen.engines as engine_mod
from synthgen.engines import create_engine
from synthgen.engines.transformers import TransformersEngine
from synthgen.errors import MissingDependencyError, SynthgenError
from tests.fakes import vllm as fake_vllm
from tests.fakes.vllm import Logprob, LoRARequest

OPTIONS = ["1", "10", "100", "2", "Emma", "marine biologist", "Paris, France", "7"]
PROMPT = "Pick a random number between 1 and 100. Reply with only the number."


@pytest.fixture
def vllm_module(monkeypatch):
    """``synthgen.engines.vllm`` imported against the fake ``vllm`` package."""
    fake_vllm.install(monkeypatch)
    monkeypatch.delitem(sys.modules, "synthgen.engines.vllm", raising=False)
    monkeypatch.setattr(engine_mod, "_FACTORIES", {k: v for k, v in engine_mod._FACTORIES.items() if k != "vllm"})
    module = importlib.import_module("synthgen.engines.vllm")
    yield module
    sys.modules.pop("synthgen.engines.vllm", None)


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model_dir, tmp_path_factory):
    """A rank-4 LoRA adapter for the tiny chat model, with B moved away from zero."""
    from transformers import AutoModelForCausalLM

    from synthgen.training.loop import LoraOptions, lora_model

    torch.manual_seed(1)
    model = lora_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraOptions(rank=4, alpha=8))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    path = tmp_path_factory.mktemp("tiny-adapter")
    model.save_pretrained(path)
    return path


# ------------------------------------------------------------------ tests
def test_create_engine_without_vllm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ModuleNotFoundError(name="vllm")
    monkeypatch.delitem(sys.modules, "synthgen.engines.vllm", raising=False)
    monkeypatch.setattr(engine_mod, "_FACTORIES", {k: v for k, v in engine_mod._FACTORIES.items() if k != "vllm"})
    with pytest.raises(MissingDependencyError, match=r"vllm is not installed.*pip install 'synthgen\[vllm\]'"):
        create_engine("vllm", model="unused")


def test_create_engine_builds_the_vllm_engine(vllm_module, tiny_model_dir):
    engine = create_engine("vllm", model=str(tiny_model_dir), adapter="none")
    assert isinstance(engine, vllm_module.VLLMEngine)
    llm = engine.llm
    assert llm.model_path == str(tiny_model_dir)
    assert llm.kwargs["dtype"] == "bfloat16" and "enable_lora" not in llm.kwargs
    assert engine.lora is None and engine.adapter_name is None


def test_load_maps_options_and_adapter(vllm_module, tiny_model_dir, tiny_adapter):
    engine = vllm_module.load(str(tiny_model_dir), adapter=str(tiny_adapter), dtype=torch.float32,
                              gpu_memory_utilization=0.3, max_model_len=256, max_num_seqs=8)
    kw = engine.llm.kwargs
    assert kw["dtype"] == "float32" and kw["gpu_memory_utilization"] == 0.3
    assert kw["max_model_len"] == 256 and kw["max_num_seqs"] == 8  # passed through to vllm.LLM
    assert kw["enable_lora"] is True and kw["max_loras"] == 1
    assert kw["max_lora_rank"] == 8  # rank 4 -> the smallest rank vLLM accepts that holds it
    assert engine.lora == LoRARequest("synthgen-adapter", 1, str(tiny_adapter))
    assert engine.adapter_name == str(tiny_adapter)


@pytest.mark.parametrize(
    "config, expected",
    [({"r": 4}, 8), ({"r": 8}, 8), ({"r": 16}, 16), ({"r": 17}, 32), ({"r": 8, "rank_pattern": {"q_proj": 64}}, 64),
     ({"r": 300}, 320), ({"r": 1024}, None)],
)
def test_lora_max_rank(vllm_module, tmp_path, config, expected):
    (tmp_path / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    if expected is None:
        with pytest.raises(SynthgenError, match="rank 1024"):
            vllm_module.lora_max_rank(tmp_path)
    else:
        assert vllm_module.lora_max_rank(tmp_path) == expected


@pytest.mark.parametrize("kind", ["chat", "plain"])
def test_score_equals_transformers_engine(vllm_module, tiny_model_dir, tiny_plain_model_dir, kind):
    path = str(tiny_model_dir if kind == "chat" else tiny_plain_model_dir)
    reference = TransformersEngine.load(path, adapter="none", device="cpu")
    engine = vllm_module.load(path, adapter="none")
    got = engine.score(PROMPT, OPTIONS)
    want = reference.score(PROMPT, OPTIONS)
    assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-4), (got, want)

    call = engine.llm.calls[-1]
    prompt_ids = reference.encode_prompt(PROMPT)
    options_ids = reference.encode_options(reference.format_prompt(PROMPT), prompt_ids, OPTIONS)
    # one request per option: prompt ids + option ids (end-of-turn last), tokenised apart
    assert [p["prompt_token_ids"] for p in call["prompts"]] == [prompt_ids + o for o in options_ids]
    assert all(o[-1] == reference.end_id for o in options_ids)
    assert len({len(o) for o in options_ids}) >= 3  # options of several token lengths
    sp = call["params"][0]
    assert sp.max_tokens == 1 and sp.prompt_logprobs is not None and sp.prompt_logprobs >= 0
    assert call["use_tqdm"] is False and call["lora_request"] is None
    assert engine.score(PROMPT, []) == []


def test_score_with_adapter_equals_transformers_engine(vllm_module, tiny_model_dir, tiny_adapter):
    reference = TransformersEngine.load(str(tiny_model_dir), adapter=str(tiny_adapter), device="cpu")
    engine = vllm_module.load(str(tiny_model_dir), adapter=str(tiny_adapter))
    with_adapter = engine.score(PROMPT, OPTIONS)
    assert engine.llm.calls[-1]["lora_request"] == engine.lora
    base = engine.score(PROMPT, OPTIONS, use_adapter=False)
    assert engine.llm.calls[-1]["lora_request"] is None
    assert torch.allclose(torch.tensor(with_adapter), torch.tensor(reference.score(PROMPT, OPTIONS)), atol=1e-4)
    assert torch.allclose(torch.tensor(base), torch.tensor(reference.score(PROMPT, OPTIONS, use_adapter=False)),
                          atol=1e-4)
    assert max(abs(a - b) for a, b in zip(with_adapter, base)) > 1e-2  # the adapter matters


def test_generate_maps_sampling_params(vllm_module, tiny_model_dir):
    engine = vllm_module.load(str(tiny_model_dir), adapter="none")
    reference = TransformersEngine.load(str(tiny_model_dir), adapter="none", device="cpu")
    prompts = ["Give me a name.", "Pick a fruit.", "Give me a name."]
    out = engine.generate(prompts, n=2, temperature=0.9, top_p=0.9, min_p=0.05, max_new_tokens=5,
                          stop=["Paris"], seed=[11, 12, 11])
    call = engine.llm.calls[-1]
    assert [p["prompt_token_ids"] for p in call["prompts"]] == [reference.encode_prompt(p) for p in prompts]
    for sp in call["params"]:
        assert (sp.n, sp.temperature, sp.top_p, sp.min_p, sp.max_tokens) == (2, 0.9, 0.9, 0.05, 5)
        assert sp.stop == ["Paris"] and sp.stop_token_ids == [engine.end_id]
    seeds = [sp.seed for sp in call["params"]]
    assert seeds[0] == seeds[2] != seeds[1]
    assert call["use_tqdm"] is False and call["lora_request"] is None
    assert len(out) == 3 and all(len(row) == 2 for row in out)
    assert out[0] == out[2]  # same prompt, same seed: same samples
    # samples come back in index order (the fake returns them reversed)
    assert out[0][0] != out[0][1]
    assert out[0] == [text for text, _ in (engine.llm._sample(engine.llm.base, call["prompts"][0]["prompt_token_ids"],
                                                              call["params"][0], k) for k in range(2))]


def test_per_prompt_seeds_do_not_depend_on_the_batch(vllm_module, tiny_model_dir):
    engine = vllm_module.load(str(tiny_model_dir), adapter="none")
    kwargs = dict(n=2, temperature=1.0, max_new_tokens=6)
    together = engine.generate(["Give me a name.", "Pick a fruit."], seed=[3, 4], **kwargs)
    alone = engine.generate(["Pick a fruit."], seed=[4], **kwargs)
    other_batch = engine.generate(["Name a city.", "Pick a fruit.", "Give me a name."], seed=[9, 4, 3], **kwargs)
    assert alone[0] == together[1] == other_batch[1]
    assert together[0] == other_batch[2]


def test_seed_mapping(vllm_module, tiny_model_dir):
    engine = vllm_module.load(str(tiny_model_dir), adapter="none")

    def seeds(**kwargs):
        engine.generate(kwargs.pop("prompts"), max_new_tokens=1, **kwargs)
        return [sp.seed for sp in engine.llm.calls[-1]["params"]]

    # one int for the call: equal prompts still get different, reproducible seeds
    one = seeds(prompts=["Pick a fruit.", "Pick a fruit."], seed=5)
    assert one[0] != one[1] and one == seeds(prompts=["Pick a fruit.", "Pick a fruit."], seed=5)
    assert one != seeds(prompts=["Pick a fruit.", "Pick a fruit."], seed=6)
    # consecutive per-prompt seeds: vLLM seeds sample k with seed + k, the streams must not overlap
    a, b = seeds(prompts=["Pick a fruit.", "Pick a fruit."], seed=[1, 2], n=4)
    assert not set(range(a, a + 4)) & set(range(b, b + 4))
    assert seeds(prompts=["Pick a fruit."], seed=None) == [None]
    with pytest.raises(ValueError, match="2 seeds for 1 prompts"):
        seeds(prompts=["Pick a fruit."], seed=[1, 2])


def test_greedy_with_several_samples(vllm_module, tiny_model_dir):
    engine = vllm_module.load(str(tiny_model_dir), adapter="none")
    out = engine.generate(["Pick a fruit."], n=3, temperature=0.0, max_new_tokens=4, min_p=None)
    sp = engine.llm.calls[-1]["params"][0]
    assert sp.n == 1 and sp.temperature == 0.0 and sp.min_p == 0.0  # vLLM refuses greedy with n > 1
    assert len(out[0]) == 3 and len(set(out[0])) == 1
    assert engine.generate([], n=2) == []


def test_generate_uses_the_adapter_only_when_asked(vllm_module, tiny_model_dir, tiny_adapter):
    engine = vllm_module.load(str(tiny_model_dir), adapter=str(tiny_adapter))
    engine.generate(["Pick a fruit."], max_new_tokens=2, seed=0)
    assert engine.llm.calls[-1]["lora_request"] == LoRARequest("synthgen-adapter", 1, str(tiny_adapter))
    engine.generate(["Pick a fruit."], max_new_tokens=2, seed=0, use_adapter=False)
    assert engine.llm.calls[-1]["lora_request"] is None


def test_span_logprob_checks_lengths(vllm_module):
    plp = [None, {5: Logprob(-1.0)}, {7: Logprob(-0.5), 6: Logprob(-2.0)}]
    assert vllm_module.span_logprob(plp, [4, 5, 6], start=1) == pytest.approx(-3.0)
    assert vllm_module.span_logprob(plp, [4, 5, 6], start=2) == pytest.approx(-2.0)
    with pytest.raises(SynthgenError, match="2 prompt log-probs for a sequence of 3 tokens"):
        vllm_module.span_logprob(plp[:2], [4, 5, 6], start=1)


# ------------------------------------------------- benchmarks/gpu_check.py
@pytest.fixture(scope="module")
def gpu_check():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # cheap: heavy imports happen inside main()
    return module


def test_gpu_check_help(gpu_check, capsys):
    with pytest.raises(SystemExit) as info:
        gpu_check.parse_args(["--help"])
    assert info.value.code == 0
    assert "--budget" in capsys.readouterr().out
    args = gpu_check.parse_args([])
    assert args.dtype == "bfloat16" and args.model is None and args.adapter == "default"


def test_gpu_check_agreement_rule(gpu_check):
    ref = [[-1.0, -2.5, -4.0], [-0.5, -3.0]]
    noisy = [[v + 0.01 for v in row] for row in ref]
    assert gpu_check.agreement(ref, noisy, None)["passed"]  # float32: within the 0.02 floor
    one_token_off = [[-1.0, -2.5, -4.0 - 1.2], [-0.5, -3.0]]  # e.g. an end-of-turn token counted twice
    result = gpu_check.agreement(ref, one_token_off, None)
    assert not result["passed"] and result["max_abs_diff"] == pytest.approx(1.2)
    # in bf16 the tolerance scales with what transformers itself drifts in that dtype
    drifted = [[-1.0, -2.5, -4.0 + 0.3], [-0.5 + 0.05, -3.0]]  # max 0.3, mean 0.07
    shifted = [[v + 5.0 for v in row] for row in ref]
    result = gpu_check.agreement(ref, [[v - 0.1 for v in row] for row in ref], drifted, shifted)
    assert result["tolerance"]["max"] == pytest.approx(0.9) and result["tolerance"]["mean"] == pytest.approx(0.21)
    assert result["passed"] and result["conclusive"]  # scores move 5 nats with the prompt, >= 2x the tolerance
    # every option off by 0.5: within the max tolerance but not the mean one
    assert not gpu_check.agreement(ref, [[v - 0.5 for v in row] for row in ref], drifted, shifted)["passed"]
    insensitive = [[v + 0.3 for v in row] for row in ref]  # moves less than twice the mean tolerance
    assert not gpu_check.agreement(ref, ref, drifted, insensitive)["conclusive"]
