"""Endpoint faults at the stage level: `qmr judge` + `qmr vote` against a loopback endpoint that fails
30% of requests (429, 500, hangs past the timeout) and answers malformed JSON on 20%, and against a dead
endpoint. (The judge runner's retry, re-ask and cache logic: tests/test_locate_llm.py.)
"""

from __future__ import annotations

import copy
import json

import yaml
from click.testing import CliRunner

from locate_helpers import write_judge_project
from qmr.cli import main
from qmr.devtools.openai_server import OpenAIStubServer

VARIANT = "rtn-w2g128"


def _params(default_params: dict, url: str, **llm) -> dict:
    params = copy.deepcopy(default_params)
    params["generate"]["benchmarks"] = ["test", "mine"]
    judge = {"kind": "llm", "base_url": url, "model": "m1", "api_key_env": "QMR_FAULT_KEY", "timeout_s": 0.5, "max_retries": 4, "reasks": 1, **llm}
    params["judge"].update(variants=[VARIANT], judges={"llm": judge, "reference": {"kind": "reference"}})
    params["vote"].update(baseline="llm", auxiliaries=["reference"], min_votes=2)
    params["recovery"]["variants"] = [VARIANT]
    return params


def test_flaky_endpoint_completes_and_counts(tmp_path, monkeypatch, default_params):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QMR_FAULT_KEY", "k")
    write_judge_project(tmp_path, VARIANT, per_benchmark=10)
    # failure_rate 0.5 over five equally likely kinds: 30% errors (429, 500, hang), 20% malformed replies
    with OpenAIStubServer(failure_rate=0.5, failure_kinds=("429", "500", "hang", "invalid", "invalid"), hang_s=1.0, seed=1) as srv:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params(default_params, srv.url)))
        judged = CliRunner().invoke(main, ["judge", "--model", "toy", "--variant", VARIANT])
        assert judged.exit_code == 0, judged.output
        assert srv.actions["429"] and srv.actions["500"] and srv.actions["hang"] and srv.actions["invalid"]
    voted = CliRunner().invoke(main, ["vote"])
    assert voted.exit_code == 0, voted.output

    judgments = [json.loads(line) for line in (tmp_path / "data" / "judgments" / "toy" / f"{VARIANT}.jsonl").read_text().splitlines()]
    llm = [j for j in judgments if j["judge"] == "llm"]
    assert len(llm) == 20  # nothing lost: one verdict (valid or recorded invalid) per case
    stats = json.loads((tmp_path / "metrics" / "vote.json").read_text())["toy"][VARIANT]
    assert stats["judges"]["llm"]["retries"] > 0  # counted in the metrics
    assert stats["judges"]["llm"]["invalid"] == sum(not j["valid"] for j in llm)
    labels = [json.loads(line) for line in (tmp_path / "data" / "labels" / "toy" / f"{VARIANT}.jsonl").read_text().splitlines()]
    assert len(labels) == 20
    invalid_ids = {j["id"] for j in llm if not j["valid"]}
    for lab in labels:  # a case without a valid majority is escalated, never silently accepted
        if lab["id"] in invalid_ids:
            assert lab["rule"] in ("escalated", "abstain_all") and lab["needs_human"], lab
    # a re-run is served from the cache: answered cases (valid or invalid after re-asks) are not asked
    # again; only calls that ended in a transport error are retried
    with OpenAIStubServer() as calm:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params(default_params, calm.url)))
        again = CliRunner().invoke(main, ["judge", "--model", "toy", "--variant", VARIANT])
        assert again.exit_code == 0, again.output
        assert calm.requests == len({j["id"] for j in llm if j.get("error_kind")})


def test_dead_endpoint_fails_clearly_and_keeps_finished_work(tmp_path, monkeypatch, default_params):
    import socket

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QMR_FAULT_KEY", "k")
    write_judge_project(tmp_path, VARIANT)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params(default_params, f"http://127.0.0.1:{port}/v1", max_retries=1)))
    earlier = tmp_path / "metrics" / "vote.json"
    earlier.parent.mkdir(parents=True, exist_ok=True)
    earlier.write_text('{"kept": true}\n')
    result = CliRunner().invoke(main, ["judge", "--model", "toy", "--variant", VARIANT])
    assert result.exit_code == 2, result.output
    assert "llm" in result.output and "Traceback" not in result.output
    assert earlier.read_text() == '{"kept": true}\n'
    assert not (tmp_path / "data" / "judgments" / "toy" / f"{VARIANT}.jsonl").exists()
