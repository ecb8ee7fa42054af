"""The llm judge through the real openai client against the loopback stub server; cache and resume.

Client timeouts are tiny and the stub sends ``retry-after-ms: 1`` so retries cost milliseconds.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from locate_helpers import computational_case, toy_case
from qmr.config import ConfigError, from_dict
from qmr.devtools.openai_server import Bias, OpenAIStubServer, quantized_steps
from qmr.endpoints import EndpointConfigError
from qmr.io import read_jsonl
from qmr.locate.cache import JudgmentCache, run_judges
from qmr.locate.judges import JudgeSpec, build_judge, load_template, template_names
from qmr.locate.llm import EndpointDeadError, parse_verdict, raise_if_endpoint_dead, render_prompt
from qmr.locate.taxonomy import TYPES
from qmr.locate.vote import VoteSpec

KEY_ENV = "QMR_TEST_JUDGE_KEY"


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")


@pytest.fixture
def server():
    with OpenAIStubServer(hang_s=3.0) as srv:
        yield srv


def spec(srv, model="m1", **kw) -> JudgeSpec:
    base = dict(
        kind="llm",
        base_url=srv.url,
        model=model,
        api_key_env=KEY_ENV,
        timeout_s=1.0,
        max_retries=2,
        reasks=1,
        concurrency=2,
    )
    base.update(kw)
    return JudgeSpec(**base)


CE_CASE = ["4 * 12 = 48", "23 + 48 = 72", "72 - 17 = 55", "The answer is 55."]


# --------------------------------------------------------------------------------------------------
# spec, template, parsing


def test_spec_validation():
    s = from_dict(JudgeSpec, {"kind": "llm", "base_url": "http://x/v1", "model": "m"})
    assert s.concurrency == 4 and s.prompt_version == "judge_v1"
    with pytest.raises(ConfigError) as err:
        from_dict(
            JudgeSpec,
            {
                "kind": "llm",
                "base_url": "ftp://x",
                "model": "",
                "temperature": 3,
                "concurrency": 0,
                "prompt_version": "nope",
                "api_key_env": "sk-abc123!",
            },
            "judges.a",
        )
    text = str(err.value)
    for key in (
        "judges.a.base_url",
        "judges.a.model",
        "judges.a.temperature",
        "judges.a.concurrency",
        "judges.a.prompt_version",
        "judges.a.api_key_env",
    ):
        assert key in text
    assert from_dict(JudgeSpec, {"kind": "reference"}).kind == "reference"  # offline: llm fields unused


def test_template_names_every_type():
    assert "judge_v1" in template_names()
    t = load_template("judge_v1")
    for name in (
        *TYPES,
        "no_error",
        "quantized_error_analysis",
        "confidence_score",
        "{{qt_trace}}",
        "{{question}}",
    ):
        assert name in t
    prompt = render_prompt(t, toy_case(CE_CASE))
    assert "{{" not in prompt and "Step 2: 23 + 48 = 72" in prompt and 'steps="4"' in prompt
    assert quantized_steps(prompt) == CE_CASE  # the stub can read what the judge sends


@pytest.mark.parametrize(
    "reply, ok",
    [
        (
            '{"quantized_error_analysis": {"primary_error_type": "computational_error", "error_step": 2, "explanation": "x", "confidence_score": 0.9}}',
            True,
        ),
        (
            'Sure!\n```json\n{"quantized_error_analysis": {"primary_error_type": "Computational Error", "error_step": "2", "explanation": "x", "confidence_score": 0.9}}\n```',
            True,
        ),
        ('{"primary_error_type": "computational_error", "error_step": 2, "confidence_score": 1}', True),
        (
            '{"quantized_error_analysis": {"primary_error_type": "no_error", "error_step": null, "confidence_score": 0.7}}',
            True,
        ),
        ('{"quantized_error_analysis": {"primary_error_type": "vibes", "error_step": 2}}', False),
        (
            '{"quantized_error_analysis": {"primary_error_type": "computational_error", "error_step": 9}}',
            False,
        ),
        (
            '{"quantized_error_analysis": {"primary_error_type": "computational_error", "error_step": 0}}',
            False,
        ),
        (
            '{"quantized_error_analysis": {"primary_error_type": "computational_error", "error_step": 2, "confidence_score": 83}}',
            False,
        ),
        ("The error is in step 2.", False),
        ("", False),
    ],
)
def test_parse_verdict(reply, ok):
    verdict, reason = parse_verdict(reply, n_steps=4)
    assert (verdict is not None) == ok
    if ok:
        assert verdict["primary_error_type"] in (*TYPES, "no_error")
    else:
        assert reason


# --------------------------------------------------------------------------------------------------
# the judge against the stub


def test_valid_and_fenced(server):
    judge = build_judge("a", spec(server, price_in_per_mtok=2.0, price_out_per_mtok=8.0))
    server.push("ok", "fence")
    for _ in range(2):
        j = judge.judge(toy_case(CE_CASE))
        assert (j["primary_error_type"], j["error_step"], j["valid"], j["abstain"]) == (
            "computational_error",
            2,
            True,
            False,
        )
        assert j["calls"] == 1 and j["retries"] == 0 and j["tokens_in"] > 0 and j["tokens_out"] > 0
        assert j["cost"] == pytest.approx(j["tokens_in"] * 2e-6 + j["tokens_out"] * 8e-6)
        assert j["raw"] and j["model"] == "m1" and j["prompt_version"] == "judge_v1"
    assert server.requests == 2


def test_invalid_reasked_then_valid(server):
    judge = build_judge("a", spec(server, reasks=1))
    server.push("invalid", "ok")
    j = judge.judge(toy_case(CE_CASE))
    assert j["valid"] and j["calls"] == 2 and j["primary_error_type"] == "computational_error"
    assert server.log[1]["messages"] == 3  # the re-ask continues the conversation


def test_invalid_twice_recorded_invalid(server):
    judge = build_judge("a", spec(server, reasks=1))
    server.push("invalid", "bad_type")
    j = judge.judge(toy_case(CE_CASE))
    assert not j["valid"] and not j["abstain"] and j["calls"] == 2 and j["primary_error_type"] is None
    assert "primary_error_type" in j["explanation"] and j["error"] is None
    assert server.requests == 2


@pytest.mark.parametrize("status", ["429", "500"])
def test_transient_errors_retried_by_client(server, status):
    judge = build_judge("a", spec(server, max_retries=2))
    server.push(status, status, "ok")
    j = judge.judge(toy_case(CE_CASE))
    assert j["valid"] and j["calls"] == 1 and j["retries"] == 2
    assert server.requests == 3


def test_retries_exhausted_recorded_with_error(server):
    judge = build_judge("a", spec(server, max_retries=1))
    server.push("500", "500")
    j = judge.judge(toy_case(CE_CASE))
    assert not j["valid"] and j["error_kind"] == "server" and "InternalServerError" in j["error"]


def test_hang_times_out(server):
    judge = build_judge("a", spec(server, timeout_s=0.25, max_retries=0))
    server.push("hang")
    t0 = time.monotonic()
    j = judge.judge(toy_case(CE_CASE))
    assert time.monotonic() - t0 < 2.0
    assert not j["valid"] and j["error_kind"] == "timeout"
    server.push("hang", "ok")  # with a retry the second attempt answers
    judge = build_judge("a", spec(server, timeout_s=0.25, max_retries=1))
    j = judge.judge(toy_case(CE_CASE))
    assert j["valid"] and j["retries"] == 1


def test_missing_key_raises_before_any_work(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(EndpointConfigError, match=KEY_ENV):
        build_judge("a", spec(server))
    assert server.requests == 0
    assert build_judge("a", spec(server, api_key_env="")).judge(toy_case(CE_CASE))[
        "valid"
    ]  # keyless endpoint


def test_dead_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = JudgeSpec(
        kind="llm",
        base_url=f"http://127.0.0.1:{port}/v1",
        model="m",
        api_key_env=KEY_ENV,
        max_retries=0,
        timeout_s=0.5,
        concurrency=1,
    )
    cases = [computational_case(i) for i in range(6)]
    run = run_judges(cases, {"a": build_judge("a", dead)}, None, dead_after=2)
    assert run.stats["a"]["dead"] and run.stats["a"]["judged"] < 6
    assert all(j["error_kind"] == "connection" for j in run.judgments)
    with pytest.raises(EndpointDeadError, match="'a'"):
        raise_if_endpoint_dead(run.judgments)


# --------------------------------------------------------------------------------------------------
# cache, resume, cheap-first


class Interrupting:
    """Wraps a judge; raises KeyboardInterrupt on call number ``at`` (1-based)."""

    def __init__(self, inner, at):
        self.inner, self.at, self.n = inner, at, 0
        for k in ("name", "kind", "model", "prompt_version", "concurrency", "cacheable", "fingerprint"):
            setattr(self, k, getattr(inner, k))

    def judge(self, case):
        self.n += 1
        if self.n == self.at:
            raise KeyboardInterrupt
        return self.inner.judge(case)


def test_resume_after_interrupt(server, tmp_path):
    cases = [computational_case(i) for i in range(8)]
    server.biases["m2"] = Bias(rate=0.5, step_offset=1)

    def judges(wrap_at=None):
        js = {
            "a": build_judge("a", spec(server, "m1", concurrency=1)),
            "b": build_judge("b", spec(server, "m2", concurrency=1)),
        }
        if wrap_at:
            js["a"] = Interrupting(js["a"], wrap_at)
        return js

    reference = run_judges(cases, judges(), tmp_path / "ref.jsonl")
    assert server.requests == 16 and reference.calls_made == 16
    server.reset_counts()

    cache = tmp_path / "cache.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_judges(cases, judges(wrap_at=4), cache)
    first = server.requests
    answered = len(read_jsonl(cache))
    assert answered == first >= 3  # everything answered before the interrupt is in the cache
    with cache.open("a") as fh:
        fh.write('{"id": "torn')  # a torn tail from a killed process
    server.reset_counts()
    resumed = run_judges(cases, judges(), cache)
    assert server.requests == 16 - answered  # nothing answered is asked again
    assert resumed.stats["a"]["cached"] + resumed.stats["b"]["cached"] == answered
    assert resumed.judgments == reference.judgments  # identical to an uninterrupted run
    server.reset_counts()
    again = run_judges(cases, judges(), cache)
    assert server.requests == 0 and again.calls_made == 0 and again.calls_saved == 16
    assert again.judgments == reference.judgments
    assert len(JudgmentCache(cache)) == 16


def test_cache_key_and_failed_calls_not_cached(server, tmp_path):
    cache = tmp_path / "c.jsonl"
    cases = [computational_case(0)]
    server.push("500", "500", "500")
    run = run_judges(cases, {"a": build_judge("a", spec(server, max_retries=2))}, cache)
    assert run.judgments[0]["error_kind"] == "server"
    assert not cache.exists() or read_jsonl(cache) == []
    run = run_judges(cases, {"a": build_judge("a", spec(server))}, cache)
    assert run.judgments[0]["valid"] and run.calls_made == 1
    # the same content under another id/variant is served from the cache, re-stamped
    other = computational_case(0, variant="w3")
    other.id = "renamed"
    run = run_judges([other], {"a": build_judge("a", spec(server))}, cache)
    assert run.calls_made == 0 and run.judgments[0]["id"] == "renamed" and run.judgments[0]["variant"] == "w3"
    # another prompt version or model is another key
    run = run_judges(cases, {"a": build_judge("a", spec(server, model="m9"))}, cache)
    assert run.calls_made == 1


def test_cheap_first(server, tmp_path):
    # case 0..2: computational errors (arithmetic and reference agree -> decided offline)
    # case 3: a misread number (arithmetic abstains -> only one offline voice -> ask the llm)
    cases = [computational_case(i) for i in range(3)]
    cases.append(toy_case(["4 * 13 = 52", "23 + 52 = 75", "75 - 17 = 58", "The answer is 58."], cid="co"))
    judges = {
        "arith": build_judge("arith", JudgeSpec(kind="arithmetic")),
        "ref": build_judge("ref", JudgeSpec(kind="reference")),
        "llm": build_judge("llm", spec(server)),
    }
    vs = VoteSpec(baseline="llm", auxiliaries=["ref", "arith"], min_votes=2)
    run = run_judges(cases, judges, tmp_path / "c.jsonl", cheap_first=vs)
    assert server.requests == 1
    assert run.stats["llm"]["skipped_cheap_first"] == 3 and run.stats["llm"]["calls_saved"] == 3
    assert [j["judge"] for j in run.judgments if j["id"] == "co"] == ["arith", "ref", "llm"]
    assert len(run.judgments) == 3 * 2 + 3
    json.dumps(run.judgments)  # serializable


def test_failure_rate_mode_and_latency(tmp_path):
    with OpenAIStubServer(failure_rate=0.4, seed=3) as srv:
        srv.push("latency:0.05")
        judge = build_judge("a", spec(srv, max_retries=6, concurrency=4))
        run = run_judges([computational_case(i) for i in range(12)], {"a": judge}, tmp_path / "c.jsonl")
        assert all(j["valid"] for j in run.judgments)
        assert srv.actions["429"] + srv.actions["500"] > 0 and srv.actions["latency"] == 1
        assert run.stats["a"]["retries"] == srv.requests - 12 == srv.actions["429"] + srv.actions["500"]
