"""Does a larger model help? The default 135M model against a registered larger one.

Stages (each updates its own entry of ``benchmarks/results/model_scale.json``,
with its own provenance block, so they can run at different times):

``audit``
    ``synthgen audit`` of MODEL with ADAPTER on ``recipes/diffuse/tasks.jsonl``
    (exact metrics), summarised over the training families and the held-out
    families of the shipped general adapter (its ``exclude_families``). The full
    audit is kept in ``benchmarks/results/model_scale/``. ``--from-audit FILE``
    summarises an audit already written by ``synthgen audit --json`` instead.
``train``
    Seconds per optimizer step of the shipped training config
    (``recipes/diffuse/smollm2-135m.yaml``, only ``model`` changed) over the
    first ``--steps`` steps, and the wall time that projects to for the step
    count of the shipped adapter's run and for the config's upper bound.
``generate``
    ``synthgen generate`` of ``recipes/biography.yaml`` and
    ``recipes/instruction_tuning.yaml`` (``-n`` records each, seed 0): wall time,
    the biography's fact-check pass rates from the report, and the share of
    instruction responses that answer (:func:`judge_response`).

    python benchmarks/model_scale.py --stage all    # both models, every stage
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, ROOT, _relative, stamp  # noqa: E402

OUT = RESULTS / "model_scale.json"
AUDITS = RESULTS / "model_scale"
TASKS = ROOT / "recipes" / "diffuse" / "tasks.jsonl"
CONFIG = ROOT / "recipes" / "diffuse" / "smollm2-135m.yaml"
GENERAL = ROOT / "synthgen" / "adapters" / "smollm2-135m-diffuse"
RECIPES = {"biography": ROOT / "recipes" / "biography.yaml",
           "instruction": ROOT / "recipes" / "instruction_tuning.yaml"}

# ------------------------------------------------------------------ the instruction-response rule
REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:not|'t|not) (?:help|assist|provide|do|answer|write|fulfil)"
    r"|i'?m (?:not able|unable)|i am (?:not able|unable)|as an ai\b|as a (?:language model|chatbot|\w+ (?:chat )?ai)"
    r"|i do(?:n'?t| not) have (?:access|the ability|personal))", re.IGNORECASE)
NEW_TURN = re.compile(r"(?:^|\n)\s*(?:#+\s*)?(?:user|human|instruction|assistant|question)\s*:|<\|im_start\|>",
                      re.IGNORECASE)
STOPWORDS = frozenset("""about above after again against also among because before being below between both
could does doing down during each from further have having here into just more most other over same
should some such than that their them then there these they this those through under until very what
when where which while will with would your yours please write explain give make list describe short
brief simple using like want need tell help""".split())
MIN_CHARS = 20


def _content_stems(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z]{4,}", text.lower()) if w not in STOPWORDS}


def judge_response(instruction: str, response: str) -> str:
    """``answer``, or why not: ``empty``, ``refusal``, ``new_turn``, ``repetitive`` or ``off_topic``.

    The rule, in order: shorter than 20 characters -> ``empty``; a refusal or an
    "as an AI" disclaimer in its first 300 characters -> ``refusal``; a line that
    opens a new chat turn ("User:", "Instruction:", ...) -> ``new_turn`` (the
    model rambles on past its answer); a word 4-gram used three times or more, or
    under 60% distinct word 3-grams in a reply of 20+ words -> ``repetitive``;
    an instruction with two or more content words (4+ letters, not stopwords,
    compared on their first 5 letters) of which the response shares none ->
    ``off_topic``. Anything else is an ``answer``. A string rule, not a judge of
    correctness.
    """
    text = (response or "").strip()
    if len(text) < MIN_CHARS:
        return "empty"
    if REFUSAL.search(text[:300]):
        return "refusal"
    if NEW_TURN.search(text):
        return "new_turn"
    words = re.findall(r"\w+", text.lower())
    fours = Counter(zip(words, words[1:], words[2:], words[3:]))
    threes = list(zip(words, words[1:], words[2:]))
    if (fours and max(fours.values()) >= 3) or (len(words) >= 20 and len(set(threes)) < 0.6 * len(threes)):
        return "repetitive"
    asked = _content_stems(instruction or "")
    if len(asked) >= 2 and not asked & _content_stems(text):
        return "off_topic"
    return "answer"


# ------------------------------------------------------------------ helpers
def held_out_families() -> list[str]:
    """The families the shipped general adapter never trained on."""
    training = json.loads((GENERAL / "training.json").read_text(encoding="utf-8"))
    return sorted(training["config"].get("exclude_families") or [])


def summarise(tasks: list[dict], held_out: list[str]) -> dict:
    """Means of the exact metrics over task groups: training / held-out families, several
    answers (k > 1) or one (facts)."""
    groups: dict[str, list[dict]] = {"training": [], "training_one_answer": [], "held_out": [],
                                     "held_out_one_answer": []}
    for t in tasks:
        key = ("held_out" if t["family"] in held_out else "training") + ("" if t["k"] > 1 else "_one_answer")
        groups[key].append(t["exact"])

    def mean(rows, name):
        values = [r[name] for r in rows if r.get(name) is not None]
        return sum(values) / len(values) if values else None

    return {key: {"n": len(rows), "valid_mass": mean(rows, "valid_mass"),
                  "normalized_entropy": mean(rows, "normalized_entropy") if not key.endswith("one_answer") else None,
                  "families": sorted({t["family"] for t in tasks if (t["family"] in held_out) == key.startswith("held")
                                      and (t["k"] > 1) != key.endswith("one_answer")})}
            for key, rows in groups.items()}


def _update(section: str, key: str, entry: dict, adapters: dict | None = None) -> None:
    data = json.loads(OUT.read_text(encoding="utf-8")) if OUT.is_file() else {}
    data.setdefault(section, {})[key] = stamp(entry, adapters=adapters)
    OUT.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {section}/{key} to {_relative(OUT)}")


def _model_info(model: str) -> dict:
    from synthgen import store

    path = Path(store.resolve(model))
    meta = json.loads((path / store.META_FILE).read_text(encoding="utf-8"))
    spec = store.REGISTRY[meta["name"]]
    return {"name": meta["name"], "gguf_sha256": meta["sha256"], "licence": spec.licence,
            "description": spec.description}


def _adapter_dir(model: str, adapter: str) -> Path | None:
    from synthgen.adapters import resolve_adapter

    return resolve_adapter(adapter, model=model)


# ------------------------------------------------------------------ stages
def stage_audit(model: str, adapter: str, from_audit: Path | None) -> None:
    adapter_dir = _adapter_dir(model, adapter)
    label = adapter_dir.name if adapter_dir else "none"
    AUDITS.mkdir(parents=True, exist_ok=True)
    target = AUDITS / f"audit_{model}_{label}.json"
    start = time.perf_counter()
    if from_audit is not None:
        data = json.loads(Path(from_audit).read_text(encoding="utf-8"))
        source = _relative(from_audit)
        if Path(from_audit).resolve().is_relative_to(RESULTS.resolve()):
            target = Path(from_audit)  # already a committed result: no copy
        else:
            shutil.copyfile(from_audit, target)
    else:
        from synthgen.training.audit import run_audit

        run_audit(TASKS, model=model, adapter=adapter, compare=False, samples=0, json_out=target)
        data, source = json.loads(target.read_text(encoding="utf-8")), None
    seconds = time.perf_counter() - start
    held_out = held_out_families()
    entry = {"model": _model_info(model), "adapter": label, "audit_file": _relative(target),
             "summarised_from": source, "held_out_families": held_out,
             "audit_seconds": None if source else round(seconds, 1),
             "audit_command": (data.get("provenance") or {}).get("command"),
             "groups": summarise(data["tasks"], held_out),
             "load_average_after": None if source else list(os.getloadavg())}
    if data.get("baseline"):  # an audit of an adapter with its base model beside it
        entry["base_groups"] = summarise(data["baseline"]["tasks"], held_out)
    _update("audit", f"{model}+{label}", entry, adapters={"adapter": adapter_dir})


class _Stop(Exception):
    pass


def stage_train(model: str, steps: int) -> None:
    """Time the first ``steps`` optimizer steps of the shipped config on ``model``.

    Only the preserve anchors those steps use are decoded (the first
    ``ceil(steps / preserve_every)`` prompts, in the file's order, which is the order
    the run takes them in), so the steps cost what they cost in the full run while the
    setup decodes fewer anchors; the projection scales the setup up by the ratio of
    anchors (an upper bound: model loading and encoding do not scale).
    """
    from dataclasses import replace

    from synthgen.training.config import config_tasks, load_config
    from synthgen.training.loop import train
    from synthgen.training.preserve import read_prompts

    config = replace(load_config(CONFIG), model=model)
    prompts = read_prompts(config.preserve, config.source)
    used = min(len(prompts), -(-steps // config.preserve_every))
    tmp = tempfile.TemporaryDirectory()
    anchors_file = Path(tmp.name) / "preserve.txt"
    anchors_file.write_text("\n".join(prompts[:used]) + "\n", encoding="utf-8")
    config = replace(config, preserve=str(anchors_file))
    marks: dict[str, list[float]] = {"start": [], "steps": []}
    info: dict = {}

    def on_start(data: dict) -> None:
        info.update(data)
        marks["start"].append(time.perf_counter())

    def on_step(data: dict) -> None:
        marks["steps"].append(time.perf_counter())
        print(f"{model}: step {data['step']} at {marks['steps'][-1] - marks['start'][0]:.0f} s", file=sys.stderr)
        if data["step"] >= steps:
            raise _Stop

    load_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as out:
        try:
            train(config, Path(out) / "adapter", on_step=on_step, on_start=on_start)
        except _Stop:
            pass
    tmp.cleanup()
    times = marks["steps"]
    per_step = (times[-1] - times[0]) / (len(times) - 1)
    setup = times[0] - marks["start"][0] - per_step  # model load, preserve anchors, encoding
    full_setup = setup * len(prompts) / used
    shipped = json.loads((GENERAL / "training.json").read_text(encoding="utf-8"))
    shipped_steps = len(shipped["steps"])
    entry = {"model": _model_info(model), "config": _relative(CONFIG), "changed": {"model": model},
             "tasks": len(config_tasks(config)), "epochs": config.epochs, "steps_timed": len(times) - 1,
             "seconds_per_step": round(per_step, 3), "setup_seconds": round(setup, 1),
             "preserve_anchors_decoded": used, "preserve_anchors_in_config": len(prompts),
             "projected_setup_seconds": round(full_setup, 1),
             "upper_bound_steps": info.get("total_steps"),
             "shipped_run_steps": shipped_steps,
             "projected_seconds_shipped_steps": round(full_setup + per_step * shipped_steps),
             "projected_seconds_upper_bound": round(full_setup + per_step * info.get("total_steps", 0)),
             "load_average_before": load_before, "load_average_after": list(os.getloadavg())}
    _update("train", model, entry)


def _generate(recipe: Path, model: str, adapter: str, n: int, out_dir: Path,
              reuse: bool = False) -> tuple[float | None, dict, list[dict]]:
    """Run ``synthgen generate`` as a user would; return its wall time, report and records.
    With ``reuse``, read a finished run already in ``out_dir`` instead (wall time None)."""
    seconds = None
    if not (reuse and (out_dir / "report.json").is_file()):
        shutil.rmtree(out_dir, ignore_errors=True)
        cmd = [sys.executable, "-m", "synthgen.cli", "generate", str(recipe), "-n", str(n), "--seed", "0",
               "-o", str(out_dir), "--model", model, "--adapter", adapter]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"generate failed ({' '.join(cmd)}): {proc.stderr.strip().splitlines()[-1:]}")
    report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    records = [json.loads(line) for line in (out_dir / "records.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip()]
    return seconds, report, records


def _run_summary(seconds: float | None, report: dict, n: int) -> dict:
    """Counts and times of one run; per record from the wall time, else from the report's own timing."""
    timed = seconds if seconds is not None else report["timing"]["seconds"]
    return {"n_requested": n, "n_kept": report["n_kept"],
            "wall_seconds": None if seconds is None else round(seconds, 1),
            "seconds_per_record": round(timed / n, 2), "report_seconds": report["timing"]["seconds"],
            "removed": report["removed"]}


