"""The coherence benchmark's measures (benchmarks/coherence.py), on hand-made records."""

from __future__ import annotations

import polars as pl
import pytest

from benchmarks.coherence import agreement, census_genders, flat_records
from synthgen.recipe import load_recipe


def test_census_genders_picks_the_higher_ranked_list():
    genders = census_genders()
    assert genders["mary"] == "female"
    assert genders["james"] == "male"
    assert "zzyzx" not in genders


def test_agreement_counts_only_names_the_census_knows():
    df = pl.DataFrame({
        "gender": ["female", "male", "female", "non-binary"],
        "birth_country": ["United States", "United States", "Japan", "United States"],
        "first_name": ["Mary", "Mary", "Yui", "James"],
        "last_name": ["Smith", "Smith", "Zzyzx", "Smith"],
    })
    row = agreement(df)
    assert row["gender_judged"] == 2  # Yui is unknown, non-binary is never judged
    assert row["gender_agreement"] == pytest.approx(0.5)
    assert row["gender_judged_share"] == pytest.approx(2 / 3)
    assert row["countries"] == 2
    assert 0 < row["last_name_in_country_lists"] < 1  # Zzyzx is in no list


def test_flat_records_ignore_the_conditions():
    recipe = load_recipe("recipes/biography.yaml")
    df, infos = flat_records(recipe, 400, seed=0)
    assert df.height == 400 and [i.name for i in infos] == list(df.columns)
    row = agreement(df)
    assert row["first_name_in_country_lists"] < 0.2  # a flat list does not know the country
    assert set(df["birth_year"].to_list()) <= set(range(recipe.fields["birth_year"].min,
                                                         recipe.fields["birth_year"].max + 1))


def test_the_name_dictionary_judges_by_the_birth_country():
    from benchmarks.coherence import NameDictionary

    names = NameDictionary()
    assert names.gender("Andrea", "Italy") == "male"
    assert names.gender("Andrea", "United States") == "female"
    assert names.gender("Mary", "Kenya") == "female"  # a country it does not list: over all countries
    assert names.gender("Zzyzx", "Italy") is None
    df = pl.DataFrame({
        "gender": ["male", "female", "male", "non-binary"],
        "birth_country": ["Italy", "United States", "United States", "Italy"],
        "first_name": ["Andrea", "Andrea", "Andrea", "Andrea"],
        "last_name": ["Rossi", "Smith", "Smith", "Rossi"],
    })
    row = agreement(df, names)
    assert row["gender_judged_by_country"] == 3  # non-binary is never judged
    assert row["gender_agreement_by_country"] == pytest.approx(2 / 3)  # the American man named Andrea disagrees
    assert row["gender_judged_by_country_share"] == pytest.approx(1.0)
