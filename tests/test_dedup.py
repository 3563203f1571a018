from __future__ import annotations

import polars as pl
import pytest

from synthgen.dedup import DedupResult, dedup, normalize_text, normalized

VARIANTS = [
    ("ﬁsh", "fish"),  # NFKC ligature
    ("  Anna\t\tSmith \n", "anna smith"),
    ("Ａｎｎａ", "anna"),  # full-width letters
    ("Café", "café"),
    ("Cafe\u0301", "café"),  # combining accent composes under NFKC
    ("a\u00a0b", "a b"),  # no-break space
]


@pytest.mark.parametrize(("raw", "expected"), VARIANTS)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_polars_expression_matches_python_normalisation():
    raw = [r for r, _ in VARIANTS]
    out = pl.DataFrame({"s": raw}).select(normalized("s"))["s"].to_list()
    assert out == [normalize_text(r) for r in raw]
    assert normalize_text("Straße") == "strasse"  # casefold; polars only lower-cases


def _long(words: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(words))


def test_exact_duplicates_collapse_case_whitespace_and_nfkc():
    df = pl.DataFrame(
        {
            "name": ["Anna  Smith", "Bob", "anna smith", "ﬁsh", "ANNA SMITH", "fish", None, None],
            "age": [30, 40, 30, 5, 31, 5, 1, 1],
        }
    )
    res = dedup(df, ["name", "age"])
    assert isinstance(res, DedupResult)
    assert res.exact_duplicates == 3  # "anna smith"/30, "fish"/5, the second null/1
    assert res.near_duplicates == 0
    assert res.df["name"].to_list() == ["Anna  Smith", "Bob", "ﬁsh", "ANNA SMITH", None]  # first kept, order stable
    assert res.df["age"].to_list() == [30, 40, 5, 31, 1]


def test_empty_keys_use_all_columns():
    df = pl.DataFrame({"a": ["X", "x", "x"], "b": [1, 1, 2]})
    res = dedup(df, [])
    assert res.exact_duplicates == 1
    assert res.df.rows() == [("X", 1), ("x", 2)]


def test_near_duplicate_long_text_is_dropped_and_different_text_stays():
    base = _long(60)
    one_word_changed = base.replace("w30", "changed")
    different = _long(60, prefix="other")
    df = pl.DataFrame({"id": [1, 2, 3, 4], "bio": [base, one_word_changed, different, base.upper()]})
    res = dedup(df, ["id"], near_dup_fields=["bio"])
    assert res.exact_duplicates == 0
    assert res.near_duplicates == 2  # the edited copy and the upper-cased copy (normalised before hashing)
    assert res.df["id"].to_list() == [1, 3]
    again = dedup(df, ["id"], near_dup_fields=["bio"])  # seeded: same answer every run
    assert again.df.equals(res.df)


def test_near_dup_over_several_fields_and_short_texts_are_skipped():
    short = "too short to compare"
    df = pl.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "title": ["A", "A", None, None],
            "body": [_long(40), _long(40), short, short],
        }
    )
    res = dedup(df, ["id"], near_dup_fields=["title", "body"])
    assert res.near_duplicates == 1
    assert res.df["id"].to_list() == [1, 3, 4]


def test_exact_then_near_counts_add_up():
    df = pl.DataFrame({"k": ["a", "A", "b", "c"], "t": [_long(30), _long(30), _long(30), _long(30, "z")]})
    res = dedup(df, ["k"], near_dup_fields=["t"])
    assert (res.exact_duplicates, res.near_duplicates) == (1, 1)
    assert res.df["k"].to_list() == ["a", "c"]
    assert res.df.height == df.height - res.exact_duplicates - res.near_duplicates


def test_empty_frame_and_bad_arguments():
    empty = pl.DataFrame({"a": pl.Series([], dtype=pl.String)})
    res = dedup(empty, ["a"], near_dup_fields=["a"])
    assert (res.df.height, res.exact_duplicates, res.near_duplicates) == (0, 0, 0)
    with pytest.raises(KeyError, match="nope"):
        dedup(empty, ["nope"])
    with pytest.raises(ValueError):
        dedup(empty, ["a"], threshold=0)
