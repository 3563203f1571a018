"""The expected-unique-count formulas of benchmarks/unique_ceiling.py, against simulation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "unique_ceiling.py"
_spec = importlib.util.spec_from_file_location("unique_ceiling", _PATH)
uc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(uc)


def simulate(cond, n, runs, rng):
    counts = []
    for _ in range(runs):
        drawn = set()
        for weight, p in cond:
            drawn.update(rng.choice(len(p), size=round(n * weight), p=p).tolist())
        counts.append(len(drawn))
    return float(np.mean(counts))


def test_uniform_distribution_reaches_the_ideal_count():
    p = np.full(50, 1 / 50)
    assert uc.expected_unique([(1.0, p)], 120) == pytest.approx(uc.ideal_unique(50, 120))
    assert uc.ideal_unique(50, 120) == pytest.approx(50 * (1 - (49 / 50) ** 120))
    assert uc.expected_unique([(1.0, np.eye(1, 50, 0)[0])], 120) == pytest.approx(1.0)


def test_expected_unique_matches_simulation_with_conditions():
    rng = np.random.default_rng(0)
    skewed = uc.softmax(rng.normal(0, 2, 200))
    other = uc.softmax(rng.normal(0, 1, 200))
    cond = [(0.6, skewed), (0.4, other)]
    expected = uc.expected_unique(cond, 300)
    assert simulate(cond, 300, 400, rng) == pytest.approx(expected, rel=0.02)
    # a peaked distribution reaches fewer distinct values than the ideal sampler
    assert expected < uc.ideal_unique(200, 300)


def test_name_lists_grow_and_keep_the_recipe_list_first():
    census = uc.census_names()
    assert len(census["female"]) == len(census["male"]) == 1200
    lists = uc.name_lists(("Ada", "Mary"), census)
    sizes = [len(v) for k, v in lists.items() if k.startswith("census")]
    assert sizes == sorted(sizes) and sizes[0] > 400
    assert lists["recipe (data/first_names.txt)"] == ["Ada", "Mary"]
    assert all(len(set(v)) == len(v) for v in lists.values())
