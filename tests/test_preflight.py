"""`qmr params check --preflight` (issue 15): the paper preset's late failures, found before the DAG starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qmr.devtools.openai_server import OpenAIStubServer

REPO = Path(__file__).resolve().parents[1]
QMR = [sys.executable, "-m", "qmr"]
KEYS = ("DEEPSEEK_API_KEY", "OPENAI_API_KEY", "DASHSCOPE_API_KEY")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    return {**env, "DVC_NO_ANALYTICS": "1", **extra}


def _qmr(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([*QMR, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=_env(**env))


@pytest.fixture
def paper(tmp_path) -> Path:
    """A DVC project with the paper preset for a Qwen model (no ../shared beside it)."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(REPO / "presets", work / "presets")
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    assert subprocess.run(["git", "init", "-q"], cwd=work).returncode == 0
    assert subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], cwd=work).returncode == 0
    out = _qmr(["params", "preset", "qwen2.5-0.5b-instruct", "-o", "params.yaml"], work)
    assert out.returncode == 0, out.stderr
    return work


def test_preflight_lists_each_missing_key_variable(paper):
    plain = _qmr(["params", "check"], paper)
    assert plain.returncode == 0, plain.stderr  # the schema is fine: the keys surfaced only at `judge`, after generation
    out = _qmr(["params", "check", "--preflight"], paper, HF_HUB_OFFLINE="1")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    for var in KEYS:
        assert sum(f"environment variable {var} is not set" in line for line in out.stderr.splitlines()) == 1, out.stderr
    assert "judge.judges.deepseek-r1" in out.stderr and "judge.judges.deepseek-v3" in out.stderr


def test_preflight_passes_against_reachable_endpoints_and_prints_the_plan(paper):
    params = yaml.safe_load((paper / "params.yaml").read_text())
    with OpenAIStubServer() as server:
        for spec in params["endpoints"].values():
            spec["base_url"] = server.url
        (paper / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        keys = {var: f"sk-test-{i}-0123456789" for i, var in enumerate(KEYS)}
        out = _qmr(["params", "check", "--preflight"], paper, HF_HUB_OFFLINE="1", **keys)
        assert out.returncode == 0, out.stderr
    assert "preflight passed" in out.stdout
    for name in params["endpoints"]:
        assert f"endpoint endpoints.{name}: answers" in out.stdout  # asked: GET /models with its key
    plan = {line.split()[0]: int(line.split()[1]) for line in out.stdout.split("plan (dvc repro):")[1].splitlines() if line.strip()}
    n_variants = len(params["quantize"]["variants"])
    assert plan["quantize"] == n_variants and plan["generate"] == n_variants * len(params["generate"]["benchmarks"])
    assert plan["judge"] == len(params["judge"]["variants"])
    assert not any(key in out.stdout + out.stderr for key in keys.values())


def test_preflight_finds_an_unreachable_endpoint_a_missing_extra_and_no_gpu(paper, tmp_path):
    params = yaml.safe_load((paper / "params.yaml").read_text())
    for spec in params["endpoints"].values():
        spec["base_url"] = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
        spec["max_retries"] = 0
    params["generate"]["device"] = "cuda"
    (paper / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    keys = {var: "sk-test-0123456789" for var in KEYS}
    out = _qmr(["params", "check", "--preflight"], paper, HF_HUB_OFFLINE="1", **keys)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "endpoints.gpt-4o: cannot reach http://127.0.0.1:9/v1" in out.stderr
    import torch

    if not torch.cuda.is_available():
        assert "generate.device: cuda: needs a CUDA GPU" in out.stderr
    # a missing extra is found by the schema check itself (the vLLM backend without vllm installed)
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        params["generate"]["backend"], params["generate"]["device"] = "vllm", "auto"
        (paper / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        out = _qmr(["params", "check"], paper)
        assert out.returncode == 2 and "generate.backend: got 'vllm'; allowed: an installed backend" in out.stderr


def test_preflight_checks_the_generation_server(paper):
    """`generate.backend: openai`: an external server is asked like a judge endpoint; a managed
    server's program must exist."""
    params = yaml.safe_load((paper / "params.yaml").read_text())
    params["judge"]["variants"], params["recovery"]["variants"] = [], []  # (only the generation server here)
    params["generate"]["backend"] = "openai"
    params["generate"]["server"] = {"command": "/nonexistent/vllm serve {path} --port {port}"}
    (paper / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _qmr(["params", "check", "--preflight"], paper, HF_HUB_OFFLINE="1")
    assert out.returncode == 2 and "generate.server.command: program '/nonexistent/vllm' not found" in out.stderr, out.stderr
    with OpenAIStubServer() as server:
        params["generate"]["server"] = {"base_url": server.url, "api_key_env": "VLLM_KEY"}
        (paper / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        missing = _qmr(["params", "check", "--preflight"], paper, HF_HUB_OFFLINE="1")
        ok = _qmr(["params", "check", "--preflight"], paper, HF_HUB_OFFLINE="1", VLLM_KEY="sk-vllm-0123456789")
    assert missing.returncode == 2 and "environment variable VLLM_KEY is not set; needed by generate.server (generate)" in missing.stderr
    assert ok.returncode == 0 and "endpoint generate.server: answers" in ok.stdout, ok.stderr
