"""vLLM engine: the :class:`~synthgen.engines.base.Engine` interface on ``vllm.LLM`` (GPU).

* ``generate``: one request per prompt, with its own ``SamplingParams`` (``n``,
  ``temperature``, ``top_p``, ``min_p``, ``stop``, ``max_tokens``, ``seed``) and
  the adapter as a ``LoRARequest``; an assistant prefix is part of the
  request's prompt token ids (the chat template's generation prompt, then the
  prefix), and vLLM detokenizes the continuation after them;
* ``score``: one request per option whose token ids are ``prompt_ids +
  option_ids`` (tokenised separately, then concatenated: joining the strings
  could merge tokens at the boundary), run with ``prompt_logprobs``; the score
  is the sum of the prompt log-probs over the option's span, end-of-turn
  token included.

Prompts are formatted and tokenised by the same :class:`PromptCodec` as the
transformers engine, so both engines see the same token ids. vLLM is an optional
dependency: this module imports it at the top, and
:func:`synthgen.engines.create_engine` turns the ImportError into an error
naming the ``vllm`` extra.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from vllm import LLM, SamplingParams
from vllm.lora.request import LoRARequest

from synthgen import store
from synthgen.adapters import resolve_adapter
from synthgen.engines.base import Engine, PromptCodec, cut_at_stop, prompt_prefixes
from synthgen.errors import ModelStoreError, SynthgenError
from synthgen.seeding import derive_seed

log = logging.getLogger(__name__)

# Values vLLM's ``max_lora_rank`` accepts (LoRAConfig); the smallest one that
# holds the adapter's rank is used.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
LORA_NAME = "synthgen-adapter"


def request_seeds(seed: int | Sequence[int] | None, count: int) -> list[int | None]:
    """One vLLM seed per prompt.

    ``seed`` is None (unseeded), one int for the call (prompt ``i`` gets a seed
    derived from ``(seed, i)``, so equal prompts in a batch still get different
    samples), or one int per prompt (prompt ``i``'s seed depends on ``seed[i]``
    alone: per-record seeding). Seeds are hashed to 63 bits because vLLM gives
    the ``k``-th of ``n`` samples the seed ``seed + k``: raw consecutive seeds
    would make neighbouring prompts share random streams.
    """
    if seed is None:
        return [None] * count
    if isinstance(seed, bool):
        raise TypeError(f"seed must be an int or a sequence of ints, got {seed!r}")
    if isinstance(seed, int):
        return [derive_seed(seed, i) for i in range(count)]
    seeds = list(seed)
    if len(seeds) != count:
        raise ValueError(f"got {len(seeds)} seeds for {count} prompts; give one seed per prompt or a single int")
    return [derive_seed(int(s)) for s in seeds]



def lora_max_rank(adapter: Path) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds the adapter's rank."""
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    rank = max([int(config.get("r", 8)), *(int(r) for r in (config.get("rank_pattern") or {}).values())])
    for allowed in LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise SynthgenError(f"adapter {adapter}: LoRA rank {rank} is above what vLLM supports ({LORA_RANKS[-1]})")


