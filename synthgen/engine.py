"""Engines: what runs the model.

An :class:`Engine` has two operations, both over batches:

* ``generate(prompts, n, temperature, top_p, max_new_tokens, stop, seed)``: free
  samples, ``n`` per prompt;
* ``score(prompt, options)``: ``log p(option + end-of-turn | prompt)`` for every
  option, encoding the prompt once and running the options as short
  continuations on its KV cache.

Prompts are user messages: an engine wraps them in the model's chat template
when the tokenizer has one and uses them as plain text otherwise. Callers only
see this interface, so a vLLM engine can be registered beside the local
transformers one without touching them (:func:`create_engine`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from synthgen.errors import MissingDependencyError, ModelStoreError, SynthgenError

log = logging.getLogger(__name__)

NO_ADAPTER = "none"


class Engine(ABC):
    """The interface callers (generate, audit, benchmarks) rely on."""

    name: str = "engine"
    model_name: str = ""
    adapter_name: str | None = None

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[str],
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
        stop: Sequence[str] | None = None,
        seed: int | Sequence[int] | None = None,
        min_p: float | None = None,
        use_adapter: bool = True,
    ) -> list[list[str]]:
        """Return ``n`` sampled completions for each prompt.

        ``seed``: one int for the call, or one int per prompt; with per-prompt
        seeds a prompt's samples depend only on its own seed, never on which
        other prompts share the batch (per-record seeding).
        ``use_adapter=False`` runs the base model alone (no-op without an adapter).
        """

    @abstractmethod
    def score(self, prompt: str, options: Sequence[str], use_adapter: bool = True) -> list[float]:
        """Return ``log p(option + end-of-turn | prompt)`` for each option."""


# ----------------------------------------------------------------- the maths
def option_logprobs(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    options_ids: Sequence[Sequence[int]],
    chunk_size: int = 256,
    pad_id: int = 0,
) -> torch.Tensor:
    """Sequence log-probabilities of each option after one shared prompt.

    The prompt runs once with ``use_cache=True``; its key/value tensors are
    expanded to a chunk of options, which run as one right-padded batch with
    positions continuing after the prompt. The first token of each option is
    scored from the prompt's last logits. Works under autograd (training): the
    gradient flows through the shared prompt encoding.
    """
    from transformers import DynamicCache

    device = next(model.parameters()).device
    prompt = torch.tensor([list(prompt_ids)], device=device)
    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)  # only the last position's logits
    first_logp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    kv = [(layer.keys, layer.values) for layer in out.cache.layers]
    plen = prompt.shape[1]
    config = model.config
    results = []
    for start in range(0, len(options_ids), chunk_size):
        chunk = options_ids[start : start + chunk_size]
        b, width = len(chunk), max(len(o) for o in chunk)
        ids = torch.full((b, width), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((b, plen + width), dtype=torch.long, device=device)
        mask[:, :plen] = 1
        for i, opt in enumerate(chunk):
            ids[i, : len(opt)] = torch.tensor(opt, device=device)
            mask[i, plen : plen + len(opt)] = 1
        lengths = torch.tensor([len(o) for o in chunk], device=device)
        total = first_logp[ids[:, 0]]
        if width > 1:
            cache = DynamicCache(config=config)
            for layer, (k, v) in enumerate(kv):
                cache.update(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1), layer)
            positions = torch.arange(plen, plen + width, device=device).unsqueeze(0).expand(b, -1)
            logits = model(
                input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], cache=cache
            ).logits.float()
            logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            valid = torch.arange(1, width, device=device).unsqueeze(0) < lengths.unsqueeze(1)
            total = total + (logp * valid).sum(dim=1)
        results.append(total)
    return torch.cat(results)


def naive_option_logprobs(
    model: torch.nn.Module, prompt_ids: Sequence[int], options_ids: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Reference implementation: one full forward pass per option (slow)."""
    device = next(model.parameters()).device
    scores = []
    for opt in options_ids:
        ids = torch.tensor([list(prompt_ids) + list(opt)], device=device)
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        plen = len(prompt_ids)
        positions = torch.arange(plen - 1, plen - 1 + len(opt), device=device)
        scores.append(logp[positions, torch.tensor(opt, device=device)].sum())
    return torch.stack(scores)


