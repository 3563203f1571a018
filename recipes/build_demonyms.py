"""Write recipes/data/demonyms.csv: the nationality words of each birth country.

Build-time only (synthgen never imports countryinfo; the output is committed). From the
repository root:

    python3 -m venv /tmp/demonyms-venv
    /tmp/demonyms-venv/bin/pip install countryinfo==1.0.1
    /tmp/demonyms-venv/bin/python recipes/build_demonyms.py           # rewrites the file
    /tmp/demonyms-venv/bin/python recipes/build_demonyms.py --check   # exit 1 if it differs

Source: the ``demonym`` of each country in countryinfo 1.0.1 (MIT; its data come from the REST
Countries project), for the countries of recipes/data/people/countries.csv, plus the common
English variants in VARIANTS below (countryinfo gives one form per country). The file is read by
the biography recipe's ``consistent_nationality`` check: a biography must not call the person by
another country's nationality ("born in Buenos Aires, Argentina ... a Brazilian architect").
Rows ``value,demonym``, one per word form, in the order of countries.csv then VARIANTS.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COUNTRIES = ROOT / "recipes/data/people/countries.csv"
OUT = ROOT / "recipes/data/demonyms.csv"
PINNED = "1.0.1"
# common English forms countryinfo does not give (it has one demonym per country)
VARIANTS = {
    "Argentina": ("Argentine", "Argentinian"),
    "Azerbaijan": ("Azeri",),
    "Luxembourg": ("Luxembourgish",),
    "Slovenia": ("Slovenian",),
    "Uzbekistan": ("Uzbek",),
}


def rows() -> list[tuple[str, str]]:
    from countryinfo import CountryInfo

    with COUNTRIES.open(encoding="utf-8") as handle:
        countries = [row["value"] for row in csv.DictReader(handle)]
    out = []
    for country in countries:
        forms = (CountryInfo(country).info()["demonym"], *VARIANTS.get(country, ()))
        out += [(country, form) for form in dict.fromkeys(forms)]
    return out


def render() -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["value", "demonym"])
    writer.writerows(rows())
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file differs")
    args = parser.parse_args()
    if version("countryinfo") != PINNED:
        print(f"countryinfo {version('countryinfo')} installed; this script was run with {PINNED}", file=sys.stderr)
        return 2
    text = render()
    if args.check:
        same = OUT.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{OUT} differs from what the script writes")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
