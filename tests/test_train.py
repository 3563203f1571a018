from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from synthgen.engines.scoring import naive_option_logprobs
from synthgen.engines.transformers import TransformersEngine
from synthgen.errors import ConfigError
from synthgen.testing import perturbed_lora
from synthgen.training.config import LoraOptions, TrainConfig, load_config
from synthgen.training.loop import task_loss, train
from synthgen.training.tasks import Task, save_tasks

TASKS = [
    Task(id="n", family="numbers", prompt="Pick a number between 1 and 10.",
         targets=tuple(str(i) for i in range(1, 11)), weights=tuple([0.1] * 10)),
    Task(id="f", family="fruits", prompt="Pick a fruit.",
         targets=("apple", "banana", "cherry", "mango"), weights=(0.4, 0.3, 0.2, 0.1)),
]


@pytest.fixture
def suite(tmp_path):
    path = tmp_path / "tasks.jsonl"
    save_tasks(TASKS, path)
    return path


def write_config(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _perturbed_lora_and_task(tiny_model_dir, task):
    """A LoRA model whose B matrices are moved away from zero (so the adapter changes
    the outputs and has gradients everywhere), the task encoded, its weights, the params."""
    engine = TransformersEngine.load(str(tiny_model_dir), adapter="none", device="cpu")
    model = perturbed_lora(engine.model, seed=0, std=0.05)
    prompt_ids = engine.encode_prompt(task.prompt)
    encoded = (prompt_ids, engine.encode_options(engine.format_prompt(task.prompt), prompt_ids, task.targets))
    return model, encoded, torch.tensor(task.weights), [p for p in model.parameters() if p.requires_grad]


def _assert_same_gradients(fast, slow):
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), (a - b).abs().max()
    assert any(g.abs().max() > 0 for g in fast)


def test_shared_prompt_loss_and_gradients_match_naive(tiny_model_dir):
    model, encoded, weights, params = _perturbed_lora_and_task(tiny_model_dir, TASKS[0])

    loss = task_loss(model, encoded, weights, chunk_size=4)  # several chunks
    fast = torch.autograd.grad(loss, params)
    naive_loss = -(weights * naive_option_logprobs(model, *encoded)).sum()
    slow = torch.autograd.grad(naive_loss, params)

    assert abs(loss.item() - naive_loss.item()) < 1e-4
    _assert_same_gradients(fast, slow)


def test_renormalized_loss_and_gradients_match_naive(tiny_model_dir):
    # renormalize: -sum_y w_y log(p_y / sum p) = H(w) + KL(w || p / sum p), with the
    # prompt shared; checked against per-target full forwards.
    task = TASKS[1]
    model, encoded, weights, params = _perturbed_lora_and_task(tiny_model_dir, task)

    loss = task_loss(model, encoded, weights, chunk_size=2, renormalize=True)
    fast = torch.autograd.grad(loss, params)
    logp = naive_option_logprobs(model, *encoded)
    q = torch.softmax(logp, dim=0)  # p renormalised over the targets
    naive = -(weights * torch.log(q)).sum()
    slow = torch.autograd.grad(naive, params)
    kl = (weights * (torch.log(weights) - torch.log(q))).sum()

    assert abs(loss.item() - naive.item()) < 1e-4
    assert loss.item() == pytest.approx(task.entropy() + kl.item(), abs=1e-4)
    # differs from the absolute loss by exactly -log(valid mass)
    absolute = task_loss(model, encoded, weights, chunk_size=2)
    assert (absolute - loss).item() == pytest.approx(-torch.logsumexp(logp, 0).item(), abs=1e-4)
    _assert_same_gradients(fast, slow)


def test_renormalized_training_moves_the_shape_toward_the_weights(tiny_model_dir, suite, tmp_path):
    config = TrainConfig(tasks=str(suite), model=str(tiny_model_dir), epochs=8, lr=2e-2, tol=0.0,
                         renormalize=True, lora=LoraOptions(rank=4, alpha=8))
    train(config, tmp_path / "adapter")
    info = json.loads((tmp_path / "adapter" / "training.json").read_text())
    first, last, optimum = info["epochs"][0]["loss"], info["epochs"][-1]["loss"], info["optimal_loss"]
    assert info["config"]["renormalize"] is True
    assert first >= optimum - 1e-4  # H(w) + KL >= H(w)
    assert (last - optimum) < 0.5 * (first - optimum)