# ------------------------------------------------------ transformers engine
class TransformersEngine(Engine):
    """Local engine: transformers (+ peft) on CPU or GPU."""

    name = "transformers"

    def __init__(self, model, tokenizer, *, model_name: str = "", adapter_name: str | None = None,
                 chat: bool | None = None, batch_size: int = 32, score_chunk: int = 256):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.adapter_name = adapter_name
        self.chat = bool(tokenizer.chat_template) if chat is None else chat
        self.batch_size = batch_size
        self.score_chunk = score_chunk
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.end_id = self._end_of_turn_id()
        self._prefix_cache: dict[str, list[int]] = {}

    # -- loading
    @classmethod
    def load(cls, model: str | None = None, adapter: str | Path | None = "default", *,
             device: str | None = None, dtype: torch.dtype = torch.float32, **kwargs) -> TransformersEngine:
        """Load a model by registered name / directory / .gguf / hub id, plus an adapter.

        ``adapter``: ``"default"`` = the shipped diffuse adapter of that model if
        there is one; ``"none"`` or None = the base model alone; else a directory.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from synthgen import models

        source = models.resolve(model)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError) as err:
            raise ModelStoreError(f"could not load model {model or models.DEFAULT_MODEL!r} from {source}: {err}") from err
        adapter_path = resolve_adapter(model, adapter)
        if adapter_path is not None:
            hf_model = attach_adapter(hf_model, adapter_path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        hf_model.to(device)
        tokenizer.padding_side = "left"
        return cls(hf_model, tokenizer, model_name=str(model or models.DEFAULT_MODEL),
                   adapter_name=str(adapter_path) if adapter_path else None, **kwargs)

    # -- prompt handling
    def format_prompt(self, prompt: str) -> str:
        """Wrap a user message in the chat template (plain text without one)."""
        if not self.chat:
            return prompt.rstrip() + "\n"
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode_prompt(self, prompt: str) -> list[int]:
        text = self.format_prompt(prompt)
        ids = self.tokenizer(text, add_special_tokens=not self.chat)["input_ids"]
        return list(ids)

    def encode_options(self, prompt_text: str, prompt_ids: Sequence[int], options: Sequence[str]) -> list[list[int]]:
        """Token ids of each option followed by the end-of-turn token.

        Options are tokenized in context (prompt + option, then the prompt's
        tokens removed), so they get the ids the model would see in a full
        conversation; an option whose context tokenization does not keep the
        prompt's tokens is tokenized on its own.
        """
        n = len(prompt_ids)
        encoded = []
        for option in options:
            full = self.tokenizer(prompt_text + option, add_special_tokens=not self.chat)["input_ids"]
            if list(full[:n]) == list(prompt_ids) and len(full) > n:
                ids = list(full[n:])
            else:
                ids = list(self.tokenizer(option, add_special_tokens=False)["input_ids"])
            encoded.append(ids + [self.end_id])
        return encoded

    def _end_of_turn_id(self) -> int:
        """The token that ends an assistant turn (the chat template's), else EOS."""
        tok = self.tokenizer
        if self.chat:
            marker = "XyZ"
            text = tok.apply_chat_template(
                [{"role": "user", "content": "a"}, {"role": "assistant", "content": marker}], tokenize=False
            )
            tail = text[text.rfind(marker) + len(marker):]
            tail_ids = tok(tail, add_special_tokens=False)["input_ids"] if tail.strip() else []
            if tail_ids:
                return int(tail_ids[0])
        if tok.eos_token_id is None:
            raise SynthgenError("the tokenizer has neither a chat template end-of-turn nor an EOS token")
        return int(tok.eos_token_id)

    # -- scoring
    def adapter_scope(self, use_adapter: bool):
        """A context in which the adapter is on (default) or switched off."""
        if use_adapter or not hasattr(self.model, "disable_adapter"):
            return contextlib.nullcontext()
        return self.model.disable_adapter()

    @torch.inference_mode()
    def score(self, prompt: str, options: Sequence[str], use_adapter: bool = True) -> list[float]:
        if not options:
            return []
        text = self.format_prompt(prompt)
        prompt_ids = self.encode_prompt(prompt)
        options_ids = self.encode_options(text, prompt_ids, options)
        with self.adapter_scope(use_adapter):
            values = option_logprobs(self.model, prompt_ids, options_ids, self.score_chunk,
                                     self.tokenizer.pad_token_id)
        return values.tolist()

    # -- sampling
    @torch.inference_mode()
    def generate(self, prompts, n=1, temperature=1.0, top_p=1.0, max_new_tokens=64, stop=None, seed=None,
                 min_p=None, use_adapter=True) -> list[list[str]]:
        """Sample ``n`` completions per prompt with a decoding loop over the KV cache.

        Every row (prompt ``i``, sample ``j``) draws its tokens from its own
        ``torch.Generator`` seeded from ``(seed_i, j)``, so a prompt's samples
        depend only on its own seed, not on the other prompts of the batch
        (up to the ~1e-6 float differences left padding can cause). ``seed``:
        one int per prompt, or one int for the call (prompt ``i`` then gets a
        seed derived from ``(seed, i)``), or None (derived from torch's global RNG).
        """
        prompts = list(prompts)
        seeds = _prompt_seeds(seed, len(prompts))
        row_seeds = [_derive_seed(s, j) for s in seeds for j in range(n)]
        texts = [self.format_prompt(p) for p in prompts for _ in range(n)]
        outputs: list[str] = []
        with self.adapter_scope(use_adapter):
            for start in range(0, len(texts), self.batch_size):
                end = start + self.batch_size
                outputs.extend(self._sample_batch(texts[start:end], row_seeds[start:end], temperature, top_p,
                                                  min_p, max_new_tokens, stop))
        outputs = [cut_at_stop(o, stop) for o in outputs]
        return [outputs[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _sample_batch(self, texts, seeds, temperature, top_p, min_p, max_new_tokens, stop) -> list[str]:
        """Decode one left-padded batch; row ``r`` samples with a generator seeded by ``seeds[r]``."""
        tok = self.tokenizer
        tok.padding_side = "left"
        device = self.model.device
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not self.chat)
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        rows = ids.shape[0]
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
                                  temperature, top_p, min_p)
            for r, t in zip(alive, picked):
                if t == self.end_id:
                    done[r] = True
                    continue
                new[r, step] = t
                lengths[r] = step + 1
                if stop:
                    text = tok.decode(new[r, : step + 1], skip_special_tokens=True)
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
        return [tok.decode(new[r, : lengths[r]], skip_special_tokens=True) for r in range(rows)]


def _select_cache_rows(cache, index: torch.Tensor) -> None:
    """Keep only the batch rows ``index`` of a KV cache, in place."""
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(index)
    else:  # caches without it (older or custom) still support beam reordering
        cache.reorder_cache(index)


_SEED_MASK = (1 << 63) - 1


def _derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and platforms (not Python's ``hash``)."""
    text = ":".join(str(int(p)) for p in parts).encode("ascii")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & _SEED_MASK


def _prompt_seeds(seed: int | Sequence[int] | None, count: int) -> list[int]:
    """One seed per prompt: given per prompt, derived from one int, or from torch's global RNG."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()))
    if isinstance(seed, (int, np.integer)):
        return [_derive_seed(seed, i) for i in range(count)]
    seeds = [int(s) for s in seed]
    if len(seeds) != count:
        raise ValueError(f"got {len(seeds)} seeds for {count} prompts; give one seed per prompt or one int")
    return seeds


def _pick_tokens(logits: torch.Tensor, generators: list[torch.Generator], temperature: float,
                 top_p: float, min_p: float | None) -> list[int]:
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
        sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
        drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p  # the mass before a token already reaches top_p
        probs = probs.masked_fill(drop.scatter(-1, order, drop), 0.0)
    cdf = probs.double().cumsum(-1)
    uniforms = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
    picked = torch.searchsorted(cdf, (uniforms * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    vocab = torch.arange(probs.shape[-1])
    last_kept = torch.where(probs > 0, vocab, 0).max(-1).values  # guards u * total rounding up to total
    return torch.minimum(picked, last_kept).tolist()


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """Cut ``text`` at the first stop string (the stop string is removed)."""
    for s in stop or ():
        pos = text.find(s)
        if pos >= 0:
            text = text[:pos]
    return text


# ----------------------------------------------------------------- adapters
def resolve_adapter(model: str | None, adapter: str | Path | None) -> Path | None:
    """Map the ``--adapter`` value to a directory (or None for the base model).

    ``none``: the base model; ``default``: the model's shipped diffuse adapter;
    else a directory, or the name of a shipped adapter (``smollm2-135m-biography``).
    """
    from synthgen import models

    if adapter is None or str(adapter) == NO_ADAPTER:
        return None
    if str(adapter) == "default":
        path = models.default_adapter(model)
        if path is None:
            log.info("no shipped diffuse adapter for %s; using the base model", model or models.DEFAULT_MODEL)
        return path
    path = Path(adapter)
    if not path.exists():
        path = models.shipped_adapter(str(adapter)) or path  # a shipped adapter by name
    if not (path / "adapter_config.json").is_file():
        raise SynthgenError(f"adapter {path}: not a LoRA adapter directory (no adapter_config.json) "
                            f"nor the name of a shipped adapter ({', '.join(models.shipped_adapter_names())})")
    if not (path / "adapter_model.safetensors").is_file():
        raise SynthgenError(f"adapter {path}: adapter_model.safetensors missing (only safetensors adapters are loaded)")
    return path


@contextlib.contextmanager
def quiet_peft():
    """Hide the FutureWarning peft triggers in transformers 5 when it wraps a model
    (it reads the deprecated ``is_gradient_checkpointing``): noise users cannot act
    on, printed by every command that loads an adapter."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def attach_adapter(model, path: Path):
    from peft import PeftModel

    with quiet_peft():
        return PeftModel.from_pretrained(model, str(path), is_trainable=False)


# ----------------------------------------------------------------- registry
ENGINES: dict[str, Callable[..., Engine]] = {"transformers": TransformersEngine.load}


def register_engine(name: str, factory: Callable[..., Engine]) -> None:
    """Register an engine factory under ``name`` (e.g. a vLLM engine)."""
    if not name.isidentifier():
        raise ValueError(f"invalid engine name {name!r}")
    ENGINES[name] = factory


# engines whose module (and heavy dependency) is imported only when asked for:
# name -> (module, factory attribute, pip extra)
LAZY_ENGINES: dict[str, tuple[str, str, str]] = {"vllm": ("synthgen.vllm_engine", "load", "vllm")}


def create_engine(name: str = "transformers", **kwargs) -> Engine:
    """Build an engine by name; heavy engines import their dependency lazily."""
    if name not in ENGINES and name in LAZY_ENGINES:
        import importlib

        module_name, attr, extra = LAZY_ENGINES[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise MissingDependencyError(getattr(err, "name", None) or extra, extra) from err
        ENGINES[name] = getattr(module, attr)
    if name not in ENGINES:
        raise SynthgenError(f"unknown engine {name!r}; known engines: {', '.join(sorted(ENGINES))}")
    return ENGINES[name](**kwargs)
