"""Coherence in the report: H(field | parents), H(parent | field) and their maths."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import polars as pl
import pytest

from synthgen import diversity as dv
from synthgen.cli import main
from synthgen.dataset_report import report_dataset
from synthgen.errors import SynthgenError
from synthgen.executors import LocalExecutor
from synthgen.generation import field_infos, generate
from synthgen.recipe import load_recipe
from synthgen.report import FieldInfo, build_report
from synthgen.report_files import write_report

COHERENCE_KEYS = {
    "parents", "conditioned_on", "estimator", "n", "n_parent_values", "entropy_bits", "conditional_entropy_bits",
    "conditional_entropy_shuffled_bits", "mutual_information_bits", "parent_given_field_bits",
}


# ---------------------------------------------------------------- maths

def test_hand_computed_values():
    # y=m: x is a or b, 2 each (1 bit); y=f: x is always a (0 bits); each y half the pairs
    joint = {("a", "m"): 2, ("b", "m"): 2, ("a", "f"): 4}
    assert dv.conditional_entropy_bits(joint) == pytest.approx(0.5)
    h_x = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))  # a 6, b 2
    assert dv.mutual_information_bits(joint) == pytest.approx(h_x - 0.5)
    assert dv.joint_entropy_bits(joint) == pytest.approx(1.5)  # shares 1/4, 1/4, 1/2
    # the other way round: a is m or f (2 and 4 of 6), b is always m
    h_m_f = -(1 / 3 * math.log2(1 / 3) + 2 / 3 * math.log2(2 / 3))
    swapped = {(y, x): c for (x, y), c in joint.items()}
    assert dv.conditional_entropy_bits(swapped) == pytest.approx(0.75 * h_m_f)


def test_pairs_and_counts_give_the_same_numbers():
    pairs = [("a", "m"), ("b", "m"), ("a", "f"), ("a", "f"), ("a", "m"), ("b", "m"), ("a", "f"), ("a", "f")]
    joint = {("a", "m"): 2, ("b", "m"): 2, ("a", "f"): 4, ("c", "f"): 0}
    assert dv.pair_counts(pairs) == dv.pair_counts(joint) == {("a", "m"): 2, ("b", "m"): 2, ("a", "f"): 4}
    for fn in (dv.conditional_entropy_bits, dv.mutual_information_bits, dv.joint_entropy_bits):
        assert fn(pairs) == pytest.approx(fn(joint))
    assert dv.conditional_entropy_bits(iter(pairs)) == pytest.approx(0.5)  # a generator is read once


@pytest.mark.parametrize("seed", range(5))
def test_identities_on_random_counts(seed):
    rng = random.Random(seed)
    joint = {(x, y): rng.randint(0, 9) for x in range(rng.randint(1, 6)) for y in "pqrs"[: rng.randint(1, 4)]}
    joint[(0, "p")] = 1  # never empty
    h_xy = dv.joint_entropy_bits(joint)
    h_x = dv.entropy_bits(_marginal(joint, 0))
    h_y = dv.entropy_bits(_marginal(joint, 1))
    h_x_given_y = dv.conditional_entropy_bits(joint)
    h_y_given_x = dv.conditional_entropy_bits({(y, x): c for (x, y), c in joint.items()})
    assert h_x_given_y == pytest.approx(h_xy - h_y)
    assert h_y_given_x == pytest.approx(h_xy - h_x)
    mi = dv.mutual_information_bits(joint)
    assert mi == pytest.approx(h_x - h_x_given_y, abs=1e-12)
    assert mi == pytest.approx(h_y - h_y_given_x, abs=1e-12)  # symmetric
    assert 0 <= h_x_given_y <= h_x + 1e-12


def _marginal(joint, axis):
    out = Counter()
    for key, c in joint.items():
        out[key[axis]] += c
    return out


def test_zero_when_the_field_is_a_function_of_its_parent():
    names = {"Ana": "f", "Eva": "f", "Bo": "m", "Cy": "m", "Dan": "m"}
    rng = random.Random(0)
    rows = [(name, names[name]) for name in rng.choices(list(names), k=200)]  # (field, parent)
    assert dv.conditional_entropy_bits([(g, n) for n, g in rows]) == 0.0  # H(gender | name)
    assert dv.conditional_entropy_bits(rows) > 0.5  # H(name | gender): several names per gender
    assert dv.mutual_information_bits(rows) == pytest.approx(dv.entropy_bits(Counter(g for _, g in rows)))


def test_h_x_when_independent():
    # exactly independent counts (the product of their marginals): H(X|Y) = H(X), I = 0
    px, py = {"a": 1, "b": 2, "c": 5}, {"u": 3, "v": 1}
    joint = {(x, y): cx * cy for x, cx in px.items() for y, cy in py.items()}
    assert dv.conditional_entropy_bits(joint) == pytest.approx(dv.entropy_bits(px))
    assert dv.mutual_information_bits(joint) == pytest.approx(0.0, abs=1e-12)
    # sampled independently: equal in expectation, up to the plug-in bias of ~(K-1)(M-1)/(2N ln 2)
    rng = random.Random(1)
    xs = rng.choices("abcd", k=20_000)
    ys = rng.choices("uvw", k=20_000)
    h_x = dv.entropy_bits(Counter(xs))
    h = dv.conditional_entropy_bits(zip(xs, ys))
    assert h <= h_x and h == pytest.approx(h_x, abs=0.005)


def test_shuffled_baseline():
    rng = random.Random(2)
    xs = rng.choices("abcd", k=2000)
    ys = [x.upper() for x in xs]  # the parent determines the field
    assert dv.conditional_entropy_bits(zip(xs, ys)) == 0.0
    shuffled = dv.shuffled_conditional_entropy_bits(xs, ys)
    assert shuffled == pytest.approx(dv.entropy_bits(Counter(xs)), abs=0.02)  # independent after shuffling
    assert shuffled == dv.shuffled_conditional_entropy_bits(xs, ys)  # seeded
    # independent data: the baseline and the estimate agree
    zs = rng.choices("uvw", k=2000)
    assert dv.shuffled_conditional_entropy_bits(xs, zs) == pytest.approx(
        dv.conditional_entropy_bits(zip(xs, zs)), abs=0.02)
    # one record per parent value: the plug-in estimate is 0 whatever the data, and so is the baseline
    unique_parents = list(range(len(xs)))
    assert dv.conditional_entropy_bits(zip(xs, unique_parents)) == 0.0
    assert dv.shuffled_conditional_entropy_bits(xs, unique_parents) == 0.0


def test_degenerate_input():
    for fn in (dv.conditional_entropy_bits, dv.mutual_information_bits, dv.joint_entropy_bits):
        assert fn({}) == 0.0 and fn([]) == 0.0
    assert dv.shuffled_conditional_entropy_bits([], []) == 0.0
    with pytest.raises(ValueError):
        dv.conditional_entropy_bits({("a", "b"): -1})
    with pytest.raises(ValueError):
        dv.shuffled_conditional_entropy_bits(["a"], [])
    with pytest.raises(ValueError):
        dv.shuffled_conditional_entropy_bits(["a"], ["b"], rounds=0)


# ---------------------------------------------------------------- report.json

FEMALE, MALE = ["Ana", "Eva", "Ida", "Uma"], ["Bo", "Cy", "Dan", "Eli"]


def people(coherent: bool, n: int = 400, seed: int = 0) -> pl.DataFrame:
    """gender and first_name; coherent: names by gender, else any name for anyone."""
    rng = random.Random(seed)
    genders = rng.choices(["female", "male"], k=n)
    names = [rng.choice((FEMALE if g == "female" else MALE) if coherent else FEMALE + MALE) for g in genders]
    return pl.DataFrame({"gender": genders, "first_name": names})


PEOPLE_FIELDS = [FieldInfo("gender", "choice", ("female", "male")),
                 FieldInfo("first_name", "choice", tuple(FEMALE + MALE), parents=("gender",))]


def report_of(df: pl.DataFrame, fields=PEOPLE_FIELDS) -> dict:
    return build_report(df, fields, recipe=None, n_requested=df.height, n_generated=df.height, removed={})


def test_first_name_determines_gender():
    r = report_of(people(coherent=True))
    c = r["fields"]["first_name"]["coherence"]
    assert set(c) == COHERENCE_KEYS
    assert (c["parents"], c["conditioned_on"], c["estimator"]) == (["gender"], ["gender"], "plug-in")
    assert (c["n"], c["n_parent_values"]) == (400, 2)
    assert c["parent_given_field_bits"] == {"gender": 0.0}
    assert c["entropy_bits"] == pytest.approx(r["fields"]["first_name"]["entropy_bits"])
    assert c["conditional_entropy_bits"] == pytest.approx(2.0, abs=0.02)  # 4 names per gender
    assert c["mutual_information_bits"] == pytest.approx(c["entropy_bits"] - c["conditional_entropy_bits"])
    assert c["mutual_information_bits"] == pytest.approx(r["fields"]["gender"]["entropy_bits"])
    assert c["conditional_entropy_shuffled_bits"] == pytest.approx(3.0, abs=0.05)  # 8 names, gender ignored
    assert "coherence" not in r["fields"]["gender"]  # no parents
    json.dumps(r, allow_nan=False)


def test_gender_determines_nothing():
    c = report_of(people(coherent=False))["fields"]["first_name"]["coherence"]
    assert c["parent_given_field_bits"]["gender"] == pytest.approx(1.0, abs=0.05)
    assert c["mutual_information_bits"] < 0.05
    assert c["conditional_entropy_bits"] == pytest.approx(c["entropy_bits"], abs=0.05)
    assert c["conditional_entropy_bits"] == pytest.approx(c["conditional_entropy_shuffled_bits"], abs=0.03)


def test_only_rows_with_valid_field_and_parents_count():
    df = pl.DataFrame({
        "gender": ["female", "male", None, "female", "robot", "male"],
        "first_name": ["Ana", "Bo", "Eva", "Zed", "Ida", "Cy"],  # Zed is off the option list
        "year": [1990, None, 1980, 1970, 1960, 1950],
    })
    fields = [*PEOPLE_FIELDS, FieldInfo("year", "integer", parents=("first_name", "gender"))]
    r = report_of(df, fields)
    c = r["fields"]["first_name"]["coherence"]
    assert (c["n"], c["n_parent_values"], c["entropy_bits"]) == (3, 2, pytest.approx(math.log2(3)))
    assert c["conditional_entropy_bits"] == pytest.approx(2 / 3)  # female: Ana (1 of 2 rows), male: Bo, Cy
    y = r["fields"]["year"]["coherence"]
    assert (y["parents"], y["n"], y["n_parent_values"]) == (["first_name", "gender"], 2, 2)  # Ana 1990, Cy 1950
    assert set(y["parent_given_field_bits"]) == {"first_name", "gender"}


def test_text_fields_list_parents_without_entropies():
    bios = [f"{n} was born long ago and lived a quiet life in a town." for n in people(True, n=6)["first_name"]]
    df = people(True, n=6).with_columns(pl.Series("bio", bios), pl.Series("tag", list("xyxyxy")))
    fields = [*PEOPLE_FIELDS, FieldInfo("bio", "text", parents=("first_name", "gender")),
              FieldInfo("tag", "unknown", parents=("bio",)), FieldInfo("mixed", "unknown", parents=("bio", "gender"))]
    df = df.with_columns(pl.col("tag").alias("mixed"))
    r = report_of(df, fields)
    for name, parents, used in (("bio", ["first_name", "gender"], []), ("tag", ["bio"], [])):
        c = r["fields"][name]["coherence"]
        assert set(c) == COHERENCE_KEYS
        assert (c["parents"], c["conditioned_on"]) == (parents, used)
        assert all(c[k] is None for k in COHERENCE_KEYS - {"parents", "conditioned_on", "estimator"})
    mixed = r["fields"]["mixed"]["coherence"]  # a text parent is listed but not conditioned on
    assert (mixed["conditioned_on"], list(mixed["parent_given_field_bits"])) == (["gender"], ["gender"])


def test_parents_must_be_other_reported_fields():
    for parents in (("nope",), ("first_name",)):
        fields = [PEOPLE_FIELDS[0], FieldInfo("first_name", "unknown", parents=parents)]
        with pytest.raises(ValueError, match="parent"):
            report_of(people(True, n=4), fields)


def test_empty_frame_has_null_coherence():
    df = pl.DataFrame({"gender": pl.Series([], dtype=pl.String), "first_name": pl.Series([], dtype=pl.String)})
    c = report_of(df)["fields"]["first_name"]["coherence"]
    assert c["n"] == 0 and c["conditional_entropy_bits"] is None and c["parent_given_field_bits"] is None


# ---------------------------------------------------------------- report.md

def test_markdown_coherence_section(tmp_path):
    r = report_of(people(coherent=True))
    c = r["fields"]["first_name"]["coherence"]
    write_report(r, tmp_path)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    section = md[md.index("## Coherence"):md.index("## Top values")]
    assert "| field | parents | H(field) | H(field\\|parents) (shuffled) | H(parent\\|field) |" in section
    row = next(line for line in section.splitlines() if line.startswith("| first_name |"))
    assert row == (f"| first_name | gender | {c['entropy_bits']:.3f} | {c['conditional_entropy_bits']:.3f} "
                   f"({c['conditional_entropy_shuffled_bits']:.3f}) | gender 0.000 | 400 / 2 |")
    assert "biased low" in section


def test_markdown_without_parents_has_no_coherence_section(tmp_path):
    write_report(report_of(people(True), [FieldInfo("gender", "choice", ("female", "male"))]), tmp_path)
    assert "## Coherence" not in (tmp_path / "report.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------- existing datasets and the CLI

@pytest.fixture
def people_file(tmp_path):
    path = tmp_path / "people.parquet"
    people(coherent=True).with_columns(pl.Series("year", list(range(400)))).write_parquet(path)
    return path


def test_report_dataset_given(people_file, tmp_path):
    r = report_dataset(people_file, tmp_path / "r", given={"first_name": ["gender"], "year": ["gender", "first_name"]})
    assert r["fields"]["first_name"]["coherence"]["parent_given_field_bits"] == {"gender": 0.0}
    assert r["fields"]["year"]["coherence"]["parents"] == ["gender", "first_name"]
    assert "coherence" not in r["fields"]["gender"]
    with pytest.raises(SynthgenError, match="not among the selected fields: gender"):
        report_dataset(people_file, tmp_path / "s", fields=["first_name"], given={"first_name": ["gender"]})
    with pytest.raises(SynthgenError, match="own parent"):
        report_dataset(people_file, tmp_path / "t", given={"gender": ["gender"]})


def test_cli_given(people_file, tmp_path, capsys):
    out_dir = tmp_path / "rep"
    code = main(["report", str(people_file), "-o", str(out_dir), "--given", "first_name=gender",
                 "--given", "year = gender, first_name"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rep = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    assert rep["fields"]["first_name"]["coherence"]["parent_given_field_bits"] == {"gender": 0.0}
    assert rep["fields"]["year"]["coherence"]["parents"] == ["gender", "first_name"]
    assert "H(gender|first_name) 0.00" in out
    assert "## Coherence" in (out_dir / "report.md").read_text(encoding="utf-8")


def test_cli_given_unknown_column_is_one_line(people_file, tmp_path, capsys):
    code = main(["report", str(people_file), "-o", str(tmp_path / "rep"), "--given", "first_name=gender,country"])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "country" in lines[0] and str(people_file) in lines[0] and "available columns" in lines[0]
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("value", ["first_name", "=gender", "first_name=", "first_name= , "])
def test_cli_given_malformed_is_a_usage_error(people_file, tmp_path, capsys, value):
    code = main(["report", str(people_file), "-o", str(tmp_path / "rep"), "--given", value])
    out, err = capsys.readouterr()
    assert code == 2 and "--given" in err and "Traceback" not in out + err
    assert not (tmp_path / "rep").exists()


def test_cli_given_twice_is_a_usage_error(people_file, tmp_path, capsys):
    code = main(["report", str(people_file), "--given", "first_name=gender", "--given", "first_name=year"])
    assert code == 2 and "given twice" in capsys.readouterr().err


# ---------------------------------------------------------------- a generate run

RECIPE = """
name: people
seed: 3
count: 24
batch_size: 8
fields:
  color:
    kind: sample
    options: [red, green, blue]
  name:
    kind: choice
    template_inline: "Give me a name for someone who likes {{ color }}."
    options: [Anna, Bob, Carla, David]
  age:
    kind: integer
    template_inline: "How old is {{ name }}, who likes {{ color }}? Reply with only the number."
    min: 18
    max: 30
  bio:
    kind: text
    template_inline: "Write about {{ name }}, {{ age }}."
    max_tokens: 8
    min_chars: 1
    retries: 1
