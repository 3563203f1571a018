"""Checks of a text field against its record: the pure checks, recipe keys, the assistant
prefix in both engines, counting (FieldStats, shards, report) and a run on the tiny model."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

import synthgen.engines as engine_mod
from synthgen.checks import TextChecks, contradicts_year, mention_kind, mentions
from synthgen.engines.base import PromptCodec
from synthgen.engines.transformers import TransformersEngine
from synthgen.errors import ConfigError
from synthgen.executors import LocalExecutor, fill_batch
from synthgen.fill import FieldFiller, make_records
from synthgen.generation import generate
from synthgen.recipe import load_recipe
from synthgen.shards import ALIVE, INDEX, merge_shards, shard_frame, write_shard
from tests.fakes import vllm as fake_vllm

# ------------------------------------------------------------------ mentions
MENTIONS = [
    # (text, value, mentioned)
    ("She trained as an engineer.", "engineer", True),
    ("She studied engineering in Lyon.", "engineer", True),
    ("Both engineers retired.", "engineer", True),
    ("An ENGINEER by trade.", "engineer", True),
    ("She worked in a nursing home.", "nurse", True),
    ("The nurses went on strike.", "nurse", True),
    ("She became a secretary.", "secretary", True),
    ("Two secretaries and a clerk.", "secretary", True),
    ("A pharmacist by training.", "pharmacist", True),
    ("She ran a software engineering firm.", "software engineer", True),
    ("She wrote software as an engineer.", "software engineer", False),  # the words must be adjacent
    ("She was a civil engineer.", "software engineer", False),
    ("She drove an engine.", "engineer", False),
    ("She was a teacher.", "engineer", False),
    ("Anna Smith was born in Lyon.", "Anna", True),
    ("Anna's garden was famous.", "Anna", True),
    ("anna smith, lower case", "Anna", True),
    ("Annabel was born in Lyon.", "Anna", False),  # a longer name is another name
    ("Joan Jones", "Jon", False),  # short words match only themselves
    ("Li was born in Lisbon.", "Li", True),
    ("She moved to Lisbon.", "Li", False),
    ("José Pérez", "Jose", True),  # accents do not matter
    ("Jose Perez", "José", True),
    ("Mary-Ann O'Brien", "Mary Ann", True),
    ("Mary-Ann O'Brien", "O'Brien", True),
    ("Jean-Pierre Dubois", "Jean Pierre", True),
    ("Van der Berg was a pilot.", "van der Berg", True),
    ("She was born in Lyon in 1950.", "Lyon, France", True),  # a place matches on its city
    ("She was born in Lyon, France.", "Lyon, France", True),
    ("She was born in France.", "Lyon, France", False),
    ("She grew up in São Paulo.", "Sao Paulo, Brazil", True),
    ("She was born in New York City.", "New York, United States", True),
    ("She was born in York.", "New York, United States", False),
    ("She was born in 1950.", 1950, True),  # an integer matches on its digits
    ("Born in the 1950s.", 1950, True),
    ("Her number was 19501.", 1950, False),
    ("She was born in 1951.", 1950, False),
    ("Born in 1950.", "1950", True),  # a string of digits is a number
    ("Aged 42.", 42, True),
    ("Aged 142.", 42, False),
    ("", "Anna", False),
]


@pytest.mark.parametrize("text, value, expected", MENTIONS)
def test_mentions(text, value, expected):
    assert mentions(text, value) is expected


@pytest.mark.parametrize("value, kind", [(1950, "number"), ("1950", "number"), ("-3", "number"),
                                         ("Lyon, France", "place"), ("software engineer", "words"),
                                         ("Anna", "words")])
def test_mention_kind(value, kind):
    assert mention_kind(value) == kind


def test_an_explicit_kind_overrides_the_value_shape():
    assert mentions("Lyon, France", "Lyon, France", "words")
    assert not mentions("Lyon is nice", "Lyon, France", "words")
    with pytest.raises(ValueError, match="kind"):
        mentions("x", "x", "regex")


# ---------------------------------------------------------------- birth year
YEARS = [
    # (text, birth year, contradicts)
    ("She was born in 1950 in Lyon.", 1950, False),
    ("She was born in 1962 in Lyon.", 1950, True),
    ("She was born in Lyon, France, in 1962.", 1950, True),
    ("She was born on 3 May 1962.", 1950, True),
    ("She was born on 12/03/1962 in Lyon.", 1950, True),
    ("Born: 1962.", 1950, True),
    ("Her year of birth is 1962.", 1950, True),
    ("Birth year: 1962.", 1950, True),
    ("Jane Doe (b. 1962) is a nurse.", 1950, True),
    ("Jane Doe (born 1962) is a nurse.", 1950, True),
    ("Jane Doe (1962–2010) was a nurse.", 1950, True),
    ("Jane Doe (1962– ) is a nurse.", 1950, True),
    ("Dr. Jane Doe (1962-2010) was a nurse.", 1950, True),
    ("Jane Doe (1950–2010) was a nurse.", 1950, False),  # a life span that agrees
    ("Jane Doe (1950 – 2010) was a nurse.", 1950, False),
    ("Jane Doe, born in 1950, worked from 1970–2010 as a nurse.", 1950, False),  # a career span
    ("She worked at Siemens (1975–1980) as an engineer.", 1950, False),
    ("She was born in 1950. In 1975 she moved to Paris.", 1950, False),  # other events are fine
    ("In 1975 she moved to Paris, where she was born in 1950.", 1950, False),
    ("She was born in Lyon. In 1962 she moved to Paris.", 1950, False),  # the sentence ends first
    ("She was born in St. Louis in 1962.", 1950, True),  # "St." ends no sentence
    ("Her son was born in 1980.", 1950, False),  # the subject is a relative
    ("Her daughter Anna was born in 1985 in Rome.", 1950, False),
    ("The youngest of three children, she was born in 1962.", 1950, True),
    ("Jane, the daughter of a baker, was born in 1962.", 1950, True),
    ("A German-born engineer, she moved to Paris in 1962.", 1950, False),
    ("She gave birth to twins in 1980.", 1950, False),
    ("She celebrated her birthday in 1980.", 1950, False),
    ("She was born in the 1950s.", 1955, False),  # a decade agrees with its years
    ("She was born in the 1960s.", 1955, True),
    ("Jane Doe (born 1950) is a nurse who was born in 1962.", 1950, True),  # a later contradiction
    ("She was born in 1950 and died in 2010.", 1950, False),
    ("She was born a long time ago.", 1950, False),
    ("No years at all.", 1950, False),
]


@pytest.mark.parametrize("text, year, expected", YEARS)
def test_contradicts_year(text, year, expected):
    assert contradicts_year(text, year) is expected


def test_text_checks_name_and_report_every_failure():
    checks = TextChecks(("first", "city", "year"), "year")
    assert checks.names == ("mentions_first", "mentions_city", "mentions_year", "consistent_year")
    assert checks.fields == {"first", "city", "year"}
    record = {"first": "Anna", "city": "Lyon, France", "year": 1950}
    assert checks.failed("Anna was born in Lyon in 1950.", record) == ()
    assert checks.failed("Bob was born in Rome in 1962.", record) == ("mentions_first", "mentions_city",
                                                                      "mentions_year", "consistent_year")
    assert checks.results("Anna (1950–) grew up in Lyon.", record) == dict.fromkeys(checks.names, True)


# -------------------------------------------------------------- recipe keys
def recipe_text(bio_extra: str, more: str = "") -> str:
    return "name: t\nfields:\n" + textwrap.indent(textwrap.dedent("""\
        first: {kind: sample, options: [Anna, Bob]}
        year: {kind: sample, min: 1940, max: 1960}
        bio:
          kind: text
          template_inline: "Write about {{ first }}."
        """) + textwrap.indent(textwrap.dedent(bio_extra), "  ") + textwrap.dedent(more), "  ")


SUMMARY = "summary: {kind: text, template_inline: 'Summarise {{ bio }}'}\n"
BAD_KEYS = [
    # (bio keys, extra fields, key in the message, fragment of the message)
    ("must_mention: [nope]\n", "", "fields.bio.must_mention[0]", "unknown field 'nope'"),
    ("must_mention: [first, nope]\n", "", "fields.bio.must_mention[1]", "unknown field 'nope'"),
    ("must_mention: [bio]\n", "", "fields.bio.must_mention[0]", "itself"),
    ("must_mention: [summary]\n", SUMMARY, "fields.bio.must_mention[0]", "filled after 'bio'"),
    ("must_mention: first\n", "", "fields.bio.must_mention", "non-empty list"),
    ("must_mention: []\n", "", "fields.bio.must_mention", "non-empty list"),
    ("must_mention: [first, first]\n", "", "fields.bio.must_mention[1]", "listed twice"),
    ("must_mention: [3]\n", "", "fields.bio.must_mention[0]", "expected a field name"),
    ("consistent_year: nope\n", "", "fields.bio.consistent_year", "unknown field 'nope'"),
    ("consistent_year: first\n", "", "fields.bio.consistent_year", "expected an integer field"),
    ("consistent_year: [year]\n", "", "fields.bio.consistent_year", "expected a field name"),
    ("consistent_year: summary\n", SUMMARY, "fields.bio.consistent_year", "filled after 'bio'"),
    ("reply_prefix: '{{ nope }} is'\n", "", "fields.bio.reply_prefix", "unknown field 'nope'"),
    ("reply_prefix: '{{ summary }} is'\n", SUMMARY, "fields.bio.reply_prefix", "filled after 'bio'"),
    ("reply_prefix: '{{ bio }} is'\n", "", "fields.bio.reply_prefix", "itself"),
    ("reply_prefix: '{% if %}'\n", "", "fields.bio.reply_prefix", "template syntax error"),
    ("reply_prefix: ''\n", "", "fields.bio.reply_prefix", "non-empty string"),
    ("reply_prefix: 3\n", "", "fields.bio.reply_prefix", "non-empty string"),
    ("reply_prefix: '{{ first }}{{ 1 / 0 }}'\n", "", "fields.bio.reply_prefix", "dry render"),
]


@pytest.mark.parametrize("extra, more, key, fragment", BAD_KEYS)
def test_bad_check_keys_are_one_line_errors_naming_file_and_key(tmp_path, extra, more, key, fragment):
    path = tmp_path / "r.yaml"
    path.write_text(recipe_text(extra, more), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: {key}: "), message
    assert fragment in message


@pytest.mark.parametrize("field, key", [("first: {kind: sample, options: [A], must_mention: [year]}", "must_mention"),
                                        ("n: {kind: integer, template_inline: 'n', min: 1, max: 3, "
                                         "reply_prefix: 'x'}", "reply_prefix")])
def test_check_keys_belong_to_text_fields(tmp_path, field, key):
    path = tmp_path / "r.yaml"
    path.write_text(f"name: t\nfields:\n  year: {{kind: sample, min: 1, max: 2}}\n  {field}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"\.{key}: unknown key"):
        load_recipe(path)


def test_checked_fields_are_dependencies_filled_first(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent("""\
        name: t
        fields:
          bio:
            kind: text
            template_inline: "Write a biography."
            must_mention: [first]
            consistent_year: year
            reply_prefix: "{{ last }} is"
          first: {kind: sample, options: [Anna]}
          last: {kind: sample, options: [Smith]}
          year: {kind: sample, min: 1940, max: 1960}
        """), encoding="utf-8")
    recipe = load_recipe(path)
    bio = recipe.fields["bio"]
    assert bio.depends_on == {"first", "last", "year"}
    assert recipe.order == ("first", "last", "year", "bio")
    assert bio.checks == TextChecks(("first",), "year")
    assert bio.reply_prefix.render({"last": "Smith"}) == "Smith is"


def test_either_check_key_alone_is_enough(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(recipe_text("consistent_year: year\n"), encoding="utf-8")
    assert load_recipe(path).fields["bio"].checks.names == ("consistent_year",)
    path.write_text(recipe_text("must_mention: [first]\n"), encoding="utf-8")
    assert load_recipe(path).fields["bio"].checks.names == ("mentions_first",)
    path.write_text(recipe_text("reply_prefix: '{{ first }} is'\n"), encoding="utf-8")
    bio = load_recipe(path).fields["bio"]
    assert bio.checks is None and bio.reply_prefix is not None


def test_the_shipped_biography_recipe_checks_its_biography():
    bio = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "biography.yaml").fields["biography"]
    assert set(bio.checks.must_mention) == {"first_name", "last_name", "occupation", "birth_year", "birth_place"}
    assert bio.checks.consistent_year == "birth_year"
    prefix = bio.reply_prefix.render({"first_name": "Ada", "last_name": "Byron", "birth_year": 1950,
                                      "birth_place": "Lyon", "birth_country": "France", "occupation": "nurse",
                                      "gender": "female"})
    assert prefix.startswith("Ada Byron") and "1950" in prefix and "Lyon, France" in prefix


# ------------------------------------------------------------ engine prefix
def test_codec_puts_the_prefix_after_the_generation_prompt(tiny_model_dir, tiny_plain_model_dir):
    from transformers import AutoTokenizer

    chat = PromptCodec(AutoTokenizer.from_pretrained(tiny_model_dir))
    plain = PromptCodec(AutoTokenizer.from_pretrained(tiny_plain_model_dir))
    bare = chat.tokenizer.apply_chat_template([{"role": "user", "content": "Hi."}], add_generation_prompt=True,
                                              tokenize=False)
    assert chat.format("Hi.") == chat.format("Hi.", None) == chat.format("Hi.", "") == bare
    assert chat.format("Hi.", "Anna (born 1950) is") == bare + "Anna (born 1950) is"
    assert bare.endswith("<|im_start|>assistant\n")
    assert plain.format("Hi. ") == "Hi.\n" and plain.format("Hi. ", "Anna is") == "Hi.\nAnna is"
    assert chat.encode_prompt("Hi.", "Anna is") == list(chat.tokenizer(bare + "Anna is", add_special_tokens=False)
                                                        ["input_ids"])


def test_transformers_engine_continues_the_prefix(tiny_engine):
    prompts = ["Write about Anna.", "Write about Bob."]
    kwargs = dict(max_new_tokens=6, seed=[1, 2], temperature=1.0)
    plain = tiny_engine.generate(prompts, **kwargs)
    assert tiny_engine.generate(prompts, prefixes=None, **kwargs) == plain
    assert tiny_engine.generate(prompts, prefixes=[None, None], **kwargs) == plain
    mixed = tiny_engine.generate(prompts, prefixes=[None, "Bob was born in"], **kwargs)
    assert mixed[0] == plain[0] and mixed[1] != plain[1]
    with pytest.raises(ValueError, match="prefixes"):
        tiny_engine.generate(prompts, prefixes=["one"])


def test_a_continuation_keeps_its_leading_space():
    class DropsLeadingSpace:  # a sentencepiece-like decoder: a decoded text never starts with a space
        vocab = {1: "▁Anna", 2: "▁is", 3: "▁a", 4: "▁nurse"}

        def decode(self, ids, skip_special_tokens=True):
            return "".join(self.vocab[i] for i in ids).replace("▁", " ").lstrip()

    engine = SimpleNamespace(tokenizer=DropsLeadingSpace())
    assert TransformersEngine._decode(engine, [3, 4], None) == "a nurse"
    assert TransformersEngine._decode(engine, [3, 4], [1, 2]) == " a nurse"


@pytest.fixture
def vllm_module(monkeypatch):
    fake_vllm.install(monkeypatch)
    monkeypatch.delitem(sys.modules, "synthgen.engines.vllm", raising=False)
    monkeypatch.setattr(engine_mod, "_FACTORIES", {k: v for k, v in engine_mod._FACTORIES.items() if k != "vllm"})
    yield importlib.import_module("synthgen.engines.vllm")
    sys.modules.pop("synthgen.engines.vllm", None)


def test_vllm_engine_sends_the_prefix_in_the_prompt_tokens(vllm_module, tiny_model_dir, tiny_engine):
    engine = vllm_module.load(str(tiny_model_dir), adapter="none")
    prompts, prefixes = ["Write about Anna.", "Write about Bob."], ["Anna was born in", None]
    out = engine.generate(prompts, temperature=0, max_new_tokens=5, prefixes=prefixes)
    sent = [p["prompt_token_ids"] for p in engine.llm.calls[-1]["prompts"]]
    assert sent == [tiny_engine.encode_prompt(p, x) for p, x in zip(prompts, prefixes)]
    assert sent[1] == tiny_engine.encode_prompt(prompts[1])
    # greedy continuations agree with the transformers engine's
    assert out == tiny_engine.generate(prompts, temperature=0, max_new_tokens=5, prefixes=prefixes)
    engine.generate(prompts, temperature=0, max_new_tokens=5)
    assert [p["prompt_token_ids"] for p in engine.llm.calls[-1]["prompts"]] == [tiny_engine.encode_prompt(p)
                                                                                 for p in prompts]


# ------------------------------------------------------- filling and counting
class Scripted:
    """Replies from a script per name: the k-th call for a prompt ("Write about NAME (UID).", one
    per record) gets the k-th reply of NAME's script. Records the seeds and keywords it was given."""

    name, model_name, adapter_name = "scripted", "scripted", None

    def __init__(self, script: dict[str, list[str]]):
        self.script, self.calls, self.seen = script, {}, []

    def generate(self, prompts, n=1, seed=None, **kwargs):
        self.seen.append({"seeds": list(seed), **kwargs})
        out = []
        for prompt in prompts:
            k = self.calls[prompt] = self.calls.get(prompt, -1) + 1
            out.append([self.script[prompt.split()[2]][k]])
        return out


