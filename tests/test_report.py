from __future__ import annotations

import json
import math

import datasets
import polars as pl
import pytest

from synthgen.dataset_report import load_dataset_table, report_dataset
from synthgen.errors import SynthgenError
from synthgen.report import FieldInfo, build_report
from synthgen.report_files import write_report

CONTRACT_FIELD_KEYS = {
    "unique", "entropy_bits", "normalized_entropy", "top1_value", "top1_share", "top_values", "valid_rate",
    "k", "coverage", "expected_unique_ideal", "coverage_ratio", "ideal_entropy_bits", "gap_entropy_bits",
    "kl_to_target", "singleton_share",
}
TEXT_KEYS = {"distinct_1", "distinct_2", "compression_ratio", "mean_words"}
BIO_A = "Anna was born in a small town and worked as a carpenter for many years."
BIO_B = "Bob grew up by the sea, studied physics and later taught at a school."


def small_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "color": ["red", "red", "blue", "green", None, "purple"],
            "n": [1, 2, 2, 3, 3, 3],
            "city": ["Oslo", "Oslo", "Rome", None, "Lima", "Oslo"],
            "bio": [BIO_A, BIO_A, BIO_B, BIO_B, BIO_A, None],
        }
    )


FIELDS = [
    FieldInfo("color", "choice", ("red", "blue", "green")),
    FieldInfo("n", "integer", ("1", "2", "3", "4")),
    FieldInfo("city", "sample"),
    FieldInfo("bio", "text"),
]


def make_report(**kw):
    args = dict(recipe="demo", n_requested=8, n_generated=7, removed={"invalid": 1}, timing={"seconds": 2.0})
    args.update(kw)
    return build_report(small_frame(), FIELDS, **args)


def test_report_top_level_contract():
    r = make_report()
    assert set(r) >= {"recipe", "n_requested", "n_generated", "n_kept", "removed", "fields", "records", "timing"}
    assert (r["recipe"], r["n_requested"], r["n_generated"], r["n_kept"]) == ("demo", 8, 7, 6)
    assert r["removed"] == {"invalid": 1, "exact_duplicates": 0, "near_duplicates": 0}
    assert r["timing"] == {"seconds": 2.0, "records_per_second": 3.5}
    assert list(r["fields"]) == ["color", "n", "city", "bio"]
    for f in r["fields"].values():
        assert set(f) >= CONTRACT_FIELD_KEYS
    assert set(r["fields"]["bio"]) >= TEXT_KEYS
    json.dumps(r, allow_nan=False)


def test_choice_field_counts_only_valid_kept_values():
    f = make_report()["fields"]["color"]
    # valid values: red, red, blue, green (null and the off-list "purple" are not values of the field)
    assert f["unique"] == 3 and f["k"] == 3 and f["coverage"] == 1.0
    assert (f["top1_value"], f["top1_share"]) == ("red", 0.5)
    assert f["top_values"] == [
        {"value": "red", "count": 2, "share": 0.5},
        {"value": "blue", "count": 1, "share": 0.25},
        {"value": "green", "count": 1, "share": 0.25},
    ]
    assert f["valid_rate"] == pytest.approx(4 / 6)
    assert f["entropy_bits"] == pytest.approx(1.5)
    assert f["normalized_entropy"] == pytest.approx(1.5 / math.log2(3))
    kl = 0.5 * math.log(0.5 * 3) + 2 * 0.25 * math.log(0.25 * 3)
    assert f["kl_to_target"] == pytest.approx(kl)
    ideal_unique = 3 * (1 - (2 / 3) ** 4)
    assert f["expected_unique_ideal"] == pytest.approx(ideal_unique)
    assert f["coverage_ratio"] == pytest.approx(3 / ideal_unique)
    assert f["gap_entropy_bits"] == pytest.approx(f["ideal_entropy_bits"] - 1.5)
    assert f["singleton_share"] == pytest.approx(0.5)


