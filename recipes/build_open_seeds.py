"""Write recipes/data/people_seeds/: the seed values of recipes/biography_open.yaml.

Each seed list is a random half of a reference list of recipes/data/ (the lists
recipes/biography.yaml draws from exactly), so that the rest of the reference can
tell a novel valid value from a seed:

- ``first_names/<Country>_female.txt`` and ``_male.txt``: half of
  ``people/first_names/<Country>_<gender>.txt`` (rounded up);
  ``<Country>_non-binary.txt`` is the union of that country's female and male seeds
  (the non-binary reference is the union of the two lists);
- ``cities/<Country>.txt``: half of ``people/cities/<Country>.txt``;
- ``occupations.txt``: half of ``occupations.txt``.

The half is drawn with ``random.Random(f"{SEED}:{relative path}")``, so the files
are the same on every run and every list is split independently. Standard library
only. From the repository root:

    python recipes/build_open_seeds.py           # rewrites recipes/data/people_seeds/
    python recipes/build_open_seeds.py --check   # exit 1 if the committed files differ
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

SEED = 0
DATA = Path(__file__).resolve().parent / "data"
OUT = DATA / "people_seeds"


def read(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def half(path: Path) -> list[str]:
    """A random half (rounded up) of the list in ``path``, in the list's own order."""
    values = read(path)
    rng = random.Random(f"{SEED}:{path.relative_to(DATA).as_posix()}")
    keep = set(rng.sample(range(len(values)), (len(values) + 1) // 2))
    return [v for i, v in enumerate(values) if i in keep]


def build() -> dict[Path, str]:
    """Every seed file: path -> its text."""
    files: dict[Path, list[str]] = {}
    for female in sorted((DATA / "people" / "first_names").glob("*_female.txt")):
        country = female.name.removesuffix("_female.txt")
        male = female.with_name(f"{country}_male.txt")
        seeds_f, seeds_m = half(female), half(male)
        files[OUT / "first_names" / female.name] = seeds_f
        files[OUT / "first_names" / male.name] = seeds_m
        files[OUT / "first_names" / f"{country}_non-binary.txt"] = sorted(set(seeds_f) | set(seeds_m))
    for cities in sorted((DATA / "people" / "cities").glob("*.txt")):
        files[OUT / "cities" / cities.name] = half(cities)
    files[OUT / "occupations.txt"] = half(DATA / "occupations.txt")
    return {path: "".join(f"{v}\n" for v in values) for path, values in files.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files differ")
    args = parser.parse_args(argv)
    files = build()
    if args.check:
        stale = [p for p, text in files.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
        for p in stale:
            print(f"differs: {p.relative_to(DATA.parent)}", file=sys.stderr)
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} files under {OUT.relative_to(DATA.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
