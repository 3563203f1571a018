from __future__ import annotations

import itertools
import math
import random

import pytest

from synthgen import diversity as dv


@pytest.mark.parametrize("k", [2, 6, 10, 100])
def test_uniform_counts_reach_the_maximum(k):
    counts = {str(i): 7 for i in range(k)}
    assert dv.entropy_bits(counts) == pytest.approx(math.log2(k))
    assert dv.normalized_entropy(counts, k) == pytest.approx(1.0)


def test_entropy_of_known_distributions():
    assert dv.entropy_bits([2, 1, 1]) == pytest.approx(1.5)
    assert dv.entropy_bits({"a": 5}) == 0.0
    assert dv.entropy_bits([]) == 0.0
    assert dv.entropy_bits([3, 0, 3]) == pytest.approx(1.0)  # zero counts are ignored
    assert dv.normalized_entropy([2, 1, 1], 4) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        dv.entropy_bits([1, -1])


@pytest.mark.parametrize("k", [None, 0, 1])
def test_normalized_entropy_undefined_without_a_closed_set(k):
    assert dv.normalized_entropy([1, 2], k) is None


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [(10, 10, 6.5132), (10, 50, 9.9485), (50, 50, 31.79), (100, 100, 63.40), (1000, 1000, 632.3)],
)
def test_expected_unique_uniform_matches_reference_table(k, n, expected):
    assert dv.expected_unique_uniform(k, n) == pytest.approx(expected, abs=0.06)
    assert dv.expected_unique(n, [1.0] * k) == pytest.approx(dv.expected_unique_uniform(k, n))


def test_expected_unique_with_weights():
    assert dv.expected_unique(5, [3, 0]) == pytest.approx(1.0)  # unnormalised; one reachable value
    # two values at 0.5: 1 - 0.5^n chance each to be seen
    assert dv.expected_unique(3, [0.5, 0.5]) == pytest.approx(2 * (1 - 0.5**3))
    assert dv.expected_unique(0, [1, 1]) == 0.0
    assert dv.expected_unique_uniform(1, 10) == 1.0


def test_ideal_kl_and_miller_madow():
    assert dv.ideal_kl(10, 100) == pytest.approx(0.045)
    assert dv.ideal_kl(10, 1000) == pytest.approx(0.0045)
    assert dv.ideal_entropy_bits(10, 100) == pytest.approx(math.log2(10) - 0.065, abs=1e-3)
    assert dv.ideal_entropy_bits(100, 1000) == pytest.approx(math.log2(100) - 0.071, abs=1e-3)


def _brute_expected_entropy_bits(n, q):
    total = 0.0
    for outcome in itertools.product(range(len(q)), repeat=n):
        prob = math.prod(q[i] for i in outcome)
        total += prob * dv.entropy_bits([outcome.count(i) for i in range(len(q))])
    return total


@pytest.mark.parametrize(("n", "q"), [(3, [0.5, 0.5]), (4, [0.7, 0.3]), (5, [0.2, 0.3, 0.5]), (2, [1 / 6] * 6)])
def test_expected_entropy_is_exact(n, q):
    assert dv.expected_entropy_bits(n, q) == pytest.approx(_brute_expected_entropy_bits(n, q), abs=1e-9)


def test_expected_entropy_agrees_with_miller_madow_when_n_is_large_and_stays_sane_when_small():
    assert dv.expected_entropy_bits(10_000, [1] * 10) == pytest.approx(dv.ideal_entropy_bits(10, 10_000), abs=1e-4)
    small = dv.expected_entropy_bits(10, [1] * 1000)  # Miller–Madow gives about -62 bits here
    assert dv.ideal_entropy_bits(1000, 10) < 0 < small <= math.log2(10)


def test_kl_divergence():
    q = {"a": 0.25, "b": 0.75}
    assert dv.kl_divergence({"a": 1, "b": 3}, q) == pytest.approx(0.0, abs=1e-12)
    assert dv.kl_divergence({"a": 2, "b": 6}, {"a": 1, "b": 3}) == pytest.approx(0.0, abs=1e-12)  # q unnormalised
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert dv.kl_divergence({"a": 1, "b": 1}, q) == pytest.approx(expected)
    assert dv.kl_divergence({"a": 1, "c": 1}, q) == math.inf
    assert dv.kl_divergence({"a": 1, "b": 1}, {"a": 1.0, "b": 0.0}) == math.inf
    assert math.isnan(dv.kl_divergence({}, q))


def test_distinct_n_on_a_hand_made_corpus():
    texts = ["a b a b", "a b c"]
    assert dv.distinct_n(texts, 1) == pytest.approx(3 / 7)
    # bigrams: (a b) (b a) (a b) | (a b) (b c): 3 unique of 5
    assert dv.distinct_n(texts, 2) == pytest.approx(3 / 5)
    assert dv.distinct_n(["x y", "z w"], 2) == 1.0  # no bigram across the boundary
    assert dv.distinct_n(["x y", "x y"], 2) == 0.5
    assert math.isnan(dv.distinct_n(["one"], 2))
    with pytest.raises(ValueError):
        dv.distinct_n(texts, 0)


def test_compression_ratio_is_higher_for_repetitive_text():
    rng = random.Random(0)
    vocab = [f"word{i}" for i in range(5000)]
    varied = [" ".join(rng.choice(vocab) for _ in range(12)) for _ in range(200)]
    repeated = ["the same biography sentence repeated again and again"] * 200
    assert dv.compression_ratio(repeated) > 5 * dv.compression_ratio(varied)
    assert dv.compression_ratio(varied) < 5
    assert math.isnan(dv.compression_ratio([]))


def test_singleton_share_and_top_values():
    counts = {"a": 1, "b": 1, "c": 3, "d": 0}
    assert dv.singleton_share(counts) == pytest.approx(2 / 5)
    assert math.isnan(dv.singleton_share({}))
    assert dv.top_values(counts) == [("c", 3, 0.6), ("a", 1, 0.2), ("b", 1, 0.2)]
    assert dv.top_values(counts, k=1) == [("c", 3, 0.6)]
