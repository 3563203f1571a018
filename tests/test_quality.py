from __future__ import annotations

import pytest

from benchmarks.quality import biography_check, name_fits_gender, name_gender_rate, occupation_stem, quality_rate


def rec(text, first="Emily", last="Stone", occupation="teacher"):
    return {"first_name": first, "last_name": last, "occupation": occupation, "biography": text}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (rec("Emily Stone was a teacher in Leeds."), True),
        (rec("EMILY STONE taught for years."), True),                       # case-insensitive
        (rec("Emily's students adored Ms. Stone."), True),                  # possessive, name split
        (rec("Emily was a teacher in Leeds."), False),                      # last name missing
        (rec("Stone was a teacher."), False),                               # first name missing
        (rec("Emilya Stoner was a teacher."), False),                       # only inside longer words
        (rec("Ann Lee sang.", first="Ann", last="Lee"), True),
        (rec("Anna Leeds sang.", first="Ann", last="Lee"), False),
        (rec("Piet van  den\nBerg sailed.", first="Piet", last="van den Berg"), True),  # whitespace runs
        (rec("Piet van Berg sailed.", first="Piet", last="van den Berg"), False),
        (rec("Liam O'Brien farmed.", first="Liam", last="O'Brien"), True),   # regex chars escaped
        (rec("Liam OBrien farmed.", first="Liam", last="O'Brien"), False),
        (rec(None), False),
        (rec(""), False),
    ],
)
def test_mentions_name(record, expected):
    assert biography_check(record)["mentions_name"] is expected


@pytest.mark.parametrize(
    ("occupation", "text", "fits", "exact"),
    [
        ("teacher", "She was a teacher.", True, True),
        ("teacher", "She spent her life teaching children.", True, False),     # stem "teach"
        ("teacher", "Teachers loved her.", True, True),                      # plural
        ("teacher", "She was a nurse.", False, False),
        ("photographer", "A pioneer of street photography.", True, False),
        ("accountant", "He ran an accounting firm.", True, False),
        ("biologist", "She studied biology.", True, False),
        ("software engineer", "He became a civil engineer.", True, False),  # head noun is lenient
        ("software engineer", "A software engineer at heart.", True, True),
        ("software engineer", "He wrote software.", False, False),         # head noun missing
        ("nurse", "She worked as a nurse.", True, True),
        ("nurse", "She nursed the sick.", False, False),                    # "nurs" < 5 letters: no stem
        ("taxi driver", "He loved driving.", False, False),                # "driv" < 5 letters: no stem
        ("actor", "He acted in films.", False, False),                      # "act" < 5 letters: no stem
        ("physician", "She taught physics.", True, False),                  # known false positive
        ("air traffic controller", "an air  traffic controller since 1990", True, True),
        ("teacher", "He loved the outdoors and never taught.", False, False),
    ],
)
def test_fits_occupation(occupation, text, fits, exact):
    result = biography_check(rec(text, occupation=occupation))
    assert result["fits_occupation"] is fits
    assert result["occupation_exact"] is exact


@pytest.mark.parametrize(
    ("occupation", "stem"),
    [("teacher", "teach"), ("photographer", "photograph"), ("pianist", None), ("economist", "econom"),
     ("accountant", "account"), ("nurse", None), ("driver", None), ("software engineer", "engine"),
     ("librarian", "librar"), ("", None)],
)
def test_occupation_stem(occupation, stem):
    assert occupation_stem(occupation) == stem


def test_ok_needs_both_checks_and_rate_counts_them():
    records = [
        rec("Emily Stone was a teacher."),        # both
        rec("Emily Stone was a nurse."),          # name only
        rec("Emily taught as a teacher."),        # occupation only
        rec(None),                                # nothing
    ]
    assert [biography_check(r)["ok"] for r in records] == [True, False, False, False]
    rate = quality_rate(records)
    assert rate["n"] == 4
    assert rate["mentions_name"] == pytest.approx(0.5)
    assert rate["fits_occupation"] == pytest.approx(0.5)
    assert rate["ok"] == pytest.approx(0.25)


def test_rate_of_nothing_is_undefined():
    assert quality_rate([]) == {"n": 0, "mentions_name": None, "fits_occupation": None,
                                "occupation_exact": None, "ok": None}


NAMES = {"female": ["Emily", "Ada"], "male": ["James"]}


@pytest.mark.parametrize(
    ("gender", "first", "expected"),
    [
        ("female", "Emily", True),
        ("Female", "emily", True),        # case-insensitive
        ("male", "Emily", False),
        ("female", "James", False),
        ("male", "James", True),
        ("non-binary", "Emily", None),     # no list for that gender: undecided
        ("female", "Zork", None),          # name in no list: undecided
        (None, "Emily", None),
    ],
)
def test_name_fits_gender(gender, first, expected):
    assert name_fits_gender({"gender": gender, "first_name": first}, NAMES) is expected


def test_name_gender_rate_counts_decided_records_only():
    records = [{"gender": "female", "first_name": "Ada"}, {"gender": "male", "first_name": "Ada"},
               {"gender": "non-binary", "first_name": "Ada"}, {"gender": "male", "first_name": "James"}]
    assert name_gender_rate(records, NAMES) == {"n": 3, "rate": pytest.approx(2 / 3)}
    assert name_gender_rate([], NAMES) == {"n": 0, "rate": None}