FILL_RECIPE = """\
name: t
seed: 3
count: 3
fields:
  first: {kind: sample, options: [Anna, Bob, Carla]}
  uid: {kind: sample, min: 0, max: 1000000000}
  year: {kind: sample, min: 1950, max: 1950}
  bio:
    kind: text
    template_inline: "Write about {{ first }} ({{ uid }})."
    retries: 2
    must_mention: [first, year]
    consistent_year: year
"""


def fill_recipe(tmp_path, extra: str = ""):
    path = tmp_path / "r.yaml"
    path.write_text(FILL_RECIPE + extra, encoding="utf-8")
    return load_recipe(path)


# (replies per attempt, the value kept or None, samples drawn, failures per check)
FILL_CASES = [
    (["Anna was born in 1950."], "Anna was born in 1950.", 1, {}),
    (["Bob was born in 1962.", "Anna was  born in 1950\nin Lyon."], "Anna was born in 1950 in Lyon.", 2,
     {"mentions_first": 1, "mentions_year": 1, "consistent_year": 1}),
    (["Anna was born in 1962.", "Anna, 1950.", "never reached"], "Anna, 1950.", 2,
     {"mentions_year": 1, "consistent_year": 1}),
    (["Anna.", "Anna, born in 1962 (not 1950).", "1950."], None, 3,
     {"mentions_year": 1, "consistent_year": 1, "mentions_first": 1}),
    (["", "   ", "Anna 1950"], "Anna 1950", 3, {"mentions_first": 2, "mentions_year": 2}),
]


