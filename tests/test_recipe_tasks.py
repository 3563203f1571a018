"""Training tasks built from a recipe, and `synthgen train --from-recipe`."""

from __future__ import annotations

import json
import math
import textwrap

import pytest

from synthgen.cli import main
from synthgen.engines.transformers import TransformersEngine
from synthgen.recipe import load_recipe
from synthgen.training.config import LoraOptions, TrainConfig
from synthgen.training.loop import train
from synthgen.training.recipe_tasks import tasks_from_recipe
from synthgen.training.tasks import load_tasks

RECIPE = """\
name: people
seed: 3
fields:
  gender:
    kind: choice
    template_inline: "Pick a gender. Reply with only the gender."
    options: [female, male, non-binary]
    weights: [49, 49, 2]
  name:
    kind: choice
    template_inline: "Pick a first name for a {{ gender }} person. Reply with only the name."
    options: [Ann, Bob, Cy, Dee]
  year:
    kind: integer
    template_inline: "Pick a year. Reply with only the year."
    min: 1990
    max: 1999
  job:
    kind: choice
    template_inline: "Pick a job for {{ name }}, born {{ year }}. Reply with only the job."
    options: [baker, nurse, pilot]
  bio:
    kind: text
    template_inline: "Write about {{ name }}, a {{ job }}."
  mood:
    kind: choice
    template_inline: "Pick a mood for someone described as: {{ bio }}"
    options: [calm, busy]
  pet:
    kind: sample
    options: [cat, dog]
"""


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "people.yaml"
    path.write_text(RECIPE, encoding="utf-8")
    return path


def test_tasks_cover_closed_fields_with_the_recipes_prompts_and_weights(recipe_file):
    recipe = load_recipe(recipe_file)
    built = tasks_from_recipe(recipe, prompts_per_field=5, seed=0)
    by_family: dict[str, list] = {}
    for task in built.tasks:
        by_family.setdefault(task.family, []).append(task)
    assert set(by_family) == {"gender", "name", "year", "job"}
    assert set(built.skipped) == {"bio", "mood", "pet"}
    assert "free-text field 'bio'" in built.skipped["mood"]
    # a field without template variables: one prompt; weights normalised from the recipe
    (gender,) = by_family["gender"]
    assert gender.targets == ("female", "male", "non-binary")
    assert gender.weights == pytest.approx((0.49, 0.49, 0.02))
    # conditioned on gender: one prompt per gender value at most, all rendered from the template
    names = by_family["name"]
    assert 1 <= len(names) <= 3
    assert len({t.prompt for t in names}) == len(names)
    assert all(t.prompt.startswith("Pick a first name for a ") for t in names)
    assert all(t.is_uniform and t.targets == ("Ann", "Bob", "Cy", "Dee") for t in names)
    # integer range -> string targets; job reads two upstream fields -> up to 5 distinct prompts
    (year,) = by_family["year"]
    assert year.targets == tuple(str(y) for y in range(1990, 2000))
    jobs = by_family["job"]
    assert len(jobs) == 5 and len({t.prompt for t in jobs}) == 5
    rendered = {f"Pick a job for {n}, born {y}. Reply with only the job." for n in "Ann Bob Cy Dee".split()
                for y in range(1990, 2000)}
    assert {t.prompt for t in jobs} <= rendered
    # deterministic for a seed
    again = tasks_from_recipe(recipe, prompts_per_field=5, seed=0)
    assert [t.prompt for t in again.tasks] == [t.prompt for t in built.tasks]


def test_upstream_values_follow_the_recipes_weights(tmp_path):
    # a field conditioned on a heavily weighted one sees the likely value far more often
    path = tmp_path / "w.yaml"
    path.write_text(textwrap.dedent("""\
        name: w
        fields:
          size:
            kind: choice
            template_inline: "Pick a size."
            options: [small, large]
            weights: [99, 1]
          thing:
            kind: choice
            template_inline: "Pick a {{ size }} thing."
            options: [a, b]
    """), encoding="utf-8")
    recipe = load_recipe(path)
    firsts = [tasks_from_recipe(recipe, prompts_per_field=1, seed=s).tasks[1].prompt for s in range(50)]
    assert firsts.count("Pick a small thing.") >= 40


