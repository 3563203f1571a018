"""The local engine: transformers (+ peft) on CPU or GPU.

``score`` / ``score_many`` forward each prompt's options as a token trie, several
prompts packed into one forward pass (:mod:`synthgen.engines.trie`; ``scoring="padded"``:
the prompt once, then the options as padded continuations on its KV cache,
:func:`synthgen.engines.scoring.option_logprobs`);
``generate`` is a decoding loop in which every row draws from its own seeded
generator, so a prompt's samples do not depend on the rest of the batch. With
an assistant prefix, the prefix ends the prompt text and the new tokens are
decoded after the prompt's last tokens, so a continuation keeps the leading
space a tokenizer would drop when decoding it alone (as vLLM's incremental
detokenizer does).

With an inference adapter attached, the LoRA weights are merged into the base
weights while the adapter is on (one matrix product per adapted layer instead of
three) and subtracted again before a call with the adapter off: they switch only
where the calls switch, and each switch leaves the base weights within float
rounding of what was loaded (``benchmarks/adapter_merge.py`` measures both).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from synthgen import store
from synthgen.adapters import resolve_adapter
from synthgen.engines.base import Engine, PromptCodec, cut_at_stop, prompt_prefixes
from synthgen.engines.batching import RetryingDecoder
from synthgen.engines.scoring import option_logprobs
from synthgen.engines.trie import DEFAULT_BUDGET, packed_option_logprobs
from synthgen.errors import ModelStoreError, SynthgenError
from synthgen.seeding import derive_seed, prompt_seeds

log = logging.getLogger(__name__)

CONTEXT_TOKENS = 4  # prompt tokens decoded before a prefixed continuation (then cut off)
# rows decoded together: on 2 CPU cores a decode step of 64 rows costs 1.5x one of 32 (2x the tokens);
# 128 rows gain little more on short texts and hold twice the KV cache
DECODE_BATCH = 64
TOP_P_CANDIDATES = 256  # tokens sorted first by the top-p filter; the whole vocabulary only when they fall short


class TransformersEngine(Engine):
    """Local engine: transformers (+ peft) on CPU or GPU."""

    name = "transformers"
    SCORINGS = ("trie", "padded")

    def __init__(self, model, tokenizer, *, model_name: str = "", adapter_name: str | None = None,
                 chat: bool | None = None, batch_size: int = DECODE_BATCH, score_chunk: int = 256,
                 scoring: str = "trie", score_budget: int = DEFAULT_BUDGET,
                 top_p_candidates: int | None = None, continuous: bool = True, merge: bool = True):
        self.model = model.eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.codec = PromptCodec(tokenizer, chat)
        self.model_name = model_name
        self.adapter_name = adapter_name
        self.batch_size = batch_size
        self.score_chunk = score_chunk  # options per padded chunk (scoring="padded")
        if scoring not in self.SCORINGS:
            raise SynthgenError(f"unknown scoring {scoring!r}; expected one of: {', '.join(self.SCORINGS)}")
        self.scoring = scoring
        self.score_budget = score_budget  # tokens per packed row (scoring="trie")
        self.tokens_generated = 0  # new tokens sampled by generate, all calls together
        self.tokens_scored = 0  # tokens forwarded to score option sets (prompts and options), all calls together
        # tokens the top-p filter sorts first (0: sort the whole vocabulary, the slower way to the same result)
        self.top_p_candidates = TOP_P_CANDIDATES if top_p_candidates is None else top_p_candidates
        self.continuous = continuous  # retries join a continuously full decode batch (else: rounds)
        self.context_tokens = CONTEXT_TOKENS
        self.merge = merge  # merge an inference adapter into the weights while it is on

    # -- loading
    @classmethod
    def load(cls, model: str | None = None, adapter: str | Path | None = "default", *,
             device: str | None = None, dtype: torch.dtype = torch.float32, **kwargs) -> TransformersEngine:
        """Load a model by registered name / directory / .gguf / hub id, plus an adapter.

        ``adapter``: ``"default"`` = the shipped diffuse adapter of that model if
        there is one; ``"none"`` or None = the base model alone; else a directory.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = store.resolve(model)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError) as err:
            name = model or store.DEFAULT_MODEL
            raise ModelStoreError(f"could not load model {name!r} from {source}: {err}") from err
        adapter_path = resolve_adapter(adapter, model=model)
        if adapter_path is not None:
            hf_model = attach_adapter(hf_model, adapter_path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        hf_model.to(device)
        tokenizer.padding_side = "left"
        return cls(hf_model, tokenizer, model_name=str(model or store.DEFAULT_MODEL),
                   adapter_name=str(adapter_path) if adapter_path else None, **kwargs)

    # -- scoring
    def adapter_scope(self, use_adapter: bool):
        """A context in which the adapter is on (default) or switched off.

        With :attr:`merge`, an fp32 adapter that is not being trained is merged into the
        weights for the calls with it on and unmerged before a call with it off (in
        bf16 or fp16 the round trip would move the base weights: there it stays apart)."""
        if not hasattr(self.model, "disable_adapter"):
            return contextlib.nullcontext()
        merged = _merged(self.model)
        if not use_adapter:
            if merged:
                self.model.unmerge_adapter()
            return self.model.disable_adapter()
        if self.merge and not merged and _mergeable(self.model):
            self.model.merge_adapter()
        return contextlib.nullcontext()

    def score(self, prompt: str, options: Sequence[str], use_adapter: bool = True) -> list[float]:
        return self.score_many([(prompt, options)], use_adapter)[0]

    @torch.inference_mode()
    def score_many(self, requests, use_adapter: bool = True) -> list[list[float]]:
        """:meth:`score` for several ``(prompt, options)`` requests; with ``scoring="trie"`` their
        tries are packed into shared forward passes."""
        encoded = []
        for prompt, options in requests:
            text = self.format_prompt(prompt)
            prompt_ids = self.encode_prompt(prompt)
            encoded.append((prompt_ids, self.encode_options(text, prompt_ids, options) if options else []))
        with self.adapter_scope(use_adapter):
            if self.scoring == "trie":
                stats: dict = {}
                values = packed_option_logprobs(self.model, encoded, self.score_budget, stats)
                self.tokens_scored += stats.get("tokens", 0)
            else:
                values = [option_logprobs(self.model, p, o, self.score_chunk, self.tokenizer.pad_token_id)
                          if o else torch.zeros(0) for p, o in encoded]
                # the prompt once, then each chunk of options padded to its widest, less the last token
                self.tokens_scored += sum(len(p) + _padded_tokens(o, self.score_chunk) for p, o in encoded if o)
        return [v.tolist() for v in values]

    # -- sampling
    @torch.inference_mode()
    def generate(self, prompts, n=1, temperature=1.0, top_p=1.0, max_new_tokens=64, stop=None, seed=None,
                 min_p=None, use_adapter=True, prefixes=None) -> list[list[str]]:
        """Sample ``n`` completions per prompt with a decoding loop over the KV cache.

        Every row (prompt ``i``, sample ``j``) draws its tokens from its own
        ``torch.Generator`` seeded from ``(seed_i, j)``, so a prompt's samples
        depend only on its own seed, not on the other prompts of the batch
        (up to the ~1e-6 float differences left padding can cause). ``seed``:
        one int per prompt, or one int for the call (prompt ``i`` then gets a
        seed derived from ``(seed, i)``), or None (derived from torch's global RNG).
        ``prefixes``: one assistant prefix per prompt (None for none); the
        completions continue it.
        """
        prompts = list(prompts)
        seeds = prompt_seeds(seed, len(prompts))
        row_seeds = [derive_seed(s, j) for s in seeds for j in range(n)]
        prefixes = prompt_prefixes(prefixes, len(prompts))
        texts = [self.format_prompt(p, x) for p, x in zip(prompts, prefixes) for _ in range(n)]
        prefixed = [bool(x) for x in prefixes for _ in range(n)]
        outputs: list[str] = []
        with self.adapter_scope(use_adapter):
            for start in range(0, len(texts), self.batch_size):
                end = start + self.batch_size
                outputs.extend(self._sample_batch(texts[start:end], row_seeds[start:end], temperature, top_p,
                                                  min_p, max_new_tokens, stop,
                                                  prefixed[start:end] if any(prefixed) else None))
        outputs = [cut_at_stop(o, stop) for o in outputs]
        return [outputs[i * n : (i + 1) * n] for i in range(len(prompts))]

    @torch.inference_mode()
    def generate_with_retries(self, prompts, seed_of, accept, attempts, *, prefixes=None, temperature=1.0,
                              top_p=1.0, min_p=None, max_new_tokens=64, stop=None, use_adapter=True) -> None:
        """See :meth:`Engine.generate_with_retries`; with ``continuous`` (the default) a finished row
        leaves the decode batch at once and waiting prompts and retries take its place
        (:class:`synthgen.engines.batching.RetryingDecoder`)."""
        if not self.continuous or max_new_tokens <= 0:
            return super().generate_with_retries(prompts, seed_of, accept, attempts, prefixes=prefixes,
                                                 temperature=temperature, top_p=top_p, min_p=min_p,
                                                 max_new_tokens=max_new_tokens, stop=stop, use_adapter=use_adapter)
        prefixes = prompt_prefixes(prefixes, len(prompts))
        texts = [self.format_prompt(p, x) for p, x in zip(prompts, prefixes)]
        sampling = {"temperature": temperature, "top_p": top_p, "min_p": min_p, "max_new_tokens": max_new_tokens,
                    "stop": list(stop or ())}
        with self.adapter_scope(use_adapter):
            RetryingDecoder(self, texts, [bool(x) for x in prefixes], seed_of, accept, attempts, sampling).run()

    def pick_tokens(self, logits, generators, temperature, top_p, min_p) -> list[int]:
        return _pick_tokens(logits, generators, temperature, top_p, min_p, self.top_p_candidates)

    def decode(self, new: list[int], context: list[int] | None) -> str:
        return self._decode(new, context)

    def _sample_batch(self, texts, seeds, temperature, top_p, min_p, max_new_tokens, stop,
                      prefixed=None) -> list[str]:
        """Decode one left-padded batch; row ``r`` samples with a generator seeded by ``seeds[r]``.
        A row whose ``prefixed[r]`` is true decodes its new tokens after its prompt's last tokens."""
        tok = self.tokenizer
        tok.padding_side = "left"
        device = self.model.device
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not self.chat)
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        rows = ids.shape[0]
        contexts = [ids[r, -CONTEXT_TOKENS:].tolist() if prefixed and prefixed[r] else None for r in range(rows)]
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1)
        new = torch.full((rows, max(max_new_tokens, 0)), tok.pad_token_id, dtype=torch.long)
        lengths = torch.zeros(rows, dtype=torch.long)
        done = torch.zeros(rows, dtype=torch.bool)
        position = positions[:, -1:]
        cache = out.cache
        # rows still decoding, in the order of the batch the model sees: a finished
        # row leaves the batch (its KV cache rows are dropped), so a batch costs
        # what its rows need, not max length x rows
        alive = list(range(rows))
        for step in range(max_new_tokens):
            picked = _pick_tokens(out.logits[:, -1].float().cpu(), [generators[r] for r in alive],
                                  temperature, top_p, min_p, self.top_p_candidates)
            self.tokens_generated += len(picked)
            for r, t in zip(alive, picked):
                if t == self.end_id:
                    done[r] = True
                    continue
                new[r, step] = t
                lengths[r] = step + 1
                if stop:
                    text = self._decode(new[r, : step + 1].tolist(), contexts[r])
                    done[r] = any(s in text for s in stop)
            if done.all() or step == max_new_tokens - 1:
                break
            keep = [i for i, r in enumerate(alive) if not done[r]]
            if len(keep) < len(alive):
                index = torch.tensor(keep, dtype=torch.long, device=device)
                _select_cache_rows(cache, index)
                mask, position = mask[index], position[index]
                alive = [alive[i] for i in keep]
            mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=mask.dtype, device=device)], dim=1)
            position = position + 1
            out = self.model(input_ids=new[alive, step : step + 1].to(device), attention_mask=mask,
                             position_ids=position, cache=cache, use_cache=True)
            cache = out.cache
        return [self._decode(new[r, : lengths[r]].tolist(), contexts[r]) for r in range(rows)]

    def _decode(self, new: list[int], context: list[int] | None) -> str:
        """The text of ``new``; with ``context`` (the tokens before it), decoded after the context
        and cut after it, so a first token's leading space survives."""
        tok = self.tokenizer
        if not context:
            return tok.decode(new, skip_special_tokens=True)
        head = tok.decode(context, skip_special_tokens=True)
        full = tok.decode(context + new, skip_special_tokens=True)
        return full[len(head):] if full.startswith(head) else tok.decode(new, skip_special_tokens=True)


