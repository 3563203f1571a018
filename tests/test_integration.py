"""Integration tests on the real default model (SmolLM2-135M-Instruct), pulled
into the real cache on first use. Run with the rest: `make test`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import torch

from synthgen import store
from synthgen.adapters import default_adapter
from synthgen.cli import main
from synthgen.engines.scoring import naive_option_logprobs
from synthgen.engines.transformers import TransformersEngine

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
NUMBERS = [str(i) for i in range(1, 11)]
PROMPT = "Pick a random number between 1 and 10. Reply with only the number."


@pytest.fixture(scope="module")
def base():
    return TransformersEngine.load(None, adapter="none", device="cpu")


@pytest.fixture(scope="module")
def diffuse():
    assert default_adapter(None) is not None, "the shipped adapter is missing"
    return TransformersEngine.load(None, adapter="default", device="cpu")


def test_default_model_generates(base):
    out = base.generate(["What is the capital of France?"], temperature=0, max_new_tokens=16)[0][0]
    assert "Paris" in out
    samples = base.generate(["Tell me a word."], n=4, max_new_tokens=8, seed=3)[0]
    assert len(samples) == 4 and all(isinstance(s, str) for s in samples)


def test_score_ten_options_matches_naive(base):
    fast = torch.tensor(base.score(PROMPT, NUMBERS))
    prompt_ids = base.encode_prompt(PROMPT)
    options_ids = base.encode_options(base.format_prompt(PROMPT), prompt_ids, NUMBERS)
    with torch.no_grad():
        naive = naive_option_logprobs(base.model, prompt_ids, options_ids)
    assert torch.allclose(fast, naive, atol=1e-4)
    probs = fast.exp()
    assert ((probs >= 0) & (probs <= 1)).all() and probs.sum() <= 1.0


def test_shipped_adapter_is_diffuse_and_still_answers_facts(base, diffuse):
    def norm_entropy(engine):
        lp = engine.score(PROMPT, NUMBERS)
        z = sum(math.exp(v) for v in lp)
        p = [math.exp(v) / z for v in lp]
        return -sum(x * math.log(x) for x in p) / math.log(10), z

    h_base, mass_base = norm_entropy(base)
    h_diff, mass_diff = norm_entropy(diffuse)
    assert h_diff > 0.95 and h_diff > h_base
    assert mass_diff > 0.8 > mass_base
    # Text fields run with the adapter switched off: ordinary answers are intact there.
    answer = diffuse.generate(["What is the capital of France?"], temperature=0, max_new_tokens=16,
                              use_adapter=False)[0][0]
    assert "Paris" in answer


def test_shipped_adapter_answers_a_held_out_fact(diffuse):
    # with the adapter ON: the `preserve` regulariser keeps ordinary answers (France is not among
    # its prompts, nor in the task suite's fact anchors)
    answer = diffuse.generate(["What is the capital of France?"], temperature=0, max_new_tokens=16)[0][0]
    assert "Paris" in answer


def test_audit_cli_writes_the_contract(tmp_path):
    out = tmp_path / "audit.json"
    code = main(["audit", str(ROOT / "recipes/diffuse/tasks.jsonl"), "--families", "colors", "--samples", "8",
                 "--json", str(out), "--plot", str(tmp_path / "audit.png")])
    assert code == 0
    rep = json.loads(out.read_text())
    assert {"model", "adapter", "tasks", "summary"} <= set(rep)
    task = rep["tasks"][0]
    assert set(task["exact"]) == {"valid_mass", "normalized_entropy", "kl_to_target", "top1_share"}
    assert {"n", "valid_rate", "coverage", "unique_valid", "normalized_entropy"} <= set(task["sampled"])
    assert rep["baseline"]["adapter"] is None and rep["adapter"]
    assert (tmp_path / "audit.png").stat().st_size > 1000


def test_biography_cli_small_run(tmp_path):
    out = tmp_path / "bio"
    assert main(["generate", str(ROOT / "recipes/biography.yaml"), "-n", "6", "-o", str(out)]) == 0
    df = pl.read_parquet(out / "records.parquet")
    rep = json.loads((out / "report.json").read_text())
    expected = {"first_name", "last_name", "gender", "birth_year", "birth_place", "occupation", "biography"}
    assert expected <= set(df.columns)
    assert rep["n_requested"] == 6 and rep["n_kept"] == len(df)
    assert rep["fields"]["first_name"]["valid_rate"] == 1.0
    assert rep["fields"]["first_name"]["in_set_rate"] == 1.0  # every name from its country's and gender's list
    assert "mentions_first_name" in rep["fields"]["biography"]["checks"]
    # the recipe's adapter key names the shipped biography adapter, recorded with its checksum
    run = json.loads((out / "run.json").read_text())
    assert Path(run["adapter"]).name == "smollm2-135m-biography" and run["adapter_sha256"]


def test_recipe_tuned_biography_adapter_matches_the_recipe_weights(tmp_path):
    # the shipped adapter tuned for recipes/biography_flat.yaml (KL <= 0.05 nats to the recipe's
    # weights on its choice fields), audited on the tasks it was trained on with the real model
    adapter = Path(store.__file__).resolve().parent / "adapters" / "smollm2-135m-biography-flat"
    out = tmp_path / "audit.json"
    assert main(["audit", str(adapter / "tasks.jsonl"), "--adapter", str(adapter), "--samples", "0",
                 "--no-compare", "--json", str(out)]) == 0
    tasks = json.loads(out.read_text())["tasks"]
    assert {t["family"] for t in tasks} == {"gender", "first_name", "last_name", "birth_year", "birth_place",
                                            "occupation"}
    for t in tasks:
        assert t["exact"]["kl_to_target"] <= 0.05, (t["id"], t["exact"])
