"""The `openai` generation backend against the loopback OpenAI-compatible server (the real `openai` client).

External mode (``generate.server.base_url``) and managed mode (``generate.server.command``, with the
loopback server's own command line standing in for ``vllm serve``): the traces' schema is the
transformers backend's, a SIGKILLed `qmr generate` resumes without re-asking finished batches, faults
are retried or end in one line (exit 2), the managed server is always stopped, keys never reach a file.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from qmr.devtools.openai_server import OpenAIStubServer, arithmetic_responder
from qmr.generation.base import GenerateConfig, ServerSpec
from qmr.io import write_jsonl
from qmr.toy.problems import generate_split

REPO = Path(__file__).resolve().parents[1]
BATCH = 4
PROBLEMS = 24
KEY = "sk-qmrgen-" + "7" * 24  # what a leaked key would look like
STUB = f"{sys.executable} -m qmr.devtools.openai_server --port {{port}} --served-model-name {{base_served}} {{lora_args}}"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from qmr.toy.train import ToyModelConfig, train_toy_model

    root = tmp_path_factory.mktemp("gen-openai")
    cfg = ToyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, batch_size=8,
                         warmup_steps=2, max_steps=10, train_seconds=0, seed=0)  # fmt: skip
    train_toy_model(cfg, root / "models" / "quantized" / "toy" / "fp", threads=1)
    write_jsonl(root / "data" / "benchmarks" / "test.jsonl", generate_split("test", PROBLEMS, seed=0))
    return root


def _params(root: Path, **server) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["threads"] = 1
    params["generate"].update(backend="openai", batch_size=BATCH, max_new_tokens=24)
    params["generate"]["server"].update(server)
    return params


def _load(params: dict, tmp: Path):
    from qmr.params import load_params

    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    return load_params(tmp / "params.yaml")


def _run(root: Path, params: dict, *args: str, wait: bool = True, env: dict | None = None):
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "tmp").mkdir(exist_ok=True)  # kept server logs land here, not in /tmp
    env = {**os.environ, "QMR_CACHE_DIR": str(root / ".qmr-cache"), "PYTHONUNBUFFERED": "1", "TMPDIR": str(root / "tmp"), **(env or {})}
    cmd = [sys.executable, "-m", "qmr", *args, "generate", "--model", "toy", "--variant", "fp", "--benchmark", "test"]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _recording(srv: OpenAIStubServer) -> list[dict]:
    """The requests ``srv`` receives, one per HTTP request (the responder may be asked more than once)."""
    seen: list[dict] = []
    handle = srv._handle
    srv._handle = lambda request, authorization="": (seen.append(request), handle(request, authorization))[1]
    return seen


def _alive(marker: str) -> list[int]:
    """Pids of processes whose command line holds ``marker``."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "cmdline").read_bytes().decode(errors="replace") and (d / "stat").read_text().split()[2] != "Z":
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


# ------------------------------------------------------------------------------------------------
# schema, requests, sampling


def test_traces_have_the_transformers_schema_and_requests_carry_the_templated_prompt(project, tmp_path, monkeypatch):
    from qmr.io import read_jsonl
    from qmr.traces import generate_traces

    monkeypatch.chdir(project)
    records = read_jsonl(project / "data" / "benchmarks" / "test.jsonl")[:6]
    ckpt = str(project / "models" / "quantized" / "toy" / "fp")
    hf = _params(project)
    hf["generate"].update(backend="transformers", device="cpu")
    reference = generate_traces(_load(hf, tmp_path), "toy", ckpt, "fp", "test", records)
    with OpenAIStubServer(responder=arithmetic_responder) as srv:
        seen = _recording(srv)
        greedy = generate_traces(_load(_params(project, base_url=srv.url), tmp_path), "toy", ckpt, "fp", "test", records)
        sampled_params = _params(project, base_url=srv.url, api_key_env="", model="served-{model}-{variant}")
        sampled_params["generate"].update(samples=3, temperature=0.8, top_p=0.9)
        sampled = generate_traces(_load(sampled_params, tmp_path), "toy", ckpt, "fp", "test", records)
    assert [sorted(t) for t in greedy] == [sorted(t) for t in reference]
    for ours, theirs in zip(greedy, reference, strict=True):
        assert {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in theirs.items()}
        assert ours["prompt"] == theirs["prompt"] and ours["id"] == theirs["id"]
    assert all(t["tokens"] >= 1 and t["seconds"] >= 0 and t["steps"] and t["correct"] in (True, False) for t in greedy)
    # the completions API with the prompt exactly as templated here; the served name from the template
    by_prompt = {r["prompt"]: r for r in seen[:6]}  # (sent concurrently: in any order)
    assert sorted(by_prompt) == sorted(t["prompt"] for t in reference) and not any("messages" in r for r in seen)
    first = by_prompt[reference[0]["prompt"]]
    assert first["model"] == "toy/fp" and first["n"] == 1 and first["temperature"] == 0 and first["max_tokens"] == 24
    assert [by_prompt[t["prompt"]]["seed"] for t in reference] == list(range(6))  # prompt i: seed + i
    # n samples per request, sampling settings passed through
    assert len(sampled) == 18 and [t["sample"] for t in sampled[:3]] == [0, 1, 2]
    last = seen[-1]
    assert last["n"] == 3 and last["temperature"] == 0.8 and last["top_p"] == 0.9 and last["model"] == "served-toy-fp"