def test_integer_field_matches_string_options():
    f = make_report()["fields"]["n"]
    assert (f["unique"], f["k"], f["top1_value"], f["top1_share"]) == (3, 4, 3, 0.5)
    assert f["coverage"] == 0.75 and f["valid_rate"] == 1.0
    kl = (1 / 6) * math.log(4 / 6) + (2 / 6) * math.log(8 / 6) + 0.5 * math.log(2)
    assert f["kl_to_target"] == pytest.approx(kl)
    assert f["ideal_kl"] == pytest.approx(3 / 12)


def test_open_field_has_no_option_metrics():
    f = make_report()["fields"]["city"]
    assert (f["unique"], f["top1_value"], f["top1_share"]) == (3, "Oslo", 0.6)
    assert f["valid_rate"] == pytest.approx(5 / 6)  # non-null share of kept rows
    for key in ("normalized_entropy", "k", "coverage", "expected_unique_ideal", "kl_to_target", "gap_entropy_bits"):
        assert f[key] is None
    assert f["singleton_share"] == pytest.approx(2 / 5)


def test_text_field_metrics():
    f = make_report()["fields"]["bio"]
    texts = [BIO_A, BIO_A, BIO_B, BIO_B, BIO_A]
    assert f["unique"] == 2
    assert f["mean_words"] == pytest.approx(sum(len(t.split()) for t in texts) / 5)
    words = [w for t in texts for w in t.split()]
    assert f["distinct_1"] == pytest.approx(len(set(words)) / len(words))
    assert f["compression_ratio"] > 1


def test_field_stats_give_valid_rate_and_records_block():
    r = make_report(field_stats={"color": {"drawn": 10, "valid": 7}})
    assert r["fields"]["color"]["valid_rate"] == pytest.approx(0.7)
    assert r["fields"]["n"]["valid_rate"] == 1.0  # no stats: falls back to the kept rows
    rec = r["records"]
    assert rec["unique_share"] == 1.0
    assert rec["tuple_fields"] == ["color", "n", "city"]
    assert rec["unique_tuples"] == 6


def test_weighted_target_and_infinite_kl_become_json_safe():
    df = pl.DataFrame({"g": ["a", "a", "b", "c"]})
    weighted = FieldInfo("g", "choice", ("a", "b", "c"), (2.0, 1.0, 1.0))
    f = build_report(df, [weighted], recipe=None, n_requested=4, n_generated=4, removed={})["fields"]["g"]
    assert f["kl_to_target"] == pytest.approx(0.0, abs=1e-12)
    assert f["top_values"][0]["target_share"] == 0.5
    zero = FieldInfo("g", "choice", ("a", "b", "c"), (1.0, 1.0, 0.0))
    r = build_report(df, [zero], recipe=None, n_requested=4, n_generated=4, removed={})
    assert r["fields"]["g"]["kl_to_target"] is None  # inf: "c" has no target mass
    json.dumps(r, allow_nan=False)


def test_empty_kept_frame():
    df = pl.DataFrame({"g": pl.Series([], dtype=pl.String)})
    r = build_report(df, [FieldInfo("g", "choice", ("a", "b"))], recipe=None, n_requested=3, n_generated=3,
                     removed={"invalid": 3})
    f = r["fields"]["g"]
    assert (r["n_kept"], f["unique"], f["top1_value"], f["valid_rate"], f["kl_to_target"]) == (0, 0, None, None, None)
    json.dumps(r, allow_nan=False)


