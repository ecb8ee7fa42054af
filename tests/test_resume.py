"""Resumability: `qmr generate` killed with SIGKILL at a random batch resumes to identical traces.

(The judge stage's response cache is tested the same way in tests/test_locate_llm.py.)
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from qmr.io import write_jsonl
from qmr.toy.problems import generate_split

BATCH = 8
PROBLEMS = 64


def _without_timing(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row.pop("seconds")
    return rows


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from qmr.toy.train import ToyModelConfig, train_toy_model

    root = tmp_path_factory.mktemp("resume")
    cfg = ToyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, batch_size=8,
                         warmup_steps=2, max_steps=30, train_seconds=0, seed=0)  # fmt: skip
    train_toy_model(cfg, root / "models" / "quantized" / "toy" / "fp", threads=1)
    write_jsonl(root / "data" / "benchmarks" / "test.jsonl", generate_split("test", PROBLEMS, seed=0))
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["generate"].update(batch_size=BATCH, max_new_tokens=48)
    params["threads"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _generate(root: Path) -> subprocess.Popen:
    env = {**os.environ, "QMR_CACHE_DIR": str(root / ".qmr-cache"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "qmr", "generate", "--model", "toy", "--variant", "fp", "--benchmark", "test"]
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_then_resume_gives_identical_traces(project):
    out = project / "data" / "traces" / "toy" / "fp" / "test.jsonl"
    partial = project / ".qmr-cache" / "generate" / "toy" / "fp" / "test.partial.jsonl"
    first = _generate(project)
    assert first.wait(timeout=300) == 0, first.stdout.read()
    reference = _without_timing(out)
    assert len(reference) == PROBLEMS and not partial.exists()  # a finished run leaves no cache behind

    out.unlink()
    kill_after = random.Random(7).randint(1, PROBLEMS // BATCH - 2)  # finished batches before the kill
    victim = _generate(project)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if partial.exists() and len(partial.read_text().splitlines()) >= 1 + kill_after:
            break
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not out.exists()  # nothing half-written looks like a finished output
    finished = len(partial.read_text().splitlines()) - 1
    assert kill_after <= finished < PROBLEMS // BATCH

    resumed = _generate(project)
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log
    assert f"{finished} finished batch(es)" in log
    assert _without_timing(out) == reference
    assert not partial.exists()


def test_changed_settings_discard_the_cache(tmp_path):
    from qmr.generation import Completion
    from qmr.generation.resume import resume_state

    path = tmp_path / "p.jsonl"
    appender, done = resume_state(path, {"max_new_tokens": 48})
    appender.append({"batch": 0, "completions": [[{"text": "1 + 1 = 2", "tokens": 5, "seconds": 0.1}]]})
    appender.close()
    appender, done = resume_state(path, {"max_new_tokens": 48})
    appender.close()
    assert done == {0: [[Completion(text="1 + 1 = 2", tokens=5, seconds=0.1)]]}
    appender, done = resume_state(path, {"max_new_tokens": 96})
    appender.close()
    assert done == {} and len(path.read_text().splitlines()) == 1  # only the new fingerprint


# --------------------------------------------------------------------------------------------------
# restore: trainer checkpoints; silver: the fp teacher's batches and the endpoint teacher's answers
# --------------------------------------------------------------------------------------------------

RESTORE_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from qmr.io import read_jsonl
from qmr.restore.train import RestoreConfig, train_restore
model, pairs, out, ckpt, objective = sys.argv[1:6]
# kd: the model distils itself (lora_dropout makes the student differ) + the NLL of chosen
cfg = RestoreConfig(objective=objective, lora_r=4, lora_alpha=8, lora_dropout=0.1, learning_rate=1e-2, warmup_ratio=0.1,
                    batch_size=4, epochs=2.0, max_length=128, checkpoint_steps=2, seed=0, kd_nll_weight=1.0)
train_restore(model, read_jsonl(pairs), cfg, out, threads=1, checkpoint_dir=ckpt, identity="test", teacher_dir=model)
"""


def _pairs(n: int) -> list[dict]:
    recs = generate_split("mine", n, seed=0)
    from qmr.prompts import build_prompt

    return [{"id": r["id"], "prompt": build_prompt(r["question"]), "chosen": r["solution"], "rejected": "1 + 1 = 3\nThe answer is 3."} for r in recs]


def _script(root: Path, name: str, text: str, *args) -> subprocess.Popen:
    path = root / name
    path.write_text(text)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(path), *map(str, args)], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("objective", ["sft", "kd"])