@pytest.mark.parametrize("replies, kept, drawn, failures", FILL_CASES)
def test_a_failing_check_is_retried_then_dropped_and_counted(tmp_path, replies, kept, drawn, failures):
    recipe = fill_recipe(tmp_path)
    record = {"first": "Anna", "uid": 1, "year": 1950}
    engine = Scripted({"Anna": replies})
    fails: dict[str, list[int]] = {}
    ok, counts = FieldFiller(engine).fill(recipe.fields["bio"], [record], [0], recipe.seed, fails)
    assert ok == [kept is not None] and counts == [drawn] and record.get("bio") == kept
    assert fails == {name: [failures.get(name, 0)] for name in recipe.fields["bio"].checks.names}
    seeds = [call["seeds"][0] for call in engine.seen]
    assert len(set(seeds)) == len(seeds) == drawn  # a new seed per attempt
    assert all("prefixes" not in call for call in engine.seen)  # no prefix: the engine call is unchanged


def test_the_prefix_starts_the_value_and_an_empty_continuation_is_invalid(tmp_path):
    recipe = fill_recipe(tmp_path, '    reply_prefix: "{{ first }} (born {{ year }})"\n')
    engine = Scripted({"Anna": ["  ", " was a nurse in Lyon."]})
    record = {"first": "Anna", "uid": 1, "year": 1950}
    fails: dict[str, list[int]] = {}
    ok, counts = FieldFiller(engine).fill(recipe.fields["bio"], [record], [0], recipe.seed, fails)
    assert ok == [True] and counts == [2]
    assert record["bio"] == "Anna (born 1950) was a nurse in Lyon."
    assert [call["prefixes"] for call in engine.seen] == [["Anna (born 1950)"]] * 2
    assert fails["consistent_year"] == [0] and fails["mentions_first"] == [1]  # the empty reply mentions nothing


