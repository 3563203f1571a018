"""The docs/results.md section of ``benchmarks/results/model_scale.json`` (written by
``benchmarks/model_scale.py``): the default model against a larger one on the same audit,
their training cost and their generation speed and text quality, and the default-model
decision rule applied to those numbers."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT = "smollm2-135m"
GENERAL = "smollm2-135m-diffuse"
# Switch the default only if the larger model beats the general adapter on held-out
# families by this much in both valid mass and normalised entropy...
MIN_GAIN = 0.1
# ...and 100 biographies (`make biography`) stay under this on 2 cores.
MAX_BIOGRAPHY_SECONDS = 15 * 60


def _num(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _minutes(seconds) -> str:
    return "–" if seconds is None else f"{seconds / 60:.0f} min"


def _loo_135m() -> dict | None:
    """Mean leave-one-out result of the 135M model (benchmarks/results/leave_one_out.json)."""
    path = RESULTS / "leave_one_out.json"
    if not path.is_file():
        return None
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    return {"families": len(rows),
            "valid_mass": sum(r["adapter"]["exact"]["valid_mass"] for r in rows) / len(rows),
            "normalized_entropy": sum(r["adapter"]["exact"]["normalized_entropy"] for r in rows) / len(rows)}


def audit_rows(data: dict) -> list[dict]:
    """One row per (model, adapter) audited: the base model of an audit with a baseline first."""
    rows = []
    for entry in data.get("audit", {}).values():
        model = entry["model"]["name"]
        if entry.get("base_groups"):
            rows.append({"model": model, "adapter": "none", "groups": entry["base_groups"],
                         "load": entry.get("load_average_after")})
        rows.append({"model": model, "adapter": entry["adapter"], "groups": entry["groups"],
                     "load": entry.get("load_average_after")})
    return rows


def _audit_table(data: dict) -> list[str]:
    loo = _loo_135m()
    header = ["model", "adapter", "training families: valid mass", "normalised entropy",
              "held-out families: valid mass", "normalised entropy", "held-out facts: valid mass",
              "leave-one-out: valid mass / entropy"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in audit_rows(data):
        g = row["groups"]
        loo_cell = "–" if row["adapter"] == "none" else "not measured"
        if row["model"] == DEFAULT and row["adapter"] != "none" and loo:
            loo_cell = (f"{_num(loo['valid_mass'])} / {_num(loo['normalized_entropy'])} "
                        f"(mean of {loo['families']} families, earlier suite)")
        cells = [f"`{row['model']}`", "none" if row["adapter"] == "none" else f"`{row['adapter']}`",
                 _num(g["training"]["valid_mass"]), _num(g["training"]["normalized_entropy"]),
                 _num(g["held_out"]["valid_mass"]), _num(g["held_out"]["normalized_entropy"]),
                 _num(g["held_out_one_answer"]["valid_mass"]), loo_cell]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cost_table(data: dict) -> list[str]:
    header = ["model", "adapter", "training s/step (probe)", "general adapter: training time",
              "biographies: s/record (n)", "100 biographies (projected)", "biography checks passed",
              "instruction answers (n)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    train = data.get("train", {})
    for gen in data.get("generate", {}).values():
        model = gen["model"]["name"]
        probe = train.get(model)
        trained = (f"{_minutes(probe['projected_seconds_shipped_steps'])} projected "
                   f"({probe['shipped_run_steps']} steps)") if probe else "–"
        bio, ins = gen.get("biography"), gen.get("instruction")
        checks = ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(bio["checks"].items())
                           if v is not None) if bio else ""
        lines.append("| " + " | ".join([
            f"`{model}`", "none" if gen["adapter"] == "none" else f"`{gen['adapter']}`",
            _num(probe["seconds_per_step"], 2) if probe else "–", trained,
            f"{bio['seconds_per_record']:.1f} ({bio['n_requested']})" if bio else "not measured",
            _minutes(100 * bio["seconds_per_record"]) if bio else "–", checks or "–",
            f"{100 * ins['answer_share_of_requested']:.0f}% ({ins['n_requested']})" if ins else "not measured"])
            + " |")
    return lines


def decision(data: dict) -> dict | None:
    """The default-model rule applied to the measured numbers (None until both models are measured)."""
    rows = {(r["model"], r["adapter"]): r["groups"]["held_out"] for r in audit_rows(data)}
    ref = rows.get((DEFAULT, GENERAL))
    others = [(m, a, g) for (m, a), g in rows.items() if m != DEFAULT]
    if ref is None or not others:
        return None
    model, adapter, best = max(others, key=lambda o: (o[2]["valid_mass"] or 0) + (o[2]["normalized_entropy"] or 0))
    gen = data.get("generate", {}).get(f"{model}+{adapter}") or {}
    seconds = 100 * gen["biography"]["seconds_per_record"] if gen.get("biography") else None
    gains = {k: best[k] - ref[k] for k in ("valid_mass", "normalized_entropy")}
    switch = all(v >= MIN_GAIN for v in gains.values()) and seconds is not None and seconds < MAX_BIOGRAPHY_SECONDS
    return {"model": model, "adapter": adapter, "gains": gains, "biography_seconds": seconds, "switch": switch}


def model_scale(data: dict) -> list[str]:
    models = {e["model"]["name"]: e["model"] for section in ("audit", "generate", "train")
              for e in data.get(section, {}).values()}
    lines = ["Models: " + "; ".join(f"`{n}` ({m['description']}; licence {m['licence']}; GGUF sha256 "
                                    f"`{m['gguf_sha256'][:16]}…`)" for n, m in sorted(models.items())) + ".", "",
             "Exact metrics on `recipes/diffuse/tasks.jsonl`, means over tasks with several valid answers; "
             "training and held-out families are those of the general adapter `smollm2-135m-diffuse` (held out: "
             + ", ".join(next(iter(data.get("audit", {}).values()), {}).get("held_out_families", [])) + ").", ""]
    lines += _audit_table(data)
    lines += ["", "Cost and text quality. Training: the shipped config `recipes/diffuse/smollm2-135m.yaml` with only "
              "`model` changed, seconds per optimizer step over the first steps, projected to the shipped run's step "
              "count. Generation: `recipes/biography.yaml` and `recipes/instruction_tuning.yaml`, seed 0, wall time "
              "of `synthgen generate` including the model load. Biography checks: share of drawn biographies that "
              "passed each check of the recipe. Instruction answers: share of requested records whose response "
              "the rule in `benchmarks/model_scale.py` (`judge_response`) counts as an answer (not empty, no "
              "refusal, no new chat turn, not repetitive, on topic).", ""]
    lines += _cost_table(data)
    loads = sorted({round(e["load_average_after"][0], 1) for s in ("audit", "generate", "train")
                    for e in data.get(s, {}).values() if e.get("load_average_after")})
    if loads:
        lines += ["", f"Load average (1 min) when each stage ended: {', '.join(str(x) for x in loads)} on 2 cores: "
                  "timings taken under load are upper bounds."]
    lines += ["", "Each stage records its own provenance:", ""]
    for section in ("audit", "train", "generate"):
        for key, entry in data.get(section, {}).items():
            block = entry.get("provenance") or {}
            source = ""
            if entry.get("summarised_from"):
                source = (f"; summarises `{entry['summarised_from']}`, written by "
                          f"`{entry.get('audit_command') or 'not recorded'}`, kept as `{entry['audit_file']}`")
            lines.append(f"- {section} `{key}`: `{block.get('command', 'not recorded')}` (code "
                         f"{block.get('git_commit') or 'not recorded'}, {block.get('date') or 'no date'}{source}).")
    rule = decision(data)
    if rule:
        verdict = "switch the default" if rule["switch"] else "keep the default; ship the larger model as an option"
        lines += ["", f"Default-model rule (held-out valid mass and entropy both ≥ {MIN_GAIN} above "
                  f"`{GENERAL}`, and 100 biographies under {MAX_BIOGRAPHY_SECONDS // 60} min): best other row "
                  f"`{rule['model']}` + {rule['adapter']}: valid mass {rule['gains']['valid_mass']:+.3f}, entropy "
                  f"{rule['gains']['normalized_entropy']:+.3f}, 100 biographies "
                  f"{_minutes(rule['biography_seconds'])} → **{verdict}**."]
    return lines
