"""Recipe loading and validation, and the sandboxed template layer."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest

from synthgen.errors import ConfigError, SynthgenError
from synthgen.prompts import compile_template
from synthgen.recipe import FieldSpec, Recipe, load_recipe

REPO = Path(__file__).resolve().parent.parent


def write_recipe(tmp_path: Path, body: str, files: dict[str, str] | None = None) -> Path:
    """Write ``recipes/broken.yaml`` (and extra files, relative to tmp_path) and return its path."""
    for rel, text in (files or {}).items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    recipe = tmp_path / "recipes" / "broken.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(textwrap.dedent(body), encoding="utf-8")
    return recipe


def recipe_with(fields: str, top: str = "") -> str:
    """A recipe named t with the given fields block (and extra top-level lines)."""
    return "name: t\n" + textwrap.dedent(top) + "fields:\n" + textwrap.indent(
        textwrap.dedent(fields), "  ")


NAME = """\
name:
  kind: choice
  template_inline: "Pick a name. Reply with only the name."
  options: [Ann, Bob]
"""

# (case id, recipe text, extra files, key path in the message, another fragment of the message)
BAD_RECIPES = [
    ("yaml-syntax", "name: t\nfields: [unclosed\n", None, None, "YAML syntax error at line"),
    ("duplicate-yaml-key", recipe_with(NAME + NAME), None, None, "duplicate key 'name'"),
    ("top-level-not-mapping", "- just\n- a list\n", None, None, "expected a mapping"),
    ("unknown-top-level-key", recipe_with(NAME, "colour: blue\n"), None, "colour", "allowed in a recipe"),
    ("missing-name", "fields:\n" + textwrap.indent(NAME, "  "), None, "name", "missing required key"),
    ("no-fields", "name: t\nfields: {}\n", None, "fields", "non-empty mapping"),
    ("bad-field-name", recipe_with(NAME.replace("name:", "range:", 1)), None, "fields.range", "identifier"),
    ("unknown-kind", recipe_with("x:\n  kind: colour\n  template_inline: hi\n"), None,
     "fields.x.kind", "unknown kind 'colour'"),
    ("missing-kind", recipe_with("x:\n  template_inline: hi\n"), None, "fields.x.kind", "missing 'kind'"),
    ("unknown-field-key", recipe_with(NAME + "  colour: blue\n"), None, "fields.name.colour",
     "allowed in a choice field"),
    ("key-of-another-kind", recipe_with(NAME + "  max_tokens: 5\n"), None, "fields.name.max_tokens",
     "unknown key"),
    ("missing-template", recipe_with("x:\n  kind: text\n"), None, "fields.x.template", "missing"),
    ("two-templates", recipe_with("x:\n  kind: text\n  template: a.j2\n  template_inline: hi\n"), None,
     "fields.x.template", "both given"),
    ("template-file-not-found", recipe_with("x:\n  kind: text\n  template: nowhere/x.j2\n"), None,
     "fields.x.template", "template file not found: nowhere/x.j2"),
    ("template-syntax-error", recipe_with("x:\n  kind: text\n  template: t/x.j2\n"),
     {"templates/t/x.j2": "Hello\n{{ name }"}, "fields.x.template", "template syntax error at line 2"),
    ("undefined-variable", recipe_with(NAME + "bio:\n  kind: text\n  template_inline: '{{ nmae }}'\n"),
     None, "fields.bio.template_inline", "undefined template variable 'nmae' (known fields: name, bio)"),
    ("self-reference", recipe_with("x:\n  kind: text\n  template_inline: 'more {{ x }}'\n"), None,
     "fields.x.template_inline", "refers to itself"),
    ("two-cycle", recipe_with("a:\n  kind: text\n  template_inline: '{{ b }}'\n"
                              "b:\n  kind: text\n  template_inline: '{{ a }}'\n"),
     None, "fields.a.template_inline", "reference cycle: a -> b -> a"),
    ("empty-options", recipe_with("x:\n  kind: choice\n  template_inline: hi\n  options: []\n"), None,
     "fields.x.options", "empty options"),
    ("empty-options-file", recipe_with("x:\n  kind: choice\n  template_inline: hi\n"
                                       "  options_file: data/empty.txt\n"),
     {"recipes/data/empty.txt": "\n\n"}, "fields.x.options_file", "empty options"),
    ("missing-options", recipe_with("x:\n  kind: choice\n  template_inline: hi\n"), None,
     "fields.x.options", "needs 'options' or 'options_file'"),
    ("options-file-not-found", recipe_with("x:\n  kind: choice\n  template_inline: hi\n"
                                           "  options_file: data/nope.txt\n"),
     None, "fields.x.options_file", "file not found"),
    ("duplicate-options", recipe_with("x:\n  kind: choice\n  template_inline: hi\n"
                                      "  options: [a, b, ' a']\n"),
     None, "fields.x.options", "duplicate options: 'a'"),
    ("boolean-option", recipe_with("x:\n  kind: choice\n  template_inline: hi\n  options: [yes, no]\n"),
     None, "fields.x.options[0]", "quote it"),
    ("weights-length-mismatch", recipe_with(NAME + "  weights: [1, 2, 3]\n"), None, "fields.name.weights",
     "expected a list of 2 weights"),
    ("negative-weight", recipe_with(NAME + "  weights: [1, -2]\n"), None, "fields.name.weights[1]",
     ">= 0"),
    ("zero-weights", recipe_with(NAME + "  weights: [0, 0]\n"), None, "fields.name.weights",
     "sum to more than 0"),
    ("csv-bad-weight", recipe_with("x:\n  kind: choice\n  template_inline: hi\n  options_file: w.csv\n"),
     {"recipes/w.csv": "value,weight\na,1\nb,lots\n"}, "fields.x.options_file", "line 3"),
    ("bad-regex", recipe_with("x:\n  kind: text\n  template_inline: hi\n  pattern: '(unclosed'\n"), None,
     "fields.x.pattern", "invalid regular expression"),
    ("integer-min-above-max", recipe_with("y:\n  kind: integer\n  template_inline: hi\n"
                                          "  min: 10\n  max: 1\n"),
     None, "fields.y.max", "must be >= min"),
    ("integer-missing-max", recipe_with("y:\n  kind: integer\n  template_inline: hi\n  min: 1\n"), None,
     "fields.y.max", "missing required key"),
    ("integer-not-a-number", recipe_with("y:\n  kind: integer\n  template_inline: hi\n"
                                         "  min: one\n  max: 5\n"),
     None, "fields.y.min", "expected an integer"),
    ("sample-without-options-or-range", recipe_with("s:\n  kind: sample\n"), None, "fields.s",
     "it has neither"),
    ("sample-with-template", recipe_with("s:\n  kind: sample\n  options: [a]\n  template_inline: hi\n"),
     None, "fields.s.template_inline", "allowed in a sample field"),
    ("text-max-tokens-zero", recipe_with("x:\n  kind: text\n  template_inline: hi\n  max_tokens: 0\n"),
     None, "fields.x.max_tokens", "expected an integer >= 1"),
    ("text-top-p-out-of-range", recipe_with("x:\n  kind: text\n  template_inline: hi\n  top_p: 1.5\n"),
     None, "fields.x.top_p", "<= 1"),
    ("dedup-key-unknown-field", recipe_with(NAME, "dedup_keys: [name, age]\n"), None, "dedup_keys[1]",
     "unknown field 'age'"),
    ("near-dup-not-text", recipe_with(NAME, "near_dup_fields: [name]\n"), None, "near_dup_fields[0]",
     "unknown text field 'name'"),
    ("messages-unknown-field", recipe_with(NAME, "output:\n  messages: {user: name, assistant: nope}\n"),
     None, "output.messages.assistant", "expected a field name"),
    ("count-not-positive", recipe_with(NAME, "count: 0\n"), None, "count", "expected an integer >= 1"),
    ("sandbox-dunder", recipe_with("x:\n  kind: text\n  template_inline: \"{{ ''.__class__.__mro__ }}\"\n"),
     None, "fields.x.template_inline", "unsafe template operation"),
    ("render-error-at-load", recipe_with(NAME + "bio:\n  kind: text\n  template_inline: '{{ name.first }}'\n"),
     None, "fields.bio.template_inline", "dry render"),
    ("empty-prompt", recipe_with("x:\n  kind: text\n  template_inline: '{{ \"\" }}  '\n"), None,
     "fields.x.template_inline", "empty prompt"),
]


@pytest.mark.parametrize(("body", "files", "key", "fragment"),
                         [case[1:] for case in BAD_RECIPES], ids=[case[0] for case in BAD_RECIPES])
def test_bad_recipe_names_file_and_key(tmp_path, body, files, key, fragment):
    path = write_recipe(tmp_path, body, files)
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message and "broken.yaml" in message
    if key is not None:
        assert f"broken.yaml: {key}: " in message
        assert info.value.key == key
    assert fragment in message
    assert "\n" not in message.strip()  # one line, no traceback text


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_order_follows_references_stably(tmp_path):
    body = recipe_with("""\
        bio:
          kind: text
          template_inline: "{{ first }} {{ year }}"
        first:
          kind: choice
          template_inline: "Name for {{ colour }}. Reply with only the name."
          options: [Ann, Bob]
        year:
          kind: integer
          template_inline: "A year. Reply with only the year."
          min: 1990
          max: 1999
        colour:
          kind: sample
          options: [red, green]
        """)
    recipe = load_recipe(write_recipe(tmp_path, body))
    assert list(recipe.fields) == ["bio", "first", "year", "colour"]  # declaration order kept
    assert recipe.order == ("year", "colour", "first", "bio")
    assert recipe.fields["bio"].depends_on == {"first", "year"}
    assert recipe.dedup_keys == ("first", "year", "colour")  # default: all non-text fields
    assert recipe.near_dup_fields == ("bio",)  # default: all text fields


def test_csv_options_and_weights_are_normalised(tmp_path):
    body = recipe_with("""\
        city:
          kind: choice
          template: t/city.j2
          options_file: data/cities.csv
        size:
          kind: sample
          options: [small, large]
          weights: [1, 3]
        """)
    path = write_recipe(tmp_path, body, {
        "recipes/data/cities.csv": "value,weight\nParis, France,2\n\"Oslo, Norway\",6\n\n",
        "templates/t/city.j2": "Choose a random city.\nReply with only the city.\n",
    })
    with pytest.raises(ConfigError, match="cities.csv"):  # unquoted comma: three columns
        load_recipe(path)
    (tmp_path / "recipes/data/cities.csv").write_text(
        'value,weight\n"Paris, France",2\n"Oslo, Norway",6\n\n', encoding="utf-8")
    recipe = load_recipe(path)
    city = recipe.fields["city"]
    assert city.options == ("Paris, France", "Oslo, Norway")
    assert city.weights == pytest.approx((0.25, 0.75))
    assert recipe.fields["size"].weights == pytest.approx((0.25, 0.75))
    assert city.template.filename.endswith("templates/t/city.j2")
    assert city.template.render({}) == "Choose a random city.\nReply with only the city."


def test_txt_options_template_next_to_recipe_and_defaults(tmp_path):
    body = recipe_with("""\
        fruit:
          kind: choice
          template: fruit.j2
          options_file: data/fruits.txt
        """, "seed: 7\n")
    path = write_recipe(tmp_path, body, {
        "recipes/data/fruits.txt": "apple\n\n  pear  \nplum\n",
        "recipes/fruit.j2": "Pick a fruit. Reply with only the fruit.",
    })
    recipe = load_recipe(path)
    fruit = recipe.fields["fruit"]
    assert fruit.options == ("apple", "pear", "plum") and fruit.weights is None
    assert (recipe.seed, recipe.count, recipe.batch_size, recipe.model, recipe.adapter) == (7, 100, 32, None, None)
    assert recipe.base_dir == path.parent
    assert fruit.uses_model and fruit.known_values == ("apple", "pear", "plum")


def test_inline_template_rendering_and_value_parsing(tmp_path):
    body = recipe_with("""\
        name:
          kind: choice
          template_inline: "Pick a name. Reply with only the name."
          options: [Ann, Bob]
        age:
          kind: integer
          template_inline: "How old is {{ name }}? Reply with only the number."
          min: 18
          max: 90
        bio:
          kind: text
          template_inline: |
            Write about {{ name }}, aged {{ age + 1 }}.
          pattern: '(?:\\S+\\s+){2,}\\S+'
          stop: "\\n"
        """)
    recipe = load_recipe(write_recipe(tmp_path, body))
    name, age, bio = (recipe.fields[n] for n in ("name", "age", "bio"))
    assert bio.template.render({"name": "Ann", "age": 40}) == "Write about Ann, aged 41."
    assert bio.stop == ("\n",) and bio.max_tokens == 128 and bio.retries == 3
    assert name.parse_value(" Bob\n") == "Bob" and name.parse_value("Bobby") is None
    assert age.parse_value("42") == 42 and age.parse_value("17") is None and age.parse_value("4x") is None
    assert age.known_values == range(18, 91)
    assert bio.parse_value("She was born.") == "She was born." and bio.parse_value("Hi there") is None
    with pytest.raises(SynthgenError, match="undefined template variable"):
        bio.template.render({"name": "Ann"})


@pytest.mark.parametrize("value, expected", [
    ("none", "none"), ("default", "default"), ("smollm2-135m-biography-flat", "{shipped}/smollm2-135m-biography-flat"),
    ("adapters/mine", "{dir}/adapters/mine"), ("../out/a", "{dir}/../out/a"), ("{abs}", "{abs}"),
])
def test_recipe_adapter_paths_are_relative_to_the_recipe(tmp_path, value, expected):
    from synthgen.adapters import SHIPPED_DIR

    path = write_recipe(tmp_path, recipe_with(NAME, f"adapter: {value.format(abs=tmp_path / 'abs')}\n"))
    for where in (path.parent / "adapters/mine", path.parent / "../out/a", tmp_path / "abs"):
        where.mkdir(parents=True, exist_ok=True)
        (where / "adapter_config.json").write_text("{}")
        (where / "adapter_model.safetensors").write_bytes(b"")
    assert load_recipe(path).adapter == expected.format(dir=path.parent, abs=tmp_path / "abs", shipped=SHIPPED_DIR)


@pytest.mark.parametrize("value", ["no-such-adapter", "adapters/missing"])
def test_recipe_adapter_that_does_not_exist_names_file_and_key(tmp_path, value):
    path = write_recipe(tmp_path, recipe_with(NAME, f"adapter: {value}\n"))
    with pytest.raises(ConfigError, match=r"broken\.yaml: adapter: no adapter at .*smollm2-135m-biography-flat"):
        load_recipe(path)


def test_flat_biography_recipe_uses_its_tuned_adapter():
    from synthgen.adapters import SHIPPED_DIR, resolve_adapter

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes/biography_flat.yaml")
    assert resolve_adapter(recipe.adapter, model=recipe.model) == SHIPPED_DIR / "smollm2-135m-biography-flat"


def test_with_overrides(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, recipe_with(NAME, "count: 5\nmodel: m\n")))
    changed = recipe.with_overrides(count=9, seed=3, adapter="none")
    assert (changed.count, changed.seed, changed.model, changed.adapter) == (9, 3, "m", "none")
    assert (recipe.count, recipe.seed) == (5, 0)
    with pytest.raises(ConfigError, match="count"):
        recipe.with_overrides(count=0)


def test_prompt_template_sandbox_and_pickle():
    template = compile_template("Hi {{ who }}{{ ' and ' ~ other if other is defined }}", "inline.yaml", "k")
    assert template.variables == {"who", "other"}
    assert template.render({"who": "Ann"}) == "Hi Ann"
    assert pickle.loads(pickle.dumps(template)).render({"who": "Bo", "other": "Cy"}) == "Hi Bo and Cy"
    unsafe = compile_template("{{ ''.__class__.__mro__ }}", "evil.yaml", "fields.x.template_inline")
    with pytest.raises(SynthgenError, match=r"evil.yaml: fields.x.template_inline: unsafe template operation"):
        unsafe.render({})
    mutate = compile_template("{{ items.append(1) }}", "evil.yaml")
    with pytest.raises(SynthgenError, match="unsafe"):
        mutate.render({"items": []})
    bomb = compile_template("{{ 'x' * 10 ** 9 }}", "evil.yaml")
    with pytest.raises(SynthgenError, match="too large"):
        bomb.render({})
    with pytest.raises(ConfigError, match=r"bad.yaml: k: template syntax error at line 1"):
        compile_template("{% if %}", "bad.yaml", "k")


@pytest.mark.parametrize("name", ["biography", "instruction_tuning"])
def test_shipped_recipes_load(name):
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml")
    assert isinstance(recipe, Recipe) and recipe.name == name
    assert all(isinstance(f, FieldSpec) for f in recipe.fields.values())
    placeholders = {n: (f.known_values or ("some text",))[0] for n, f in recipe.fields.items()}
    for n in recipe.order:
        field = recipe.fields[n]
        assert field.depends_on <= set(recipe.order[: recipe.order.index(n)])
        if field.template is not None:
            assert field.template.render(placeholders)


def test_biography_recipe_contract():
    recipe = load_recipe(REPO / "recipes" / "biography.yaml")
    required = {"first_name", "last_name", "gender", "birth_year", "birth_place", "occupation", "biography"}
    assert required <= set(recipe.fields)
    assert recipe.fields["biography"].depends_on == set(recipe.fields) - {"biography"}
    assert recipe.fields["gender"].options == ("female", "male", "non-binary")
    assert recipe.fields["gender"].weights == pytest.approx((0.49, 0.49, 0.02))
    assert all(len(recipe.fields[n].options) > 50 for n in ("first_name", "last_name", "birth_place", "occupation"))
    for n in ("gender", "first_name", "last_name", "birth_year", "birth_place", "occupation"):
        prompt = recipe.fields[n].template.source
        assert "random" in prompt and "Reply with only the" in prompt, n
    # names and places are chosen by the person's country (and gender): coherent records
    assert recipe.fields["first_name"].option_parents == ("gender", "birth_country")
    assert recipe.fields["last_name"].option_parents == ("gender", "birth_country")
    assert recipe.fields["birth_place"].option_parents == ("birth_country",)
    assert len(recipe.fields["birth_country"].options) >= 40
    assert set(recipe.dedup_keys) == set(recipe.fields) - {"biography"}


def test_instruction_recipe_contract():
    recipe = load_recipe(REPO / "recipes" / "instruction_tuning.yaml")
    assert recipe.output == {"messages": {"user": "instruction", "assistant": "response"}}
    assert recipe.fields["difficulty"].kind == "sample" and not recipe.fields["difficulty"].uses_model
    assert recipe.fields["instruction"].depends_on == {"category", "topic", "persona", "difficulty"}
    assert recipe.fields["response"].depends_on == {"instruction"}
    assert recipe.order[-2:] == ("instruction", "response")


def test_use_adapter_defaults_and_validation(tmp_path):
    from synthgen.errors import ConfigError
    from synthgen.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(
        "name: r\nfields:\n"
        "  a:\n    kind: choice\n    template_inline: Pick.\n    options: [x, y]\n"
        "  b:\n    kind: text\n    template_inline: Write about {{ a }}.\n"
        "  c:\n    kind: text\n    template_inline: Again {{ a }}.\n    use_adapter: true\n",
        encoding="utf-8",
    )
    recipe = load_recipe(path)
    assert recipe.fields["a"].use_adapter and not recipe.fields["b"].use_adapter and recipe.fields["c"].use_adapter
    path.write_text(
        "name: r\nfields:\n  a:\n    kind: choice\n    template_inline: Pick.\n    options: [x, y]\n"
        "    use_adapter: maybe\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"r\.yaml: fields\.a\.use_adapter"):
        load_recipe(path)
