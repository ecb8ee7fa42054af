"""The rollout judge (qmr.locate.rollout): the drop test, linear and binary search, abstention, the
cheap-first cascade that sends it only some cases, and what the vote and metrics make of it.

The policy here is a scripted sampler over the toy cases of `locate_helpers`: from a prefix that holds
no faulty step it reaches the gold answer in a fixed share of its samples (seeded), from one that holds
the faulty step never — what a full-precision model does on the toy, where a wrong value propagates.
The real policy (the toy fp model through the generation backend) runs in the pipeline tests.
"""

from __future__ import annotations

import math
import random

import pytest

from locate_helpers import computational_case, toy_case
from qmr.generation import Completion
from qmr.locate.cache import run_judges
from qmr.locate.judges import JudgeSpec, build_judge, speaks
from qmr.locate.metrics import potential_rows, vote_metrics
from qmr.locate.offline import ground_truth_for
from qmr.locate.rollout import RolloutJudge, collapsed, z_less
from qmr.locate.vote import VoteSpec, vote_all


def test_z_test_matches_the_textbook_value():
    # 90/100 vs 80/100: pooled 0.85, se = sqrt(0.85 * 0.15 * 0.02) = 0.0505, z = 1.980, one-sided p = 0.0239
    assert z_less(90, 100, 80, 100) == pytest.approx(0.0239, abs=5e-4)
    assert z_less(4, 8, 4, 8) == pytest.approx(0.5)
    assert z_less(0, 8, 0, 8) == 1.0  # no successes anywhere: no evidence
    assert z_less(8, 8, 0, 8) < 1e-4


def test_collapse_needs_both_significance_and_size():
    assert collapsed((7, 8), (0, 8), alpha=0.05, min_drop=0.5)
    assert not collapsed((7, 8), (5, 8), alpha=0.05, min_drop=0.5)  # a small drop
    assert not collapsed((2, 8), (0, 8), alpha=0.05, min_drop=0.2)  # not significant with 8 samples
    assert collapsed((40, 40), (30, 40), alpha=0.05, min_drop=0.2)


class ScriptedPolicy:
    """Succeeds with probability ``p_good`` from a prefix without the case's faulty step, never after it."""

    def __init__(self, cases, p_good: float = 0.9, seed: int = 0):
        self.bad = {}  # question -> the faulty step's text
        self.gold = {}
        for c, step in cases:
            self.bad[c.question] = c.qt_steps[step - 1]
            self.gold[c.question] = c.gold_answer
        self.p_good = p_good
        self.rng = random.Random(seed)
        self.prompts: list[str] = []

    def __call__(self, prompts: list[str], n: int) -> list[list[Completion]]:
        out = []
        for prompt in prompts:
            self.prompts.append(prompt)
            question = next(q for q in self.bad if q in prompt)
            spoiled = self.bad[question] in prompt
            comps = []
            for _ in range(n):
                ok = not spoiled and self.rng.random() < self.p_good
                answer = self.gold[question] if ok else "-1"
                comps.append(Completion(text=f"x = 1\nThe answer is {answer}.", tokens=7, seconds=0.01))
            out.append(comps)
        return out


def _cases(n: int = 12):
    cases = [computational_case(i) for i in range(n)]
    truth = ground_truth_for(cases)
    return cases, [(c, truth[c.id][0]) for c in cases]


@pytest.mark.parametrize("search", ["linear", "binary"])
def test_rollout_locates_the_first_faulty_step(search):
    cases, located = _cases()
    policy = ScriptedPolicy(located)
    judge = RolloutJudge("rollout", samples=8, search=search).bind(policy)
    js = judge.judge_many(cases)
    for j, (c, step) in zip(js, located, strict=True):
        assert speaks(j) and j["primary_error_type"] is None
        assert j["error_step"] == step, j["explanation"]
        assert j["rollouts"] == 8 * (len(j["potential"]) - 1)  # the full trace is known wrong: never rolled out
        assert j["potential"][0][0] == 0 and j["potential"][-1] == [len(c.qt_steps), 0, 8]
        assert j["tokens_out"] == 7 * j["rollouts"]
    if search == "linear":
        assert all(len(j["potential"]) == len(c.qt_steps) + 1 for j, c in zip(js, cases, strict=True))


def test_binary_search_rolls_out_fewer_prefixes_and_agrees():
    cases, located = _cases(30)
    lin = RolloutJudge("r", search="linear").bind(ScriptedPolicy(located)).judge_many(cases)
    bis = RolloutJudge("r", search="binary").bind(ScriptedPolicy(located)).judge_many(cases)
    assert [j["error_step"] for j in lin] == [j["error_step"] for j in bis]
    assert sum(j["rollouts"] for j in bis) < sum(j["rollouts"] for j in lin)
    for j, c in zip(bis, cases, strict=True):
        assert len(j["potential"]) - 1 <= 1 + math.ceil(math.log2(len(c.qt_steps)))


