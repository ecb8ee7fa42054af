"""API keys never reach disk: plant a recognizable key, run `judge` and `vote` against the loopback
OpenAI-compatible server, scan every file the run wrote (and its log output) for the key."""

from __future__ import annotations

import copy
import logging

import yaml
from click.testing import CliRunner

from locate_helpers import write_judge_project
from qmr.cli import main
from qmr.devtools.openai_server import OpenAIStubServer

KEY = "sk-qmr-PLANTED-0123456789abcdef"
VARIANT = "rtn-w2g128"


def _judge_and_vote(tmp_path, default_params, caplog, server, **llm):
    """`qmr judge` + `qmr vote` against ``server`` with the planted key; returns the CLI output."""
    params = copy.deepcopy(default_params)
    params["generate"]["benchmarks"] = ["test", "mine"]
    params["judge"].update(variants=[VARIANT], max_failed_share=1.0, judges={
        "llm": {"kind": "llm", "base_url": server.url, "model": "m1", "api_key_env": "QMR_PLANTED_KEY", "timeout_s": 2.0, **llm},
        "reference": {"kind": "reference"},
    })  # fmt: skip
    params["vote"].update(baseline="llm", auxiliaries=["reference"], audit_fraction=1.0)
    params["recovery"]["variants"] = [VARIANT]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with caplog.at_level(logging.DEBUG):
        judged = CliRunner().invoke(main, ["-v", "judge", "--model", "toy", "--variant", VARIANT])
        voted = CliRunner().invoke(main, ["-v", "vote"])
    assert judged.exit_code == 0, judged.output
    assert voted.exit_code == 0, voted.output
    return judged.output + voted.output


def _leaks(tmp_path) -> list[str]:
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("judgments" in p.parts for p in written) and any("judge_outputs" in p.parts for p in written)
    return [str(p) for p in written if KEY.encode() in p.read_bytes()]


def test_planted_key_is_in_no_file_and_no_log(tmp_path, monkeypatch, default_params, caplog):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QMR_PLANTED_KEY", KEY)
    write_judge_project(tmp_path, VARIANT)
    with OpenAIStubServer() as server:
        output = _judge_and_vote(tmp_path, default_params, caplog, server)
        assert server.requests >= 6  # the judge really called the endpoint with the key
    assert any(p.name.endswith(".jsonl") and ".qmr-cache" in p.parts for p in tmp_path.rglob("*"))  # the response cache
    assert _leaks(tmp_path) == []
    assert KEY not in output + caplog.text


def test_key_echoed_by_the_endpoint_is_in_no_file_and_no_log(tmp_path, monkeypatch, default_params, caplog):
    """A gateway that echoes the bearer token in its 400/401/500 bodies: the errors are recorded (and
    the packets, logs and caches written) without the key."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QMR_PLANTED_KEY", KEY)
    write_judge_project(tmp_path, VARIANT)
    with OpenAIStubServer() as server:
        server.push("echo_key_400", "echo_key_401", "echo_key_500", "echo_key_500", "echo_key_400")
        output = _judge_and_vote(tmp_path, default_params, caplog, server, max_retries=0)
        assert server.actions["echo_key_400"] == 2 and server.actions["echo_key_500"] == 2
    judgments = (tmp_path / "data" / "judgments" / "toy" / f"{VARIANT}.jsonl").read_text()
    assert "Incorrect API key provided: [REDACTED]" in judgments  # the error is kept, the key is not
    assert _leaks(tmp_path) == []
    assert KEY not in output + caplog.text


def test_a_key_pasted_as_api_key_env_is_not_echoed(tmp_path, monkeypatch, default_params):
    monkeypatch.chdir(tmp_path)
    params = copy.deepcopy(default_params)
    params["judge"]["judges"]["llm"] = {"kind": "llm", "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": KEY}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, ["params", "check"])
    assert result.exit_code == 2 and "judge.judges.llm.api_key_env" in result.output
    assert KEY not in result.output and "not shown" in result.output
