"""The bad-input suite: one row per hostile input, replayed on every run (no real model).

Each row is a case a user (or a stranger's recipe) can produce; the expected
outcome is one error line naming the file and the key, raised before any
expensive work, or, where the input is legitimate but unusual, correct handling.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from synthgen.cli import main
from synthgen.errors import ConfigError
from synthgen.recipe import load_recipe

NAME = """\
name:
  kind: choice
  template_inline: "Pick a name. Reply with only the name."
  options: [Ann, Bob]
"""


def write_tree(tmp_path: Path, fields: str, files: dict[str, str | bytes] | None = None, top: str = "") -> Path:
    """``recipes/r.yaml`` with these fields (plus files relative to tmp_path); returns the recipe path."""
    for rel, data in (files or {}).items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    body = "name: r\n" + textwrap.dedent(top) + "fields:\n" + textwrap.indent(textwrap.dedent(fields), "  ")
    recipe.write_text(body, encoding="utf-8")
    return recipe


def one_line_error(capsys, code: int, *names: str) -> str:
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), (code, out, err)
    assert "Traceback" not in out + err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


# --------------------------------------------------- recipes refused at load time
# (case, fields, extra files, key named in the error, words in the error)
REFUSED = [
    ("max_tokens_huge", """\
        bio:
          kind: text
          template_inline: "Write."
          max_tokens: 1000000000
        """, {}, "fields.bio.max_tokens", "<= 8192"),
    ("sample_beyond_int64", """\
        n:
          kind: sample
          min: 0
          max: 10000000000000000000
        """, {}, "fields.n.max", "<= 4611686018427387904"),
    ("options_yaml_number_coercion", """\
        zip:
          kind: sample
          options: [10001, 02134]
        """, {}, "fields.zip.options[1]", "quote it ('02134')"),
    ("options_yaml_float_coercion", """\
        share:
          kind: sample
          options: [0.25, 0.50]
        """, {}, "fields.share.options[1]", "quote it ('0.50')"),
    ("options_file_traversal", """\
        secret:
          kind: sample
          options_file: ../outside_secret.txt
        """, {"outside_secret.txt": "hunter2\n"}, "fields.secret.options_file", "outside the recipe's folder"),
    ("options_file_absolute", """\
        secret:
          kind: sample
          options_file: {tmp}/outside_secret.txt
        """, {"outside_secret.txt": "hunter2\n"}, "fields.secret.options_file", "outside the recipe's folder"),
    ("template_absolute_path", """\
        q:
          kind: text
          template: /etc/passwd
        """, {}, "fields.q.template", "absolute path is not allowed"),
    ("template_traversal", """\
        q:
          kind: text
          template: ../secret.j2
        """, {"secret.j2": "Tell me {{ 1 }}"}, "fields.q.template", "outside the recipe's template folders"),
    ("template_cpu_bomb", """\
        q:
          kind: text
          template_inline: "x{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        """, {}, "fields.q.template_inline", "took more than 2 s"),
    ("template_loop_without_calls", """\
        q:
          kind: text
          template_inline: "x{% set r = range(100000) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}"
        """, {}, "fields.q.template_inline", "took more than 2 s"),
    ("template_percent_format_bomb", """\
        q:
          kind: text
          template_inline: "x{{ ('%0200000000d' % 1)|length }}"
        """, {}, "fields.q.template_inline", "format width"),
    ("template_center_bomb", """\
        q:
          kind: text
          template_inline: "x{{ 'a'|center(1000000000) }}"
        """, {}, "fields.q.template_inline", "center would build"),
    ("template_str_format_bomb", """\
        q:
          kind: text
          template_inline: "x{{ '{:>200000000}'.format(1) }}"
        """, {}, "fields.q.template_inline", "format width"),
    ("template_namespace_doubling", """\
        q:
          kind: text
          template_inline: "{% set ns = namespace(s='x') %}{% for i in range(60) %}\\
            {% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
        """, {}, "fields.q.template_inline", "undefined template variable 'namespace'"),
    ("template_macro_doubling", """\
        q:
          kind: text
          template_inline: "{% macro d(s, n) %}{{ d(s ~ s, n - 1) if n else s }}{% endmacro %}{{ d('x', 60) }}"
        """, {}, "fields.q.template_inline", "would build"),


    ("field_named_messages_with_chat_output", """\
        messages:
          kind: sample
          options: [keep-me]
        q:
          kind: text
          template_inline: "Ask something."
        a:
          kind: text
          template_inline: "Answer {{ q }}"
        """, {}, "output.messages", "rename the field"),
]
TOP = {"field_named_messages_with_chat_output": "output:\n  messages: {user: q, assistant: a}\n"}


