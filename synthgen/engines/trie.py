"""Scoring option sets as token tries, several prompts packed into one forward pass.

The options of one prompt share first tokens ("Ann", "Anna", "Anne"), and the
padded scoring of :func:`synthgen.engines.scoring.option_logprobs` spends most
of its work on padding (every option of a chunk is as wide as the widest). Here
each prompt's options become a trie: a node per distinct option prefix, each
node's logits predicting all of its children (the next tokens and the
end-of-turn). A prompt and its trie form a *segment*; segments are packed into
rows of at most ``budget`` tokens and each row runs as one forward pass with a
4D attention mask (a prompt token sees the earlier tokens of its prompt; a node
sees its prompt, its ancestors and itself) and position ids that continue the
prompt by depth, so every node computes exactly what it would at the end of
``prompt + prefix``. No padding, no KV-cache expansion, and the lm head runs only
at the positions whose logits are used.

``log p(option + end | prompt)`` is the sum over the option's tokens of the
log-probability the parent node (or the prompt's last token) gives it. A trie
larger than one row is split into groups of options (sorted, so shared prefixes
stay together), each with its own copy of the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["packed_option_logprobs"]

DEFAULT_BUDGET = 1024  # tokens per packed row


@dataclass
class Segment:
    """One prompt and a trie over some of its options (request ``request``, options ``option_index``)."""

    request: int
    prompt: list[int]
    option_index: list[int]
    tokens: list[int] = field(default_factory=list)  # one per node
    parents: list[int] = field(default_factory=list)  # node index, -1 = the prompt's last token
    depths: list[int] = field(default_factory=list)  # prefix length of the node, 1..
    steps: list[list[tuple[int, int]]] = field(default_factory=list)  # per option: (node or -1, token scored)

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.tokens)


def build_segment(request: int, prompt: Sequence[int], options: Sequence[Sequence[int]],
                  index: Sequence[int]) -> Segment:
    """The trie of ``options`` (their indices ``index`` in the request) after ``prompt``."""
    seg = Segment(request, list(prompt), list(index))
    children: dict[tuple[int, int], int] = {}
    for seq in options:
        node, steps = -1, []
        for j, token in enumerate(seq):
            steps.append((node, int(token)))
            if j == len(seq) - 1:
                break  # the last token (end-of-turn) is scored, never fed
            child = children.get((node, int(token)))
            if child is None:
                child = children[(node, int(token))] = len(seg.tokens)
                seg.tokens.append(int(token))
                seg.parents.append(node)
                seg.depths.append(j + 1)
            node = child
        seg.steps.append(steps)
    return seg


def trie_size(options: Sequence[Sequence[int]]) -> int:
    """Nodes of the trie over ``options`` (distinct prefixes, the last token of each excluded)."""
    return len({tuple(seq[:j]) for seq in options for j in range(1, len(seq))})


def split_request(request: int, prompt: Sequence[int], options: Sequence[Sequence[int]],
                  budget: int) -> list[Segment]:
    """Segments covering every option of a request, each at most ``budget`` tokens where possible.

    Options are taken in sorted token order so groups keep their shared prefixes;
    a single option longer than the budget gets a segment of its own.
    """
    order = sorted(range(len(options)), key=lambda k: list(options[k]))
    segments, group, nodes = [], [], set()
    for k in order:
        seq = tuple(options[k])
        new = {seq[:j] for j in range(1, len(seq))} - nodes
        if group and len(prompt) + len(nodes) + len(new) > budget:
            segments.append(build_segment(request, prompt, [options[i] for i in group], group))
            group, nodes = [], set()
            new = {seq[:j] for j in range(1, len(seq))}
        group.append(k)
        nodes |= new
    if group:
        segments.append(build_segment(request, prompt, [options[i] for i in group], group))
    return segments


def pack(segments: list[Segment], budget: int) -> list[list[Segment]]:
    """Rows of segments, greedily filled in order up to ``budget`` tokens (a longer segment alone)."""
    rows: list[list[Segment]] = []
    used = budget + 1
    for seg in segments:
        if used + seg.length > budget:
            rows.append([])
            used = 0
        rows[-1].append(seg)
        used += seg.length
    return rows


def row_inputs(row: list[Segment]):
    """Token ids, position ids, the boolean attention mask (True = attend) and, per segment, the
    row position of its prompt's last token and of its first node."""
    length = sum(seg.length for seg in row)
    ids = np.zeros(length, dtype=np.int64)
    positions = np.zeros(length, dtype=np.int64)
    mask = np.zeros((length, length), dtype=bool)
    offsets = []
    start = 0
    for seg in row:
        plen, n = len(seg.prompt), len(seg.tokens)
        ids[start : start + plen] = seg.prompt
        positions[start : start + plen] = np.arange(plen)
        mask[start : start + plen, start : start + plen] = np.tri(plen, dtype=bool)
        first = start + plen
        ids[first : first + n] = seg.tokens
        positions[first : first + n] = np.asarray(seg.depths, dtype=np.int64) + plen - 1
        mask[first : first + n, start:first] = True
        block = mask[first : first + n, first : first + n]
        for i, parent in enumerate(seg.parents):  # parents come before their children
            if parent >= 0:
                block[i] = block[parent]
            block[i, i] = True
        offsets.append((first - 1, first))
        start = first + n
    return ids, positions, mask, offsets