def _padded_tokens(options: Sequence[Sequence[int]], chunk: int) -> int:
    """Option tokens the padded path forwards: per chunk, its options times its widest option less one."""
    total = 0
    for start in range(0, len(options), chunk):
        part = options[start : start + chunk]
        total += len(part) * (max(len(o) for o in part) - 1)
    return total


def _select_cache_rows(cache, index: torch.Tensor) -> None:
    """Keep only the batch rows ``index`` of a KV cache, in place."""
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(index)
    else:  # caches without it (older or custom) still support beam reordering
        cache.reorder_cache(index)



def _pick_tokens(logits: torch.Tensor, generators: list[torch.Generator], temperature: float,
                 top_p: float, min_p: float | None, top_p_candidates: int = TOP_P_CANDIDATES) -> list[int]:
    """The next token of each row of ``logits`` (one generator per row): greedy at temperature 0,
    else sampled after temperature, min-p and top-p filtering by inverse CDF with one uniform
    from the row's generator."""
    if not generators:
        return []
    if temperature <= 0:
        return logits.argmax(-1).tolist()
    probs = torch.softmax(logits / temperature, dim=-1)
    if min_p:
        probs = probs.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, 0.0)
    if top_p < 1.0:
        probs = _top_p_filter(probs, top_p, top_p_candidates)
    cdf = probs.double().cumsum(-1)
    uniforms = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
    picked = torch.searchsorted(cdf, (uniforms * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    vocab = torch.arange(probs.shape[-1])
    last_kept = torch.where(probs > 0, vocab, 0).max(-1).values  # guards u * total rounding up to total
    return torch.minimum(picked, last_kept).tolist()


def _top_p_filter(probs: torch.Tensor, top_p: float, candidates: int = TOP_P_CANDIDATES) -> torch.Tensor:
    """Zero every token whose mass before it (descending, ties by token id) already reaches ``top_p``.

    Exactly the full stable sort's result, cheaper: the tokens above the smallest of the
    ``candidates`` largest are the head of that sort, so when their mass reaches
    ``top_p`` the cut lies among them; rows where it does not (or ``candidates=0``) are sorted whole.
    """
    out = torch.zeros_like(probs)
    k = min(candidates, probs.shape[-1]) or probs.shape[-1]
    values, index = probs.topk(k, dim=-1)
    for r in range(probs.shape[0]):
        head = values[r] > values[r, -1]
        by_id = index[r][head].argsort()  # ties in id order, as the stable sort has them
        sorted_p, order = values[r][head][by_id].sort(descending=True, stable=True)
        sorted_i = index[r][head][by_id][order]
        mass = sorted_p.cumsum(-1)
        if k == probs.shape[-1] or not len(mass) or mass[-1] < top_p + 1e-6:  # the cut may lie beyond
            sorted_p, sorted_i = probs[r].sort(descending=True, stable=True)
            mass = sorted_p.cumsum(-1)
        chosen = sorted_i[(mass - sorted_p) < top_p]  # the mass before a token has not reached top_p
        out[r, chosen] = probs[r, chosen]
    return out


def _mergeable(model) -> bool:
    """Whether ``model``'s adapter was loaded for inference (peft's ``inference_mode``, not for training)
    and its weights are fp32, so that merging and unmerging it leaves the base weights within rounding.
    (Not ``requires_grad``: peft sets it again on the adapter's weights when it re-enables them.)"""
    config = getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", None))
    return bool(getattr(config, "inference_mode", False)) and all(p.dtype == torch.float32
                                                                  for p in model.parameters())


def _merged(model) -> bool:
    """Whether a LoRA layer of ``model`` holds its adapter merged into its weights."""
    return any(getattr(m, "merged", False) for m in model.modules() if hasattr(m, "merged_adapters"))


@contextlib.contextmanager
def quiet_peft():
    """Hide the FutureWarning peft triggers in transformers 5 when it wraps a model
    (it reads the deprecated ``is_gradient_checkpointing``): noise users cannot act
    on, printed by every command that loads an adapter."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def attach_adapter(model, path: Path):
    """The model with the LoRA adapter at ``path`` attached (inference only).

    An adapter made for another model (other layer shapes or module names) or a
    malformed ``adapter_config.json`` is a :class:`SynthgenError` naming both.
    """
    from peft import PeftModel

    try:
        with quiet_peft():
            return PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except (RuntimeError, ValueError, KeyError, TypeError, OSError) as exc:
        base = getattr(model.config, "_name_or_path", "") or type(model).__name__
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SynthgenError(f"adapter {path} does not fit model {base} (is it an adapter for another model, "
                            f"or is its adapter_config.json damaged?): {type(exc).__name__}: {first}") from None


def load(model: str | None = None, adapter: str | Path | None = "default", **kwargs) -> TransformersEngine:
    """The engine registry's factory: :meth:`TransformersEngine.load`."""
    return TransformersEngine.load(model, adapter, **kwargs)
