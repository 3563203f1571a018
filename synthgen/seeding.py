"""Seeds: every random draw of a run derives from the run seed, stably.

Python's ``hash`` changes per process, so ids are taken from sha256 / blake2b.
A record's draws depend only on ``(run seed, record index, field)``, never on
the batch, shard or executor that made it, so a resumed or distributed run
makes the same records as a single uninterrupted one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

_SEED_MASK = (1 << 63) - 1


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and platforms."""
    text = ":".join(str(int(p)) for p in parts).encode("ascii")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & _SEED_MASK


def field_id(name: str) -> int:
    """A stable 64-bit id of a field name."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def record_rng(seed: int, index: int, name: str) -> np.random.Generator:
    """The generator of record ``index``'s draws for field ``name``."""
    return np.random.default_rng([seed, index, field_id(name)])


def attempt_seed(seed: int, index: int, name: str, attempt: int) -> int:
    """The engine seed of record ``index``'s ``attempt``-th try at a generated field (63 bits)."""
    state = np.random.SeedSequence([seed, index, field_id(name), attempt]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def prompt_seeds(seed: int | Sequence[int] | None, count: int) -> list[int]:
    """One seed per prompt of an engine call.

    ``seed``: one int per prompt (used as given: per-record seeding), one int for
    the call (prompt ``i`` gets ``derive_seed(seed, i)``, so equal prompts in a
    batch still differ), or None (a fresh seed from torch's global RNG, so
    ``torch.manual_seed`` makes unseeded calls repeatable).
    """
    if seed is None:
        import torch

        seed = int(torch.randint(0, 2**62, ()))
    if isinstance(seed, bool):
        raise TypeError(f"seed must be an int or a sequence of ints, got {seed!r}")
    if isinstance(seed, (int, np.integer)):
        return [derive_seed(seed, i) for i in range(count)]
    seeds = [int(s) for s in seed]
    if len(seeds) != count:
        raise ValueError(f"got {len(seeds)} seeds for {count} prompts; give one seed per prompt or one int")
    return seeds