@pytest.mark.parametrize("case, fields, files, key, words", REFUSED, ids=[row[0] for row in REFUSED])
def test_recipe_is_refused_with_file_and_key(tmp_path, case, fields, files, key, words):
    recipe = write_tree(tmp_path, fields.replace("{tmp}", str(tmp_path)), files, top=TOP.get(case, ""))
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe)
    message = str(info.value)
    assert message.startswith(f"{recipe}: {key}: "), message
    assert words in message and "\n" not in message


def test_trusted_paths_may_leave_the_recipe_tree(tmp_path):
    recipe = write_tree(tmp_path, """\
        city:
          kind: sample
          options_file: ../outside.txt
        """, {"outside.txt": "Oslo\nLima\n"})
    assert load_recipe(recipe, trust_paths=True).fields["city"].options == ("Oslo", "Lima")


def test_a_huge_key_mapping_is_rejected_quickly(tmp_path):
    recipe = write_tree(tmp_path, NAME, top="ray:\n" + "".join(f"  k{i}: 1\n" for i in range(100_000)))
    with pytest.raises(ConfigError, match=r"ray\.k0: unknown key"):  # the duplicate-key check is linear
        load_recipe(recipe)


# ------------------------------------------- unusual but valid input handled right
@pytest.mark.parametrize("name, data", [("bom.txt", b"\xef\xbb\xbfAnn\nBob\n"),
                                        ("bom.csv", b"\xef\xbb\xbfvalue,weight\nAnn,1\nBob,3\n")])
def test_byte_order_mark_is_dropped(tmp_path, name, data):
    recipe = write_tree(tmp_path, f"""\
        who:
          kind: sample
          options_file: data/{name}
        """, {f"recipes/data/{name}": data})
    assert load_recipe(recipe).fields["who"].options == ("Ann", "Bob")


def test_weights_that_overflow_when_summed_are_normalised(tmp_path):
    recipe = write_tree(tmp_path, """\
        c:
          kind: sample
          options: [a, b]
          weights: [1.0e+308, 1.0e+308]
        """)
    assert load_recipe(recipe).fields["c"].weights == (0.5, 0.5)


def test_quoted_and_plain_numbers_stay_as_written(tmp_path):
    recipe = write_tree(tmp_path, """\
        zip:
          kind: sample
          options: ['02134', 10001, 7]
        """)
    assert load_recipe(recipe).fields["zip"].options == ("02134", "10001", "7")


# ------------------------------------------------------------ report command
@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": null, "b": "x", "a b": "l", "a_b": "r"}\n{"a": null, "b": "y", "a b": "m", "a_b": "s"}\n',
                    encoding="utf-8")
    return path


def test_report_on_an_all_null_column(jsonl, tmp_path, capsys):
    assert main(["report", str(jsonl), "-o", str(tmp_path / "rep")]) == 0
    assert "a " in capsys.readouterr().out


def test_report_plot_names_do_not_collide(jsonl, tmp_path):
    assert main(["report", str(jsonl), "-o", str(tmp_path / "rep")]) == 0
    assert {"plot_a_b.png", "plot_a_b-2.png"} <= {p.name for p in (tmp_path / "rep").iterdir()}


