"""Cost control for paid judges: which benchmarks are judged, the estimate logged and recorded before any
call, and `judge.budget_usd` — through `qmr judge` / `qmr vote` against the loopback endpoint (real
openai client) with prices set.

Tolerances: the estimate counts prompt tokens as ceil(characters / 4); the loopback server reports
floor(characters / 4) of the same text, so estimated prompt tokens (and dollars when only prompt tokens
are priced) are within 1% of the reported usage. Completion tokens are estimated at max_tokens, a
ceiling: estimated dollars are >= the actual, by at most calls x max_tokens x the completion price.
"""

from __future__ import annotations

import copy
import json
import logging
import threading

import pytest
import yaml
from click.testing import CliRunner

from locate_helpers import write_judge_project
from qmr.cli import main
from qmr.devtools.openai_server import Bias, OpenAIStubServer
from qmr.locate.budget import Budget, estimate_tokens, money

VARIANT = "rtn-w2g128"
KEY_ENV = "QMR_BUDGET_KEY"
PRICE_IN, PRICE_OUT = 2.5, 10.0  # per million tokens
MAX_TOKENS = 120


def _params(default_params: dict, url: str, *, budget=None, benchmarks=("test", "mine"), concurrency=4) -> dict:
    params = copy.deepcopy(default_params)
    params["generate"]["benchmarks"] = list(benchmarks)
    params["endpoints"] = {
        "cheap": {"base_url": url, "model": "m1", "api_key_env": KEY_ENV, "concurrency": concurrency, "timeout_s": 5.0,
                  "price_in_per_mtok": PRICE_IN, "price_out_per_mtok": 0.0},
        "dear": {"base_url": url, "model": "m2", "api_key_env": KEY_ENV, "concurrency": concurrency, "timeout_s": 5.0,
                 "price_in_per_mtok": PRICE_IN, "price_out_per_mtok": PRICE_OUT},
    }  # fmt: skip
    judges = {
        "cheap": {"kind": "llm", "endpoint": "cheap", "max_tokens": MAX_TOKENS},
        "dear": {"kind": "llm", "endpoint": "dear", "max_tokens": MAX_TOKENS},
        "reference": {"kind": "reference"},
    }
    params["judge"].update(variants=[VARIANT], judges=judges, budget_usd=budget)
    params["vote"].update(baseline="cheap", auxiliaries=["dear", "reference"], min_votes=2)
    params["recovery"]["variants"] = [VARIANT]
    return params


def _judge(tmp_path, params) -> tuple[int, str, str]:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, ["judge", "--model", "toy", "--variant", VARIANT])
    return result.exit_code, result.output, result.stderr


def _stats(tmp_path) -> dict:
    return json.loads((tmp_path / "data" / "judgments" / "toy" / f"{VARIANT}.stats.json").read_text())


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(KEY_ENV, "k")
    write_judge_project(tmp_path, VARIANT, per_benchmark=10)  # 20 failure cases
    return tmp_path


def test_estimate_matches_the_calls_made_and_is_recorded(project, default_params, caplog):
    caplog.set_level(logging.INFO, logger="qmr")
    with OpenAIStubServer(biases={"m2": Bias(rate=0.3, step_offset=1)}) as srv:
        code, out, _ = _judge(project, _params(default_params, srv.url))
        assert code == 0, out
        stats = _stats(project)
        est = stats["estimate"]
        # calls: exactly what the server received (nothing cached, every reply valid)
        assert est["total"]["calls"] == srv.requests == 40
        assert {n: est["judges"][n]["calls"] for n in ("cheap", "dear")} == {"cheap": srv.by_model["m1"], "dear": srv.by_model["m2"]}
        for name in ("cheap", "dear"):
            e, actual = est["judges"][name], stats["judges"][name]
            assert abs(e["prompt_tokens"] - actual["tokens_in"]) <= 0.01 * actual["tokens_in"]
            assert e["completion_tokens"] == 20 * MAX_TOKENS >= actual["tokens_out"]
        # dollars: prompt-only pricing within 1%; with a completion price the estimate is a ceiling
        cheap, dear = est["judges"]["cheap"], est["judges"]["dear"]
        assert cheap["usd"] == pytest.approx(stats["judges"]["cheap"]["cost"], rel=0.01)
        assert stats["judges"]["dear"]["cost"] <= dear["usd"] <= stats["judges"]["dear"]["cost"] + 20 * MAX_TOKENS * PRICE_OUT / 1e6 + 1e-9
        assert stats["budget"] == {"limit_usd": None, "spent_usd": pytest.approx(stats["judges"]["cheap"]["cost"] + stats["judges"]["dear"]["cost"], abs=1e-5),
                                   "calls": 40, "stopped": False, "remaining_calls": 0}  # fmt: skip
        # one readable table in the log, before the calls
        table = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("estimated cost of judge toy/"))
        assert "completion tok" in table and "budget: none (judge.budget_usd: null)" in table
        assert f"${dear['usd']:,.4f}" in table and "total" in table
        # the vote metrics carry the estimate beside what was spent
        voted = CliRunner().invoke(main, ["vote"])
        assert voted.exit_code == 0, voted.output
        m = json.loads((project / "metrics" / "vote.json").read_text())["toy"][VARIANT]
        assert m["calls"]["estimated"] == 40 and m["calls"]["made"] == 40
        assert m["cost_usd"]["estimated"] == est["total"]["usd"] and m["cost_usd"]["spent"] == pytest.approx(stats["budget"]["spent_usd"])

        # a second run is served from the cache: estimated 0 calls, $0
        srv.reset_counts()
        code, out, _ = _judge(project, _params(default_params, srv.url))
        assert code == 0 and srv.requests == 0
        assert _stats(project)["estimate"]["total"] == {**_stats(project)["estimate"]["total"], "calls": 0, "usd": 0.0, "cached": 40}