def test_train_from_recipe_moves_the_distribution_to_the_recipes_weights(tiny_model_dir, tmp_path):
    # one-letter options (single tokens for the tiny tokenizer), so the shares move within a few steps
    recipe = tmp_path / "letters.yaml"
    recipe.write_text(RECIPE.replace("[female, male, non-binary]", "[a, b, c]"), encoding="utf-8")
    config = TrainConfig(recipe=str(recipe), model=str(tiny_model_dir), prompts_per_field=2,
                         families=["gender"], epochs=15, lr=3e-2, tol=0.0, lora=LoraOptions(rank=4, alpha=8))
    out = tmp_path / "adapter"
    train(config, out)
    tasks = load_tasks(out / "tasks.jsonl")
    assert [t.family for t in tasks] == ["gender"]
    (task,) = tasks
    assert task.weights == pytest.approx((0.49, 0.49, 0.02))

    def shares(engine) -> list[float]:
        logp = engine.score(task.prompt, task.targets)
        z = math.log(sum(math.exp(v) for v in logp))
        return [math.exp(v - z) for v in logp]

    def kl(p: list[float]) -> float:
        return sum(pi * math.log(pi / w) for pi, w in zip(p, task.weights) if pi > 0)

    before = shares(TransformersEngine.load(str(tiny_model_dir), adapter="none", device="cpu"))
    after = shares(TransformersEngine.load(str(tiny_model_dir), adapter=str(out), device="cpu"))
    assert kl(after) < 0.3 * kl(before), (before, after)
    assert after[2] < 0.05  # the 2% option stays rare