class VLLMEngine(Engine):
    """Engine on a ``vllm.LLM``; the adapter (if any) is applied per request."""

    name = "vllm"

    def __init__(self, llm, tokenizer, *, model_name: str = "", adapter: str | Path | None = None,
                 chat: bool | None = None, lora_id: int = 1):
        self.llm = llm
        self.codec = PromptCodec(tokenizer, chat)
        self.model_name = model_name
        self.adapter_name = str(adapter) if adapter is not None else None
        self.lora = LoRARequest(LORA_NAME, lora_id, str(adapter)) if adapter is not None else None

    def _lora(self, use_adapter: bool):
        return self.lora if use_adapter else None

    # -- sampling
    def generate(self, prompts, n=1, temperature=1.0, top_p=1.0, max_new_tokens=64, stop=None, seed=None,
                 min_p=None, use_adapter=True, prefixes=None) -> list[list[str]]:
        if not prompts:
            return []
        greedy = temperature <= 0
        # vLLM refuses n > 1 with greedy decoding; greedy samples are all equal anyway
        per_request = 1 if greedy else n
        params = [
            SamplingParams(
                n=per_request,
                temperature=max(temperature, 0.0),
                top_p=top_p,
                min_p=min_p or 0.0,
                max_tokens=max_new_tokens,
                stop=list(stop) if stop else None,
                stop_token_ids=[self.end_id],
                seed=s,
            )
            for s in request_seeds(seed, len(prompts))
        ]
        prefixes = prompt_prefixes(prefixes, len(prompts))
        requests = [{"prompt_token_ids": self.encode_prompt(p, x)} for p, x in zip(prompts, prefixes)]
        outputs = self.llm.generate(requests, params, use_tqdm=False, lora_request=self._lora(use_adapter))
        results = []
        for out in outputs:
            texts = [cut_at_stop(c.text, stop) for c in sorted(out.outputs, key=lambda c: c.index)]
            results.append(texts * n if greedy else texts)
        return results

    # -- scoring
    def score(self, prompt: str, options: Sequence[str], use_adapter: bool = True) -> list[float]:
        if not options:
            return []
        prompt_ids = self.encode_prompt(prompt)
        if not prompt_ids:
            raise SynthgenError(f"prompt {prompt!r} encodes to no tokens; cannot score options after it")
        options_ids = self.encode_options(self.format_prompt(prompt), prompt_ids, options)
        sequences = [prompt_ids + ids for ids in options_ids]
        # prompt_logprobs=1: vLLM returns, for every prompt position, the top-1
        # token and the actual token; max_tokens=1 since only the prompt matters
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
        outputs = self.llm.generate([{"prompt_token_ids": s} for s in sequences], params, use_tqdm=False,
                                    lora_request=self._lora(use_adapter))
        start = len(prompt_ids)
        return [span_logprob(out.prompt_logprobs, seq, start) for out, seq in zip(outputs, sequences)]


def span_logprob(prompt_logprobs, token_ids: Sequence[int], start: int) -> float:
    """Sum of ``log p(token_ids[j] | token_ids[:j])`` for ``j >= start``.

    ``prompt_logprobs[j]`` maps token ids to Logprob objects (``.logprob``) and
    holds the actual token ``token_ids[j]``; position 0 is None.
    """
    if prompt_logprobs is None or len(prompt_logprobs) != len(token_ids):
        got = None if prompt_logprobs is None else len(prompt_logprobs)
        raise SynthgenError(f"vLLM returned {got} prompt log-probs for a sequence of {len(token_ids)} tokens")
    total = 0.0
    for j in range(start, len(token_ids)):
        entry = prompt_logprobs[j][token_ids[j]]
        total += float(entry.logprob)
    return total


def load(model: str | None = None, adapter: str | Path | None = "default", *, dtype: str = "bfloat16",
         seed: int = 0, gpu_memory_utilization: float = 0.9, max_model_len: int | None = None,
         enforce_eager: bool = False, chat: bool | None = None, **llm_kwargs) -> VLLMEngine:
    """Load a model (registered name / directory / .gguf / hub id) and an adapter into vLLM.

    ``adapter`` as in :meth:`TransformersEngine.load` (``"default"``, ``"none"``
    or None, or a LoRA directory). ``dtype``: ``"bfloat16"`` (default),
    ``"float16"``, ``"float32"`` or ``"auto"`` (vLLM turns float32 checkpoints
    into float16). Further keyword arguments go to ``vllm.LLM`` unchanged
    (``tensor_parallel_size``, ``max_num_seqs``, …).
    """
    from transformers import AutoTokenizer

    source = store.resolve(model)
    adapter_path = resolve_adapter(adapter, model=model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        name = model or store.DEFAULT_MODEL
        raise ModelStoreError(f"could not load the tokenizer of {name!r} from {source}: {err}") from err
    if not isinstance(dtype, str):  # a torch.dtype, as the transformers engine takes
        dtype = str(dtype).removeprefix("torch.")
    kwargs = dict(model=str(source), dtype=dtype, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
                  enforce_eager=enforce_eager)
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if adapter_path is not None:
        kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=lora_max_rank(adapter_path))
    kwargs.update(llm_kwargs)
    log.info("starting vLLM on %s (adapter: %s)", source, adapter_path or "none")
    llm = LLM(**kwargs)
    return VLLMEngine(llm, tokenizer, model_name=str(model or store.DEFAULT_MODEL), adapter=adapter_path, chat=chat)