def test_training_moves_loss_toward_optimum(tiny_model_dir, suite, tmp_path):
    config = TrainConfig(tasks=str(suite), model=str(tiny_model_dir), epochs=8, lr=2e-2, tol=0.0,
                         lora=LoraOptions(rank=4, alpha=8))
    result = train(config, tmp_path / "adapter")
    info = json.loads((tmp_path / "adapter" / "training.json").read_text())
    first, last = info["epochs"][0]["loss"], info["epochs"][-1]["loss"]
    optimum = info["optimal_loss"]
    assert optimum == pytest.approx(TASKS[0].entropy() + TASKS[1].entropy())
    assert last < first
    assert (last - optimum) < 0.7 * (first - optimum)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert result.epochs_run == 8
    # the saved adapter loads and scores
    engine = TransformersEngine.load(str(tiny_model_dir), adapter=str(tmp_path / "adapter"), device="cpu")
    tuned = engine.score(TASKS[1].prompt, TASKS[1].targets)
    base = TransformersEngine.load(str(tiny_model_dir), adapter="none", device="cpu")
    plain = base.score(TASKS[1].prompt, TASKS[1].targets)
    # the adapter changes the scores; switched off, the engine is the base model again
    assert max(abs(a - b) for a, b in zip(tuned, plain)) > 1e-3
    assert engine.score(TASKS[1].prompt, TASKS[1].targets, use_adapter=False) == pytest.approx(plain, abs=1e-5)
    off = engine.generate(["Pick a fruit."], n=2, max_new_tokens=6, seed=5, use_adapter=False)
    assert off == base.generate(["Pick a fruit."], n=2, max_new_tokens=6, seed=5)


def test_save_every_writes_the_adapter_of_each_kth_epoch(tiny_model_dir, suite, tmp_path):
    config = TrainConfig(tasks=str(suite), model=str(tiny_model_dir), epochs=5, lr=2e-2, tol=0.0, save_every=2,
                         lora=LoraOptions(rank=4, alpha=8))
    train(config, tmp_path / "a")
    # epochs 2 and 4; the last epoch is the adapter itself
    assert sorted(p.name for p in (tmp_path / "a").glob("epoch-*")) == ["epoch-2", "epoch-4"]
    final = json.loads((tmp_path / "a" / "training.json").read_text())["epochs"]
    scores = []
    for name in ("epoch-2", "epoch-4"):
        folder = tmp_path / "a" / name
        info = json.loads((folder / "training.json").read_text())
        assert info["epochs"] == final[:info["epochs_run"]]
        engine = TransformersEngine.load(str(tiny_model_dir), adapter=str(folder), device="cpu")
        scores.append(engine.score(TASKS[1].prompt, TASKS[1].targets))
    last = TransformersEngine.load(str(tiny_model_dir), adapter=str(tmp_path / "a"), device="cpu")
    scores.append(last.score(TASKS[1].prompt, TASKS[1].targets))
    # three different adapters: the checkpoints are the training's state then, not copies of the end
    assert max(abs(a - b) for a, b in zip(scores[0], scores[1])) > 1e-4
    assert max(abs(a - b) for a, b in zip(scores[1], scores[2])) > 1e-4


def test_early_stop_for_open_families(tiny_model_dir, suite, tmp_path):
    # gamma so large that the open family (fruits) qualifies after the first epoch; tol 0,
    # so the closed family (numbers) cannot: only fruits stops, numbers trains on.
    config = TrainConfig(tasks=str(suite), model=str(tiny_model_dir), epochs=2, gamma=100.0, tol=0.0,
                         open_families=["fruits"])
    result = train(config, tmp_path / "a")
    epochs = json.loads((tmp_path / "a" / "training.json").read_text())["epochs"]
    assert {fam: info["stopped"] for fam, info in epochs[0]["families"].items()} == {"fruits": True,
                                                                                     "numbers": False}
    assert list(epochs[1]["families"]) == ["numbers"]
    assert result.epochs_run == 2 and not result.stopped_early


