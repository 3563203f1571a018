"""Continuous batching for sampling with retries: the decode batch is kept full.

A text field samples a reply per record, validates it and retries the failures.
Done in rounds, each retry round is a whole decode over a handful of rows (and
every round ends with its longest row decoding alone), so most of the model's
weight reads serve few rows. Here a finished row stops sampling at once, its
retry (if its reply was rejected) joins the queue, and queued prompts are
prefilled and join the running batch whenever a quarter of its slots are free:
the live rows' KV caches and theirs are left-padded to one width and copied into
new buffers (columns no live row uses are dropped), which finished rows leave.
Without new prompts, finished rows leave once they are a quarter of the batch.
The buffers have spare columns (:class:`SlackLayer`), so each decode step writes
its token's keys and values in place instead of copying the cache.

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
from transformers.cache_utils import DynamicLayer

from synthgen.engines.base import cut_at_stop
from synthgen.seeding import derive_seed

MIN_SHARED = 8  # fewer shared first tokens than this are forwarded with each prompt
SLACK = 32  # spare cache columns a batch is given: that many decode steps append in place


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


class SlackLayer(DynamicLayer):
    """A cache layer whose keys and values are views of buffers with spare columns, so appending
    a decoded token writes into them in place (a plain layer copies its whole cache every step)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, width: int):
        super().__init__()
        self.is_initialized = True
        self.device = keys.device
        self.key_buffer, self.value_buffer = keys, values
        self.keys, self.values = keys[:, :, :width], values[:, :, :width]

    def update(self, key_states, value_states, *args, **kwargs):
        width, n = self.keys.shape[2], key_states.shape[2]
        if width + n > self.key_buffer.shape[2]:  # out of spare columns: move to larger buffers
            b, h, _, d = self.keys.shape
            keys = self.keys.new_zeros((b, h, width + n + SLACK, d))
            values = self.values.new_zeros((b, h, width + n + SLACK, d))
            keys[:, :, :width], values[:, :, :width] = self.keys, self.values
            self.key_buffer, self.value_buffer = keys, values
        self.key_buffer[:, :, width : width + n] = key_states
        self.value_buffer[:, :, width : width + n] = value_states
        self.keys = self.key_buffer[:, :, : width + n]
        self.values = self.value_buffer[:, :, : width + n]
        return self.keys, self.values


@dataclass
class Batch:
    """The running rows (None: a finished row whose place is not reclaimed yet), their KV cache,
    attention mask (rows x width), next positions and last logits."""

    rows: list[Row | None]
    cache: object
    mask: torch.Tensor
    position: torch.Tensor
    logits: torch.Tensor

    @property
    def live(self) -> int:
        return sum(row is not None for row in self.rows)

    @staticmethod
    def join(parts: list[Batch]) -> Batch:
        """The live rows of ``parts`` as one batch: each part's columns left of its live rows' first
        token dropped, left-padded to the widest, in cache buffers with spare columns (one copy)."""
        picks, firsts = [], []
        for part in parts:
            keep = [i for i, row in enumerate(part.rows) if row is not None]
            index = torch.tensor(keep, dtype=torch.long, device=part.mask.device)
            used = part.mask[index].any(dim=0).nonzero()
            picks.append((keep, index))
            firsts.append(int(used[0]) if len(used) else part.mask.shape[1])
        widths = [part.mask.shape[1] - first for part, first in zip(parts, firsts)]
        width, n = max(widths), sum(len(keep) for keep, _ in picks)
        layers = []
        for layer in range(len(parts[0].cache.layers)):
            _, h, _, d = parts[0].cache.layers[layer].keys.shape
            keys = parts[0].cache.layers[layer].keys.new_zeros((n, h, width + SLACK, d))
            values = keys.new_zeros((n, h, width + SLACK, d))
            r = 0
            for part, (keep, index), first, w in zip(parts, picks, firsts, widths):
                old = part.cache.layers[layer]
                keys[r : r + len(keep), :, width - w : width] = old.keys[index, :, first:]
                values[r : r + len(keep), :, width - w : width] = old.values[index, :, first:]
                old.keys = old.values = old.key_buffer = old.value_buffer = None  # freed as the copy goes
                r += len(keep)
            layers.append(SlackLayer(keys, values, width))
        cache = parts[0].cache
        cache.layers = layers
        mask = torch.cat([torch.nn.functional.pad(part.mask[index, first:], (width - w, 0))
                          for part, (_, index), first, w in zip(parts, picks, firsts, widths)])
        position = torch.cat([part.position[index] for part, (_, index) in zip(parts, picks)])
        logits = torch.cat([part.logits[keep] for part, (keep, _) in zip(parts, picks)])
        rows = [part.rows[i] for part, (keep, _) in zip(parts, picks) for i in keep]
        return Batch(rows, cache, mask, position, logits)


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
            free = size - (batch.live if batch else 0)
            if self.queue and (batch is None or free >= max(1, size // 4)):
                jobs = [self.queue.popleft() for _ in range(min(free, len(self.queue)))]
                fresh = [job for job in jobs if job[0] not in self.kept]
                again = [job for job in jobs if job[0] in self.kept]
                parts = [batch] if batch is not None else []
                parts += [self.prefill(fresh)] if fresh else []
                parts += [self.resume(again)] if again else []
                batch = Batch.join(parts)
            elif batch is not None and len(batch.rows) - batch.live >= max(1, len(batch.rows) // 4):
                batch = Batch.join([batch])  # finished rows leave once they are a quarter of the batch
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
        """Sample a token for every live row, mark finished rows, and decode one step (finished rows
        ride along until they are a quarter of the batch or new rows take their places)."""
        eng, s = self.engine, self.sampling
        live = [i for i, row in enumerate(batch.rows) if row is not None]
        logits = batch.logits if len(live) == len(batch.rows) else batch.logits[live]
        picked = eng.pick_tokens(logits, [batch.rows[i].generator for i in live], s["temperature"],
                                 s["top_p"], s["min_p"])
        eng.tokens_generated += len(picked)
        for i, token in zip(live, picked):
            row = batch.rows[i]
            done = token == eng.end_id
            if not done:
                row.tokens.append(token)
                done = len(row.tokens) >= s["max_new_tokens"] or bool(
                    s["stop"] and any(x in eng.decode(row.tokens, row.context) for x in s["stop"]))
            if not done:
                continue
            text = cut_at_stop(eng.decode(row.tokens, row.context), s["stop"])
            if not self.accept(row.job, text) and row.attempt + 1 < self.attempts:
                self.keep_prompt(batch, i)
                self.queue.appendleft((row.job, row.attempt + 1))  # first in line: its kept KV is freed sooner
            batch.rows[i] = None
        if not batch.live:
            return None
        device = batch.mask.device
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=1)
        batch.position = batch.position + 1
        pad = eng.tokenizer.pad_token_id
        tokens = torch.tensor([[row.tokens[-1] if row is not None else pad] for row in batch.rows], device=device)
        out = eng.model(input_ids=tokens, attention_mask=batch.mask, position_ids=batch.position,
                        cache=batch.cache, use_cache=True)
        batch.cache, batch.logits = out.cache, out.logits[:, -1].float().cpu()
        return batch