def test_report_does_not_overwrite_a_report(jsonl, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", str(jsonl), "-o", str(out)]) == 0
    before = (out / "report.json").read_bytes()
    capsys.readouterr()
    one_line_error(capsys, main(["report", str(jsonl), "-o", str(out)]), str(out), "--overwrite")
    assert (out / "report.json").read_bytes() == before
    assert main(["report", str(jsonl), "-o", str(out), "--overwrite"]) == 0


def test_report_to_an_unwritable_path(jsonl, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(capsys, main(["report", str(jsonl), "-o", str(blocker / "rep")]), str(blocker / "rep"))


# ------------------------------------------------------ models and adapters
def test_unwritable_cache(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("SYNTHGEN_CACHE", str(blocker / "cache"))
    one_line_error(capsys, main(["models", "pull", "smollm2-135m"]), "SYNTHGEN_CACHE")


@pytest.mark.parametrize("adapter", ["damaged", "smollm2-135m-diffuse"])
def test_an_adapter_that_does_not_fit_the_model(tiny_model_dir, tmp_path, adapter):
    from synthgen.engines.transformers import TransformersEngine
    from synthgen.errors import SynthgenError

    if adapter == "damaged":
        (tmp_path / "damaged").mkdir()
        (tmp_path / "damaged" / "adapter_config.json").write_text("{}")
        (tmp_path / "damaged" / "adapter_model.safetensors").write_bytes(b"")
        adapter = str(tmp_path / "damaged")
    with pytest.raises(SynthgenError, match="does not fit model"):
        TransformersEngine.load(str(tiny_model_dir), adapter=adapter, device="cpu")


# ------------------------------------------------------------------ generate
SAMPLES = """\
    color:
      kind: sample
      options_file: data/colors.txt
    n:
      kind: sample
      min: 0
      max: 1000000000000
"""


@pytest.fixture
def sample_recipe(tmp_path):
    return write_tree(tmp_path, SAMPLES, {"recipes/data/colors.txt": "red\ngreen\nblue\n"}, top="count: 20\n")


def test_a_huge_sample_range_generates_without_enumerating_it(sample_recipe, tmp_path):
    out = tmp_path / "out"
    assert main(["generate", str(sample_recipe), "-o", str(out)]) == 0
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["fields"]["n"]["unique"] == 20 and report["fields"]["n"]["normalized_entropy"] is None


def test_generate_into_an_impossible_directory(sample_recipe, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(capsys, main(["generate", str(sample_recipe), "-o", str(blocker / "out")]), str(blocker))


@pytest.mark.parametrize("damage", ["run_json", "shard"])
def test_a_damaged_run_directory(sample_recipe, tmp_path, capsys, damage):
    out = tmp_path / "out"
    assert main(["generate", str(sample_recipe), "-o", str(out)]) == 0
    target = out / "run.json" if damage == "run_json" else sorted((out / "shards").glob("part-*.parquet"))[0]
    target.write_bytes(target.read_bytes()[:10])
    capsys.readouterr()
    one_line_error(capsys, main(["generate", str(sample_recipe), "-o", str(out), "--resume"]), target.name,
                   "damaged")


def test_resume_notices_an_edited_options_file(sample_recipe, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["generate", str(sample_recipe), "-o", str(out)]) == 0
    (sample_recipe.parent / "data/colors.txt").write_text("red\ngreen\nblue\nteal\n")
    capsys.readouterr()
    one_line_error(capsys, main(["generate", str(sample_recipe), "-o", str(out), "--resume"]), "recipe_sha256")


def test_resume_accepts_the_same_recipe_by_another_path(sample_recipe, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert main(["generate", str(sample_recipe), "-o", str(out)]) == 0
    monkeypatch.chdir(sample_recipe.parent)
    assert main(["generate", "r.yaml", "-o", str(out), "--resume"]) == 0


def test_a_missing_executor_dependency_writes_nothing(sample_recipe, tmp_path, capsys, monkeypatch):
    from synthgen import executors
    from synthgen.errors import MissingDependencyError

    def no_ray():
        raise MissingDependencyError("ray", "ray")

    monkeypatch.setattr(executors, "import_ray", no_ray)
    out = tmp_path / "out"
    one_line_error(capsys, main(["generate", str(sample_recipe), "-o", str(out), "--executor", "ray"]), "ray")
    assert not out.exists()
    assert main(["generate", str(sample_recipe), "-o", str(out)]) == 0  # the same -o still works


@pytest.mark.parametrize("flag", ["--adapter", "--model"])
def test_an_empty_model_or_adapter_override(sample_recipe, tmp_path, capsys, flag):
    one_line_error(capsys, main(["generate", str(sample_recipe), "-o", str(tmp_path / "o"), flag, ""]),
                   flag[2:])


def test_a_run_that_keeps_no_record_exits_non_zero(tiny_model_dir, tmp_path, capsys):
    recipe = write_tree(tmp_path, """\
        q:
          kind: text
          template_inline: "Say hello."
          pattern: "^NEVER-MATCHES$"
          retries: 0
          max_tokens: 4
        """, top=f"model: {tiny_model_dir}\nadapter: none\ncount: 3\n")
    out = tmp_path / "out"
    assert main(["generate", str(recipe), "-o", str(out)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the run's progress bars
    assert last.startswith("error: no record was kept (3 invalid of 3)") and (out / "report.md").is_file()


# --------------------------------------------------------------- train, audit
TASKS = '{"id": "t", "family": "f", "prompt": "Pick a letter.", "targets": ["a", "b"], "weights": [1e308, 1e308]}\n'


@pytest.fixture
def task_file(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text(TASKS, encoding="utf-8")
    return path


@pytest.mark.parametrize("case, extra, key", [
    ("exclude_families_null", "exclude_families: null\n", "exclude_families"),
    ("lora_dropout_5", "lora: {dropout: 5}\n", "lora.dropout"),
    ("lora_dropout_string", "lora: {dropout: high}\n", "lora.dropout"),
    ("lora_alpha_bool", "lora: {alpha: true}\n", "lora.alpha"),
    ("device_cuda_bad_index", "device: 'cuda:abc'\n", "device"),
    ("yaml_error", "epochs: [1\n", "YAML syntax error at line"),
])
def test_a_bad_training_config_is_one_line(task_file, tmp_path, capsys, case, extra, key):
    config = tmp_path / "c.yaml"
    config.write_text(f"tasks: {task_file}\n{extra}", encoding="utf-8")
    one_line_error(capsys, main(["train", str(config), "-o", str(tmp_path / "a")]), str(config), key)


def test_train_on_cuda_without_a_cuda_device(task_file, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    config = tmp_path / "c.yaml"
    config.write_text(f"tasks: {task_file}\nmodel: /nonexistent/model\ndevice: cuda\n", encoding="utf-8")
    one_line_error(capsys, main(["train", str(config), "-o", str(tmp_path / "a")]), "device", "no CUDA device")


def test_train_to_an_impossible_directory_fails_before_training(task_file, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"tasks: {task_file}\nmodel: /nonexistent/model\n", encoding="utf-8")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(capsys, main(["train", str(config), "-o", str(blocker / "a")]), str(blocker))


def test_train_does_not_overwrite_an_adapter(task_file, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"tasks: {task_file}\nmodel: /nonexistent/model\n", encoding="utf-8")
    adapter = tmp_path / "a"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    one_line_error(capsys, main(["train", str(config), "-o", str(adapter)]), str(adapter), "--overwrite")
    assert (adapter / "adapter_config.json").read_text() == "{}"


def test_task_weights_that_overflow_when_summed(task_file):
    from synthgen.training.tasks import load_tasks

    assert load_tasks(task_file)[0].weights == (0.5, 0.5)


def test_audit_json_to_an_impossible_path_fails_before_the_audit(task_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["audit", str(task_file), "--model", "/nonexistent/model", "--json", str(blocker / "a.json")])
    one_line_error(capsys, code, str(blocker))


def test_audit_negative_samples_is_a_usage_error(task_file, capsys):
    assert main(["audit", str(task_file), "--samples", "-5"]) == 2
    assert "-5" in capsys.readouterr().err