@pytest.mark.parametrize(("loss", "optimum", "n", "slack", "done"), [
    (10.1, 10.0, 3, 0.02, True), (10.3, 10.0, 3, 0.02, False),  # within (1 + slack) of the optimum
    (11.9, 10.0, 3, 0.2, True), (12.1, 10.0, 3, 0.2, False),
    (0.5, 0.0, 30, 0.02, True), (0.7, 0.0, 30, 0.02, False),  # one-answer tasks: <= slack nats per task
])
def test_family_stop_rule(loss, optimum, n, slack, done):
    from synthgen.training.loop import family_done

    assert family_done(loss, optimum, n, slack) is done


def test_one_answer_family_stops_at_its_per_task_tolerance(tiny_model_dir, tmp_path):
    # optimum 0: a relative tolerance could never be met; the per-task one (here
    # generous, 100 nats per task) stops the family after the first epoch
    facts = tmp_path / "facts.jsonl"
    save_tasks([Task("f-1", "facts", "Pick a fruit.", ("apple",)),
                Task("f-2", "facts", "Two plus two?", ("four",))], facts)
    config = TrainConfig(tasks=str(facts), model=str(tiny_model_dir), epochs=5, tol=100.0)
    result = train(config, tmp_path / "a")
    info = json.loads((tmp_path / "a" / "training.json").read_text())
    first = info["epochs"][0]["families"]["facts"]
    assert result.stopped_early and result.epochs_run == 1
    assert first["optimal"] == 0 and 0 < first["loss"] <= 200 and first["stopped"]


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("tasks: t.jsonl\nbogus: 1\n", "bogus", "unknown key"),
        ("model: x\n", "tasks", "exactly one of"),
        ("tasks: t.jsonl\nrecipe: r.yaml\n", "tasks", "exactly one of"),
        ("recipe: missing.yaml\n", "missing.yaml", "recipe file not found"),
        ("tasks: t.jsonl\ninit_adapter: 3\n", "init_adapter", "expected a path"),
        ("tasks: t.jsonl\nprompts_per_field: 0\n", "prompts_per_field", "expected an integer >= 1, got int 0"),
        ("tasks: missing.jsonl\n", "tasks", "not found"),
        ("tasks: t.jsonl\nepochs: 0\n", "epochs", "expected an integer >= 1, got int 0"),
        ("tasks: t.jsonl\nlr: -1\n", "lr", "expected a number >= 0, got int -1"),
        ("tasks: t.jsonl\nlr_schedule: linear\n", "lr_schedule", "cosine"),
        ("tasks: t.jsonl\nmax_targets_per_step: 0\n", "max_targets_per_step", "expected an integer >= 1"),
        ("tasks: t.jsonl\nrenormalize: yes please\n", "renormalize", "true or false"),
        ("tasks: t.jsonl\nrenormalize: true\nmax_targets_per_step: 8\n", "renormalize", "set stop_kl"),
        ("tasks: t.jsonl\nstop_kl: -0.1\n", "stop_kl", "expected a number >= 0"),
        ("tasks: t.jsonl\nfamily_min_tasks: 0\n", "family_min_tasks", "expected an integer >= 1"),
        ("tasks: t.jsonl\nevery_condition: 1\n", "every_condition", "true or false"),
        ("tasks: t.jsonl\nlora: {rank: 0}\n", "lora.rank", "expected an integer >= 1"),
        ("tasks: t.jsonl\nlora: {ranks: 4}\n", "lora.ranks", "unknown key"),
        ("tasks: t.jsonl\nlora: {dropout: 1.5}\n", "lora.dropout", "expected a number >= 0 and <= 1"),
        ("tasks: t.jsonl\nlora: {target_modules: []}\n", "lora.target_modules", "at least one module"),
        ("tasks: t.jsonl\nlora: 4\n", "lora", "expected a mapping"),
        ("tasks: null\n", "tasks", "exactly one of"),
        ("tasks: t.jsonl\nopen_families: [nope]\n", "open_families", "unknown family"),
        ("tasks: t.jsonl\nfamilies: [nope]\n", "", "nope"),
        ("tasks: [unclosed\n", "", "YAML syntax error at line 2"),
        ("- a list\n", "", "mapping"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, suite, text, key, message):
    (tmp_path / "t.jsonl").write_text(suite.read_text())
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        from synthgen.training.config import config_tasks

        config_tasks(load_config(path))
    assert str(path) in str(err.value) or "recipe file not found" in str(err.value)
    assert key in str(err.value) and message in str(err.value)


