"""The whole DVC DAG on a small configuration, in a temporary copy of the project (slow)."""

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _small_params(params: dict) -> dict:
    params["benchmarks"]["train"]["size"] = 64
    params["benchmarks"]["mine"]["size"] = 60
    params["benchmarks"]["test"]["size"] = 60
    params["base"]["toy"].update({"max_steps": 800, "train_seconds": 0, "hidden_size": 128, "intermediate_size": 256})
    keep = {"fp", "gptq-w4a16", "rtn-w2g32"}
    params["quantize"]["variants"] = {k: v for k, v in params["quantize"]["variants"].items() if k in keep}
    params["quantize"]["calibration"]["samples"] = 16
    params["benchmarks"]["control"]["size"] = 30
    params["generate"]["batch_size"] = 64
    params["generate"]["max_new_tokens"] = 48
    params["judge"]["variants"] = ["gptq-w4a16", "rtn-w2g32"]
    params["recovery"]["variants"] = ["rtn-w2g32"]
    params["restore"].update({"max_steps": 3, "batch_size": 4})
    params["benchmarks"]["align"]["size"] = 64
    params["align"].update({"eval_samples": 20, "max_steps": 4, "max_new_tokens": 64})
    return params


def _run(cmd: list[str], cwd: Path, **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    env.update(env_extra)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)


def _status(work: Path) -> set[str]:
    """Stages `dvc status` reports as changed (directly: a dep, a param or an output differs)."""
    out = _run(["dvc", "status", "--json"], work)
    assert out.returncode == 0, out.stderr
    return _but_resolve(set(json.loads(out.stdout or "{}")))


def _but_resolve(stages: set[str]) -> set[str]:
    """`resolve@<model>` is always_changed (it watches local model folders): milliseconds, and what
    follows it re-runs only when its output changes, so it is left out of the sets compared here."""
    return {s for s in stages if not s.startswith("resolve@")}