def test_budget_stops_before_exceeding_and_a_rerun_pays_only_the_rest(project, default_params):
    # about a third of the run's estimate; four workers per judge in flight against a slow endpoint
    with OpenAIStubServer(latency_s=0.05) as srv:
        code, _, _ = _judge(project, _params(default_params, srv.url))
        assert code == 0
        full = _stats(project)["estimate"]["total"]
        full_dear_per_call = _stats(project)["estimate"]["judges"]["dear"]["usd"] / 20
    (project / ".qmr-cache").rename(project / "first-cache")  # start over with an empty cache
    budget = round(full["usd"] / 3, 6)
    with OpenAIStubServer(latency_s=0.05) as srv:
        params = _params(default_params, srv.url, budget=budget)
        code, out, err = _judge(project, params)
        assert code == 2, out
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1 and "Traceback" not in err, err
        line = errors[0]
        assert f"judge.budget_usd: {money(budget)} reached: spent $" in line
        assert "raise judge.budget_usd" in line and "run `dvc repro` again" in line and "not paid twice" in line
        stats = _stats(project)
        spent = stats["judges"]["cheap"]["cost"] + stats["judges"]["dear"]["cost"]
        assert 0 < spent <= budget and stats["budget"]["spent_usd"] <= budget  # stopped BEFORE exceeding
        # ... and not early: calls that did not fit beside those in flight waited for them, so the stop came
        # when the next call (at most ~1.5x the average reservation) no longer fitted
        assert budget - spent < 1.5 * full_dear_per_call
        first = srv.requests
        assert 0 < first < 40 and stats["budget"]["stopped"]
        assert stats["budget"]["remaining_calls"] == 40 - first
        assert f"{stats['budget']['remaining_calls']} call(s) not made" in line
        # what finished is written and cached
        judgments = [json.loads(x) for x in (project / "data/judgments/toy" / f"{VARIANT}.jsonl").read_text().splitlines()]
        assert sum(j["kind"] == "llm" for j in judgments) == first
        cached = (project / ".qmr-cache").rglob("*.jsonl")
        assert sum(len(p.read_text().splitlines()) for p in cached) == first

        # a higher budget: only the remaining calls are made, none twice
        srv.reset_counts()
        params["judge"]["budget_usd"] = round(full["usd"] * 2, 6)
        code, out, _ = _judge(project, params)
        assert code == 0, out
        assert srv.requests == 40 - first
        assert _stats(project)["estimate"]["total"]["calls"] == 40 - first
        assert _stats(project)["estimate"]["total"]["cached"] == first