def test_target_subsampling_is_an_unbiased_estimate():
    import random

    from synthgen.training.loop import subsample

    values = torch.arange(1.0, 21.0)  # stand-in per-target log-probs
    weights = torch.linspace(1.0, 2.0, 20)
    weights = weights / weights.sum()
    encoded = ([1, 2], [[i] for i in range(20)])
    rng = random.Random(0)
    full = float((weights * values).sum())
    draws = []
    for _ in range(4000):
        (_, opts), w = subsample(encoded, weights, 5, rng)
        assert len(opts) == 5 and len(set(map(tuple, opts))) == 5
        draws.append(float((w * values[[o[0] for o in opts]]).sum()))
    assert abs(sum(draws) / len(draws) - full) < 0.05 * full
    same, w = subsample(encoded, weights, None, rng)
    assert same is encoded and torch.equal(w, weights)


def test_preserve_keeps_the_adapter_close_to_the_base_model_on_ordinary_prompts(tiny_model_dir, suite, tmp_path):
    from synthgen.training.preserve import anchor_kl, build_anchors

    prompts = tmp_path / "preserve.txt"
    prompts.write_text("# ordinary prompts\nTell me about the sea.\n\nWhat is a cat?\n", encoding="utf-8")
    common = dict(tasks=str(suite), model=str(tiny_model_dir), epochs=6, lr=5e-2, tol=0.0,
                  lora=LoraOptions(rank=4, alpha=8))
    train(TrainConfig(**common), tmp_path / "free")
    train(TrainConfig(**common, preserve=str(prompts), preserve_weight=20.0, preserve_tokens=8), tmp_path / "kept")
    info = json.loads((tmp_path / "kept" / "training.json").read_text())
    assert [a["prompt"] for a in info["preserve"]] == ["Tell me about the sea.", "What is a cat?"]
    assert all("preserve_kl" in s for s in info["steps"])

    def drift(adapter) -> float:
        engine = TransformersEngine.load(str(tiny_model_dir), adapter=str(adapter), device="cpu")
        anchors = build_anchors(engine, engine.model, ["Tell me about the sea.", "What is a cat?"], 8)
        with torch.no_grad():
            return sum(float(anchor_kl(engine.model, a)) for a in anchors)

    # anchors are built with the adapter off, so the KL measures the adapter's drift from the base
    free, kept = drift(tmp_path / "free"), drift(tmp_path / "kept")
    assert free > 0 and kept < 0.5 * free, (free, kept)

    # every other task only, weighted twice: half the anchor passes, still held close to the base
    train(TrainConfig(**common, preserve=str(prompts), preserve_weight=20.0, preserve_tokens=8, preserve_every=2),
          tmp_path / "sparse")
    sparse_info = json.loads((tmp_path / "sparse" / "training.json").read_text())
    with_kl = ["preserve_kl" in s for s in sparse_info["steps"]]
    assert with_kl == [i % 2 == 0 for i in range(len(with_kl))]
    sparse = drift(tmp_path / "sparse")
    assert sparse < 0.5 * free, (free, sparse)


def test_anchors_decoded_in_batches_match_one_at_a_time(tiny_model_dir):
    from synthgen.training.preserve import anchor_kl, build_anchors

    engine = TransformersEngine.load(str(tiny_model_dir), adapter="none", device="cpu")
    prompts = ["Tell me about the sea.", "What is a cat?", "Hi.", "Write a long sentence about a red fox."]
    alone = build_anchors(engine, engine.model, prompts, 8, batch_size=1)
    batched = build_anchors(engine, engine.model, prompts, 8, batch_size=3)
    for a, b in zip(alone, batched, strict=True):
        assert (a.prompt, a.reply, a.start) == (b.prompt, b.reply, b.start)
        assert torch.equal(a.ids, b.ids) and a.ids.shape[1] > len(engine.encode_prompt(a.prompt))
        assert torch.allclose(a.base_logp, b.base_logp, atol=1e-5)
        # the base model against its own anchor: the KL positions line up with base_logp's
        with torch.no_grad():
            assert abs(float(anchor_kl(engine.model, b))) < 1e-5