def _ran(result: subprocess.CompletedProcess) -> set[str]:
    return _but_resolve({line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage")})


# Declared params a stage may leave unread on this small run: each is read on another path.
UNREAD_OK = {
    # llm judges or an endpoint policy naming an endpoint; the rollout policy's vllm / openai backend settings
    "judge": {"endpoints", "generate.tensor_parallel_size", "generate.max_model_len", "generate.api", "generate.server"},
    # vllm / openai backends only
    "generate": {"generate.tensor_parallel_size", "generate.max_model_len", "generate.api", "generate.server"},
    "align": {"generate.tensor_parallel_size", "generate.max_model_len", "generate.api", "generate.server"},
    "restore": {"quantize.calibration", "seed", "quantize.variants.${item.variant}", "models.${item.model}"},  # merge: requantize
    # silver reads the teacher's settings only when labels yield pairs to complete (none may, this small)
    "silver": {"generate.backend", "generate.device", "generate.batch_size", "generate.tensor_parallel_size",
               "generate.max_model_len", "generate.api", "generate.server",
               "generate.max_new_tokens", "models.${item.model}", "recovery.dedupe", "endpoints",
               "judge.max_failed_share"},
    "reevaluate": {"seed", "threads"},  # read when a restored model generates (nothing trained: none does)
}


def _check_params_trace(trace: Path, dvc: dict, params: dict) -> None:
    """Every params key a stage instance read (QMR_PARAMS_TRACE) is declared in dvc.yaml for it, and
    every declared key is read by some instance of the stage (but for UNREAD_OK): a stage's params
    deps are the keys it reads and no more."""
    problems = []
    unread_by_stage: dict[str, set[str]] = {}
    for line in trace.read_text().splitlines():
        rec = json.loads(line)
        stage, read = rec.pop("stage"), set(rec.pop("read"))
        subst = {"${key}": rec.get("model", ""), **{f"${{item.{k}}}": v for k, v in rec.items()}}
        subst["${align.eval_benchmark}"] = params["align"]["eval_benchmark"]
        declared: dict[str, str] = {}  # resolved key -> the key as dvc.yaml writes it
        for d in dvc["stages"][stage].get("do", dvc["stages"][stage]).get("params", []):
            resolved = d
            for a, b in subst.items():
                resolved = resolved.replace(a, str(b))
            declared[resolved] = d
        undeclared = {k for k in read if not any(k == d or k.startswith(d + ".") for d in declared)}
        if undeclared:
            problems.append(f"{stage} {rec}: reads undeclared {sorted(undeclared)}")
        unread = {
            written for d, written in declared.items()
            if not any(k == d or k.startswith(d + ".") or d.startswith(k + ".") for k in read)
        }
        unread_by_stage[stage] = unread_by_stage.get(stage, unread) & unread  # unread by every instance
    for stage, unread in unread_by_stage.items():
        if unread - UNREAD_OK.get(stage, set()):
            problems.append(f"{stage}: declares params no instance read: {sorted(unread - UNREAD_OK.get(stage, set()))}")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_dvc_repro_small_pipeline(tmp_path):
    work = tmp_path / "qmr"
    work.mkdir()
    shutil.copytree(REPO / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    shutil.copytree(REPO / "annotations", work / "annotations")  # the verdict tree, as in a clone
    (work / "metrics").mkdir()
    shutil.copy(REPO / "metrics" / "ablation.json", work / "metrics" / "ablation.json")  # committed, as in a clone
    (work / "metrics" / "speed").mkdir()
    shutil.copy(REPO / "metrics" / "speed" / "ablation.json", work / "metrics" / "speed" / "ablation.json")
    params = _small_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        assert _run(cmd, work).returncode == 0

    trace = tmp_path / "params-trace.jsonl"
    first = _run(["dvc", "repro"], work, QMR_PARAMS_TRACE=str(trace))
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    _check_params_trace(trace, yaml.safe_load((work / "dvc.yaml").read_text()), params)

    # align: the base model learnt the free-form style; compliance is measured before and after
    align = json.loads((work / "metrics" / "align.json").read_text())["toy"]
    assert align["method"] == "lora_sft" and align["steps"] == 4 and align["examples"] == 64
    assert {"format_compliance", "accuracy"} <= set(align["before"]) and align["after"]["problems"] == 20
    assert json.loads((work / "models" / "quantized" / "toy" / "fp" / "qmr_model.json").read_text())["path"] == "models/aligned/toy"

    metrics = json.loads((work / "metrics" / "evaluate.json").read_text())
    toy = metrics["toy"]
    assert set(toy) == {"fp", "gptq-w4a16", "rtn-w2g32"}
    for _variant, entry in toy.items():
        for bench in ("test", "mine"):
            m = entry[bench]
            assert 0.0 <= m["accuracy"] <= 1.0
            lo, hi = m["accuracy_ci"]  # 95% Wilson interval beside the point value
            assert lo <= m["accuracy"] <= hi
            assert m["problems"] == 60
            assert m["flips"] >= 0
        assert entry["control"]["problems"] == 30
        assert entry["size"]["disk_bytes"] > 0
    assert toy["fp"]["test"]["degradation_pct"] == 0.0
    # quantized checkpoints are compressed-tensors with their recipe beside them
    qdir = work / "models" / "quantized" / "toy" / "rtn-w2g32"
    assert (qdir / "recipe.yaml").exists()
    cfg = json.loads((qdir / "config.json").read_text())
    assert "quantization_config" in cfg
    traces = [json.loads(line) for line in (work / "data" / "traces" / "toy" / "fp" / "test.jsonl").read_text().splitlines()]
    assert {"id", "variant", "benchmark", "sample", "prompt", "text", "steps", "pred", "correct", "tokens", "seconds"} <= set(traces[0])

    # locate: every failure of a judged variant has a label; metrics/vote.json per variant
    vote = json.loads((work / "metrics" / "vote.json").read_text())["toy"]
    assert set(vote) == {"gptq-w4a16", "rtn-w2g32"}
    for variant in vote:
        cases = (work / "data" / "judgments" / "toy" / f"{variant}.cases.jsonl").read_text().splitlines()
        labels = (work / "data" / "labels" / "toy" / f"{variant}.jsonl").read_text().splitlines()
        assert len(labels) == len(cases)
    # restore: a record for the restored variant, whether or not pairs were found
    restore = json.loads((work / "metrics" / "restore.json").read_text())["toy"]["rtn-w2g32"]
    assert {"pairs", "trained", "test", "control"} <= set(restore)
    assert {"accuracy_fp", "accuracy_quantized", "accuracy_restored"} <= set(restore["test"])
    assert {"problems", "accuracy_fp_ci", "accuracy_quantized_ci", "accuracy_restored_ci", "recovery_ratio_ci"} <= set(restore["test"])
    # wall-clock numbers live in metrics/speed/ only, so the quality metrics of two runs can be compared byte for byte
    assert json.loads((work / "metrics" / "speed" / "base" / "toy.json").read_text())["seconds"] > 0
    assert "train_seconds" in json.loads((work / "metrics" / "speed" / "restore.json").read_text())["toy"]["rtn-w2g32"]
    quality = [p for p in (work / "metrics").rglob("*.json") if "speed" not in p.parts]
    assert not [p for p in quality if any(k in p.read_text() for k in ('"seconds"', '"tokens_per_s"', '"train_seconds"'))]

    second = _run(["dvc", "repro"], work)
    assert second.returncode == 0
    assert _ran(second) == set(), second.stdout

    # The graph tells the truth (issue 13): each change marks exactly what depends on it.
    upstream = {"prepare", "base@toy", "align"} | {f"quantize@toy-{v}" for v in params["quantize"]["variants"]}
    # editing grading.py marks every stage that grades (and only those)
    grading = work / "src" / "qmr" / "grading.py"
    original = grading.read_text()
    grading.write_text(original + "\n# edited\n")
    grades = _status(work)
    grading.write_text(original)
    generate_all = {f"generate@toy-{v}-{b}" for v in params["quantize"]["variants"] for b in params["generate"]["benchmarks"]}
    assert generate_all | {"align", "evaluate", "reevaluate", "vote", "judge@toy-rtn-w2g32", "silver@toy-rtn-w2g32"} <= grades
    assert not grades & ({"base@toy", "report"} | {s for s in grades if s.startswith(("quantize@", "restore@"))})
    # adding a benchmark: only its new generate instances and the stages that aggregate over benchmarks
    bigger = json.loads(json.dumps(params))
    bigger["generate"]["benchmarks"].append("train")
    (work / "params.yaml").write_text(yaml.safe_dump(bigger, sort_keys=False))
    added = _status(work)
    new_generate = {f"generate@toy-{v}-train" for v in params["quantize"]["variants"]}
    aggregators = {"evaluate", "reevaluate", "report", "judge@toy-gptq-w4a16", "judge@toy-rtn-w2g32", "silver@toy-rtn-w2g32"}
    assert new_generate <= added and added - new_generate <= aggregators, added
    # recovery.subset (users: `dvc exp run -S recovery.subset=ME`): silver and what follows it only
    me = json.loads(json.dumps(params))
    me["recovery"]["subset"] = "ME"
    (work / "params.yaml").write_text(yaml.safe_dump(me, sort_keys=False))
    assert _status(work) <= {"silver@toy-rtn-w2g32", "restore@toy-rtn-w2g32", "reevaluate", "report"}
    assert "silver@toy-rtn-w2g32" in _status(work)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _status(work) == set()
    # a human verdict is an input: a plain `dvc repro` re-runs vote and what follows, nothing upstream
    # (The small toy is a draw of the CPU it trains on: at 300 base steps an Intel Xeon's fp model solved
    # none of the 60 mine problems and no failure case existed; at 800 both variants have some.)
    labelled = [v for v in ("rtn-w2g32", "gptq-w4a16") if (work / "data" / "labels" / "toy" / f"{v}.jsonl").read_text().strip()]
    if not labelled:
        warnings.warn("small pipeline: no failure case on this CPU's draw; the human-verdict check did not run", stacklevel=1)
    for variant in labelled[:1]:
        label = json.loads((work / "data" / "labels" / "toy" / f"{variant}.jsonl").read_text().splitlines()[0])
        from qmr.locate.annotation import verdict_path

        verdict = verdict_path(work / "annotations" / "toy" / variant, label["id"])
        verdict.parent.mkdir(parents=True)
        verdict.write_text(json.dumps({"quantized_error_analysis": {
            "primary_error_type": "computational_error", "error_step": 1, "explanation": "test", "confidence_score": 0.9}}))
        applied = _run(["dvc", "repro"], work)
        assert applied.returncode == 0, applied.stdout[-4000:] + applied.stderr[-4000:]
        ran = _ran(applied)
        assert "vote" in ran and not ran & (upstream | generate_all | {"evaluate"}) and not any(s.startswith("judge@") for s in ran), ran
        relabelled = json.loads((work / "data" / "labels" / "toy" / f"{variant}.jsonl").read_text().splitlines()[0])
        assert relabelled["rule"] == "human" and relabelled["machine"]["rule"] == label["rule"]

    # Hardening (issue 14): an llm judge whose endpoint echoes the bearer token in its error bodies (the
    # first replies; the small run has few failure cases) and sends HTML under application/json:
    # `dvc repro` completes, and the planted key is in no file of the workspace, none of .dvc/cache and
    # none of the output. (Rates and counts of faults: tests/test_faults.py.)
    from qmr.devtools.openai_server import OpenAIStubServer

    key = "sk-qmr-PLANTED-pipeline-0123456789abcdef"
    with OpenAIStubServer() as server:
        server.push("echo_key_400", "echo_key_500", "html_json", "echo_key_401")
        hostile = json.loads(json.dumps(params))
        hostile["judge"]["max_failed_share"] = 1.0
        hostile["judge"]["judges"]["llm"] = {
            "kind": "llm", "base_url": server.url, "model": "m1", "api_key_env": "QMR_PLANTED_KEY",
            "timeout_s": 5.0, "max_retries": 0,
        }
        hostile["vote"]["auxiliaries"] = [*hostile["vote"]["auxiliaries"], "llm"]
        (work / "params.yaml").write_text(yaml.safe_dump(hostile, sort_keys=False))
        judged = _run(["dvc", "repro"], work, QMR_PLANTED_KEY=key)
        assert judged.returncode == 0, judged.stdout[-4000:] + judged.stderr[-4000:]
        assert server.actions["echo_key_400"] == 1  # the first call got the key echoed back
    stats = json.loads((work / "data" / "judgments" / "toy" / "rtn-w2g32.stats.json").read_text())
    assert stats["calls_made"] > 0 and not any(s.startswith("judge@") for s in _status(work))  # recorded as done
    judgment_text = "".join((work / "data" / "judgments" / "toy" / f"{v}.jsonl").read_text() for v in params["judge"]["variants"])
    assert "[REDACTED]" in judgment_text  # kept, without the key (in whichever variant's judge stage made the first calls)
    written = [f for f in work.rglob("*") if f.is_file() and ".git" not in f.relative_to(work).parts[:1]]
    cached = [f for f in (work / ".dvc" / "cache").rglob("*") if f.is_file()]
    assert len(cached) > 50 and any("judgments" in f.parts for f in written)
    assert [str(f) for f in written if key.encode() in f.read_bytes()] == []
    assert key not in judged.stdout + judged.stderr