def test_chat_api_sends_the_user_message_and_a_variant_map_names_the_served_model(project, tmp_path, monkeypatch):
    from qmr.traces import generate_traces

    monkeypatch.chdir(project)
    records = generate_split("test", 3, seed=1)
    with OpenAIStubServer(responder=lambda req: "2 + 2 = 4\nThe answer is 4.") as srv:
        seen = _recording(srv)
        params = _params(project, base_url=srv.url, served={"fp": "Qwen/Qwen2.5-7B-Instruct"})
        params["generate"]["api"] = "chat"
        params["models"]["toy"]["prompt_style"] = "chat"
        traces = generate_traces(_load(params, tmp_path), "toy", "models/quantized/toy/fp", "fp", "test", records)
    assert seen[0]["model"] == "Qwen/Qwen2.5-7B-Instruct" and seen[0]["messages"][0]["role"] == "user"
    assert "Solve the problem step by step" in seen[0]["messages"][0]["content"]  # the instruction; the server templates it
    assert sorted(t["prompt"] for t in traces) == sorted(r["messages"][0]["content"] for r in seen) and traces[0]["pred"] == "4"


def test_requests_run_concurrently_up_to_the_bound(project, tmp_path):
    from qmr.generation.openai_backend import OpenAIBackend

    with OpenAIStubServer(responder=arithmetic_responder, latency_s=0.4) as srv:
        t0 = time.perf_counter()
        OpenAIBackend("none", server=ServerSpec(base_url=srv.url, concurrency=8), batch_size=4).generate(["Question: 1 2"] * 16, progress=False)
        concurrent = time.perf_counter() - t0
    assert srv.requests == 16
    assert 0.8 <= concurrent < 3.2, concurrent  # two waves of 8 (sequential: 6.4 s)


def test_params_validation():
    assert [p.key for p in GenerateConfig(backend="openai").check("generate")] == ["generate.server"]
    assert ServerSpec(command="vllm serve {path}", base_url="http://x/v1").check("s")[0].key == "s.base_url"
    bad = ServerSpec(command="vllm serve {checkpoint} --port {port}", model="{model}-{varaint}").check("s")
    assert [(p.key, "unknown: checkpoint" in p.allowed or "unknown: varaint" in p.allowed) for p in bad] == [("s.command", True), ("s.model", True)]
    assert ServerSpec(base_url="ftp://x").check("s")[0].key == "s.base_url"
    shown = ServerSpec(base_url="http://x/v1", api_key_env=KEY).check("s")
    assert shown[0].key == "s.api_key_env" and KEY not in str(shown[0])
    assert ServerSpec(base_url="http://x/v1", model="m", served={"fp": "a"}).served_name("toy", "fp") == "a"
    assert ServerSpec(model="{model}@{variant}").served_name("qwen2.5-7b", "gptq+restored") == "qwen2.5-7b@gptq+restored"


# ------------------------------------------------------------------------------------------------
# resume, faults, keys


