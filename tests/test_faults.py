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
from qmr.endpoints import EndpointSpec

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
    srv = OpenAIStubServer(failure_rate=0.5, failure_kinds=("429", "500", "hang", "invalid", "invalid"), hang_s=1.0, seed=1).start()
    # The first 8 requests are invalid replies: with 4 workers, some worker's case gets both its ask and
    # its re-ask among them (pigeonhole), so at least one case stays invalid and must be re-asked below,
    # whatever order the threads take (the seeded faults alone may all be absorbed by retries).
    srv.push(*["invalid"] * 8)
    params = _params(default_params, srv.url)
    params["judge"]["max_failed_share"] = 1.0  # this test is about completing under faults, not failing the stage
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
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
    # the endpoint recovers: a re-run is served from the cache for the valid answers and re-asks exactly
    # the cases whose call failed or whose reply stayed invalid (neither is cached as final)
    srv.failure_rate = 0.0
    srv.reset_counts()
    again = CliRunner().invoke(main, ["judge", "--model", "toy", "--variant", VARIANT])
    srv.stop()
    assert again.exit_code == 0, again.output
    redo = {j["id"] for j in llm if not j["valid"] or j.get("error_kind")}
    assert redo and srv.requests == len(redo)


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


# --------------------------------------------------------------------------------------------------
# hostile replies, one row each: never an exception, always a counted invalid judgment (or a correct
# one), never the key in what is kept


import time  # noqa: E402

import pytest  # noqa: E402

from locate_helpers import toy_case  # noqa: E402
from qmr.locate.judges import JudgeSpec, build_judge  # noqa: E402

CE_CASE = ["4 * 12 = 48", "23 + 48 = 72", "72 - 17 = 55", "The answer is 55."]
KEY = "sk-qmr-HOSTILE-abcdef0123456789"


def _judge(url: str, **kw):
    base = dict(kind="llm", base_url=url, model="m1", api_key_env="QMR_HOSTILE_KEY", timeout_s=1.0, max_retries=0, reasks=0)
    return build_judge("h", JudgeSpec(**{**base, **kw}))


@pytest.mark.parametrize("action, valid, error_kind", [
    ("html_json", False, "malformed_reply"),       # HTML under application/json (JSONDecodeError before)
    ("text_plain", False, "malformed_reply"),      # a 200 text/plain body
    ("empty_choice", False, "malformed_reply"),    # choices: [{}]
    ("no_choices", False, "malformed_reply"),      # no choices key (was a silent, cached invalid)
    ("null_choices", False, "malformed_reply"),    # choices: null
    ("deep_body", False, "malformed_reply"),       # the body nested 50,000 deep (RecursionError before)
    ("deep_content", False, "invalid_reply"),      # the message nested 50,000 deep
    ("bad_usage", True, None),                     # usage.prompt_tokens "abc": the verdict still counts
    ("echo_key_400", False, "bad_request"),        # errors that echo the bearer token
    ("echo_key_401", False, "auth"),
    ("echo_key_500", False, "server"),
    ("trickle", False, "timeout"),                 # headers, then a byte every 0.5 s: a deadline, not a socket timeout
])  # fmt: skip
def test_hostile_reply_is_recorded_not_raised(monkeypatch, caplog, action, valid, error_kind):
    monkeypatch.setenv("QMR_HOSTILE_KEY", KEY)
    with OpenAIStubServer(trickle_s=0.3) as srv:
        srv.push(action)
        t0 = time.monotonic()
        j = _judge(srv.url).judge(toy_case(CE_CASE))
        seconds = time.monotonic() - t0
    assert j["valid"] is valid and j.get("error_kind") == error_kind, j
    if valid:
        assert j["primary_error_type"] == "computational_error" and j["tokens_in"] == 0
    else:
        assert j["explanation"] and j["primary_error_type"] is None
    assert seconds < 4.0  # the 1 s deadline held (a trickled reply takes ~90 s)
    kept = json.dumps(j) + caplog.text
    assert KEY not in kept and len(json.dumps(j)) < 60_000


