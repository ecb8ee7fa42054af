"""The outside world fails in one clear line (issue 15): the hub unreachable, a gated repository, a
missing revision or id — exit 2, no traceback, in seconds, before anything is downloaded.

The real ``huggingface_hub``/``datasets`` clients run against ``HF_ENDPOINT``: a closed loopback port
(unreachable) or a loopback server answering as the hub does (``X-Error-Code`` headers).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
QMR = [sys.executable, "-m", "qmr"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeHub:
    """Answers every request with the hub's error for ``code`` (RepoNotFound, RevisionNotFound, GatedRepo),
    or, for ``ok``, a minimal repository info that says the repository is gated when ``gated``."""

    def __init__(self, code: str):
        self.code = code
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                hub.requests.append(self.path)
                if hub.code == "GatedRepo" and "/auth-check" not in self.path and "/resolve/" not in self.path:
                    body = b'{"id": "org/name", "sha": "abc", "gated": "manual", "siblings": []}'
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                else:
                    body = b'{"error": "no"}'
                    self.send_response(404 if hub.code != "GatedRepo" else 403)
                    self.send_header("X-Error-Code", hub.code)
                    self.send_header("X-Error-Message", f"{hub.code} (fake hub)")
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET

        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE", "TRANSFORMERS_OFFLINE"))}
    return {**env, "HF_HOME": str(extra.pop("home")), **extra}


@pytest.fixture
def paper(tmp_path) -> Path:
    """A directory holding the paper preset composed for a Qwen model (no ../shared beside it)."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(REPO / "presets", work / "presets")
    out = subprocess.run([*QMR, "params", "preset", "qwen2.5-0.5b-instruct", "-o", "params.yaml"], cwd=work,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return work


def test_prepare_with_the_hub_unreachable_is_one_line_per_benchmark_in_seconds(paper, tmp_path):
    hub_benchmarks = [n for n, b in yaml.safe_load((paper / "params.yaml").read_text())["benchmarks"].items() if b["source"] == "hub"]
    assert len(hub_benchmarks) >= 4
    started = time.monotonic()
    out = subprocess.run([*QMR, "prepare"], cwd=paper, capture_output=True, text=True, timeout=300,
                         env=_env(home=tmp_path / "hf", HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}"))  # fmt: skip
    elapsed = time.monotonic() - started
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if "cannot reach the Hugging Face hub" in line]
    named = sorted(re.search(r"(benchmarks\.[\w-]+): dataset", line).group(1) for line in lines)
    assert named == sorted(f"benchmarks.{n}" for n in hub_benchmarks), out.stderr
    assert elapsed < 60, elapsed  # the probe, not datasets' retries (24 s per dataset before)
    assert not (paper / "data" / "benchmarks").exists()


def test_prepare_offline_with_an_empty_cache_is_one_line(paper, tmp_path):
    out = subprocess.run([*QMR, "prepare"], cwd=paper, capture_output=True, text=True, timeout=300,
                         env=_env(home=tmp_path / "hf", HF_HUB_OFFLINE="1"))  # fmt: skip
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert "benchmarks.gsm8k_train: dataset 'openai/gsm8k' at revision" in out.stderr
    assert "not in the local cache and HF_HUB_OFFLINE is set" in out.stderr


@pytest.mark.parametrize(("code", "says"), [("RevisionNotFound", "revision not found"), ("RepoNotFound", "not found on the hub"),
                                            ("GatedRepo", "is gated")])  # fmt: skip
def test_hub_refusals_are_one_line_naming_key_repo_and_what_to_do(code, says, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    from qmr.hub import probe

    hub = FakeHub(code)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # (read once, when huggingface_hub was imported)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    try:
        line = probe("models.qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct", "deadbeef", "model")
    finally:
        hub.close()
    assert line is not None and "\n" not in line
    assert line.startswith("models.qwen2.5-0.5b-instruct: model 'Qwen/Qwen2.5-0.5B-Instruct' at revision 'deadbeef'")
    assert says in line


def test_base_stage_refuses_a_gated_model_before_any_download(tmp_path):
    """`qmr base` for a hub model asks the hub first: a gated model is exit 2 and one line."""
    work = tmp_path / "work"
    work.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {"llama-3.2-1b-instruct": {"source": "hub", "hub_id": "meta-llama/Llama-3.2-1B-Instruct",
                                                  "revision": "main", "prompt_style": "chat"}}  # fmt: skip
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    hub = FakeHub("GatedRepo")
    try:
        out = subprocess.run([*QMR, "base", "--model", "llama-3.2-1b-instruct"], cwd=work, capture_output=True, text=True,
                             timeout=120, env=_env(home=tmp_path / "hf", HF_ENDPOINT=hub.url))  # fmt: skip
    finally:
        hub.close()
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert "is gated; accept its terms at https://huggingface.co/meta-llama/Llama-3.2-1B-Instruct" in out.stderr
    assert not (work / "models" / "base").exists()
