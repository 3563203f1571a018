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