def test_sigkill_mid_run_resumes_without_regenerating_finished_batches(project):
    out = project / "data" / "traces" / "toy" / "fp" / "test.jsonl"
    partial = project / ".qmr-cache" / "generate" / "toy" / "fp" / "test.partial.jsonl"

    def finished() -> int:  # batches in the partial file (its first line is the run's fingerprint)
        return max(0, len(partial.read_text().splitlines()) - 1) if partial.exists() else 0

    with OpenAIStubServer(responder=arithmetic_responder, latency_s=0.15) as srv:
        params = _params(project, base_url=srv.url, concurrency=2)
        code, _, err = _run(project, params)
        assert code == 0, err
        reference = [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(out)]
        assert len(reference) == PROBLEMS and not partial.exists()
        out.unlink()
        srv.reset_counts()
        victim = _run(project, params, wait=False)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (partial.exists() and len(partial.read_text().splitlines()) >= 3):
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert not out.exists()
        finished = len(partial.read_text().splitlines()) - 1
        assert 2 <= finished < PROBLEMS // BATCH
        srv.reset_counts()
        code, _, err = _run(project, params)
    assert code == 0, err
    assert f"{finished} finished batch(es)" in err
    assert srv.requests == PROBLEMS - finished * BATCH  # finished batches were not asked again
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(out)] == reference
    assert not partial.exists()


def test_500s_and_timeouts_are_retried(project, tmp_path):
    from qmr.generation.openai_backend import OpenAIBackend

    with OpenAIStubServer(responder=arithmetic_responder, hang_s=3.0) as srv:
        srv.push("500", "429", "hang", "500")
        backend = OpenAIBackend("none", server=ServerSpec(base_url=srv.url, concurrency=1, max_retries=4, timeout_s=1.0), batch_size=2)
        done = backend.generate(["Question: 3 4", "Question: 5 6"], progress=False)
    assert [c[0].text for c in done] == ["3 + 4 = 7\nThe answer is 7.", "5 + 6 = 11\nThe answer is 11."]
    assert srv.actions["500"] == 2 and srv.actions["429"] == 1 and srv.actions["hang"] == 1


def test_a_dead_server_is_one_line_and_exit_2(project):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    params = _params(project, base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, timeout_s=2.0)
    code, out, err = _run(project, params)
    assert code == 2, err
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "generate.server: model 'toy/fp'" in lines[0] and "APIConnectionError" in lines[0], err


def test_keys_never_reach_an_output_file_or_the_log(project):
    """The key is sent (the server sees it) but appears in no trace, resume file, log or error line,
    even when the server echoes it back in an error (some gateways do)."""
    out = project / "data" / "traces" / "toy" / "fp" / "test.jsonl"
    partial = project / ".qmr-cache" / "generate" / "toy" / "fp" / "test.partial.jsonl"

    def finished() -> int:  # batches in the partial file (its first line is the run's fingerprint)
        return max(0, len(partial.read_text().splitlines()) - 1) if partial.exists() else 0

    env = {"QMR_GEN_TEST_KEY": KEY}
    auth = []
    with OpenAIStubServer(responder=arithmetic_responder) as srv:
        params = _params(project, base_url=srv.url, api_key_env="QMR_GEN_TEST_KEY", concurrency=1)
        original = srv._handle
        srv._handle = lambda request, authorization="": (auth.append(authorization), original(request, authorization))[1]
        code, o1, e1 = _run(project, params, "-v", env=env)
        assert code == 0, e1
        texts = [out.read_text(), o1, e1]
        out.unlink()
        srv.push(*["ok"] * 9, "echo_key_401")  # two batches finish, then the server echoes the key in a 401
        code, o2, e2 = _run(project, params, "-v", env=env)
        texts += [o2, e2, partial.read_text()]
    assert code == 2 and "[REDACTED]" in e2, e2
    assert auth and all(a == f"Bearer {KEY}" for a in auth)
    files = [p for p in project.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json", ".log", ".yaml", ".txt")]
    assert files
    for text in texts + [p.read_text(errors="replace") for p in files]:
        assert KEY not in text and KEY[:12] not in text


# ------------------------------------------------------------------------------------------------
# managed mode


def test_managed_server_is_started_for_the_checkpoint_and_stopped(project, tmp_path):
    from qmr.generation.openai_backend import OpenAIBackend

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 24}))
    marker = f"m-{uuid.uuid4().hex[:8]}"
    spec = ServerSpec(command=STUB, model=marker, ready_timeout_s=60)
    backend = OpenAIBackend(str(project / "models" / "quantized" / "toy" / "fp"), server=spec, adapter=str(adapter), batch_size=4)
    argv = __import__("qmr.generation.server", fromlist=["server_argv"]).server_argv(STUB, backend.command_values(1234))
    assert argv[-7:] == ["--served-model-name", f"{marker}-base", "--enable-lora", "--max-lora-rank", "32",
                         "--lora-modules", f"{marker}={adapter.resolve()}"]  # fmt: skip
    try:
        done = backend.generate(["Question: 2 3"] * 5, progress=False)
        assert [c[0].text for c in done] == ["2 + 3 = 5\nThe answer is 5."] * 5
        server = backend._server
        pid = server.proc.pid
        assert _alive(marker) == [pid] and server.log_path.is_file()
        assert "--port" in (Path("/proc") / str(pid) / "cmdline").read_bytes().decode().replace("\0", " ")
    finally:
        backend.close()
    assert _alive(marker) == [] and not server.log_path.exists()  # a clean stop leaves no log behind