def test_preserve_file_errors_name_the_config_key(tmp_path, suite):
    (tmp_path / "t.jsonl").write_text(suite.read_text())
    (tmp_path / "empty.txt").write_text("# only a comment\n\n", encoding="utf-8")
    for value, message in (("missing.txt", "prompt file not found"), ("empty.txt", "has no prompts")):
        path = write_config(tmp_path, f"tasks: t.jsonl\npreserve: {value}\nmodel: nowhere\n")
        with pytest.raises(ConfigError) as err:
            train(load_config(path), tmp_path / "out")
        assert "preserve" in str(err.value) and message in str(err.value)
        assert not (tmp_path / "out").exists()


# ------------------------------------------------------------ data parallel
FOUR_TASKS = TASKS + [
    Task(id="c", family="colors", prompt="Name a color.", targets=("red", "green", "blue"),
         weights=(1 / 3, 1 / 3, 1 / 3)),
    Task(id="d", family="days", prompt="Pick a weekday.", targets=("Monday", "Tuesday", "Friday"),
         weights=(0.5, 0.25, 0.25)),
]


def _adapter_tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_tasks_per_step_averages_the_tasks_gradients(tiny_model_dir, tmp_path):
    suite = tmp_path / "four.jsonl"
    save_tasks(FOUR_TASKS, suite)
    common = dict(tasks=str(suite), model=str(tiny_model_dir), epochs=2, lr=1e-2, tol=0.0, lora=LoraOptions(rank=4))
    started, stepped = [], []
    train(TrainConfig(**common, tasks_per_step=2), tmp_path / "two", on_step=stepped.append, on_start=started.append)
    info = json.loads((tmp_path / "two" / "training.json").read_text())
    # reported once before training: the size of the run without early stopping (tol 0: none here)
    assert started == [{"epochs": 2, "tasks": 4, "total_tasks": 8, "total_steps": 4}]
    assert len(stepped) == 8 and [s["step"] for s in stepped] == [h["step"] for h in info["steps"]]
    # 4 tasks, 2 per step: 2 optimizer steps per epoch, every task still logged once per epoch
    assert [h["step"] for h in info["steps"]] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert sorted(h["task"] for h in info["steps"] if h["epoch"] == 1) == ["c", "d", "f", "n"]
    assert info["processes"] == 1
    train(TrainConfig(**common, tasks_per_step=1), tmp_path / "one")
    two, one = _adapter_tensors(tmp_path / "two"), _adapter_tensors(tmp_path / "one")
    assert max(float((two[k] - one[k]).abs().max()) for k in two) > 1e-4  # a different (batched) optimisation


@pytest.mark.parametrize(("text", "key", "message"), [
    ("tasks: t.jsonl\ntasks_per_step: 0\n", "tasks_per_step", "expected an integer >= 1"),
    ("tasks: t.jsonl\ndevice: tpu\n", "device", "'auto', 'cpu'"),
    ("tasks: t.jsonl\nbalance_families: 2\n", "balance_families", "true or false"),
    ("tasks: t.jsonl\npreserve_every: 0\n", "preserve_every", "expected an integer >= 1"),
])
def test_data_parallel_config_errors(tmp_path, suite, text, key, message):
    (tmp_path / "t.jsonl").write_text(suite.read_text())
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, text))
    assert key in str(err.value) and message in str(err.value)