def test_rollout_abstains_when_the_policy_cannot_solve_the_problem():
    cases, located = _cases(3)
    judge = RolloutJudge("rollout", samples=8).bind(ScriptedPolicy(located, p_good=0.1))
    js = judge.judge_many(cases)
    assert all(not speaks(j) for j in js)
    assert "not significant" in js[0]["explanation"]


def test_prefixes_are_the_models_prompt_plus_the_kept_steps():
    case = computational_case(4)
    policy = ScriptedPolicy([(case, 2)])
    RolloutJudge("rollout", samples=2).bind(policy, prompt_of=lambda c: f"<s>[Q] {c.question}\n").judge_many([case])
    assert policy.prompts[0] == f"<s>[Q] {case.question}\n"
    assert policy.prompts[1] == f"<s>[Q] {case.question}\n{case.qt_steps[0]}\n"


def test_rollout_spec_is_validated():
    from qmr.config import ConfigError

    with pytest.raises(ConfigError) as err:
        build_judge("r", JudgeSpec(kind="rollout", samples=1, rollout_temperature=0.0, alpha=1.5))
    text = str(err.value)
    for key in ("samples", "rollout_temperature", "alpha"):
        assert f"judges.r.{key}" in text


def test_cheap_first_sends_rollouts_only_undecided_cases_and_a_check_sample():
    cases, located = _cases(20)
    cases.append(toy_case(["12 * 4 = 48", "banana", "The answer is 3."], cid="toy-odd"))  # reference undecided? see below
    rollout = RolloutJudge("rollout", samples=8).bind(ScriptedPolicy([*located, (cases[-1], 2)]))
    judges = {"reference": build_judge("reference", JudgeSpec(kind="reference")),
              "arithmetic": build_judge("arithmetic", JudgeSpec(kind="arithmetic")), "rollout": rollout}  # fmt: skip
    spec = VoteSpec(baseline="reference", auxiliaries=["arithmetic", "rollout"], min_votes=1, threshold=2)
    run = run_judges(cases, judges, None, cheap_first=spec, check_sample=5, seed=0)
    seen = [j for j in run.judgments if j["judge"] == "rollout"]
    s = run.stats["rollout"]
    assert s["cheap_first_check"] == 5
    assert s["cases"] == len(cases) and s["judged"] == len(seen) == len(cases) - s["skipped_cheap_first"]
    assert 5 <= len(seen) < len(cases)
    assert s["rollouts"] == sum(j["rollouts"] for j in seen) > 0
    # the same draw on a re-run, and a different one with another seed
    again = run_judges(cases, judges, None, cheap_first=spec, check_sample=5, seed=0)
    assert [j["id"] for j in again.judgments if j["judge"] == "rollout"] == [j["id"] for j in seen]
    other = run_judges(cases, judges, None, cheap_first=spec, check_sample=5, seed=1)
    assert [j["id"] for j in other.judgments if j["judge"] == "rollout"] != [j["id"] for j in seen]
    # metrics: the rollout judge is scored on the cases it saw; its costs are counted
    labels = vote_all(run.judgments, spec, [c.id for c in cases], "w4")
    m = vote_metrics(labels, run.judgments, cases, ground_truth_for(cases))
    assert m["judges"]["rollout"]["rollouts"] == s["rollouts"]
    assert m["accuracy"]["rollout"]["n"] == len([j for j in seen if j["id"] in ground_truth_for(cases)])
    assert m["accuracy"]["rollout"]["step_accuracy_answered"] == 1.0
    assert m["agreement"]["fleiss_judges"] == ["arithmetic", "reference"]


def test_a_typeless_rollout_anchor_takes_the_type_of_the_typed_judges_at_its_step():
    cases, located = _cases(9)
    rollout = RolloutJudge("rollout", samples=8).bind(ScriptedPolicy(located))
    judges = {"rollout": rollout, "arithmetic": build_judge("arithmetic", JudgeSpec(kind="arithmetic"))}
    run = run_judges(cases, judges, None)
    labels = vote_all(run.judgments, VoteSpec(baseline="rollout", auxiliaries=["arithmetic"], min_votes=1), [c.id for c in cases], "w4")
    truth = ground_truth_for(cases)
    for lab in labels:
        assert lab["error_step"] == truth[lab["id"]][0]
        assert lab["primary_error_type"] == "computational_error"


def test_potential_rows_are_the_longest_curves():
    cases, located = _cases(8)
    js = RolloutJudge("rollout", samples=8).bind(ScriptedPolicy(located)).judge_many(cases)
    rows = potential_rows(js, cases, "w4", limit=3)
    ids = {r["id"] for r in rows}
    assert len(ids) == 3
    for cid in ids:
        curve = [r for r in rows if r["id"] == cid]
        assert [r["kept_steps"] for r in curve] == list(range(len(curve)))
        assert curve[-1]["success_rate"] == 0.0 and curve[-1]["kept_fraction"] == 1.0
        step = curve[0]["located_step"]
        assert curve[step]["success_rate"] == 0.0 and curve[step - 1]["success_rate"] > 0.5