def _biography(seconds, report: dict, records: list[dict], n: int) -> dict:
    bio = report["fields"]["biography"]
    attributes = [f for f in ("first_name", "last_name", "birth_place", "occupation") if f in report["fields"]]
    return {**_run_summary(seconds, report, n), "valid_rate": bio.get("valid_rate"),
            "checks": bio.get("checks") or {},
            "attribute_normalized_entropy": {f: report["fields"][f].get("normalized_entropy") for f in attributes},
            "attribute_unique": {f: report["fields"][f].get("unique") for f in attributes}}


def _instruction(seconds, report: dict, records: list[dict], n: int) -> dict:
    verdicts = [judge_response(r.get("instruction", ""), r.get("response", "")) for r in records]
    counts = Counter(verdicts)
    return {**_run_summary(seconds, report, n),
            "valid_rate": {f: report["fields"][f].get("valid_rate") for f in ("instruction", "response")},
            "verdicts": dict(sorted(counts.items())),
            "answer_share_of_kept": counts["answer"] / len(records) if records else None,
            "answer_share_of_requested": counts["answer"] / n,
            "examples": [{"instruction": r.get("instruction"), "response": (r.get("response") or "")[:300],
                          "verdict": v} for r, v in list(zip(records, verdicts))[:3]]}