def test_qmr_generate_in_managed_mode_leaves_no_server_behind_even_when_killed(project):
    out = project / "data" / "traces" / "toy" / "fp" / "test.jsonl"
    marker = f"m-{uuid.uuid4().hex[:8]}"
    params = _params(project, command=STUB + " --latency 0.2", model=marker, concurrency=2, ready_timeout_s=60)
    code, _, err = _run(project, params)
    assert code == 0, err
    assert len(_rows(out)) == PROBLEMS and _alive(marker) == []
    assert "starting the generation server" in err and "stopped" in err
    # killed mid-generation: a slow server (24 problems x 1 s / 2 in flight = 12 s; a batch of 4 every 2 s),
    # and the kill lands once one more batch is in the partial file, so it is mid-generation on any
    # machine (a fixed sleep raced a loaded CI machine); each run resumes the batches of the one before
    partial = project / ".qmr-cache" / "generate" / "toy" / "fp" / "test.partial.jsonl"

    def finished() -> int:  # batches in the partial file (its first line is the run's fingerprint)
        return max(0, len(partial.read_text().splitlines()) - 1) if partial.exists() else 0

    params = _params(project, command=STUB + " --latency 1.0", model=marker, concurrency=2, ready_timeout_s=60)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
        out.unlink(missing_ok=True)
        batches = finished()
        proc = _run(project, params, wait=False)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and finished() <= batches:
            time.sleep(0.05)
        assert _alive(marker) and proc.poll() is None, (sig, proc.poll(), batches)  # generating now
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _alive(marker):
            time.sleep(0.1)
        assert _alive(marker) == [], sig  # SIGKILL too: the server gets SIGTERM when its parent dies
        assert proc.returncode != 0 and not out.exists(), (sig, proc.returncode, err[-2000:])
    assert 3 <= finished() < PROBLEMS // BATCH  # a batch more before each kill, and never the last


def test_managed_server_failures_are_one_line_naming_the_command_and_its_log(project, tmp_path, monkeypatch):
    import tempfile

    from qmr.errors import UserError
    from qmr.generation.openai_backend import OpenAIBackend

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the kept logs

    broken = OpenAIBackend("models/x", server=ServerSpec(command=STUB + " --exit-code 3", ready_timeout_s=30))
    with pytest.raises(UserError, match=r"exited with code 3 before it was ready .*openai_server.*stub server: failing on purpose"):
        broken.generate(["q"], progress=False)
    marker = f"m-{uuid.uuid4().hex[:8]}"
    slow = OpenAIBackend("models/x", server=ServerSpec(command=STUB + " --startup-delay 30", model=marker, ready_timeout_s=1.5))
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=r"did not answer .*/models within generate.server.ready_timeout_s=1.5 s"):
        slow.generate(["q"], progress=False)
    assert time.perf_counter() - t0 < 20 and _alive(marker) == []
    assert len(list(tmp_path.glob("qmr-server-*.log"))) == 2  # a failed start keeps its log (the message names it)
    missing = OpenAIBackend("models/x", server=ServerSpec(command="/nonexistent/vllm serve {path}"))
    with pytest.raises(UserError, match=r"generate.server.command: cannot start '/nonexistent/vllm serve models/x'"):
        missing.generate(["q"], progress=False)


def test_managed_mode_does_not_touch_the_default_params(default_params):
    params = copy.deepcopy(default_params)
    assert params["generate"]["backend"] == "transformers"
    assert params["generate"]["server"] == {"base_url": "", "command": "", "model": "{model}/{variant}", "served": {}, "api_key_env": "",
                                            "concurrency": 32, "max_retries": 3, "timeout_s": 600.0, "ready_timeout_s": 900.0}  # fmt: skip