"""


def test_generate_reports_coherence_for_fields_with_template_references(tmp_path, tiny_engine):
    path = tmp_path / "people.yaml"
    path.write_text(RECIPE, encoding="utf-8")
    recipe = load_recipe(path)
    assert {f.name: f.parents for f in field_infos(recipe)} == {
        "color": (), "name": ("color",), "age": ("color", "name"), "bio": ("name", "age")}
    result = generate(recipe, tmp_path / "out", executor=LocalExecutor(engine=tiny_engine))
    rep = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert rep == result.report
    fields = rep["fields"]
    assert "coherence" not in fields["color"]
    for name, parents in (("name", ["color"]), ("age", ["color", "name"])):
        c = fields[name]["coherence"]
        assert set(c) == COHERENCE_KEYS and c["parents"] == c["conditioned_on"] == parents
        assert c["n"] == rep["n_kept"] and c["entropy_bits"] == pytest.approx(fields[name]["entropy_bits"])
        assert 0 <= c["conditional_entropy_bits"] <= c["entropy_bits"] + 1e-9
        assert set(c["parent_given_field_bits"]) == set(parents)
    assert fields["bio"]["coherence"]["parents"] == ["name", "age"]
    assert fields["bio"]["coherence"]["conditional_entropy_bits"] is None
    assert "## Coherence" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------- docs/diversity.md

def test_documented_worked_values():
    by_gender = {"f": ["Ana", "Eva", "Ida", "Uma"], "m": ["Bo", "Cy", "Dan", "Eli"]}
    everyone = by_gender["f"] + by_gender["m"]
    coherent = {(name, g): 1 for g, names in by_gender.items() for name in names}
    incoherent = {(name, g): 1 for g in by_gender for name in everyone}
    for joint, (h_given, mi, h_gender_given_name) in ((coherent, (2, 1, 0)), (incoherent, (3, 0, 1))):
        assert dv.entropy_bits(_marginal(joint, 0)) == pytest.approx(3)
        assert dv.conditional_entropy_bits(joint) == pytest.approx(h_given)
        assert dv.mutual_information_bits(joint) == pytest.approx(mi, abs=1e-12)
        assert dv.conditional_entropy_bits({(g, n): c for (n, g), c in joint.items()}) == pytest.approx(
            h_gender_given_name, abs=1e-12)


def test_documented_bias_of_independent_fields():
    # E[I] ≈ (K-1)(M-1)/(2N ln 2) bits for independent fields; E[H(X|Y)] ≈ H(X) - M(K-1)/(2N ln 2)
    k, m, n, runs = 4, 3, 500, 300
    rng = random.Random(5)
    mis, hs = [], []
    for _ in range(runs):
        pairs = list(zip(rng.choices(range(k), k=n), rng.choices(range(m), k=n)))
        mis.append(dv.mutual_information_bits(pairs))
        hs.append(dv.conditional_entropy_bits(pairs))
    assert sum(mis) / runs == pytest.approx((k - 1) * (m - 1) / (2 * n * math.log(2)), rel=0.2)
    assert sum(hs) / runs == pytest.approx(2 - m * (k - 1) / (2 * n * math.log(2)), abs=0.003)
