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
    from qmr.stages.generate import _resume_state

    path = tmp_path / "p.jsonl"
    appender, done = _resume_state(path, {"max_new_tokens": 48})
    appender.append({"batch": 0, "completions": [[{"text": "1 + 1 = 2", "tokens": 5, "seconds": 0.1}]]})
    appender.close()
    appender, done = _resume_state(path, {"max_new_tokens": 48})
    appender.close()
    assert done == {0: [[Completion(text="1 + 1 = 2", tokens=5, seconds=0.1)]]}
    appender, done = _resume_state(path, {"max_new_tokens": 96})
    appender.close()
    assert done == {} and len(path.read_text().splitlines()) == 1  # only the new fingerprint
