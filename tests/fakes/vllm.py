"""A fake ``vllm`` package that runs the real tiny llama with transformers.

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

import types
from dataclasses import dataclass

import torch


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


def install(monkeypatch) -> None:
    """Make ``import vllm`` (and ``vllm.lora.request``) return this fake for one test."""
    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = LLM, SamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    fake.lora, lora.request = lora, request
    for name, module in [("vllm", fake), ("vllm.lora", lora), ("vllm.lora.request", request)]:
        monkeypatch.setitem(__import__("sys").modules, name, module)
