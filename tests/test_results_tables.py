"""docs/results.md and the README's numbers come from benchmarks/results/*.json, and the
benchmarks record where each result came from (benchmarks/_common.py)."""

from __future__ import annotations

import sys

from benchmarks import results_tables as rt
from synthgen.io import sha256_file

STALE = "out of date: run `python -m benchmarks.results_tables` and commit the result"


def test_results_page_is_generated_from_the_result_files():
    assert rt.RESULTS_MD.read_text(encoding="utf-8") == rt.render_results(), f"docs/results.md is {STALE}"


def test_readme_headline_numbers_are_generated_from_the_result_files():
    text = rt.README.read_text(encoding="utf-8")
    assert rt.update_readme(text) == text, f"README.md's headline numbers are {STALE}"


def test_every_result_file_is_named_on_the_results_page():
    page = rt.render_results()
    for path in rt.RESULTS.glob("*.json"):
        assert f"`benchmarks/results/{path.name}`" in page


def test_a_result_without_provenance_says_not_recorded():
    rec = rt.recorded({"n": 3})
    assert rec == dict.fromkeys(("command", "machine", "code", "versions", "date"), "not recorded")
    assert rt.recorded({"command": "python benchmarks/engine.py", "machine": "x86_64"})["machine"] == "x86_64"


def test_a_provenance_block_is_read_before_older_keys():
    data = {"provenance": {"command": "python benchmarks/engine.py", "git_commit": "abc", "machine": "cpu, 2 cores",
                           "versions": {"python": "3.11", "torch": None}, "date": "2026-01-01T00:00:00Z"},
            "torch_threads": 2, "command": "old", "machine": "old"}
    assert rt.recorded(data) == {"command": "python benchmarks/engine.py", "machine": "cpu, 2 cores, 2 torch threads",
                                 "code": "abc", "versions": "python 3.11", "date": "2026-01-01T00:00:00Z"}


def test_a_recorded_local_adapter_is_named_by_its_shipped_name():
    lines = " ".join(rt.source_lines("x.json", {"command": "python benchmarks/biography_compare.py --adapter "
                                                           "out/adapters/biography-tuned-4"}))
    assert "ship as `smollm2-135m-biography-flat`" in lines
    assert rt.adapter_label("/somewhere/synthgen/adapters/smollm2-135m-diffuse") == "`smollm2-135m-diffuse`"
    assert rt.adapter_label(None) == "none (base model)"


def test_a_gpu_check_result_renders():
    data = {"status": "passed", "gpu": "NVIDIA H200", "vllm_version": "0.1", "model": {"name": "random llama"},
            "adapter": "/x/synthgen/adapters/smollm2-135m-diffuse", "dtype": "bfloat16", "errors": [], "skipped": [],
            "score": {"adapter": {"tasks": 3, "options": 30, "max_abs_diff": 0.01, "mean_abs_diff": 0.002,
                                  "tolerance": {"max": 0.02, "mean": 0.02}, "passed": True, "conclusive": True,
                                  "context_sensitivity": 1.5, "adapter_effect": 0.9}},
            "biography": {"vllm": {"records": 64, "kept": 64, "fill_seconds": 2.0, "records_per_second": 32.0},
                          "vllm_speedup": 4.0}}
    text = "\n".join(rt.gpu_check(data))
    assert "**passed**" in text and "`smollm2-135m-diffuse`" in text and "| vllm | 64 | 64 | 2.0 | 32.00 |" in text


def test_stamp_records_the_command_and_the_adapters_digest(monkeypatch):
    from benchmarks._common import ROOT, stamp

    monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / "engine.py"), "--out", "x.json"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    adapter = ROOT / "synthgen" / "adapters" / "smollm2-135m-biography-flat"
    result = stamp({"speedup": 2.0}, adapters={"adapter": adapter, "base": None})
    block = result["provenance"]
    assert list(result)[0] == "provenance" and result["speedup"] == 2.0
    assert block["command"] == "OMP_NUM_THREADS=1 python benchmarks/engine.py --out x.json"
    assert block["adapters"]["adapter"] == {"path": "synthgen/adapters/smollm2-135m-biography-flat",
                                            "sha256": sha256_file(adapter / "adapter_model.safetensors")}
    assert block["adapters"]["base"] == {"path": None, "sha256": None}
    assert stamp({}, args=["--tiny"])["provenance"]["command"].endswith("python benchmarks/engine.py --tiny")



def _speed_run(path: str, records: int, seconds: float) -> dict:
    field = {"seconds": seconds, "prompts_scored": 1, "options_scored": 3, "tokens_generated": 0, "samples": records,
             "retries": 0}
    return {"path": path, "records": records, "seconds": seconds, "records_per_second": records / seconds,
            "kept": records, "invalid": 0, "peak_rss_mib": 1000.0, "fields": {"gender": field}}


def test_a_speed_comparison_at_a_smaller_old_size_compares_equal_sizes():
    data = {"recipe": "recipes/biography.yaml", "n": 1000, "old_n": 100, "speedup": 2.0, "speedup_records": 100,
            "cpus": 2, "load_average_at_end": 0.5,
            "paths": {"new": _speed_run("new", 1000, 500.0), "new_small": _speed_run("new", 100, 40.0),
                      "old": _speed_run("old", 100, 80.0)},
            "agreement": {"identical_attribute_fields": 100, "records": 100, "identical_records": 90,
                          "prompts_compared": 5, "max_kl": 1e-10, "bound": 1e-3, "prompts_above_bound": 0}}
    text = "\n".join(rt.generate_paths(data))
    assert "1000 records on the new path, 100 on both paths" in text
    assert "Speed-up 2.00× at 100 records" in text
    assert "| gender | 40.0 | 80.0 |" in text  # the per-field comparison is new@100 against old@100
    assert "Seconds per field at 1000 records (new path)" in text and "| gender | 500.0 | 1 | 3 | – | 0 | – |" in text


def test_the_speed_benchmark_refuses_a_speedup_across_sizes():
    import pytest

    from benchmarks import generate_speed

    with pytest.raises(SystemExit) as err:
        generate_speed.main(["--n", "10", "--old-n", "5", "--memory-n", "0"])
    assert err.value.code == 2