def test_write_report_files(tmp_path):
    r = make_report()
    paths = write_report(r, tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == ["plot_city.png", "plot_color.png", "plot_n.png", "report.json", "report.md"]
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == r
    md = (tmp_path / "out" / "report.md").read_text()
    for text in ("6 kept", "| color | choice | 3 / 2.4", "distinct-1", "plot_color.png", "## Records"):
        assert text in md
    for p in paths:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_plot_with_glyphs_the_font_lacks(tmp_path):
    df = pl.DataFrame({"name": ["山田", "山田", "Zoë", "🙂"]})
    r = build_report(df, [FieldInfo("name", "unknown")], recipe=None, n_requested=4, n_generated=4, removed={})
    assert (tmp_path / "plot_name.png") in write_report(r, tmp_path)


# ---------------------------------------------------------------- loading existing datasets

ROWS = {"first_name": ["Ana", "Bo", "Ana"], "year": [1990, 1985, 1990]}


def test_load_parquet_jsonl_json_round_trip(tmp_path):
    df = pl.DataFrame(ROWS)
    df.write_parquet(tmp_path / "d.parquet")
    df.write_ndjson(tmp_path / "d.jsonl")
    (tmp_path / "d.json").write_text(json.dumps(df.to_dicts()))
    for name in ("d.parquet", "d.jsonl", "d.json"):
        assert load_dataset_table(tmp_path / name).equals(df), name


def test_load_hf_directories(tmp_path):
    ds = datasets.Dataset.from_dict(ROWS)
    ds.save_to_disk(str(tmp_path / "hf"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    for sub in ("hf", "dd"):
        assert load_dataset_table(tmp_path / sub).to_dict(as_series=False) == ROWS


def test_load_generate_output_dir(tmp_path):
    pl.DataFrame(ROWS).write_parquet(tmp_path / "records.parquet")
    assert load_dataset_table(tmp_path).height == 3


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _empty_parquet(d):
    pl.DataFrame({"a": pl.Series([], dtype=pl.Int64)}).write_parquet(d / "e.parquet")
    return d / "e.parquet"


def _empty_dir(d):
    (d / "nothing").mkdir()
    return d / "nothing"


def _broken_hf(d):
    (d / "broken_hf").mkdir()
    (d / "broken_hf" / "state.json").write_text("{not json")
    return d / "broken_hf"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing.parquet", "no such file"),
        (lambda d: _write(d / "data.csv", b"a,b\n1,2\n"), "unsupported file type"),
        (lambda d: _write(d / "bad.parquet", b"not a parquet file at all"), "cannot read as parquet"),
        (lambda d: _write(d / "bad.jsonl", b'{"a": 1}\n{oops\n'), "cannot read as JSON lines"),
        (lambda d: _write(d / "empty.jsonl", b"\n"), "empty"),
        (_empty_parquet, "empty"),
        (_empty_dir, "holds no dataset"),
        (_broken_hf, "cannot load as a datasets directory"),
    ],
)
def test_load_errors_name_the_path(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(SynthgenError, match=match) as err:
        load_dataset_table(path)
    assert str(path) in str(err.value)


def test_report_dataset_defaults_and_field_selection(tmp_path):
    bios = [f"Person {i} was born in town {i % 3} and later became a well known local baker." for i in range(6)]
    df = pl.DataFrame({"name": ["Ana", "Bo", "Ana", "Cy", "Bo", "Ana"], "year": [1, 2, 3, 1, 2, 3], "bio": bios})
    df.write_parquet(tmp_path / "data.parquet")
    r = report_dataset(tmp_path / "data.parquet")
    assert (r["n_requested"], r["n_generated"], r["n_kept"]) == (6, 6, 6)
    assert r["removed"] == {"invalid": 0, "exact_duplicates": 0, "near_duplicates": 0}
    kinds = {n: f["kind"] for n, f in r["fields"].items()}
    assert kinds == {"name": "unknown", "year": "integer", "bio": "text"}
    assert r["fields"]["name"]["normalized_entropy"] is None
    assert (r["fields"]["name"]["top1_value"], r["fields"]["name"]["top1_share"]) == ("Ana", 0.5)
    assert (tmp_path / "report" / "report.json").is_file()

    r2 = report_dataset(tmp_path / "data.parquet", tmp_path / "out", fields=["year"])
    assert list(r2["fields"]) == ["year"]
    assert (tmp_path / "out" / "plot_year.png").is_file()


def test_report_dataset_unknown_field(tmp_path):
    path = tmp_path / "data.jsonl"
    pl.DataFrame(ROWS).write_ndjson(path)
    with pytest.raises(SynthgenError, match="available columns: first_name, year") as err:
        report_dataset(path, fields=["first_name", "job"])
    assert str(path) in str(err.value) and "job" in str(err.value)