def test_multiple_choice_benchmark_is_skipped_by_default(tmp_path, monkeypatch, default_params):
    monkeypatch.chdir(tmp_path)
    write_judge_project(tmp_path, VARIANT, per_benchmark=4)  # no files at all for mmlu: auto never reads them
    params = copy.deepcopy(default_params)
    params["benchmarks"]["mmlu"] = {"source": "toy", "split": "test", "size": 4, "role": "eval", "kind": "choice"}
    params["generate"]["benchmarks"] = ["test", "mine", "mmlu"]
    params["judge"]["variants"] = params["recovery"]["variants"] = [VARIANT]
    params["judge"]["judges"].pop("rollout")  # no checkpoints in this project: the offline judges only
    params["vote"]["auxiliaries"].remove("rollout")
    code, out, _ = _judge(tmp_path, params)
    assert code == 0, out
    stats = _stats(tmp_path)
    assert stats["benchmarks"]["judged"] == ["test", "mine"]
    assert "kind choice" in stats["benchmarks"]["skipped"]["mmlu"]
    cases = (tmp_path / "data/judgments/toy" / f"{VARIANT}.cases.jsonl").read_text().splitlines()
    assert {json.loads(c)["benchmark"] for c in cases} == {"test", "mine"}
    # listed explicitly, it is judged
    write_judge_project(tmp_path, VARIANT, per_benchmark=4, benches=("mmlu",))
    params["judge"]["benchmarks"] = ["test", "mine", "mmlu"]
    code, out, _ = _judge(tmp_path, params)
    assert code == 0, out
    cases = (tmp_path / "data/judgments/toy" / f"{VARIANT}.cases.jsonl").read_text().splitlines()
    assert {json.loads(c)["benchmark"] for c in cases} == {"test", "mine", "mmlu"}


def test_judge_benchmarks_and_budget_are_validated(tmp_path, monkeypatch, default_params):
    monkeypatch.chdir(tmp_path)
    params = copy.deepcopy(default_params)
    params["judge"]["benchmarks"] = ["tset", "mine"]
    params["judge"]["budget_usd"] = -1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, ["params", "check"])
    assert result.exit_code == 2
    assert "judge.benchmarks[0]: got 'tset'; allowed: 'auto' or names from generate.benchmarks: test, control, mine (did you mean 'test'?)" in result.output
    assert "judge.budget_usd: got -1.0; allowed: a number >= 0" in result.output
    params["judge"].update(benchmarks=["test"], budget_usd=None)  # silver mines pairs from the mine benchmark's labels
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, ["params", "check"])
    assert result.exit_code == 2 and "judge.benchmarks: got ['test']; allowed: a setting that judges the mine benchmark 'mine'" in result.output
    params["judge"]["benchmarks"] = "auto"
    params["judge"]["budget_usd"] = 12.5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert CliRunner().invoke(main, ["params", "check"]).exit_code == 0


def test_reservations_keep_concurrent_callers_within_the_cap():
    """Eight threads reserve, 'call' and settle at random: spent never passes the cap, even with the
    reservations of calls in flight, and once a call is refused none is admitted."""
    import random

    class Spec:
        price_in_per_mtok, price_out_per_mtok, max_tokens = 1_000.0, 1_000.0, 50

    class J:
        name, spec = "j", Spec()

    budget = Budget(0.5)
    msgs = [{"role": "user", "content": "x" * 400}]  # 100 tokens + 50 completion: $0.15 reserved a call
    lock = threading.Lock()
    admitted_after_stop = []

    def worker(seed):
        rng = random.Random(seed)
        for _ in range(20):
            t = budget.reserve(J, msgs)
            if t is None:
                with lock:
                    admitted_after_stop.append(budget.reserve(J, msgs))
                return
            budget.settle(t, J, rng.randint(50, 100), rng.randint(1, 50))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.stopped and budget.spent_usd <= 0.5 and budget.reserved_usd == pytest.approx(0.0, abs=1e-12)
    assert admitted_after_stop and all(a is None for a in admitted_after_stop)
    assert estimate_tokens("x" * 401) == 101


def test_reservations_learn_the_endpoints_prompt_token_ratio():
    """characters / 4 undercounting a provider's tokenizer: after the first answers report twice the
    estimated prompt tokens, the prompt part of each reservation is doubled."""

    class Spec:
        price_in_per_mtok, price_out_per_mtok, max_tokens = 1_000.0, 0.0, 10

    class J:
        name, spec = "j", Spec()

    budget = Budget(None)
    msgs = [{"role": "user", "content": "x" * 400}]  # estimated 100 prompt tokens: $0.10
    first = budget.reserve(J, msgs)
    assert first.usd == pytest.approx(0.1)
    budget.settle(first, J, 200, 5)  # the endpoint counted 200
    assert budget.reserve(J, msgs).usd == pytest.approx(0.2) and budget.spent_usd == pytest.approx(0.2)