def test_cli_train_from_recipe_then_continue_from_that_adapter(tiny_model_dir, recipe_file, tmp_path, capsys):
    # --from-recipe alone: the recipe's model, the built-in recipe training defaults
    small = tmp_path / "small.yaml"
    gender_only = RECIPE.split("fields:\n")[1].split("  name:")[0]
    small.write_text(f"name: small\nmodel: {tiny_model_dir}\nfields:\n" + gender_only, encoding="utf-8")
    first = tmp_path / "first"
    code = main(["train", "--from-recipe", str(small), "-o", str(first)])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert (first / "adapter_model.safetensors").is_file()
    assert [t.family for t in load_tasks(first / "tasks.jsonl")] == ["gender"]
    assert json.loads((first / "training.json").read_text())["model"] == str(tiny_model_dir)
    config = tmp_path / "cfg.yaml"
    config.write_text(f"tasks: unused.jsonl\nmodel: {tiny_model_dir}\nepochs: 1\nfamilies: [year]\n"
                      "lora: {rank: 2, alpha: 4}\n", encoding="utf-8")
    out = tmp_path / "a"
    code = main(["train", str(config), "--from-recipe", str(recipe_file), "-o", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert [t.family for t in load_tasks(out / "tasks.jsonl")] == ["year"]
    info = json.loads((out / "training.json").read_text(encoding="utf-8"))
    assert info["config"]["recipe"] == str(recipe_file) and info["config"]["tasks"] is None
    # continue training from that adapter (init_adapter): the saved weights change
    config.write_text(f"recipe: {recipe_file}\nmodel: {tiny_model_dir}\nepochs: 1\nfamilies: [year]\n"
                      f"init_adapter: {out}\nlr: 0.05\n", encoding="utf-8")
    again = tmp_path / "b"
    code = main(["train", str(config), "-o", str(again)])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert (again / "adapter_model.safetensors").read_bytes() != (out / "adapter_model.safetensors").read_bytes()
    assert json.loads((again / "adapter_config.json").read_text())["r"] == 2  # the starting adapter's rank


def test_cli_train_needs_a_config_or_a_recipe(tmp_path, capsys):
    code = main(["train", "-o", str(tmp_path / "x")])
    _, err = capsys.readouterr()
    assert code != 0 and "--from-recipe" in err
    assert not (tmp_path / "x").exists()


def test_cli_audit_from_recipe_builds_the_recipes_tasks_with_another_prompt_seed(tiny_model_dir, recipe_file,
                                                                               tmp_path, capsys):
    recipe = tmp_path / "m.yaml"
    recipe.write_text(f"model: {tiny_model_dir}\n" + RECIPE, encoding="utf-8")
    out = tmp_path / "audit.json"
    code = main(["audit", "--from-recipe", str(recipe), "--adapter", "none", "--samples", "0",
                 "--families", "gender,name", "--prompts-per-field", "3", "--json", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["model"] == str(tiny_model_dir)  # the recipe's model
    held_out = tasks_from_recipe(load_recipe(recipe), prompts_per_field=3, seed=1).tasks  # --prompt-seed defaults to 1
    expected = [t for t in held_out if t.family in ("gender", "name")]
    assert [t["id"] for t in report["tasks"]] == [t.id for t in expected]
    gender = next(t for t in report["tasks"] if t["family"] == "gender")
    assert gender["k"] == 3 and 0 <= gender["exact"]["kl_to_target"]  # KL to the recipe's 49/49/2

    code = main(["audit", "--from-recipe", str(recipe), "--adapter", "none", "--families", "pet"])
    _, err = capsys.readouterr()
    assert code == 1 and "pet" in err and "gender" in err and "Traceback" not in err
    code = main(["audit", str(tmp_path / "t.jsonl"), "--from-recipe", str(recipe)])
    _, err = capsys.readouterr()
    assert code != 0 and "one of them" in err


def test_cli_audit_from_recipe_audits_the_recipes_own_adapter(tiny_model_dir, tmp_path, capsys):
    gender_only = RECIPE.split("fields:\n")[1].split("  name:")[0]
    small = tmp_path / "small.yaml"
    small.write_text(f"name: small\nmodel: {tiny_model_dir}\nfields:\n" + gender_only, encoding="utf-8")
    adapter = tmp_path / "tuned"
    assert main(["train", "--from-recipe", str(small), "-o", str(adapter)]) == 0
    small.write_text(f"name: small\nmodel: {tiny_model_dir}\nadapter: tuned\nfields:\n" + gender_only,
                     encoding="utf-8")
    capsys.readouterr()
    for extra, expected in (([], str(adapter.resolve())), (["--adapter", "none"], None)):
        out = tmp_path / f"audit{len(extra)}.json"
        code = main(["audit", "--from-recipe", str(small), "--samples", "0", "--no-compare", "--json", str(out),
                     *extra])
        _, err = capsys.readouterr()
        assert code == 0, err
        report = json.loads(out.read_text(encoding="utf-8"))
        assert report["adapter"] == expected  # the recipe's adapter unless --adapter says otherwise


def test_every_condition_gives_each_conditional_set_its_own_task(tmp_path):
    # names by (country, gender): drawn prompts meet some conditions; every_condition adds
    # a task for each reachable one, with that condition in the prompt and its own set
    data = tmp_path / "names"
    data.mkdir()
    for country in ("France", "Peru", "Chad"):
        for gender in ("female", "male"):
            (data / f"{country}_{gender}.txt").write_text(f"{country[:2]}{gender[0]}1\n{country[:2]}{gender[0]}2\n")
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent("""\
        name: people
        fields:
          gender:
            kind: choice
            template_inline: "Pick a gender."
            options: [female, male]
            weights: [9, 1]
          country:
            kind: choice
            template_inline: "Pick a country."
            options: [France, Peru, Chad]
          name:
            kind: choice
            template_inline: "Pick a {{ gender }} name from {{ country }}."
            options_file: "names/{{ country }}_{{ gender }}.txt"
        """), encoding="utf-8")
    recipe = load_recipe(path)
    drawn = [t for t in tasks_from_recipe(recipe, 2, 0).tasks if t.family == "name"]
    every = [t for t in tasks_from_recipe(recipe, 2, 0, every_condition=True).tasks if t.family == "name"]
    assert len(drawn) == 2 and [t.prompt for t in every[:2]] == [t.prompt for t in drawn]
    assert len(every) == 6 and len({t.prompt for t in every}) == 6
    for t in every:
        country, gender = t.prompt.split(" from ")[1].rstrip("."), t.prompt.split()[2]
        assert t.targets == recipe.fields["name"].options_for({"country": country, "gender": gender})[0]
