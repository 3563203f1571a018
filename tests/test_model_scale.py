"""The instruction-response rule and the audit summary of benchmarks/model_scale.py."""

from __future__ import annotations

import pytest

from benchmarks.model_scale import judge_response, summarise

INSTRUCTION = "Explain how photosynthesis turns sunlight into chemical energy in plants."


@pytest.mark.parametrize("response, verdict", [
    ("Photosynthesis uses chlorophyll in the leaves to capture sunlight and store its energy as glucose.",
     "answer"),
    ("Plants capture light with chlorophyll; the energy splits water and builds sugars from carbon dioxide.",
     "answer"),
    ("  ok  ", "empty"),
    ("I'm sorry, but I can't help with explaining photosynthesis right now.", "refusal"),
    ("As a support chat AI, I'm unable to process your request about plants.", "refusal"),
    ("Photosynthesis stores energy in sugar.\nUser: Now explain respiration.", "new_turn"),
    ("the plant is green and the plant is green and the plant is green and the plant is green", "repetitive"),
    ("My favourite football team won the league last season with a great goal.", "off_topic"),
])
def test_judge_response(response, verdict):
    assert judge_response(INSTRUCTION, response) == verdict


def test_judge_response_short_instruction_is_not_off_topic():
    # with fewer than two content words in the instruction there is nothing to compare
    assert judge_response("Go on.", "Here is a longer reply that talks about something else.") == "answer"


def test_summarise_groups_by_held_out_and_answer_count():
    def task(family, k, mass, ent):
        return {"family": family, "k": k, "exact": {"valid_mass": mass, "normalized_entropy": ent}}

    tasks = [task("numbers", 10, 0.8, 0.9), task("numbers", 5, 0.6, 0.7), task("facts", 1, 1.0, None),
             task("colors", 8, 0.2, 0.5), task("facts_held_out", 1, 0.4, None)]
    groups = summarise(tasks, ["colors", "facts_held_out"])
    assert groups["training"]["n"] == 2 and groups["training"]["valid_mass"] == pytest.approx(0.7)
    assert groups["training"]["normalized_entropy"] == pytest.approx(0.8)
    assert groups["held_out"] == {"n": 1, "valid_mass": 0.2, "normalized_entropy": 0.5, "families": ["colors"]}
    assert groups["held_out_one_answer"]["valid_mass"] == 0.4
    assert groups["held_out_one_answer"]["normalized_entropy"] is None
    assert groups["training_one_answer"]["families"] == ["facts"]


def _entry(model, adapter, held_mass, held_ent, base=None):
    groups = {"training": {"n": 2, "valid_mass": 0.5, "normalized_entropy": 0.6},
              "held_out": {"n": 3, "valid_mass": held_mass, "normalized_entropy": held_ent},
              "held_out_one_answer": {"n": 1, "valid_mass": 0.1, "normalized_entropy": None}}
    entry = {"model": {"name": model, "description": f"{model} model", "licence": "Apache-2.0",
                       "gguf_sha256": "ab" * 32},
             "adapter": adapter, "groups": groups, "held_out_families": ["colors"], "load_average_after": [2.0]}
    if base:
        entry["base_groups"] = {**groups, "held_out": {"n": 3, "valid_mass": base, "normalized_entropy": base}}
    return entry


def _generate(model, seconds_per_record):
    return {"model": {"name": model, "description": "m", "licence": "Apache-2.0", "gguf_sha256": "cd" * 32},
            "adapter": "none",
            "biography": {"n_requested": 20, "seconds_per_record": seconds_per_record, "checks": {"mentions": 0.5}},
            "instruction": {"n_requested": 20, "answer_share_of_requested": 0.75}}


@pytest.mark.parametrize("held, seconds, switch", [
    ((0.40, 0.80), 5.0, True),     # both held-out metrics +0.2, 100 biographies in 8 min
    ((0.40, 0.80), 10.0, False),   # the same gains, but 100 biographies take 17 min
    ((0.40, 0.65), 5.0, False),    # entropy gains only 0.05
])
def test_decision_rule_and_table(held, seconds, switch):
    from benchmarks import tables_model_scale as tms

    data = {"audit": {"a": _entry("smollm2-135m", "smollm2-135m-diffuse", 0.2, 0.6, base=0.01),
                      "b": _entry("big", "none", *held)},
            "generate": {"big+none": _generate("big", seconds)}}
    rule = tms.decision(data)
    assert rule["model"] == "big" and rule["switch"] is switch
    assert rule["gains"]["valid_mass"] == pytest.approx(held[0] - 0.2)
    text = "\n".join(tms.model_scale(data))
    assert "switch the default**" in text if switch else "keep the default" in text
    assert text.count("| `smollm2-135m` |") == 2  # base row and adapter row
    assert "| `big` | none | 0.500 | 0.600 |" in text
