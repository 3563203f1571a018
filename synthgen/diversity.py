"""Diversity metrics and the ideals a perfect sampler would reach.

Pure functions over value counts, (field, parent) pairs or lists of texts;
no I/O, no polars.
Natural logarithms (nats) unless a name says ``bits``. Formulas and worked
values: ``docs/diversity.md``.

``counts`` arguments accept either a mapping ``value -> count`` or a plain
sequence of counts. Quantities that are undefined on empty input (KL, singleton
share, distinct-n without n-grams, compression of nothing) return ``nan``;
the entropy of nothing is 0.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

LN2 = math.log(2.0)


def _counts_array(counts: Mapping[Any, int] | Iterable[int]) -> np.ndarray:
    values = counts.values() if isinstance(counts, Mapping) else counts
    arr = np.asarray(list(values), dtype=float)
    if arr.size and arr.min() < 0:
        raise ValueError("counts must be non-negative")
    return arr[arr > 0]


def _probabilities(weights: Iterable[float]) -> np.ndarray:
    q = np.asarray(list(weights), dtype=float)
    if q.size == 0 or q.min() < 0 or q.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    return q / q.sum()


def entropy_nats(counts: Mapping[Any, int] | Iterable[int]) -> float:
    """Plug-in Shannon entropy of the empirical distribution, in nats."""
    c = _counts_array(counts)
    if c.size == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def entropy_bits(counts: Mapping[Any, int] | Iterable[int]) -> float:
    """Plug-in Shannon entropy of the empirical distribution, in bits."""
    return entropy_nats(counts) / LN2


def normalized_entropy(counts: Mapping[Any, int] | Iterable[int], k: int | None) -> float | None:
    """H / log K in [0, 1]; ``None`` when the option set is open (k None) or k < 2."""
    if k is None or k < 2:
        return None
    return entropy_nats(counts) / math.log(k)


def kl_divergence(p_counts: Mapping[Any, int], q: Mapping[Any, float]) -> float:
    """KL(p̂ ‖ q) in nats, p̂ the empirical distribution of ``p_counts``.

    ``q`` is renormalised to sum to 1. A value seen in ``p_counts`` but with no
    mass in ``q`` gives ``inf``; empty ``p_counts`` gives ``nan``.
    """
    total_q = float(sum(q.values()))
    if total_q <= 0:
        raise ValueError("target distribution q has no mass")
    n = float(sum(c for c in p_counts.values() if c > 0))
    if n == 0:
        return math.nan
    kl = 0.0
    for value, c in p_counts.items():
        if c <= 0:
            continue
        qv = q.get(value, 0.0) / total_q
        if qv <= 0:
            return math.inf
        p = c / n
        kl += p * math.log(p / qv)
    return max(kl, 0.0)


def expected_unique(n: int, weights: Sequence[float]) -> float:
    """Expected number of distinct values in n i.i.d. draws from ``weights``: Σ 1-(1-q_i)^n."""
    if n <= 0:
        return 0.0
    q = _probabilities(weights)
    q = q[q > 0]
    with np.errstate(divide="ignore"):
        return float(-np.expm1(n * np.log1p(-q)).sum())


def _mixture_terms(draws: Iterable[tuple[int, Sequence[Any], Sequence[float] | None]]):
    """(n_s, values, normalised q_s) per set of ``draws``, sets with no draw left out."""
    for n, values, weights in draws:
        if n > 0:
            yield n, values, _probabilities(weights if weights is not None else [1.0] * len(values))


def expected_unique_mixture(draws: Iterable[tuple[int, Sequence[Any], Sequence[float] | None]]) -> float:
    """Expected distinct values when, for each ``(n_s, values_s, weights_s)``, n_s independent
    draws come from ``values_s`` by ``weights_s`` (None = uniform; normalised here):
    Σ_v [1 − Π_s (1 − q_s(v))^{n_s}], v over every value of every set.

    The ideal of a field whose option set depends on earlier fields, given how many
    records selected each set; with one set it is :func:`expected_unique`.
    """
    log_missed: dict[Any, float] = {}  # log P(v never drawn)
    for n, values, q in _mixture_terms(draws):
        with np.errstate(divide="ignore"):
            terms = n * np.log1p(-q)
        for value, term in zip(values, terms.tolist()):
            log_missed[value] = log_missed.get(value, 0.0) + term
    if not log_missed:
        return 0.0
    return float(-np.expm1(np.fromiter(log_missed.values(), float, len(log_missed))).sum())


def mixture_distribution(draws: Iterable[tuple[int, Sequence[Any], Sequence[float] | None]]) -> dict[Any, float]:
    """The share of each value among all draws of :func:`expected_unique_mixture`'s ``draws``,
    in expectation: Σ_s n_s q_s(v) / Σ_s n_s (values in first-seen order; empty without draws)."""
    mass: dict[Any, float] = {}
    total = 0
    for n, values, q in _mixture_terms(draws):
        total += n
        for value, share in zip(values, q.tolist()):
            mass[value] = mass.get(value, 0.0) + n * share
    return {value: m / total for value, m in mass.items()}


def expected_unique_uniform(k: int, n: int) -> float:
    """Expected distinct values in n uniform draws over k options: K·(1-(1-1/K)^N)."""
    if k <= 0 or n <= 0:
        return 0.0
    return float(-k * math.expm1(n * math.log1p(-1.0 / k))) if k > 1 else 1.0


def ideal_entropy_bits(k: int, n: int) -> float:
    """Miller–Madow expected plug-in entropy of a perfect uniform sampler (bits).

    log2 K − (K−1)/(2N ln 2). An asymptotic formula: good once N ≳ K, badly low
    (even negative) for N ≪ K; :func:`expected_entropy_bits` is exact.
    """
    if k < 1 or n < 1:
        raise ValueError("k and n must be positive")
    return math.log2(k) - (k - 1) / (2 * n * LN2)


def ideal_kl(k: int, n: int) -> float:
    """Expected KL(p̂ ‖ q) of a perfect sampler, in nats: (K−1)/(2N) (χ²/2N)."""
    if k < 1 or n < 1:
        raise ValueError("k and n must be positive")
    return (k - 1) / (2 * n)


_EXACT_MAX_N = 2_000_000


def expected_entropy_bits(n: int, weights: Sequence[float]) -> float:
    """Exact E[Ĥ] (bits) of the plug-in entropy of n i.i.d. draws from ``weights``.

    E[Ĥ] = −Σ_i Σ_x Binom(x; n, q_i)·(x/n)·log2(x/n), summed over the window
    where the binomial has mass. Valid for any n (unlike Miller–Madow, which it
    matches for n ≫ K). Falls back to Miller–Madow beyond two million draws.
    """
    if n < 1:
        raise ValueError("n must be positive")
    q = _probabilities(weights)
    q = q[q > 0]
    if n > _EXACT_MAX_N:
        h = float(-(q * np.log2(q)).sum())
        return h - (q.size - 1) / (2 * n * LN2)
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
    values, multiplicity = np.unique(q, return_counts=True)
    total = 0.0
    for qi, m in zip(values, multiplicity):
        if qi >= 1.0:
            continue  # a single certain value contributes 0
        mu, sd = n * qi, math.sqrt(n * qi * (1 - qi))
        lo = max(1, int(mu - 12 * sd - 10))
        hi = min(n, int(mu + 12 * sd + 10))
        x = np.arange(lo, hi + 1)
        log_pmf = log_fact[n] - log_fact[x] - log_fact[n - x] + x * math.log(qi) + (n - x) * math.log1p(-qi)
        frac = x / n
        total += m * float((np.exp(log_pmf) * frac * np.log2(frac)).sum())
    return max(-total, 0.0)


def _ngrams(tokens: Sequence[str], n: int) -> Iterable[tuple[str, ...]]:
    return zip(*(tokens[i:] for i in range(n)))


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique word n-grams / all word n-grams over the corpus.

    Words are whitespace tokens, case kept; n-grams never cross text boundaries.
    ``nan`` when the texts hold no n-gram.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        if text is None:
            continue
        grams = list(_ngrams(text.split(), n))
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else math.nan


def compression_ratio(texts: Iterable[str]) -> float:
    """bytes(concat) / bytes(gzip(concat)), texts joined by a space; higher = more repetitive.

    Shaib et al. 2024; same join and gzip level as the ``diversity`` package.
    ``nan`` for no text.
    """
    data = " ".join(t for t in texts if t is not None).encode("utf-8")
    if not data:
        return math.nan
    return len(data) / len(gzip.compress(data, compresslevel=9, mtime=0))


def singleton_share(counts: Mapping[Any, int] | Iterable[int]) -> float:
    """Good–Turing unseen-mass estimate n1/N (values seen exactly once over all draws)."""
    c = _counts_array(counts)
    if c.size == 0:
        return math.nan
    return float((c == 1).sum() / c.sum())


def top_values(counts: Mapping[Any, int], k: int = 10) -> list[tuple[Any, int, float]]:
    """The k most frequent values as (value, count, share), ties broken by the value's text."""
    total = sum(c for c in counts.values() if c > 0)
    items = sorted(((v, c) for v, c in counts.items() if c > 0), key=lambda vc: (-vc[1], str(vc[0])))
    return [(v, c, c / total) for v, c in items[:k]]


