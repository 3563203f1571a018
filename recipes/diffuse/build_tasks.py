"""Write the diffuse-training task suite, recipes/diffuse/tasks.jsonl, from the word lists in recipes/data/.

    python recipes/diffuse/build_tasks.py            # writes recipes/diffuse/tasks.jsonl
    python recipes/diffuse/build_tasks.py -o OUT.jsonl

Deterministic: no randomness, targets in the lists' own order. The families follow
the paper's training data (numbers, names, countries by continent, days/dates,
fruits, occupations), with cities, surnames, topics, colours, years and 26 everyday
categories (data/categories.yaml) added, and 30 one-answer fact anchors. Prompts ask
for the bare answer ("Reply with only ..."): no braces, no punctuation.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import yaml

from synthgen.training.tasks import Task, load_tasks, save_tasks

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data"
OUT = HERE / "tasks.jsonl"
MAX_PAIRS = 6000  # (task, target) pairs; the shipped config samples at most 32 targets per task and step

CONTINENTS = {  # file suffix -> name used in prompts
    "africa": "Africa", "asia": "Asia", "europe": "Europe",
    "north_america": "North America", "oceania": "Oceania", "south_america": "South America",
}
NUMBER = "Reply with only the number."
YEAR = "Reply with only the year."
COUNTRY = "Reply with only the country's name."
CITY = "Reply with only the city and its country, like: Lyon, France."
DATE = "Reply with only the month and day, written like: March 9."  # example outside both target sets
NAME = "Reply with only the name."


def words(name: str) -> list[str]:
    return (DATA / name).read_text(encoding="utf-8").splitlines()


def weighted(name: str) -> tuple[list[str], list[float]]:
    with (DATA / name).open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["value"] for r in rows], [float(r["weight"]) for r in rows]


def numbers(pred) -> list[str]:
    return [str(n) for n in range(1, 101) if pred(n)]


def is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


def build() -> list[Task]:
    tasks: list[Task] = []

    def add(task_id, family, prompt, targets, weights=None):
        tasks.append(Task(f"{family}-{task_id}", family, prompt, tuple(targets), weights))

    one_to = {10: numbers(lambda n: n <= 10), 100: numbers(lambda n: True)}
    add("1-10-a", "numbers", f"Pick a random number between 1 and 10. {NUMBER}", one_to[10])
    add("1-10-b", "numbers", f"Choose a whole number from 1 to 10 completely at random. {NUMBER}", one_to[10])
    add("1-10-c", "numbers", f"Give me a random integer between 1 and 10, inclusive. {NUMBER}", one_to[10])
    add("1-100-a", "numbers", f"Pick a random number between 1 and 100. {NUMBER}", one_to[100])
    add("1-100-b", "numbers", f"Choose an integer from 1 to 100 completely at random. {NUMBER}", one_to[100])
    add("even-1-10-a", "numbers", f"Pick a random even number between 1 and 10. {NUMBER}",
        numbers(lambda n: n <= 10 and n % 2 == 0))
    add("even-1-10-b", "numbers", f"Choose an even number from 1 to 10 completely at random. {NUMBER}",
        numbers(lambda n: n <= 10 and n % 2 == 0))
    add("odd-1-10-a", "numbers", f"Choose an odd number between 1 and 10 at random. {NUMBER}",
        numbers(lambda n: n <= 10 and n % 2 == 1))
    add("odd-1-10-b", "numbers", f"Give me a random odd number from 1 to 10. {NUMBER}",
        numbers(lambda n: n <= 10 and n % 2 == 1))
    add("even-1-100-a", "numbers", f"Give me a random even number between 1 and 100. {NUMBER}",
        numbers(lambda n: n % 2 == 0))
    add("odd-1-100-a", "numbers", f"Pick a random odd number between 1 and 100. {NUMBER}",
        numbers(lambda n: n % 2 == 1))
    add("primes-1-50-a", "numbers", f"Choose a prime number below 50 completely at random. {NUMBER}",
        numbers(lambda n: n < 50 and is_prime(n)))
    add("primes-1-50-b", "numbers", f"Give me a random prime number between 1 and 50. {NUMBER}",
        numbers(lambda n: n < 50 and is_prime(n)))
    add("primes-1-100-a", "numbers", f"Pick a random prime number between 1 and 100. {NUMBER}",
        numbers(is_prime))

    add("any-a", "first_names", f"Choose an English first name completely at random. {NAME}",
        words("first_names.txt"))
    add("female-a", "first_names",
        f"Pick a random female first name, as used in English-speaking countries. {NAME}",
        words("first_names_female.txt"))
    add("male-a", "first_names",
        f"Give me a random male first name that is common in English-speaking countries. {NAME}",
        words("first_names_male.txt"))

    countries = {key: words(f"countries_{key}.txt") for key in CONTINENTS}
    prompts = {
        "africa": "Name a random country in Africa.",
        "asia": "Pick a country in Asia at random.",
        "europe": "Choose a European country completely at random.",
        "north_america": "Name a random country in North America, Central America or the Caribbean.",
        "oceania": "Pick a random country in Oceania.",
        "south_america": "Give me a random country in South America.",
    }
    for key, prompt in prompts.items():
        add(f"{key.replace('_', '-')}-a", "countries", f"{prompt} {COUNTRY}", countries[key])
    add("africa-b", "countries", f"Choose an African country at random. {COUNTRY}", countries["africa"])
    add("europe-b", "countries", f"Give me the name of a random country in Europe. {COUNTRY}",
        countries["europe"])

    def years(first: int, last: int) -> list[str]:
        return [str(y) for y in range(first, last + 1)]

    add("1950-1999-a", "years", f"Pick a random year between 1950 and 1999. {YEAR}", years(1950, 1999))
    add("1800-1899-a", "years", f"Choose a year of the 19th century (1800 to 1899) at random. {YEAR}",
        years(1800, 1899))
    add("2000-2020-a", "years", f"Give me a random year from 2000 to 2020. {YEAR}", years(2000, 2020))
    add("1700-1799-a", "years", f"Name a random year between 1700 and 1799, inclusive. {YEAR}", years(1700, 1799))

    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    months = ["January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December"]
    add("weekday-a", "days_dates", "Pick a random day of the week. Reply with only the day.", days)
    add("weekday-b", "days_dates",
        "Choose a day of the week completely at random. Reply with only the name of the day.", days)
    add("weekday-c", "days_dates", "Name a random day of the week. Reply with only the day's name.", days)
    add("june-a", "days_dates", f"Pick a random date in June. {DATE}", [f"June {d}" for d in range(1, 31)])
    add("december-a", "days_dates", f"Choose a date in December completely at random. {DATE}",
        [f"December {d}" for d in range(1, 32)])
    add("month-a", "days_dates", "Pick a random month of the year. Reply with only the month.", months)
    add("month-b", "days_dates",
        "Name a month of the year, chosen at random. Reply with only the name of the month.", months)
    add("month-c", "days_dates", "Give me a random month. Reply with only the month's name.", months)

    fruits = words("fruits.txt")
    add("any-a", "fruits", "Choose a fruit at random. Reply with only the fruit's name, in lowercase.", fruits)
    add("any-b", "fruits", "Name a random fruit. Reply with only the name of the fruit, in lowercase.", fruits)
    add("any-c", "fruits",
        "Give me a random fruit, any kind at all. Reply with only its name, singular and in lowercase.",
        fruits)

    jobs = words("occupations.txt")
    add("any-a", "occupations", "Pick a random occupation. Reply with only the occupation, in lowercase.", jobs)
    add("any-b", "occupations",
        "Choose a job completely at random. Reply with only the job title, in lowercase.", jobs)
    for letter in "am":
        starting = [j for j in jobs if j.startswith(letter)]
        add(f"starts-{letter}-a", "occupations",
            f'Name a random occupation that starts with the letter "{letter}". '
            "Reply with only the occupation, in lowercase.", starting)
        add(f"starts-{letter}-b", "occupations",
            f'Give me a job title beginning with "{letter}", chosen completely at random. '
            "Reply with only the job title, in lowercase.", starting)

    add("any-a", "cities", f"Name a random city in the world. {CITY}", words("cities.txt"))
    add("any-b", "cities", f"Pick a city anywhere on Earth, completely at random. {CITY}", words("cities.txt"))
    values, weights = weighted("cities_weighted.csv")
    add("by-population-a", "cities",
        "Think of a random person living in one of the world's major cities, every resident "
        f"equally likely. Which city do they live in? {CITY}", values, weights)

    surnames = words("last_names.txt")
    add("any-a", "surnames",
        "Pick a random surname from anywhere in the world. Reply with only the surname.", surnames)
    add("any-b", "surnames",
        "Choose a family name completely at random. Reply with only the family name.", surnames)

    topics = words("topics.txt")
    add("any-a", "topics", "Pick a random topic for a short lesson. Reply with only the topic.", topics)
    add("any-b", "topics",
        "Give me a random subject that someone could ask a question about. "
        "Reply with only the topic, in a few words.", topics)

    colors = words("colors.txt")
    add("any-a", "colors", "Pick a random color. Reply with only the color, in lowercase.", colors)
    add("any-b", "colors",
        "Choose a colour completely at random. Reply with only the colour's name, in lowercase.", colors)
    add("any-c", "colors", "Name a random colour. Reply with only the name of the colour, in lowercase.", colors)

    # Many small everyday categories, one prompt each (paraphrases alternate): trained,
    # they test whether breadth teaches "spread over a category's members" as a skill;
    # the shipped config holds them out as one more unseen family. None shares a
    # member with fruits or colors.
    category_prompts = (
        "Pick a random {noun}. Reply with only its name, in lowercase.",
        "Name a {noun}, chosen completely at random. Reply with only the answer, in lowercase.",
    )
    categories = yaml.safe_load((DATA / "categories.yaml").read_text(encoding="utf-8"))
    for i, (noun, members) in enumerate(categories.items()):
        add(noun.replace(" ", "-") + "-a", "categories", category_prompts[i % 2].format(noun=noun), members)

    # Anchors: questions with one right answer (K = 1, optimum loss 0). They teach
    # the adapter to stay sharp where the answer is a fact, so diffusing random
    # choices does not spread factual answers too. "What is the capital of France?"
    # is deliberately absent: the integration tests ask it as a held-out check.
    # Every other one is held out (family facts_held_out, excluded from training by the
    # shipped config): the audit on them measures whether staying sharp generalises.
    for i, (slug, question, answer) in enumerate(FACTS):
        family = "facts" if i % 2 == 0 else "facts_held_out"
        add(f"{slug}-a", family, f"{question} Reply with only the answer.", [answer])
    return tasks


FACTS = [
    ("capital-germany", "What is the capital of Germany?", "Berlin"),
    ("capital-italy", "What is the capital of Italy?", "Rome"),
    ("capital-spain", "What is the capital of Spain?", "Madrid"),
    ("capital-japan", "What is the capital of Japan?", "Tokyo"),
    ("capital-egypt", "What is the capital of Egypt?", "Cairo"),
    ("capital-canada", "What is the capital of Canada?", "Ottawa"),
    ("capital-russia", "What is the capital of Russia?", "Moscow"),
    ("capital-greece", "What is the capital of Greece?", "Athens"),
    ("capital-uk", "What is the capital of the United Kingdom?", "London"),
    ("capital-china", "What is the capital of China?", "Beijing"),
    ("sum-2-2", "What is 2 + 2?", "4"),
    ("sum-3-5", "What is 3 + 5?", "8"),
    ("product-6-7", "What is 6 times 7?", "42"),
    ("difference-10-3", "What is 10 minus 3?", "7"),
    ("days-in-week", "How many days are there in a week?", "7"),
    ("spider-legs", "How many legs does a spider have?", "8"),
    ("continents", "How many continents are there?", "7"),
    ("author-romeo", "Who wrote Romeo and Juliet?", "William Shakespeare"),
    ("author-1984", "Who wrote the novel 1984?", "George Orwell"),
    ("author-pride", "Who wrote Pride and Prejudice?", "Jane Austen"),
    ("largest-planet", "What is the largest planet in the solar system?", "Jupiter"),
    ("red-planet", "Which planet is known as the Red Planet?", "Mars"),
    ("water-formula", "What is the chemical formula of water?", "H2O"),
    ("water-freezes", "At how many degrees Celsius does water freeze?", "0"),
    ("tallest-mountain", "What is the tallest mountain on Earth?", "Mount Everest"),
    ("first-us-president", "Who was the first president of the United States?", "George Washington"),
    ("brazil-language", "What language is mostly spoken in Brazil?", "Portuguese"),
    ("japan-currency", "What is the currency of Japan?", "yen"),
    ("opposite-hot", "What is the opposite of hot?", "cold"),
    ("largest-ocean", "What is the largest ocean on Earth?", "Pacific Ocean"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args(argv)
    tasks = build()
    pairs = sum(t.k for t in tasks)
    if pairs > MAX_PAIRS:
        raise SystemExit(f"{pairs} (task, target) pairs; the budget is {MAX_PAIRS}")
    save_tasks(tasks, args.output)
    load_tasks(args.output)  # the file must pass the loader's checks
    by_family: dict[str, list[Task]] = {}
    for t in tasks:
        by_family.setdefault(t.family, []).append(t)
    for family, group in by_family.items():
        print(f"{family:12s} {len(group):3d} tasks {sum(t.k for t in group):5d} pairs")
    print(f"{'total':12s} {len(tasks):3d} tasks {pairs:5d} pairs -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