def run_row(model: torch.nn.Module, row: list[Segment], out: list[torch.Tensor]) -> None:
    """One forward pass over a packed row; adds each option's log-probability into ``out[request]``."""
    device = next(model.parameters()).device
    ids, positions, mask, offsets = row_inputs(row)
    # logits only where they are used: each prompt's last token and every node
    keep = np.concatenate([np.arange(last, first + len(seg.tokens)) for seg, (last, first) in zip(row, offsets)])
    logits = model(input_ids=torch.from_numpy(ids)[None].to(device),
                   position_ids=torch.from_numpy(positions)[None].to(device),
                   attention_mask=torch.from_numpy(mask)[None, None].to(device),
                   logits_to_keep=torch.from_numpy(keep).to(device), use_cache=False).logits[0].float()
    # kept row k of segment s: -1 (the prompt's last token) -> its base, node i -> base + 1 + i
    rows, tokens, owners = [], [], []
    base = 0
    for seg in row:
        for option, steps in zip(seg.option_index, seg.steps):
            for node, token in steps:
                rows.append(base + 1 + node)
                tokens.append(token)
                owners.append(option)
        base += 1 + len(seg.tokens)
    rows_t = torch.tensor(rows, device=device)
    picked = logits[rows_t, torch.tensor(tokens, device=device)] - torch.logsumexp(logits, dim=-1)[rows_t]
    start = 0
    for seg in row:
        count = sum(len(steps) for steps in seg.steps)
        owner = torch.tensor(owners[start : start + count], device=device)
        out[seg.request].index_add_(0, owner, picked[start : start + count])
        start += count


def packed_option_logprobs(model: torch.nn.Module, requests: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
                           budget: int = DEFAULT_BUDGET, stats: dict | None = None) -> list[torch.Tensor]:
    """``log p(option + end | prompt)`` for every option of every ``(prompt_ids, options_ids)`` request.

    The options' token lists end with the end-of-turn token (as
    :meth:`synthgen.engines.base.PromptCodec.encode_options` gives them). Equal to
    :func:`synthgen.engines.scoring.naive_option_logprobs` up to float rounding.
    ``stats``, when given, gets ``tokens`` increased by the tokens forwarded (prompts and trie nodes).
    """
    device = next(model.parameters()).device
    out = [torch.zeros(len(options), dtype=torch.float32, device=device) for _, options in requests]
    segments = [seg for r, (prompt, options) in enumerate(requests) if options
                for seg in split_request(r, prompt, options, budget)]
    if stats is not None:
        stats["tokens"] = stats.get("tokens", 0) + sum(seg.length for seg in segments)
    for row in pack(segments, budget):
        run_row(model, row, out)
    return out