SCRIPT = {
    "Anna": ["Anna was born in 1950."],
    "Bob": ["Bob was born in 1962.", "Bob (1950–2001) was a pilot."],
    "Carla": ["Who?", "Carla, born 1970.", "Carla was born in 1990."],
}


def test_counts_reach_the_shards_the_stats_and_the_report(tmp_path):
    recipe = fill_recipe(tmp_path, "  extra: {kind: sample, options: [x]}\n")
    filled = make_records(recipe, FieldFiller(Scripted(SCRIPT)), [0, 1, 2])
    names = filled.values["first"]
    assert filled.alive == [n != "Carla" for n in names]
    stats = filled.stats["bio"]
    drawn = sum(len(SCRIPT[n]) for n in names)
    assert stats.drawn == drawn and stats.valid == sum(n != "Carla" for n in names)
    carla, bob = names.count("Carla"), names.count("Bob")
    assert stats.passed == {"mentions_first": drawn - carla, "mentions_year": drawn - bob - 3 * carla,
                            "consistent_year": drawn - bob - 2 * carla}
    assert filled.stats["first"].passed == {}

    table = shard_frame(recipe, filled)
    fail_columns = [c for c in table.columns if c.startswith("_fail_")]
    assert fail_columns == ["_fail_bio_mentions_first", "_fail_bio_mentions_year", "_fail_bio_consistent_year"]
    assert table.columns.index(fail_columns[0]) == table.columns.index("_drawn_bio") + 1
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards, table)
    merged = merge_shards(recipe, shards)
    assert merged.stats["bio"] == stats and merged.invalid == filled.invalid

    import pyarrow as pa  # the Ray executor's stage function writes the same columns

    batch = pa.table({INDEX: pa.array([0, 1, 2], pa.int64()), ALIVE: pa.array([True] * 3)})
    filler = FieldFiller(Scripted(SCRIPT))
    for name in recipe.order:
        batch = fill_batch(batch, recipe, name, filler)
    assert pl.from_arrow(batch).equals(table)