def test_a_right_trace_with_no_collapse_is_no_error_and_no_gold_abstains():
    from dataclasses import replace

    right = toy_case(cid="right")  # the gold steps: a judge-bench item whose correctness is unknown to the judge
    right = replace(right, qt_correct=None)
    wrong = computational_case(1)
    policy = ScriptedPolicy([(wrong, 2), (right, len(right.qt_steps))])
    policy.bad[right.question] = "never in a prompt"
    js = RolloutJudge("rollout", samples=8).bind(policy).judge_many([right, replace(wrong, gold_answer="")])
    assert js[0]["primary_error_type"] == "no_error" and speaks(js[0])
    assert js[0]["potential"][-1] == [len(right.qt_steps), 8, 8]
    assert not speaks(js[1]) and "--gold" in js[1]["explanation"] and js[1]["rollouts"] == 0


def test_potential_rows_keep_the_prefixes_binary_search_rolled_out():
    cases, located = _cases(8)
    js = RolloutJudge("rollout", samples=8, search="binary").bind(ScriptedPolicy(located)).judge_many(cases)
    rows = potential_rows(js, cases, "w4", limit=8)
    for j in js:
        assert [r["kept_steps"] for r in rows if r["id"] == j["id"]] == [k for k, _, _ in j["potential"]]


def _endpoint_project(tmp_path, monkeypatch, default_params, base_url: str):
    import copy

    import yaml

    from locate_helpers import write_judge_project

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QMR_ROLLOUT_KEY", "k")
    write_judge_project(tmp_path, "w4", per_benchmark=5)  # fp solves every problem; w4 slips in step 1 of each
    params = copy.deepcopy(default_params)
    params["judge"]["variants"] = params["recovery"]["variants"] = ["w4"]
    params["quantize"]["variants"]["w4"] = {"method": "rtn", "bits": 4, "group_size": 128}
    params["generate"]["benchmarks"] = ["test", "mine"]
    params["endpoints"] = {"solver": {"base_url": base_url, "model": "solver", "api_key_env": "QMR_ROLLOUT_KEY", "max_retries": 0, "timeout_s": 5.0}}
    params["judge"]["judges"]["rollout"].update(policy="solver", samples=4)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


def test_an_endpoint_policy_rolls_out_through_the_openai_client(tmp_path, monkeypatch, default_params):
    """`policy: <endpoint>`: the judge stage sends the plain problem + kept steps to a loopback
    OpenAI-compatible server (no checkpoint needed) and locates every injected step-1 slip."""
    from click.testing import CliRunner

    from qmr.cli import main
    from qmr.devtools.openai_server import OpenAIStubServer
    from qmr.io import read_jsonl
    from qmr.toy.problems import generate_split

    solutions = {r["question"]: r["solution"] for split in ("test", "mine") for r in generate_split(split, 5, seed=0)}
    seen = []

    def responder(request: dict) -> str:
        user = next(m["content"] for m in request["messages"] if m["role"] == "user")
        seen.append(user)
        question = next(q for q in solutions if q in user)
        kept = user.split("Answer:\n", 1)[1].strip()
        return solutions[question] if not kept else "The answer is -1."  # every kept step holds the slip

    with OpenAIStubServer(responder=responder) as srv:
        _endpoint_project(tmp_path, monkeypatch, default_params, srv.url)
        out = CliRunner().invoke(main, ["judge", "--model", "toy", "--variant", "w4"])
    assert out.exit_code == 0, out.output
    rolled = [j for j in read_jsonl(tmp_path / "data/judgments/toy/w4.jsonl") if j["judge"] == "rollout"]
    assert len(rolled) == 10 and all(j["error_step"] == 1 and j["model"] == "endpoint solver" for j in rolled)
    assert all("<|" not in u and u.startswith("Question: ") for u in seen)
    stats = __import__("json").loads((tmp_path / "data/judgments/toy/w4.stats.json").read_text())
    assert stats["judges"]["rollout"]["rollouts"] == sum(j["rollouts"] for j in rolled) > 0


def test_a_dead_endpoint_policy_fails_the_stage_with_the_judge_named(tmp_path, monkeypatch, default_params):
    from click.testing import CliRunner

    from qmr.cli import main
    from qmr.generation.server import free_port

    _endpoint_project(tmp_path, monkeypatch, default_params, f"http://127.0.0.1:{free_port()}/v1")
    out = CliRunner().invoke(main, ["judge", "--model", "toy", "--variant", "w4"])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert "judge 'rollout' (policy endpoint 'solver')" in out.output and "judge.max_failed_share" in out.output
    rolled = [j for j in __import__("qmr.io").io.read_jsonl(tmp_path / "data/judgments/toy/w4.jsonl") if j["judge"] == "rollout"]
    assert rolled and all(not speaks(j) for j in rolled)  # no rollout came back: nothing to estimate, nothing claimed