def stage_generate(model: str, adapter: str, n: int, work: Path, which: list[str], reuse: bool) -> None:
    """Each recipe in ``which`` is written to the model's entry as soon as it has run."""
    adapter_dir = _adapter_dir(model, adapter)
    label = adapter_dir.name if adapter_dir else "none"
    key = f"{model}+{label}"
    for name in which:
        load_before = list(os.getloadavg())
        seconds, report, records = _generate(RECIPES[name], model, adapter, n, work / model / name, reuse)
        summary = (_biography if name == "biography" else _instruction)(seconds, report, records, n)
        summary.update(load_average_before=load_before, load_average_after=list(os.getloadavg()),
                       reused_output=seconds is None)
        data = json.loads(OUT.read_text(encoding="utf-8")) if OUT.is_file() else {}
        entry = {k: v for k, v in data.get("generate", {}).get(key, {}).items()
                 if k not in ("provenance", "torch_threads")}
        entry.update({"model": _model_info(model), "adapter": label, "seed": 0, name: summary,
                      "load_average_after": summary["load_average_after"]})
        _update("generate", key, entry, adapters={"adapter": adapter_dir})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["audit", "train", "generate", "all"], required=True)
    parser.add_argument("--model", default="smollm2-135m,qwen2.5-coder-0.5b",
                        help="registered model names, comma-separated (each runs the stages in turn)")
    parser.add_argument("--adapter", default="default", help="'default', 'none' or an adapter directory")
    parser.add_argument("--from-audit", type=Path, default=None,
                        help="audit stage: summarise this `synthgen audit --json` file instead of auditing")
    parser.add_argument("--steps", type=int, default=30, help="train stage: optimizer steps to time")
    parser.add_argument("-n", type=int, default=20, help="generate stage: records per recipe")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "out" / "model_scale",
                        help="generate stage: where the generated datasets go")
    parser.add_argument("--recipes", default="biography,instruction",
                        help="generate stage: which recipes (biography, instruction)")
    parser.add_argument("--reuse-output", action="store_true",
                        help="generate stage: summarise a finished run already in --work-dir (no wall time)")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    if args.from_audit is not None and len(models) != 1:
        parser.error("--from-audit summarises one audit: give one --model")
    for model in models:
        if args.stage in ("audit", "all"):
            stage_audit(model, args.adapter, args.from_audit)
        if args.stage in ("train", "all"):
            stage_train(model, args.steps)
        if args.stage in ("generate", "all"):
            stage_generate(model, args.adapter, args.n, args.work_dir,
                           [r.strip() for r in args.recipes.split(",") if r.strip()], args.reuse_output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