def test_no_checks_no_new_columns_and_no_prefix_argument(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(FILL_RECIPE.split("    must_mention")[0], encoding="utf-8")
    recipe = load_recipe(path)
    engine = Scripted(dict.fromkeys(("Anna", "Bob", "Carla"), ["Some text."]))
    table = shard_frame(recipe, make_records(recipe, FieldFiller(engine), [0, 1, 2]))
    assert table.columns == [INDEX, ALIVE, "first", "_drawn_first", "uid", "_drawn_uid", "year", "_drawn_year",
                             "bio", "_drawn_bio"]
    assert all("prefixes" not in call for call in engine.seen)


# ------------------------------------------------------------- tiny model run
TINY = """\
name: checked
seed: 5
count: 12
batch_size: 5
fields:
  bio:
    kind: text
    template_inline: "Write about {{ name }}, a {{ job }} born in {{ year }} in {{ city }}."
    max_tokens: 10
    retries: 2
    must_mention: [name, city, year{more}]
    consistent_year: year
    reply_prefix: "{{ name }} (born {{ year }} in {{ city }}) is"
  name: {kind: sample, options: [Anna, Bob, Carla, David]}
  job: {kind: sample, options: [doctor, teacher, nurse]}
  year: {kind: sample, min: 1940, max: 1960}
  city: {kind: sample, options: ["Paris, France", "Rome, Italy", "Oslo, Norway"]}
"""


@pytest.mark.parametrize("more", ["", ", job"], ids=["prefix-states-the-facts", "job-left-to-the-model"])
def test_tiny_model_run_keeps_only_records_that_pass_their_checks(tmp_path, tiny_engine, more):
    path = tmp_path / "r.yaml"
    path.write_text(TINY.replace("{more}", more), encoding="utf-8")
    recipe = load_recipe(path)
    result = generate(recipe, tmp_path / "out", executor=LocalExecutor(engine=tiny_engine))
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report == result.report
    bio, spec = report["fields"]["bio"], recipe.fields["bio"]
    assert list(bio["checks"]) == list(spec.checks.names)
    assert all(0.0 <= rate <= 1.0 for rate in bio["checks"].values())
    assert bio["valid_rate"] <= min(bio["checks"].values())  # a valid sample passed every check
    df = pl.read_parquet(tmp_path / "out" / "records.parquet")
    assert report["n_generated"] + report["removed"]["invalid"] == recipe.count
    for row in df.iter_rows(named=True):
        assert spec.checks.failed(row["bio"], row) == ()
        assert row["bio"].startswith(spec.reply_prefix.render(row))
    shards = pl.concat([pl.read_parquet(f) for f in sorted((tmp_path / "out" / "shards").glob("*.parquet"))])
    drawn = shards["_drawn_bio"].sum()
    for name, rate in bio["checks"].items():
        assert rate == pytest.approx(1 - shards[f"_fail_bio_{name}"].sum() / drawn)
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "- bio: " + ", ".join(f"{c} {r:.3f}" for c, r in bio["checks"].items()) in markdown
    if more:  # the tiny model writes noise: the job is rarely mentioned, and records die for it
        assert bio["checks"]["mentions_job"] < 1.0 and report["removed"]["invalid"] > 0
    else:  # the prefix states every checked fact
        assert len(df) > 0 and bio["checks"]["mentions_name"] > 0.5
