"""Continuous batching for sampling with retries: the decode batch is kept full.

A text field samples a reply per record, validates it and retries the failures.
Done in rounds, each retry round is a whole decode over a handful of rows (and
every round ends with its longest row decoding alone), so most of the model's
weight reads serve few rows. Here a finished row leaves the batch at once, its
retry (if its reply was rejected) joins the queue, and queued prompts are
prefilled and join the running batch whenever a quarter of its slots are free:
their KV caches are left-padded to the batch's width (or the batch's to theirs)
and concatenated, and columns no row uses any more are trimmed from the left.

The prompts' common first tokens (a chat template's system turn and the
template's fixed opening) are forwarded once; every prefill starts from a copy
of their KV cache and forwards only the rest of its prompts. A rejected reply's
prompt is not forwarded again: its KV cache is kept from the batch (all but the
prompt's last token, which its retry forwards to get the first logits).

Every row samples from its own generator seeded as the rounds would seed it
(:func:`synthgen.seeding.derive_seed` of the attempt's seed, sample 0), so a
reply does not depend on which rows share its batch (up to the float rounding
that left padding can cause).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from synthgen.engines.base import cut_at_stop
from synthgen.seeding import derive_seed

MIN_SHARED = 8  # fewer shared first tokens than this are forwarded with each prompt


def shared_prefix_length(ids: Sequence[Sequence[int]]) -> int:
    """How many first tokens all token lists share, leaving each at least one of its own."""
    if not ids:
        return 0
    first, limit = ids[0], min(len(x) for x in ids) - 1
    n = 0
    while n < limit and all(x[n] == first[n] for x in ids):
        n += 1
    return n


@dataclass
class Row:
    job: int
    attempt: int
    generator: torch.Generator
    context: list[int] | None
    tokens: list[int] = field(default_factory=list)


@dataclass
class Batch:
    """The running rows, their KV cache, attention mask (rows x width), next positions and last logits."""

    rows: list[Row]
    cache: object
    mask: torch.Tensor
    position: torch.Tensor
    logits: torch.Tensor

    def select(self, keep: list[int]) -> None:
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index], layer.values[index]
        self.rows = [self.rows[i] for i in keep]
        self.mask, self.position, self.logits = self.mask[index], self.position[index], self.logits[keep]
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else self.mask.shape[1]
        if first:  # columns left of every row's first token
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self.mask = self.mask[:, first:]

    def pad_to(self, width: int) -> None:
        extra = width - self.mask.shape[1]
        if extra > 0:
            for layer in self.cache.layers:
                pad = layer.keys.new_zeros((*layer.keys.shape[:2], extra, layer.keys.shape[3]))
                layer.keys, layer.values = torch.cat([pad, layer.keys], 2), torch.cat([pad, layer.values], 2)
            self.mask = torch.cat([self.mask.new_zeros((self.mask.shape[0], extra)), self.mask], 1)

    def extend(self, other: Batch) -> None:
        width = max(self.mask.shape[1], other.mask.shape[1])
        self.pad_to(width)
        other.pad_to(width)
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys, mine.values = torch.cat([mine.keys, theirs.keys]), torch.cat([mine.values, theirs.values])
        self.rows += other.rows
        self.mask = torch.cat([self.mask, other.mask])
        self.position = torch.cat([self.position, other.position])
        self.logits = torch.cat([self.logits, other.logits])


class RetryingDecoder:
    """Samples one accepted reply per prompt (or runs out of attempts) with a continuously full batch.

    ``texts``: the formatted prompts (assistant prefix included); ``prefixed[k]``: whether prompt
    ``k`` ends with a prefix (its reply is decoded after its last tokens); ``seed_of(k, attempt)``:
    the attempt's seed; ``accept(k, text)``: whether the reply is kept.
    """

    def __init__(self, engine, texts: Sequence[str], prefixed: Sequence[bool], seed_of: Callable[[int, int], int],
                 accept: Callable[[int, str], bool], attempts: int, sampling: dict):
        self.engine, self.texts, self.prefixed = engine, list(texts), list(prefixed)
        self.seed_of, self.accept, self.attempts = seed_of, accept, attempts
        self.sampling = sampling
        self.queue: deque[tuple[int, int]] = deque((k, 0) for k in range(len(self.texts)))
        self.ids: list[list[int]] = engine.tokenizer(self.texts, add_special_tokens=not engine.chat)["input_ids"]
        self.shared = shared_prefix_length(self.ids) if len(self.ids) > 1 else 0
        if self.shared < MIN_SHARED:
            self.shared = 0
        self.prefix_cache = None  # the shared tokens' KV cache (batch of one), made on the first prefill
        # job -> its prompt's KV cache, less the last token (kept for its retry)
        self.kept: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def run(self) -> None:
        size = self.engine.batch_size
        batch: Batch | None = None
        while self.queue or batch is not None:
            free = size - (len(batch.rows) if batch else 0)
            if self.queue and (batch is None or free >= max(1, size // 4)):
                jobs = [self.queue.popleft() for _ in range(min(free, len(self.queue)))]
                fresh = [job for job in jobs if job[0] not in self.kept]
                again = [job for job in jobs if job[0] in self.kept]
                joined = self.prefill(fresh) if fresh else None
                if again:
                    resumed = self.resume(again)
                    if joined is None:
                        joined = resumed
                    else:
                        joined.extend(resumed)
                if batch is None:
                    batch = joined
                else:
                    batch.extend(joined)
            batch = self.step(batch)

    def prefill(self, jobs: list[tuple[int, int]]) -> Batch:
        """Forward the jobs' prompts (after the shared tokens), left-padded to one width."""
        eng = self.engine
        device = eng.model.device
        shared = self.shared
        rests = [self.ids[k][shared:] for k, _ in jobs]
        width = max(map(len, rests))
        pad = eng.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rests], dtype=torch.long, device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rests], dtype=torch.long, device=device)
        positions = (shared + mask.cumsum(-1) - 1).clamp(min=0)
        cache = None
        if shared:
            cache = self.shared_cache(len(jobs))
            mask = torch.cat([mask.new_ones((len(jobs), shared)), mask], 1)
        out = eng.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                        logits_to_keep=1)
        return Batch(self.rows(jobs), out.cache, mask, positions[:, -1:], out.logits[:, -1].float().cpu())

    def rows(self, jobs: list[tuple[int, int]]) -> list[Row]:
        eng = self.engine
        return [Row(k, a, torch.Generator().manual_seed(derive_seed(self.seed_of(k, a), 0)),
                    self.ids[k][-eng.context_tokens:] if self.prefixed[k] else None)
                for k, a in jobs]

    def keep_prompt(self, batch: Batch, i: int) -> None:
        """Keep row ``i``'s prompt KV (all but its last token) for the job's retry."""
        width = batch.mask.shape[1]
        if any(layer.keys.shape[2] != width for layer in batch.cache.layers):
            return  # a layer keeps fewer columns than the batch (a sliding window): forward it again
        columns = batch.mask[i].nonzero().squeeze(1)[: len(self.ids[batch.rows[i].job]) - 1]
        self.kept[batch.rows[i].job] = [(layer.keys[i][:, columns], layer.values[i][:, columns])
                                        for layer in batch.cache.layers]

    def resume(self, jobs: list[tuple[int, int]]) -> Batch:
        """Retries of kept prompts: their KV caches left-padded to one width, each prompt's last
        token forwarded for its first logits."""
        from transformers import DynamicCache

        eng = self.engine
        device = eng.model.device
        kept = [self.kept.pop(k) for k, _ in jobs]
        lengths = [layers[0][0].shape[1] for layers in kept]
        width = max(lengths)
        cache = DynamicCache(config=eng.model.config)
        for n, first in enumerate(kept[0]):
            heads, dim = first[0].shape[0], first[0].shape[2]
            keys = first[0].new_zeros((len(jobs), heads, width, dim))
            values = first[1].new_zeros((len(jobs), heads, width, dim))
            for r, layers in enumerate(kept):
                keys[r, :, width - lengths[r]:], values[r, :, width - lengths[r]:] = layers[n]
            cache.update(keys, values, n)
        mask = torch.tensor([[0] * (width - n) + [1] * (n + 1) for n in lengths], dtype=torch.long, device=device)
        ids = torch.tensor([[self.ids[k][-1]] for k, _ in jobs], dtype=torch.long, device=device)
        position = torch.tensor([[n] for n in lengths], dtype=torch.long, device=device)
        out = eng.model(input_ids=ids, attention_mask=mask, position_ids=position, cache=cache, use_cache=True)
        return Batch(self.rows(jobs), out.cache, mask, position, out.logits[:, -1].float().cpu())

    def shared_cache(self, rows: int):
        """A KV cache holding the shared tokens for ``rows`` rows (forwarded once, then copied)."""
        if self.prefix_cache is None:
            eng = self.engine
            ids = torch.tensor([self.ids[0][: self.shared]], dtype=torch.long, device=eng.model.device)
            self.prefix_cache = eng.model(input_ids=ids, use_cache=True, logits_to_keep=1).cache
        cache = copy.copy(self.prefix_cache)
        cache.layers = []
        for layer in self.prefix_cache.layers:
            mine = copy.copy(layer)
            mine.keys = layer.keys.expand(rows, -1, -1, -1).contiguous()
            mine.values = layer.values.expand(rows, -1, -1, -1).contiguous()
            cache.layers.append(mine)
        return cache

    def step(self, batch: Batch) -> Batch | None:
        """Sample a token for every row, retire finished rows, and decode one step for the rest."""
        eng, s = self.engine, self.sampling
        picked = eng.pick_tokens(batch.logits, [row.generator for row in batch.rows], s["temperature"],
                                 s["top_p"], s["min_p"])
        eng.tokens_generated += len(picked)
        keep = []
        for i, (row, token) in enumerate(zip(batch.rows, picked)):
            done = token == eng.end_id
            if not done:
                row.tokens.append(token)
                done = len(row.tokens) >= s["max_new_tokens"] or bool(
                    s["stop"] and any(x in eng.decode(row.tokens, row.context) for x in s["stop"]))
            if not done:
                keep.append(i)
                continue
            text = cut_at_stop(eng.decode(row.tokens, row.context), s["stop"])
            if not self.accept(row.job, text) and row.attempt + 1 < self.attempts:
                self.keep_prompt(batch, i)
                self.queue.appendleft((row.job, row.attempt + 1))  # first in line: its kept KV is freed sooner
        if not keep:
            return None
        if len(keep) < len(batch.rows):
            batch.select(keep)
        device = batch.mask.device
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(keep), 1))], dim=1)
        batch.position = batch.position + 1
        tokens = torch.tensor([[row.tokens[-1]] for row in batch.rows], device=device)
        out = eng.model(input_ids=tokens, attention_mask=batch.mask, position_ids=batch.position,
                        cache=batch.cache, use_cache=True)
        batch.cache, batch.logits = out.cache, out.logits[:, -1].float().cpu()
        return batch