def test_restore_killed_mid_training_resumes_to_the_same_adapter(project, tmp_path, objective):
    from safetensors.torch import load_file

    model = project / "models" / "quantized" / "toy" / "fp"
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, _pairs(32))  # 8 steps per epoch, 16 in all, a checkpoint every 2
    ref_out, out, ckpt = tmp_path / "ref", tmp_path / "out", tmp_path / "ckpt"
    ref = _script(tmp_path, "restore.py", RESTORE_SCRIPT, model, pairs, ref_out, tmp_path / "ref-ckpt", objective)
    assert ref.wait(timeout=600) == 0, ref.stdout.read()
    assert not (tmp_path / "ref-ckpt").exists()

    kill_at = random.Random(11).choice([4, 6, 8, 10])  # a checkpoint step, in either epoch
    victim = _script(tmp_path, "restore.py", RESTORE_SCRIPT, model, pairs, out, ckpt, objective)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not (ckpt / f"checkpoint-{kill_at}" / "trainer_state.json").exists():
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (out / "adapter_model.safetensors").exists()
    saved = sorted(int(d.name.split("-")[1]) for d in ckpt.glob("checkpoint-*"))
    assert saved and kill_at <= saved[-1] < 16

    resumed = _script(tmp_path, "restore.py", RESTORE_SCRIPT, model, pairs, out, ckpt, objective)
    log = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, log
    assert "resuming from" in log and "checkpoint-" in log
    a, b = load_file(ref_out / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert set(a) == set(b) and all(a[k].equal(b[k]) for k in a)
    ref_log = json.loads((ref_out / "train_log.json").read_text())
    new_log = json.loads((out / "train_log.json").read_text())
    assert [r["step"] for r in new_log] == [r["step"] for r in ref_log] == list(range(1, 17))
    assert [r["loss"] for r in new_log] == [r["loss"] for r in ref_log]
    if objective == "kd":
        assert [r["kd_loss"] for r in new_log] == [r["kd_loss"] for r in ref_log] and ref_log[-1]["kd_loss"] > 0
    assert not ckpt.exists()


TEACHER_SCRIPT = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
from qmr.params import load_params
from qmr.stages.silver import _teacher
params = load_params("params.yaml")
prompts = json.loads(open(sys.argv[1]).read())
json.dump(_teacher(params, "toy", "v")(prompts, 2), open(sys.argv[2], "w"))
"""


def test_silver_fp_teacher_killed_mid_sampling_resumes_to_the_same_continuations(project, tmp_path):
    from qmr.prompts import build_prompt

    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([build_prompt(r["question"]) for r in generate_split("mine", PROBLEMS, seed=0)]))
    cache = project / ".qmr-cache" / "silver" / "toy" / "v"

    def run(out: Path) -> subprocess.Popen:
        env = {**os.environ, "QMR_CACHE_DIR": str(project / ".qmr-cache"), "PYTHONUNBUFFERED": "1"}
        (project / "teacher.py").write_text(TEACHER_SCRIPT)
        cmd = [sys.executable, "teacher.py", str(prompts), str(out)]
        return subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    ref = run(tmp_path / "ref.json")
    assert ref.wait(timeout=300) == 0, ref.stdout.read()
    reference = json.loads((tmp_path / "ref.json").read_text())
    assert len(reference) == PROBLEMS and all(len(c) == 2 for c in reference)
    for partial in cache.glob("gen-*.partial.jsonl"):
        partial.unlink()  # the stage removes them once its outputs are written

    kill_after = random.Random(5).randint(1, PROBLEMS // BATCH - 2)
    victim = run(tmp_path / "out.json")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        partials = list(cache.glob("gen-*.partial.jsonl"))
        if partials and len(partials[0].read_text().splitlines()) >= 1 + kill_after:
            break
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    finished = len(partials[0].read_text().splitlines()) - 1
    assert kill_after <= finished < PROBLEMS // BATCH

    resumed = run(tmp_path / "out.json")
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log
    assert f"{finished} finished batch(es)" in log
    assert json.loads((tmp_path / "out.json").read_text()) == reference


def test_endpoint_teacher_answers_are_cached_so_a_rerun_makes_no_calls(tmp_path):
    from qmr.devtools.openai_server import OpenAIStubServer
    from qmr.endpoints import EndpointSpec
    from qmr.restore.llm_teacher import llm_teacher

    prompts = [f"Question: {i} + 1?\nAnswer:\n" for i in range(6)]
    with OpenAIStubServer(responder=lambda request: "1 + 1 = 2\nThe answer is 2.") as server:
        spec = EndpointSpec(base_url=server.url, model="teacher", api_key_env="", concurrency=3, max_retries=0)
        first = llm_teacher(spec, temperature=0.7, cache=tmp_path / "teacher.jsonl")(prompts, 2)
        assert server.requests == 12  # one request per try
        server.reset_counts()
        again = llm_teacher(spec, temperature=0.7, cache=tmp_path / "teacher.jsonl")(prompts, 2)
        assert server.requests == 0 and again == first
        more = llm_teacher(spec, temperature=0.7, cache=tmp_path / "teacher.jsonl")([*prompts, "Question: 9?\nAnswer:\n"], 2)
        assert server.requests == 2 and more[:6] == first
