"""Where a run's time goes: per-field timing in report.json / report.md and the field progress callback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from synthgen.executors import LocalExecutor
from synthgen.fill import peak_rss_mib
from synthgen.generation import generate
from synthgen.recipe import load_recipe
from tests.test_generate import RECIPE

KEYS = {"seconds", "prompts_scored", "options_scored", "tokens_scored", "tokens_generated", "samples", "retries",
        "peak_rss_rise_mib"}


def test_report_says_where_the_time_went_per_field(tmp_path, tiny_engine):
    path = tmp_path / "people.yaml"
    path.write_text(RECIPE, encoding="utf-8")
    recipe = load_recipe(path).with_overrides(count=12)
    started: list[str] = []
    result = generate(recipe, tmp_path / "out", executor=LocalExecutor(engine=tiny_engine), on_field=started.append)
    batches = -(-recipe.count // recipe.batch_size)
    assert started == list(recipe.order) * batches
    timing = json.loads((tmp_path / "out" / "report.json").read_text())["timing"]
    fields = timing["fields"]
    assert list(fields) == list(recipe.order) and all(set(f) == KEYS for f in fields.values())
    assert 0 < sum(f["seconds"] for f in fields.values()) <= timing["seconds"]
    # one prompt per distinct colour for the name; one per distinct name for the age
    records = [json.loads(line) for line in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert fields["color"]["prompts_scored"] == fields["color"]["tokens_generated"] == 0
    assert fields["color"]["tokens_scored"] == 0 and fields["bio"]["tokens_scored"] == 0
    # every scored option costs at least one forwarded token, besides its prompt's
    for name in ("name", "age"):
        assert fields[name]["tokens_scored"] > fields[name]["options_scored"] // 2 > 0
    assert 0 < fields["name"]["prompts_scored"] <= 3
    assert fields["name"]["options_scored"] == 8 * fields["name"]["prompts_scored"]
    assert len({r["name"] for r in records}) <= fields["age"]["prompts_scored"]
    assert fields["age"]["options_scored"] == 43 * fields["age"]["prompts_scored"]
    bio = fields["bio"]
    assert bio["prompts_scored"] == 0 and bio["tokens_generated"] >= bio["samples"]
    assert bio["samples"] - bio["retries"] == recipe.count  # every record reaches the text field once
    assert all(fields[name]["samples"] == recipe.count and fields[name]["retries"] == 0
               for name in ("color", "name", "age"))
    assert result.report["timing"]["fields"] == fields
    # the fields' rises of the peak happen while the run's peak is reached, so they cannot add up past it
    assert all(f["peak_rss_rise_mib"] >= 0 for f in fields.values())
    assert sum(f["peak_rss_rise_mib"] for f in fields.values()) <= timing["peak_rss_mib"]
    report_md = (tmp_path / "out" / "report.md").read_text()
    assert "## Time by field" in report_md
    assert all(f"| {name} | " in report_md.split("## Time by field")[1] for name in recipe.order)
    assert f"Peak memory of the process: {timing['peak_rss_mib']:.0f} MiB." in report_md


def test_peak_memory_is_the_kernels_high_water_mark():
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("no /proc (not Linux)")
    before = peak_rss_mib()
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status.read_text()).group(1)) / 1024
    after = peak_rss_mib()
    assert before <= after and abs(hwm - after) < 16  # the same counter, read a moment apart