@pytest.mark.slow
def test_accelerate_launch_two_processes_equals_one_process_with_two_tasks_per_step(tiny_model_dir, tmp_path):
    """The shipped accelerate config, 2 processes (gloo on this CPU machine): each
    step's 2 tasks are split over the processes and their gradients averaged, so
    the adapter equals a single process with tasks_per_step 2 (float tolerance)."""
    import os
    import shutil
    import socket
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists():
        pytest.fail("the accelerate launcher is missing: it is a dependency of synthgen")
    launcher = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    suite = tmp_path / "four.jsonl"
    save_tasks(FOUR_TASKS, suite)
    (tmp_path / "keep.txt").write_text("Say hello.\nWhat is two plus two?\nName a planet.\n")
    config = write_config(tmp_path, f"tasks: {suite}\nmodel: {tiny_model_dir}\nepochs: 3\nlr: 1.0e-2\ntol: 0.0\n"
                                    "max_targets_per_step: 2\npreserve: keep.txt\npreserve_tokens: 4\n"
                                    "lora: {rank: 4}\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [launcher, "launch", "--config_file", str(root / "configs/accelerate/multi_gpu.yaml"),
         "--num_processes", "2", "--main_process_port", str(port),
         "-m", "synthgen.cli", "train", str(config), "-o", str(tmp_path / "ddp")],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("adapter saved to") == 1  # process 0 reports and saves
    info = json.loads((tmp_path / "ddp" / "training.json").read_text())
    assert info["processes"] == 2 and info["device"].startswith("cpu")
    assert len(info["steps"]) == 3 * 4 and max(h["step"] for h in info["steps"]) == 3 * 2

    single = load_config(config)
    single.tasks_per_step = 2
    train(single, tmp_path / "one")
    ddp, one = _adapter_tensors(tmp_path / "ddp"), _adapter_tensors(tmp_path / "one")
    assert ddp.keys() == one.keys()
    assert max(float((ddp[k] - one[k]).abs().max()) for k in ddp) < 1e-5
    ref = json.loads((tmp_path / "one" / "training.json").read_text())
    assert [h["task"] for h in info["steps"]] == [h["task"] for h in ref["steps"]]
    assert [h["loss"] for h in info["steps"]] == pytest.approx([h["loss"] for h in ref["steps"]], rel=1e-4)
    assert [h["preserve_kl"] for h in info["steps"]] == pytest.approx([h["preserve_kl"] for h in ref["steps"]],
                                                                      rel=1e-3, abs=1e-6)


def test_balance_families_repeats_the_smaller_families_tasks(tiny_model_dir, tmp_path):
    from synthgen.training.config import balanced
    from synthgen.training.tasks import load_tasks

    three = FOUR_TASKS[:2] + [Task(id="n2", family="numbers", prompt="Choose a number from 1 to 10.",
                                   targets=tuple(str(i) for i in range(1, 11)))]
    assert [t.id for t in balanced(three)] == ["n", "f", "n2", "f#2"]
    assert balanced(three)[3].prompt == three[1].prompt and balanced(three)[3].weights == three[1].weights
    suite = tmp_path / "three.jsonl"
    save_tasks(three, suite)
    config = TrainConfig(tasks=str(suite), model=str(tiny_model_dir), epochs=2, tol=0.0, balance_families=True,
                         lora=LoraOptions(rank=2))
    train(config, tmp_path / "a")
    info = json.loads((tmp_path / "a" / "training.json").read_text())
    assert sorted(h["task"] for h in info["steps"] if h["epoch"] == 1) == ["f", "f#2", "n", "n2"]
    assert info["epochs"][0]["families"]["fruits"]["optimal"] == pytest.approx(2 * three[1].entropy())
    assert [t.id for t in load_tasks(tmp_path / "a" / "tasks.jsonl")] == ["n", "f", "n2"]  # audited once each


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "recipes/diffuse").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_training_configs_load(path):
    # every committed training config parses, validates and builds its tasks
    from synthgen.training.config import config_tasks

    config = load_config(path)
    assert config_tasks(config)


def test_docs_table_of_config_keys_is_up_to_date():
    from synthgen.training.config import TABLE_END, TABLE_START, config_keys, markdown_table

    docs = (Path(__file__).resolve().parents[1] / "docs/training.md").read_text(encoding="utf-8")
    table = docs.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert table == markdown_table(), "run: python -m synthgen.training.config docs/training.md"
    documented = [f"lora.{k}" for k in config_keys(LoraOptions)] + [k for k in config_keys(TrainConfig) if k != "lora"]
    assert all(f"| `{k}` |" in table for k in documented)


