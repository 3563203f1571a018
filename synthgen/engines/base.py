"""The engine interface and the prompt encoding every engine shares.

An :class:`Engine` has two operations:

* ``generate(prompts, n, temperature, top_p, max_new_tokens, stop, seed, prefixes)``:
  a batch of prompts, ``n`` free samples per prompt; with ``prefixes``, each
  reply starts with its prefix and the samples are its continuations;
* ``score(prompt, options)``: ``log p(option + end-of-turn | prompt)`` for every
  option of one prompt, and ``score_many(requests)`` for several prompts at once
  (the local engine forwards each prompt's options as a token trie after it and
  packs several prompts into one forward pass).

Prompts are user messages: :class:`PromptCodec` wraps them in the model's chat
template when the tokenizer has one and uses them as plain text otherwise (an
assistant prefix follows the chat template's generation prompt, or the plain
prompt's line), and
tokenises prompts and options the same way for every engine, so the
transformers and vLLM engines see the same token ids.

This module imports neither torch nor transformers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from synthgen.errors import SynthgenError


class PromptCodec:
    """Chat formatting and tokenisation of prompts and options for one tokenizer."""

    def __init__(self, tokenizer, chat: bool | None = None):
        self.tokenizer = tokenizer
        self.chat = bool(tokenizer.chat_template) if chat is None else chat
        self.end_id = self._end_of_turn_id()

    def format(self, prompt: str, prefix: str | None = None) -> str:
        """Wrap a user message in the chat template (plain text without one).

        ``prefix``: the start of the assistant's reply, written after the chat
        template's generation prompt (plain text: after the prompt's line), so
        the model continues it. None or empty: the prompt alone.
        """
        if not self.chat:
            text = prompt.rstrip() + "\n"
        else:
            messages = [{"role": "user", "content": prompt}]
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text + prefix if prefix else text

    def encode_prompt(self, prompt: str, prefix: str | None = None) -> list[int]:
        """Token ids of the formatted prompt (and assistant prefix)."""
        return list(self.tokenizer(self.format(prompt, prefix), add_special_tokens=not self.chat)["input_ids"])

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


class Engine(ABC):
    """The interface callers (generation, training, audit, benchmarks) rely on."""

    name: str = "engine"
    model_name: str = ""
    adapter_name: str | None = None
    codec: PromptCodec

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
        prefixes: Sequence[str | None] | None = None,
    ) -> list[list[str]]:
        """Return ``n`` sampled completions for each prompt.

        ``seed``: one int for the call, or one int per prompt; with per-prompt
        seeds a prompt's samples depend only on its own seed, never on which
        other prompts share the batch (per-record seeding).
        ``use_adapter=False`` runs the base model alone (no-op without an adapter).
        ``prefixes``: one per prompt (None or empty for none), the start of the
        assistant's reply (:meth:`PromptCodec.format`); the completions continue
        it and do not include it.
        """

    @abstractmethod
    def score(self, prompt: str, options: Sequence[str], use_adapter: bool = True) -> list[float]:
        """Return ``log p(option + end-of-turn | prompt)`` for each option of one prompt."""

    def score_many(self, requests: Sequence[tuple[str, Sequence[str]]],
                   use_adapter: bool = True) -> list[list[float]]:
        """:meth:`score` for each ``(prompt, options)`` request, in order; an engine that can
        score several prompts at once overrides this."""
        return [self.score(prompt, options, use_adapter) for prompt, options in requests]

    def generate_with_retries(self, prompts: Sequence[str], seed_of, accept, attempts: int, *,
                              prefixes: Sequence[str | None] | None = None, temperature: float = 1.0,
                              top_p: float = 1.0, min_p: float | None = None, max_new_tokens: int = 64,
                              stop: Sequence[str] | None = None, use_adapter: bool = True) -> None:
        """Sample a reply per prompt until ``accept(k, text)`` keeps it, at most ``attempts`` times.

        Attempt ``a`` of prompt ``k`` samples as ``generate`` would with seed ``seed_of(k, a)``.
        This default runs the attempts in rounds (one ``generate`` call per round, over the prompts
        still rejected); an engine may interleave them (the local engine keeps its batch full).
        """
        pending = list(range(len(prompts)))
        prefixes = prompt_prefixes(prefixes, len(prompts))
        for attempt in range(attempts):
            if not pending:
                break
            extra = {"prefixes": [prefixes[k] for k in pending]} if any(prefixes) else {}
            outs = self.generate([prompts[k] for k in pending], n=1, temperature=temperature, top_p=top_p,
                                 max_new_tokens=max_new_tokens, stop=stop, min_p=min_p, use_adapter=use_adapter,
                                 seed=[seed_of(k, attempt) for k in pending], **extra)
            pending = [k for k, (text,) in zip(pending, outs) if not accept(k, text)]

    # -- the shared prompt encoding
    @property
    def tokenizer(self):
        return self.codec.tokenizer

    @property
    def chat(self) -> bool:
        return self.codec.chat

    @property
    def end_id(self) -> int:
        return self.codec.end_id

    def format_prompt(self, prompt: str, prefix: str | None = None) -> str:
        return self.codec.format(prompt, prefix)

    def encode_prompt(self, prompt: str, prefix: str | None = None) -> list[int]:
        return self.codec.encode_prompt(prompt, prefix)

    def encode_options(self, prompt_text: str, prompt_ids: Sequence[int], options: Sequence[str]) -> list[list[int]]:
        return self.codec.encode_options(prompt_text, prompt_ids, options)


def prompt_prefixes(prefixes: Sequence[str | None] | None, count: int) -> list[str | None]:
    """One assistant prefix per prompt (None for none), checked against the number of prompts."""
    if prefixes is None:
        return [None] * count
    prefixes = list(prefixes)
    if len(prefixes) != count:
        raise ValueError(f"got {len(prefixes)} prefixes for {count} prompts; give one per prompt")
    return prefixes


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """Cut ``text`` at the first stop string (the stop string is removed)."""
    for s in stop or ():
        pos = text.find(s)
        if pos >= 0:
            text = text[:pos]
    return text
