"""The vLLM engine against a fake ``vllm`` package (no GPU, no vllm install).

The fake ``LLM`` behaves like the real one where the engine depends on it: it
takes token-id prompts, one ``SamplingParams`` or one per prompt, and a
``LoRARequest``; it samples with a per-request seed (the k-th of n samples with
``seed + k``, as vLLM does), refuses greedy sampling with n > 1, and returns
prompt log-probs as one dict per position (None first) holding the top-k tokens
and the actual one. Its numbers come from the real tiny llama (and LoRA adapter)
loaded with transformers, through a full forward pass per sequence, so the
engine's span sums are checked against the transformers engine's KV-cache
scoring, an independent computation.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import synthgen.engines as engine_mod
from synthgen.engines import create_engine
from synthgen.engines.transformers import TransformersEngine
from synthgen.errors import MissingDependencyError, SynthgenError

OPTIONS = ["1", "10", "100", "2", "Emma", "marine biologist", "Paris, France", "7"]
PROMPT = "Pick a random number between 1 and 100. Reply with only the number."


# ---------------------------------------------------------------- the fake
@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list
    prompt_logprobs: list | None
    outputs: list


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


class SamplingParams:
    """The fields of vllm.SamplingParams the engine may set, validated like vLLM."""

    def __init__(self, n=1, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, seed=None, stop=None,
                 stop_token_ids=None, max_tokens=16, prompt_logprobs=None, logprobs=None, detokenize=True,
                 skip_special_tokens=True, include_stop_str_in_output=False):
        if n > 1 and temperature < 1e-5:
            raise ValueError(f"n must be 1 when using greedy sampling, got {n}.")
        if not 0.0 < top_p <= 1.0 or not 0.0 <= min_p <= 1.0 or temperature < 0:
            raise ValueError("bad sampling parameters")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        self.n, self.temperature, self.top_p, self.top_k, self.min_p = n, temperature, top_p, top_k, min_p
        self.seed, self.stop = seed, [stop] if isinstance(stop, str) else list(stop or [])
        self.stop_token_ids = list(stop_token_ids or [])
        self.max_tokens, self.prompt_logprobs, self.logprobs = max_tokens, prompt_logprobs, logprobs
        self.detokenize, self.skip_special_tokens = detokenize, skip_special_tokens
        self.include_stop_str_in_output = include_stop_str_in_output


class LLM:
    """Records every call; runs the tiny model with transformers."""

    def __init__(self, model, **kwargs):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path, self.kwargs, self.calls = model, kwargs, []
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        self.adapted: dict[str, torch.nn.Module] = {}

    def _model(self, lora_request):
        if lora_request is None:
            return self.base
        assert isinstance(lora_request, LoRARequest), type(lora_request)
        assert self.kwargs.get("enable_lora"), "a LoRARequest needs LLM(enable_lora=True)"
        if lora_request.lora_path not in self.adapted:
            from peft import PeftModel
            from transformers import AutoModelForCausalLM

            base = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
            self.adapted[lora_request.lora_path] = PeftModel.from_pretrained(base, lora_request.lora_path).eval()
        return self.adapted[lora_request.lora_path]

    @torch.inference_mode()
    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None):
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(params) == len(prompts)
        self.calls.append({"prompts": prompts, "params": params, "use_tqdm": use_tqdm, "lora_request": lora_request})
        model = self._model(lora_request)
        results = []
        for i, (prompt, sp) in enumerate(zip(prompts, params)):
            ids = list(prompt["prompt_token_ids"])
            plp = self._prompt_logprobs(model, ids, sp.prompt_logprobs) if sp.prompt_logprobs is not None else None
            samples = [self._sample(model, ids, sp, k) for k in range(sp.n)]
            # the engine must order the samples by their index, not by position
            outputs = [CompletionOutput(k, text, toks) for k, (text, toks) in enumerate(samples)][::-1]
            results.append(RequestOutput(str(i), ids, plp, outputs))
        return results

    @staticmethod
    def _prompt_logprobs(model, ids, k):
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
        out = [None]
        for j in range(1, len(ids)):
            row = logp[j - 1]
            ranked = torch.argsort(row, descending=True)
            top = [int(t) for t in ranked[: max(k, 0)]]
            # top-k first, the actual token last (a reader must look it up by id)
            entry = {t: Logprob(float(row[t]), rank + 1) for rank, t in enumerate(top)}
            actual_rank = int((ranked == ids[j]).nonzero()) + 1
            entry.setdefault(ids[j], Logprob(float(row[ids[j]]), actual_rank))
            out.append(entry)
        return out

    def _sample(self, model, ids, sp, k):
        generator = torch.Generator().manual_seed(sp.seed + k) if sp.seed is not None else None
        new: list[int] = []
        for _ in range(sp.max_tokens):
            logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1].float()
            if sp.temperature < 1e-5:
                token = int(logits.argmax())
            else:
                probs = torch.softmax(logits / sp.temperature, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            if token in sp.stop_token_ids:
                break
            new.append(token)
        text = self.tokenizer.decode(new, skip_special_tokens=sp.skip_special_tokens)
        for s in sp.stop:
            if s in text:
                text = text[: text.find(s)]
        return text, new


@pytest.fixture
def vllm_module(monkeypatch):
    """``synthgen.engines.vllm`` imported against the fake ``vllm`` package."""
    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = LLM, SamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    fake.lora, lora.request = lora, request
    for name, module in [("vllm", fake), ("vllm.lora", lora), ("vllm.lora.request", request)]:
        monkeypatch.setitem(sys.modules, name, module)
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