def test_renormalized_loss_over_a_sample_of_targets_matches_naive(tiny_model_dir):
    # max_targets_per_step with renormalize: the sample's weights renormalised to sum 1 and the
    # loss of p renormalised over the sample, -sum_S w~ log(p / sum_S p), equal to a naive
    # per-target computation on the same sample; KL(q || w~) from the same log-probs.
    import random

    from synthgen.training.loss import option_logp, renormalized_kl, subsample

    task = TASKS[0]
    model, encoded, weights, params = _perturbed_lora_and_task(tiny_model_dir, task)
    (prompt_ids, sample_ids), w = subsample(encoded, weights, 4, random.Random(3), renormalize=True)
    assert len(sample_ids) == 4 and w.sum().item() == pytest.approx(1.0)
    loss = task_loss(model, (prompt_ids, sample_ids), w, chunk_size=3, renormalize=True)
    fast = torch.autograd.grad(loss, params)
    q = torch.softmax(naive_option_logprobs(model, prompt_ids, sample_ids), dim=0)
    naive = -(w * torch.log(q)).sum()
    slow = torch.autograd.grad(naive, params)
    assert abs(loss.item() - naive.item()) < 1e-4
    _assert_same_gradients(fast, slow)
    kl = renormalized_kl(option_logp(model, (prompt_ids, sample_ids), 3), w)
    assert kl == pytest.approx((q * (torch.log(q) - torch.log(w))).sum().item(), abs=1e-4)


def test_stop_kl_stops_every_family_together_once_all_are_there(tiny_model_dir, suite, tmp_path):
    # a threshold every family meets at once: one epoch; a threshold none can meet: every epoch
    easy = TrainConfig(tasks=str(suite), model=str(tiny_model_dir), epochs=5, renormalize=True, stop_kl=50.0,
                       max_targets_per_step=3, lora=LoraOptions(rank=4, alpha=8))
    result = train(easy, tmp_path / "easy")
    info = json.loads((tmp_path / "easy" / "training.json").read_text())
    assert result.epochs_run == 1 and result.stopped_early
    assert all(f["stopped"] and f["kl"] <= 50.0 for f in info["epochs"][0]["families"].values())
    assert all(0 <= s["kl"] for s in info["steps"])
    hard = TrainConfig(tasks=str(suite), model=str(tiny_model_dir), epochs=2, renormalize=True, stop_kl=0.0,
                       lora=LoraOptions(rank=4, alpha=8))
    result = train(hard, tmp_path / "hard")
    assert result.epochs_run == 2 and not result.stopped_early


def test_family_target_visits_repeats_a_family_with_a_long_shared_list():
    from synthgen.training.config import epoch_tasks

    jobs = [Task(id=f"j{i}", family="jobs", prompt=f"A job ({i}).", targets=tuple(f"job{k}" for k in range(40)))
            for i in range(2)]
    colours = [Task(id=f"c{i}", family="colours", prompt=f"A colour ({i}).", targets=("red", "blue", "green"))
               for i in range(5)]
    config = TrainConfig(tasks="t.jsonl", max_targets_per_step=8, family_min_tasks=3, family_target_visits=2)
    counts = Counter(t.family for t in epoch_tasks(config, jobs + colours))
    # jobs: 2 x 40 targets / 8 per step = 10 tasks an epoch; colours keep their own 5 (more than 3 and 2 x 3 / 8)
    assert counts == {"jobs": 10, "colours": 5}
    assert Counter(t.family for t in epoch_tasks(replace(config, family_target_visits=None), jobs + colours)) == \
        {"jobs": 3, "colours": 5}
    assert len(epoch_tasks(replace(config, family_min_tasks=None, family_target_visits=None), jobs + colours)) == 7


def test_family_min_tasks_repeats_only_the_smaller_families(tiny_model_dir, tmp_path):
    tasks = [Task(id=f"n{i}", family="numbers", prompt=f"Pick a number ({i}).", targets=("1", "2"))
             for i in range(3)] + [Task(id="f", family="fruits", prompt="Pick a fruit.", targets=("apple", "fig"))]
    save_tasks(tasks, tmp_path / "tasks.jsonl")
    config = TrainConfig(tasks=str(tmp_path / "tasks.jsonl"), model=str(tiny_model_dir), epochs=1,
                         family_min_tasks=2, lora=LoraOptions(rank=4, alpha=8))
    train(config, tmp_path / "adapter")
    info = json.loads((tmp_path / "adapter" / "training.json").read_text())
    ids = sorted(t["id"] for t in info["tasks"])
    assert ids == ["f", "f#2", "n0", "n1", "n2"]