def test_the_verdict_is_the_answer_not_the_quoted_format_example(monkeypatch):
    monkeypatch.setenv("QMR_HOSTILE_KEY", KEY)
    with OpenAIStubServer() as srv:
        srv.push("example_then_answer")
        j = _judge(srv.url).judge(toy_case(CE_CASE))
    assert j["valid"] and (j["primary_error_type"], j["error_step"]) == ("computational_error", 2)


def test_cache_key_covers_template_text_url_and_sampling(monkeypatch, tmp_path):
    """Editing anything that changes the answer asks again; the same settings are served from the cache."""
    from qmr.locate import llm
    from qmr.locate.cache import run_judges

    monkeypatch.setenv("QMR_HOSTILE_KEY", KEY)
    cache = tmp_path / "c.jsonl"
    cases = [toy_case(CE_CASE)]
    with OpenAIStubServer() as srv, OpenAIStubServer() as other:
        def calls(**kw) -> int:
            return run_judges(cases, {"h": _judge(kw.pop("base_url", srv.url), **kw)}, cache).calls_made

        assert calls() == 1 and calls() == 0
        assert calls(temperature=0.5) == 1 and calls(max_tokens=77) == 1 and calls(reasks=2) == 1
        assert calls(base_url=other.url) == 1
        original = llm.load_template
        monkeypatch.setattr(llm, "load_template", lambda v: original(v) + "\nBe brief.")  # same version, new text
        assert calls() == 1 and calls() == 0


def test_endpoint_teacher_survives_hostile_replies_and_retries_only_failures(monkeypatch, tmp_path):
    from qmr.restore.llm_teacher import llm_teacher

    monkeypatch.setenv("QMR_HOSTILE_KEY", KEY)
    with OpenAIStubServer(responder=lambda req: "4 * 12 = 48\nThe answer is 48.") as srv:
        spec = EndpointSpec(base_url=srv.url, model="t", api_key_env="QMR_HOSTILE_KEY", timeout_s=1.0, max_retries=0)
        srv.push("500", "no_choices", "html_json", "echo_key_401")
        teacher = llm_teacher(spec, temperature=0.0, cache=tmp_path / "t.jsonl")
        out = teacher([f"problem {i}" for i in range(6)], 1)
        assert sorted(c[0] for c in out).count("") == 4 and teacher.failed == 4 and teacher.calls == 6
        srv.reset_counts()
        again = llm_teacher(spec, temperature=0.0, cache=tmp_path / "t.jsonl")([f"problem {i}" for i in range(6)], 1)
        assert srv.requests == 4 and all(c[0].endswith("The answer is 48.") for c in again)
    assert KEY.encode() not in (tmp_path / "t.jsonl").read_bytes()


def test_failure_share_fails_the_stage_and_a_rerun_asks_only_the_failures(tmp_path, monkeypatch, default_params):
    """30% malformed 200 replies: counted; the stage exits 2 above judge.max_failed_share (DVC does not
    record it as done), 0 below it; once the endpoint is fixed a re-run asks only the failed cases."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QMR_FAULT_KEY", "k")
    write_judge_project(tmp_path, VARIANT, per_benchmark=10)
    kinds = ("html_json", "empty_choice", "no_choices", "null_choices", "text_plain", "deep_body")
    with OpenAIStubServer(failure_rate=0.3, failure_kinds=kinds, seed=3) as srv:
        params = _params(default_params, srv.url)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        first = CliRunner().invoke(main, ["judge", "--model", "toy", "--variant", VARIANT])
        malformed = sum(srv.actions[k] for k in kinds)
        assert malformed >= 3
        assert first.exit_code == 2 and f"{malformed} of 20 case(s) failed" in first.output, first.output
        assert "judge.max_failed_share 10%" in first.output and "Traceback" not in first.output
        stats = json.loads((tmp_path / "data/judgments/toy" / f"{VARIANT}.stats.json").read_text())
        assert stats["judges"]["llm"]["failed"] == malformed  # counted
        params["judge"]["max_failed_share"] = 0.5  # the same faults under a looser limit: the stage passes
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        srv.reset_counts()
        srv.failure_rate = 0.0  # the endpoint is fixed
        again = CliRunner().invoke(main, ["judge", "--model", "toy", "--variant", VARIANT])
        assert again.exit_code == 0, again.output
        assert srv.requests == malformed  # only the failed cases were asked again