# ------------------------------------------------- distributions from scores
def softmax(logprobs: Sequence[float]) -> np.ndarray:
    """The distribution renormalised over the given options, from their log-probabilities (float64)."""
    logp = np.asarray(logprobs, dtype=np.float64)
    probs = np.exp(logp - logp.max())
    return probs / probs.sum()


def log_total_mass(logprobs: Sequence[float]) -> float:
    """log Σ exp(logprobs): the log of the probability mass the options hold together."""
    logp = np.asarray(logprobs, dtype=np.float64)
    peak = logp.max()
    return float(peak + np.log(np.exp(logp - peak).sum()))


def distribution_entropy(probs: Sequence[float]) -> float:
    """Shannon entropy (nats) of a probability vector."""
    p = np.asarray(probs, dtype=np.float64)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def distribution_kl(p: Sequence[float], q: Sequence[float]) -> float:
    """KL(p ‖ q) in nats between two probability vectors over the same options."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    mask = p > 0
    return float((p[mask] * np.log(p[mask] / q[mask])).sum())


# ------------------------------------------------------------- coherence
# How much a field depends on other fields, from joint counts. ``pairs`` is either a
# mapping ``(x, y) -> count`` or a sequence of observed ``(x, y)`` pairs; x is the
# field, y the value it is conditioned on (a tuple when there are several parents).
# Plug-in (maximum-likelihood) estimates in bits; nothing counted gives 0.


def pair_counts(pairs: Mapping[tuple[Any, Any], int] | Iterable[tuple[Any, Any]]) -> dict[tuple[Any, Any], int]:
    """Joint counts ``(x, y) -> count`` of a count mapping (zero counts dropped) or of observed pairs."""
    out: dict[tuple[Any, Any], int] = {}
    if isinstance(pairs, Mapping):
        for key, c in pairs.items():
            if c < 0:
                raise ValueError("counts must be non-negative")
            if c:
                out[key] = c
        return out
    for x, y in pairs:
        out[(x, y)] = out.get((x, y), 0) + 1
    return out


def _marginal(joint: Mapping[tuple[Any, Any], int], axis: int) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for key, c in joint.items():
        out[key[axis]] = out.get(key[axis], 0) + c
    return out


def joint_entropy_bits(pairs: Mapping[tuple[Any, Any], int] | Iterable[tuple[Any, Any]]) -> float:
    """H(X, Y) in bits: the plug-in entropy of the joint counts."""
    return entropy_bits(pair_counts(pairs))


def conditional_entropy_bits(pairs: Mapping[tuple[Any, Any], int] | Iterable[tuple[Any, Any]]) -> float:
    """H(X | Y) in bits, plug-in: Σ_{x,y} (n_xy / N)·log2(n_y / n_xy) = H(X, Y) − H(Y).

    0 when x is a function of y; H(X) when the joint counts are the product of
    their marginals. Biased low when y takes many values for few pairs: with one
    pair per y it is 0 whatever the data.
    """
    joint = pair_counts(pairs)
    n = sum(joint.values())
    if not n:
        return 0.0
    ny = _marginal(joint, 1)
    h = sum(c * math.log(ny[y] / c) for (_, y), c in joint.items())
    return max(h / (n * LN2), 0.0)


def mutual_information_bits(pairs: Mapping[tuple[Any, Any], int] | Iterable[tuple[Any, Any]]) -> float:
    """I(X; Y) in bits, plug-in: H(X) − H(X | Y) = Σ p(x, y)·log2(p(x, y) / (p(x)·p(y))); symmetric, ≥ 0."""
    joint = pair_counts(pairs)
    n = sum(joint.values())
    if not n:
        return 0.0
    nx, ny = _marginal(joint, 0), _marginal(joint, 1)
    mi = sum(c * math.log(c * n / (nx[x] * ny[y])) for (x, y), c in joint.items())
    return max(mi / (n * LN2), 0.0)


def _codes(values: Sequence[Any]) -> tuple[np.ndarray, int]:
    index: dict[Any, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, len(index)


def shuffled_conditional_entropy_bits(xs: Sequence[Any], ys: Sequence[Any], rounds: int = 20,
                                      seed: int = 0) -> float:
    """Mean plug-in H(X | Y) after shuffling xs against ys (``rounds`` seeded permutations).

    What the estimator gives at this N for a field independent of its parents but
    with the same value counts: the baseline to read :func:`conditional_entropy_bits`
    against, since its small-sample bias (many y values, few pairs) is in it too.
    """
    if len(xs) != len(ys):
        raise ValueError("xs and ys must have the same length")
    if rounds < 1:
        raise ValueError("rounds must be positive")
    n = len(xs)
    if not n:
        return 0.0
    x, _ = _codes(xs)
    y, m = _codes(ys)
    ny = np.bincount(y, minlength=m).astype(float)
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(rounds):
        joint = np.unique(rng.permutation(x) * m + y, return_counts=True)
        cells, c = joint[0], joint[1].astype(float)
        total += float((c * np.log(ny[cells % m] / c)).sum())
    return max(total / (rounds * n * LN2), 0.0)
