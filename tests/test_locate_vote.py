"""Voting rules, audit draw, annotation packets and human verdicts, metrics, judge benchmark, and an
end-to-end run of five llm judges against the stub server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from locate_helpers import computational_case, judgment, toy_case
from qmr.config import ConfigError, from_dict
from qmr.devtools.openai_server import Bias, OpenAIStubServer
from qmr.io import write_jsonl
from qmr.locate.annotation import (
    HumanVerdictError,
    apply_human_verdicts,
    confidence_band,
    packet_dir,
    read_human_verdict,
    verdict_path,
    write_packet,
)
from qmr.locate.cache import run_judges
from qmr.locate.judge_bench import attach_gold, judge_bench
from qmr.locate.judges import JudgeSpec, build_judge
from qmr.locate.metrics import (
    error_type_rows,
    first_error_rows,
    first_error_step_rows,
    fleiss_kappa,
    vote_metrics,
)
from qmr.locate.offline import ground_truth_for
from qmr.locate.vote import VoteSpec, draw_audit, group_judgments, vote_all, vote_case
from qmr.processbench import (
    processbench_from_prm800k_raw,
    processbench_from_stepwise_critic,
    read_prm800k_raw,
    read_processbench,
    validate_processbench,
    write_processbench,
)

CE, LR, CO = "computational_error", "logical_reasoning_error", "contextual_oversight"
PAPER = VoteSpec(baseline="b", auxiliaries=["a1", "a2", "a3", "a4"])


def _by_judge(*votes):
    """votes: (judge, type, step) or (judge, "abstain") or (judge, "invalid")."""
    out = {}
    for v in votes:
        if v[1] == "abstain":
            out[v[0]] = judgment(v[0], None, abstain=True)
        elif v[1] == "invalid":
            out[v[0]] = judgment(v[0], None, valid=False)
        else:
            out[v[0]] = judgment(v[0], v[1], v[2])
    return out


ALL = ["b", "a1", "a2", "a3", "a4"]
VOTE_TABLE = [
    # name, spec, votes, expected (rule, type, step)
    ("unanimous", PAPER, [(n, CE, 2) for n in ALL], ("unanimous", CE, 2)),
    ("4 of 5", PAPER, [(n, CE, 2) for n in ALL[:4]] + [("a4", LR, 2)], ("threshold", CE, 2)),
    (
        "3 of 5",
        PAPER,
        [(n, CE, 2) for n in ALL[:3]] + [("a3", LR, 2), ("a4", CO, 1)],
        ("escalated", None, None),
    ),
    ("baseline alone vs 4", PAPER, [("b", LR, 2)] + [(n, CE, 2) for n in ALL[1:]], ("escalated", None, None)),
    (
        "step disagreement counts",
        PAPER,
        [(n, CE, 2) for n in ALL[:3]] + [("a3", CE, 3), ("a4", CE, 3)],
        ("escalated", None, None),
    ),
    (
        "match type only",
        VoteSpec("b", ["a1", "a2", "a3", "a4"], match="type"),
        [("b", CE, 3)] + [(n, CE, 2) for n in ALL[1:]],
        ("unanimous", CE, 2),
    ),
    ("baseline abstains", PAPER, [("b", "abstain")] + [(n, CE, 2) for n in ALL[1:]], ("unanimous", CE, 2)),
    (
        "two invalid, three agree",
        PAPER,
        [("b", CE, 2), ("a1", CE, 2), ("a2", CE, 2), ("a3", "invalid"), ("a4", "invalid")],
        ("unanimous", CE, 2),
    ),
    (
        "four speak, three agree",
        PAPER,
        [("b", CE, 2), ("a1", CE, 2), ("a2", CE, 2), ("a3", LR, 1), ("a4", "abstain")],
        ("escalated", None, None),
    ),
    ("one speaker", PAPER, [("b", CE, 2), ("a1", "abstain"), ("a2", "invalid")], ("escalated", None, None)),
    ("nobody speaks", PAPER, [("b", "invalid"), ("a1", "abstain")], ("abstain_all", None, None)),
    ("no judgments", PAPER, [], ("abstain_all", None, None)),
    (
        "min_votes 1: reference alone",
        VoteSpec("ref", ["arith"], min_votes=1),
        [("ref", CO, 1), ("arith", "abstain")],
        ("unanimous", CO, 1),
    ),
    (
        "custom threshold 3",
        VoteSpec("b", ["a1", "a2", "a3", "a4"], threshold=3),
        [(n, CE, 2) for n in ALL[:3]] + [("a3", LR, 2), ("a4", CO, 1)],
        ("threshold", CE, 2),
    ),
    ("no_error consensus", PAPER, [(n, "no_error", None) for n in ALL], ("unanimous", "no_error", None)),
    (
        "extra judges ignored",
        VoteSpec("b", ["a1"]),
        [("b", CE, 2), ("a1", CE, 2), ("zz", LR, 1)],
        ("unanimous", CE, 2),
    ),
]


@pytest.mark.parametrize("name, vs, votes, expected", VOTE_TABLE, ids=[r[0] for r in VOTE_TABLE])
def test_vote_table(name, vs, votes, expected):
    lab = vote_case(_by_judge(*votes), vs, case_id="c1", variant="w4")
    assert (lab["rule"], lab["primary_error_type"], lab["error_step"]) == expected
    assert lab["needs_human"] == (expected[0] in ("escalated", "abstain_all"))
    assert lab["id"] == "c1" and lab["variant"] == "w4" and lab["audit"] is False
    if expected[1] not in (None, "no_error"):
        assert lab["category"] in ("CE", "RE", "ME", "EE")


def test_vote_details():
    lab = vote_case(
        _by_judge(("b", "abstain"), ("a1", CO, 1), ("a2", CO, 1), ("a3", CE, 1), ("a4", CE, 1)), PAPER
    )
    assert lab["anchor"] == "plurality" and lab["rule"] == "escalated"
    assert lab["proposal"] == {"primary_error_type": CO, "error_step": 1}  # tie -> earliest precedence
    assert lab["votes"] == {"b": "abstain", "a1": CO, "a2": CO, "a3": CE, "a4": CE}
    lab = vote_case(_by_judge(*[(n, CE, 2) for n in ALL[:4]], ("a4", LR, 2)), PAPER)
    assert lab["agree"] == 4 and lab["speakers"] == 5 and lab["threshold"] == 4 and lab["confidence"] == 0.9
    assert VoteSpec("b", ["a1", "a2", "a3"]).threshold_value == 3
    assert VoteSpec("b", ["a1", "a2"]).threshold_value == 3
    with pytest.raises(ConfigError) as err:
        from_dict(
            VoteSpec,
            {"baseline": "b", "auxiliaries": ["b", "x"], "threshold": 9, "min_votes": 0, "audit_fraction": 2},
            "vote",
        )
    for key in ("vote.auxiliaries", "vote.threshold", "vote.min_votes", "vote.audit_fraction"):
        assert key in str(err.value)
    # the label names the trace sample that was judged (silver truncates that very trace)
    assert (
        vote_case({"b": {**judgment("b", CE, 2), "sample": 3}}, VoteSpec("b", [], min_votes=1))["sample"] == 3
    )


# --------------------------------------------------------------------------------------------------
# specialists: a judge kind declares what it sees (judges.JUDGE_KINDS trait ``sees``)

PE = "procedural_error"
TOY = VoteSpec(baseline="ref", auxiliaries=["arith"], min_votes=1)  # the toy default's shape
PAPER_ARITH = VoteSpec(baseline="b", auxiliaries=["a1", "a2", "a3", "arith"])
KIND = {"ref": "reference", "arith": "arithmetic", "roll": "rollout", "b": "llm", "a1": "llm", "a2": "llm", "a3": "llm"}


@pytest.fixture
def step_only_kind(monkeypatch):
    """A step-only judge kind (the coming ``rollout`` locator) in the registry's traits."""
    from qmr.locate.judges import JUDGE_KINDS

    monkeypatch.setitem(JUDGE_KINDS._traits, "rollout", {"sees": "step"})


def _kinded(*votes, all_see=False):
    """_by_judge with each judgment's kind from KIND (``all_see``: every kind ``llm``, the old protocol)."""
    return {n: {**j, "kind": "llm" if all_see else KIND[n]} for n, j in _by_judge(*votes).items()}


SPECIALIST_TABLE = [
    # name, spec, votes, expected (rule, type, step), specialist's relation, rule when every judge sees all
    ("later step than an unseen type", TOY, [("ref", LR, 2), ("arith", CE, 4)], ("unanimous", LR, 2), "later_step", "escalated"),
    ("same step, unseen type", TOY, [("ref", CO, 2), ("arith", CE, 2)], ("unanimous", CO, 2), "unseen_type", "escalated"),
    ("same step, same type", TOY, [("ref", CE, 2), ("arith", CE, 2)], ("unanimous", CE, 2), "same", "unanimous"),
    ("earlier step disagrees", TOY, [("ref", LR, 3), ("arith", CE, 1)], ("escalated", None, None), "differs", "escalated"),
    ("later step than a type it sees", TOY, [("ref", CE, 2), ("arith", CE, 4)], ("escalated", None, None), "differs", "escalated"),
    ("error against no_error", TOY, [("ref", "no_error", None), ("arith", CE, 3)], ("escalated", None, None), "differs", "escalated"),
    ("no error, unseen type", TOY, [("ref", CO, 2), ("arith", "no_error", None)], ("unanimous", CO, 2), "unseen_type", "escalated"),
    ("no error against a type it sees", TOY, [("ref", CE, 2), ("arith", "no_error", None)], ("escalated", None, None), "differs", "escalated"),
    (
        "paper thresholds: a consistent specialist counts",
        PAPER_ARITH,
        [("b", LR, 2), ("a1", LR, 2), ("a2", LR, 2), ("a3", PE, 2), ("arith", CE, 5)],
        ("threshold", LR, 2), "later_step", "escalated",
    ),
    (
        "plurality anchor among all-seeing judges",
        VoteSpec("b", ["a1", "arith"], min_votes=2),
        [("b", "abstain"), ("a1", LR, 2), ("arith", CE, 4)],
        ("unanimous", LR, 2), "later_step", "escalated",
    ),
    (
        "match type: an unseen type at any step",
        VoteSpec("ref", ["arith"], min_votes=1, match="type"),
        [("ref", LR, 2), ("arith", CE, 1)],
        ("unanimous", LR, 2), "unseen_type", "escalated",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    "name, vs, votes, expected, rel, all_seeing_rule", SPECIALIST_TABLE, ids=[r[0] for r in SPECIALIST_TABLE]
)
def test_vote_with_specialists(name, vs, votes, expected, rel, all_seeing_rule):
    lab = vote_case(_kinded(*votes), vs, case_id="c1", variant="w4")
    assert (lab["rule"], lab["primary_error_type"], lab["error_step"]) == expected
    assert lab["relations"]["arith"] == rel
    # the same votes from judges that all see everything: the paper's rules, as before
    assert vote_case(_kinded(*votes, all_see=True), vs)["rule"] == all_seeing_rule


def test_consistent_specialist_adds_no_confidence_and_no_step():
    lab = vote_case(
        {"ref": {**judgment("ref", LR, 2, confidence=0.6), "kind": "reference"}, "arith": {**judgment("arith", CE, 4, confidence=0.95), "kind": "arithmetic"}},
        TOY,
    )  # fmt: skip
    assert lab["agree"] == 2 and lab["confidence"] == 0.6 and lab["error_step"] == 2
    # a lone judge with min_votes 2 still escalates: a specialist's silence is no vote
    lab = vote_case(_kinded(("ref", LR, 2), ("arith", "abstain")), VoteSpec("ref", ["arith"]))
    assert lab["rule"] == "escalated" and lab["speakers"] == 1


def test_step_only_judge(step_only_kind):
    from qmr.locate.judges import sight_of, speaks

    typeless = {**judgment("roll", None, 2), "kind": "rollout"}
    assert sight_of("rollout") == "step" and sight_of("arithmetic") == "computational" and sight_of("nope") == "all"
    assert speaks(typeless) and not speaks({**typeless, "kind": "llm"})  # a typeless llm reply is no vote
    spec = VoteSpec("ref", ["roll"], min_votes=1)
    for step, rule, rel in ((2, "unanimous", "same_step"), (3, "escalated", "differs"), (1, "escalated", "differs")):
        lab = vote_case({"ref": {**judgment("ref", LR, 2), "kind": "reference"}, "roll": {**typeless, "error_step": step}}, spec)
        assert (lab["rule"], lab["relations"]["roll"]) == (rule, rel), step
        assert lab["votes"]["roll"] == "step_only"
    # a step-only judge with a type from a classifier agrees on the step whatever the type
    lab = vote_case({"ref": {**judgment("ref", LR, 2), "kind": "reference"}, "roll": {**judgment("roll", CE, 2), "kind": "rollout"}}, spec)
    assert lab["rule"] == "unanimous" and lab["primary_error_type"] == LR
    # a step-only anchor takes its type from the typed judges at its step (earliest precedence)
    spec = VoteSpec("roll", ["ref", "arith"], min_votes=2)
    votes = {"roll": typeless, "ref": {**judgment("ref", LR, 2), "kind": "reference"}, "arith": {**judgment("arith", CE, 2), "kind": "arithmetic"}}
    lab = vote_case(votes, spec)
    assert (lab["rule"], lab["primary_error_type"], lab["category"], lab["error_step"]) == ("unanimous", LR, "RE", 2)
    assert lab["relations"] == {"roll": "same", "ref": "same_step", "arith": "same_step"}
    votes["ref"] = {**judgment("ref", CO, 1), "kind": "reference"}  # an earlier error: disagrees
    assert vote_case(votes, spec)["rule"] == "escalated"
    # no_error from a step-only judge against an error
    votes = {"ref": {**judgment("ref", LR, 2), "kind": "reference"}, "roll": {**judgment("roll", "no_error"), "kind": "rollout"}}
    assert vote_case(votes, VoteSpec("ref", ["roll"], min_votes=1))["rule"] == "escalated"


def test_every_judge_kind_declares_what_it_sees():
    from qmr.locate.judges import JUDGE_KINDS, SIGHTS

    for kind in JUDGE_KINDS:
        assert JUDGE_KINDS.trait(kind, "sees") in SIGHTS, kind
    assert JUDGE_KINDS.trait("arithmetic", "sees") == "computational"


def test_vote_on_corrupted_toy_traces():
    """Real reference + arithmetic judges on toy traces with known first errors (tests/toy_vote_eval.py):
    the ensemble is no worse than its best member and escalates less than when every judge counts as
    seeing all types."""
    from toy_vote_eval import corrupted_cases, evaluate

    res = evaluate(corrupted_cases(200, seed=1))
    before, after = res["before"], res["after"]
    best = max(v for k, v in after["step_accuracy"].items() if k != "ensemble")
    assert after["step_accuracy"]["ensemble"] >= best
    assert before["step_accuracy"]["ensemble"] < best and before["escalated"] > 0
    assert after["escalated"] < before["escalated"]
    assert after["step_accuracy"]["reference"] == before["step_accuracy"]["reference"]


def test_audit_draw():
    labels = [{"id": f"c{i}", "variant": "w4", "rule": "unanimous"} for i in range(100)]
    labels += [{"id": f"e{i}", "variant": "w4", "rule": "escalated"} for i in range(10)]
    drawn = draw_audit(labels, 0.02, seed=0)
    assert len(drawn) == 2 and all(d.startswith("c") for d in drawn)
    assert draw_audit(labels, 0.02, seed=0) == drawn and draw_audit(labels, 0.02, seed=1) != drawn
    assert len(draw_audit(labels[:10], 0.02, 0)) == 1  # at least one
    assert draw_audit(labels, 0.0, 0) == set() and draw_audit(labels[100:], 0.5, 0) == set()
    assert drawn <= draw_audit(labels[:50] + labels[50:], 0.02, 0) | drawn


# --------------------------------------------------------------------------------------------------
# annotation


def _verdict(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_packet_and_verdicts(tmp_path):
    case = toy_case(["4 * 12 = 48", "23 + 48 = 72", "72 - 17 = 55", "The answer is 55."], cid="toy/1")
    js = [judgment("b", CE, 2, cid="toy/1"), judgment("a1", LR, 1, cid="toy/1")]
    label = vote_case({j["judge"]: j for j in js}, VoteSpec("b", ["a1"]), "toy/1", "w4")
    d = write_packet(packet_dir(tmp_path, case.id), case, js, label)
    assert d.name.startswith("toy_1-") and d.name != packet_dir(tmp_path, "toy_1").name  # collision-free
    for name in (
        "problem.txt",
        "answers.json",
        "fp_trace.txt",
        "qt_trace.txt",
        "vote_summary.json",
        "judge_outputs/b.json",
        "judge_outputs/a1.json",
    ):
        assert (d / name).is_file(), name
    assert json.loads((d / "answers.json").read_text()) == {"gold": "54", "fp": "54", "quantized": "55"}
    assert (d / "qt_trace.txt").read_text().startswith("Step 1: 4 * 12 = 48\nStep 2: 23 + 48 = 72")
    good = {
        "quantized_error_analysis": {
            "primary_error_type": "computational_error",
            "error_step": 2,
            "explanation": "23+48 is 71",
            "confidence_score": 0.83,
        }
    }
    verdicts = tmp_path / "verdicts"
    vpath = verdict_path(verdicts, label["id"])
    vpath.parent.mkdir()
    _verdict(vpath, good)
    write_packet(d, case, js, label, verdict=vpath)  # the packet tells the annotator where to write
    assert str(vpath) in (d / "instructions.md").read_text()
    assert json.loads(vpath.read_text()) == good
    assert read_human_verdict(vpath, 4)["error_step"] == 2
    (new,) = apply_human_verdicts([label], verdicts, [case])
    assert (
        new["rule"] == "human"
        and not new["needs_human"]
        and new["primary_error_type"] == CE
        and new["category"] == "EE"
    )
    assert new["machine"]["rule"] == "escalated" and new["human_band"] == "moderate"
    audited = dict(label, audit=True, rule="unanimous", primary_error_type=CE, error_step=2)
    assert apply_human_verdicts([audited], verdicts, [case])[0]["audit_agrees"] is True


@pytest.mark.parametrize(
    "content, field, value",
    [
        (
            {
                "quantized_error_analysis": {
                    "primary_error_type": "vibes_error",
                    "error_step": 2,
                    "explanation": "",
                    "confidence_score": 0.9,
                }
            },
            "primary_error_type",
            "vibes_error",
        ),
        (
            {
                "quantized_error_analysis": {
                    "primary_error_type": CE,
                    "error_step": 7,
                    "explanation": "",
                    "confidence_score": 0.9,
                }
            },
            "error_step",
            "7",
        ),
        (
            {
                "quantized_error_analysis": {
                    "primary_error_type": CE,
                    "error_step": "2",
                    "explanation": "",
                    "confidence_score": 0.9,
                }
            },
            "error_step",
            "'2'",
        ),
        (
            {
                "quantized_error_analysis": {
                    "primary_error_type": CE,
                    "error_step": 2,
                    "explanation": "",
                    "confidence_score": 1.5,
                }
            },
            "confidence_score",
            "1.5",
        ),
        (
            {
                "quantized_error_analysis": {
                    "primary_error_type": CE,
                    "error_step": 2,
                    "confidence_score": 0.9,
                }
            },
            "explanation",
            "<missing>",
        ),
        ({"primary_error_type": CE}, "quantized_error_analysis", "None"),
        ("{not json", "not valid JSON", ""),
    ],
)
def test_bad_verdicts(tmp_path, content, field, value):
    path = _verdict(verdict_path(tmp_path, "c1"), content)
    with pytest.raises(HumanVerdictError) as err:
        read_human_verdict(path, n_steps=4)
    msg = str(err.value)
    assert str(path) in msg and field in msg and value in msg
    if field != "not valid JSON":
        assert "allowed" in msg


def test_bad_verdict_in_tree_names_file(tmp_path):
    _verdict(
        verdict_path(tmp_path, "c1"),
        {
            "quantized_error_analysis": {
                "primary_error_type": "x",
                "error_step": 1,
                "explanation": "",
                "confidence_score": 0.9,
            }
        },
    )
    with pytest.raises(HumanVerdictError, match="c1"):
        apply_human_verdicts([{"id": "c1", "rule": "escalated"}], tmp_path)


def test_confidence_bands():
    assert [confidence_band(x) for x in (0.95, 0.9, 0.85, 0.8, 0.75, 0.5, None)] == [
        "clear",
        "clear",
        "moderate",
        "moderate",
        "split",
        "low",
        None,
    ]


# --------------------------------------------------------------------------------------------------
# metrics


def test_fleiss_kappa_wikipedia_example():
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]  # fmt: skip
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=1e-3)
    assert fleiss_kappa([[2, 0], [0, 2]]) == pytest.approx(1.0)
    assert fleiss_kappa([]) is None


def test_vote_metrics_small():
    cases = [toy_case(cid=f"c{i}") for i in range(3)]
    for c, steps in zip(cases, (["x"] * 4, ["x"] * 2, ["x"] * 5), strict=True):
        c.qt_steps = steps
    js = [
        judgment("b", CE, 2, cid="c0"), judgment("a", CE, 2, cid="c0"),
        judgment("b", LR, 1, cid="c1"), judgment("a", CE, 1, cid="c1"),
        judgment("b", CO, 5, cid="c2"), judgment("a", None, valid=False, cid="c2"),
    ]  # fmt: skip
    labels = vote_all(js, VoteSpec("b", ["a"], min_votes=1, audit_fraction=0.5), ["c0", "c1", "c2"], "w4")
    assert [lab["rule"] for lab in labels] == ["unanimous", "escalated", "unanimous"]
    gt = {"c0": (2, CE), "c1": (1, CE), "c2": (4, CO)}
    m = vote_metrics(labels, js, cases, gt)
    assert m["cases"] == 3 and m["decided"] == 2 and m["undecided"] == 1
    assert m["types"][CE] == {"count": 1, "share": 0.5} and m["categories"]["CE"] == {
        "count": 1,
        "share": 0.5,
    }
    assert m["first_error_step"]["mean"] == 3.5 and m["first_error_step"]["mean_fraction"] == pytest.approx(
        (0.5 + 1.0) / 2
    )
    assert (
        m["rules"]["escalated"] == 1 and m["escalated"] == 1 and m["escalated_total"] == 1 and m["audit"] == 1
    )
    assert (
        m["judges"]["a"]["valid_rate"] == pytest.approx(0.6667, abs=1e-4) and m["judges"]["b"]["calls"] == 3
    )
    assert m["agreement"]["pairwise"]["a_vs_b"] == {"n": 2, "agreement": 0.5, "n_step": 2, "step_agreement": 1.0}
    assert m["agreement"]["fleiss_cases"] == 2
    acc = m["accuracy"]
    assert acc["b"]["step_accuracy"] == pytest.approx(0.6667, abs=1e-4) and acc["b"][
        "type_accuracy"
    ] == pytest.approx(0.6667, abs=1e-4)
    assert acc["a"]["coverage"] == pytest.approx(0.6667, abs=1e-4) and acc["a"][
        "exact_accuracy"
    ] == pytest.approx(0.6667, abs=1e-4)
    assert acc["ensemble"]["step_accuracy"] == pytest.approx(0.3333, abs=1e-4)
    rows = error_type_rows(labels, "w4")
    assert len(rows) == 7 and sum(r["count"] for r in rows) == 2 and rows[0]["variant"] == "w4"
    hist = first_error_rows(labels, cases, bins=4)
    assert [r["count"] for r in hist] == [0, 1, 0, 1]
    assert first_error_step_rows(labels) == [{"step": 2, "count": 1}, {"step": 5, "count": 1}]
    json.dumps(m)


# --------------------------------------------------------------------------------------------------
# judge benchmark


def _bench_items():
    plan_case = toy_case()
    items = [
        {
            "id": "i1",
            "problem": plan_case.question,
            "steps": ["4 * 12 = 48", "23 + 48 = 72", "72 - 17 = 55", "The answer is 55."],
            "final_answer_correct": False,
            "label": 1,
        },
        {
            "id": "i2",
            "problem": plan_case.question,
            "steps": ["4 * 13 = 52", "23 + 52 = 75", "75 - 17 = 58", "The answer is 58."],
            "final_answer_correct": False,
            "label": 0,
        },
        {
            "id": "i3",
            "problem": plan_case.question,
            "steps": ["4 * 12 = 48", "23 + 48 = 71", "71 - 17 = 54", "The answer is 54."],
            "final_answer_correct": True,
            "label": -1,
        },
        {
            "id": "i4",
            "problem": "  MIA has 23 apples. " + plan_case.question[18:],
            "steps": ["12 * 4 = 48", "48 + 23 = 71", "71 - 17 = 54", "The answer is 54."],
            "final_answer_correct": True,
            "label": -1,
        },
    ]
    bench = [
        {
            "id": "toy-0",
            "source": "toy",
            "question": plan_case.question,
            "answer": "54",
            "solution": plan_case.gold_solution,
            "plan": plan_case.plan,
        }
    ]
    return items, bench


def test_judge_bench(tmp_path):
    items, bench = _bench_items()
    assert attach_gold(items, bench) == 4 and items[3]["plan"]
    path = tmp_path / "pb.json"
    write_processbench(path, items)
    items = read_processbench(path)
    judges = {
        "arith": build_judge("arith", JudgeSpec(kind="arithmetic")),
        "ref": build_judge("ref", JudgeSpec(kind="reference")),
    }
    ens = VoteSpec(baseline="ref", auxiliaries=["arith"], min_votes=1)
    out = judge_bench(items, judges, ens)
    assert out["judges"]["ref"] == {
        "n_error": 2,
        "n_correct": 2,
        "error_accuracy": 1.0,
        "correct_accuracy": 1.0,
        "f1": 1.0,
        "no_prediction": 0,
        "abstained": 0,
        "invalid": 0,
        "escalated": 0,
        "rollouts": 0,
    }
    a = out["judges"]["arith"]
    assert (a["error_accuracy"], a["correct_accuracy"], a["f1"]) == (0.5, 1.0, 0.6667)
    assert out["ensemble"]["f1"] == 1.0 and out["ensemble"]["escalated"] == 0
    strict = judge_bench(items, {"arith": judges["arith"]}, abstain_as="wrong")
    assert strict["judges"]["arith"]["correct_accuracy"] == 0.0 and strict["judges"]["arith"]["f1"] == 0.0


def test_judge_bench_command(tmp_path, monkeypatch, default_params):
    """`qmr judge-bench` scores the configured judges (the default offline pair) and the ensemble."""
    import yaml
    from click.testing import CliRunner

    from qmr.cli import main

    monkeypatch.chdir(tmp_path)
    items, bench = _bench_items()
    write_processbench(tmp_path / "pb.json", items)
    write_jsonl(tmp_path / "bench.jsonl", bench)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params))
    out = CliRunner().invoke(main, ["judge-bench", "pb.json", "--gold", "bench.jsonl", "--json", "scores.json"])
    assert out.exit_code == 0, out.output
    assert "attached gold solutions to 4/4 items" in out.output
    lines = out.output.splitlines()
    assert lines[1].split()[:6] == ["judge", "n_err", "n_ok", "err_acc", "ok_acc", "F1"]
    assert any(line.startswith("ensemble") for line in lines)
    assert json.loads((tmp_path / "scores.json").read_text())["judges"]["reference"]["f1"] == 1.0
    bad = CliRunner().invoke(main, ["judge-bench", "pb.json", "--judges", "gpt9"])
    assert bad.exit_code == 2 and "--judges: got gpt9; allowed: arithmetic, reference" in bad.output


def test_processbench_validation(tmp_path):
    from qmr.io import DataFileError

    with pytest.raises(DataFileError, match="label"):
        validate_processbench(
            [{"id": "x", "problem": "p", "steps": ["a"], "final_answer_correct": True, "label": 3}]
        )
    with pytest.raises(DataFileError, match="steps"):
        validate_processbench(
            [{"id": "x", "problem": "p", "steps": [], "final_answer_correct": True, "label": -1}]
        )


PRM = Path(__file__).resolve().parents[2] / "shared" / "data" / "prm800k"


def test_prm800k_raw_examples():
    path = PRM / "raw_format_examples" / "prm800k-phase2-train-example.jsonl"
    if not path.exists():
        pytest.skip("PRM800K examples not available")
    records = read_prm800k_raw(path)
    assert len(records) == 9
    items = validate_processbench(processbench_from_prm800k_raw(records))
    assert items and all(it["label"] == len(it["steps"]) - 1 for it in items if it["label"] >= 0)
    first = items[0]
    rec = records[0]
    assert (
        first["problem"] == rec["question"]["problem"]
        and first["gold_answer"] == rec["question"]["ground_truth_answer"]
    )


def test_prm800k_stepwise_critic_parquet():
    path = PRM / "phase1_test.stepwise-critic.parquet"
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    if not path.exists():
        pytest.skip("PRM800K parquet not available")
    items = validate_processbench(
        processbench_from_stepwise_critic(pd.read_parquet(path), "prm800k-phase1-test")
    )
    err = [it for it in items if it["label"] >= 0]
    ok = [it for it in items if it["label"] < 0]
    assert len(err) > 50 and len(ok) > 10
    assert all(not it["final_answer_correct"] for it in err) and all(it["final_answer_correct"] for it in ok)
    math500 = PRM.parent / "math" / "math500_test.jsonl"
    if math500.exists():  # phase-1 test problems are MATH-500 problems
        from qmr.io import read_jsonl

        assert attach_gold(items, read_jsonl(math500)) == len(items) and all(
            it.get("gold_answer") for it in items
        )


# --------------------------------------------------------------------------------------------------
# end to end: five llm judges, accept / threshold / escalate / audit, then a second run is free


def test_end_to_end_five_llm_judges(tmp_path, monkeypatch):
    monkeypatch.setenv("QMR_E2E_KEY", "sk-test")
    cases = [computational_case(i) for i in range(30)]
    biases = {
        "m3": Bias(rate=0.35, step_offset=1, salt="s3"),
        "m4": Bias(rate=0.35, error_type=LR, salt="s4"),
        "m2": Bias(rate=0.1, invalid=True, salt="s2"),
    }
    with OpenAIStubServer(biases=biases) as srv:
        specs = {
            f"j{i}": JudgeSpec(kind="llm", base_url=srv.url, model=f"m{i}", api_key_env="QMR_E2E_KEY", timeout_s=2.0, max_retries=1, reasks=1, concurrency=3, price_in_per_mtok=1.0, price_out_per_mtok=2.0)
            for i in range(5)
        }  # fmt: skip
        judges = {name: build_judge(name, s) for name, s in specs.items()}
        cache = tmp_path / "cache.jsonl"
        run = run_judges(cases, judges, cache)
        first_requests = srv.requests
        assert run.calls_made == first_requests >= 150
        vs = VoteSpec(baseline="j0", auxiliaries=["j1", "j2", "j3", "j4"], audit_fraction=0.02, seed=0)
        labels = vote_all(run.judgments, vs, [c.id for c in cases], "w4")
        rules = {lab["rule"] for lab in labels}
        assert {"unanimous", "threshold", "escalated"} <= rules, rules
        assert sum(lab["audit"] for lab in labels) == 1
        # annotation packets for escalated and audited cases; one human verdict comes back
        root = tmp_path / "annotation"
        grouped = group_judgments(run.judgments)
        by_id = {c.id: c for c in cases}
        todo = [lab for lab in labels if lab["needs_human"] or lab["audit"]]
        for lab in todo:
            write_packet(
                packet_dir(root, lab["id"]), by_id[lab["id"]], list(grouped[lab["id"]].values()), lab
            )
        esc = next(lab for lab in labels if lab["needs_human"])
        truth = ground_truth_for([by_id[esc["id"]]])[esc["id"]]
        verdict_path(root, esc["id"]).write_text(
            json.dumps(
                {
                    "quantized_error_analysis": {
                        "primary_error_type": truth[1],
                        "error_step": truth[0],
                        "explanation": "checked",
                        "confidence_score": 0.95,
                    }
                }
            )
        )
        labels = apply_human_verdicts(labels, root, cases)
        assert sum(lab["rule"] == "human" for lab in labels) == 1
        gt = ground_truth_for(cases)
        m = vote_metrics(labels, run.judgments, cases, gt)
        assert m["accuracy"]["j0"]["exact_accuracy"] == 1.0  # the unbiased baseline finds every error
        assert m["accuracy"]["j3"]["step_accuracy"] < 1.0 and m["accuracy"]["j4"]["type_accuracy"] < 1.0
        assert m["judges"]["j2"]["invalid"] >= 1 and m["judges"]["j0"]["cost"] > 0
        assert m["agreement"]["fleiss_kappa"] is not None
        # a second run is served from the cache except the invalid replies, which are asked again (the
        # biased j2 is invalid again, deterministically): the same judgments
        again = run_judges(cases, {name: build_judge(name, s) for name, s in specs.items()}, cache)
        reasked = sum(j["calls"] for j in run.judgments if not j["valid"])
        assert reasked and srv.requests == first_requests + reasked and again.calls_made == reasked
        assert again.judgments == run.judgments


def test_confusion_rows_against_ground_truth():
    from qmr.locate.metrics import confusion_rows

    labels = [
        {"id": "a", "rule": "unanimous", "primary_error_type": "computational_error"},
        {"id": "b", "rule": "escalated", "primary_error_type": "computational_error"},
        {"id": "c", "rule": "threshold", "primary_error_type": "logical_reasoning_error"},
        {"id": "d", "rule": "unanimous", "primary_error_type": "computational_error"},  # no ground truth
    ]
    truth = {"a": (2, "computational_error"), "b": (1, "computational_error"), "c": (3, None)}
    rows = confusion_rows(labels, truth, "v")
    assert [(r["id"], r["actual"], r["predicted"]) for r in rows] == [
        ("a", "computational_error", "computational_error"),
        ("b", "computational_error", "undecided"),
        ("c", "no_error", "logical_reasoning_error"),
    ]


@pytest.mark.parametrize("ids", [("q/1", "q_1"), ("..", "__"), ("a b", "a_b"), ("x" * 300, "x" * 301)])
def test_packet_names_never_collide_and_stay_legal(tmp_path, ids):
    """Ids that sanitize alike get different packets; a 300-character id is still a legal name."""
    names = [packet_dir(tmp_path, i).name for i in ids]
    assert names[0] != names[1]
    for name in names:
        assert 0 < len(name) <= 100 and "/" not in name and name not in (".", "..")
        (tmp_path / name).mkdir()  # the file system accepts it
    assert packet_dir(tmp_path, "toy-test-0a1b2c").name == "toy-test-0a1b2c"  # clean ids keep their names


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p.mkdir(), "not a regular file"),
    (lambda p: p.write_bytes(b'{"quantized_error_analysis": {"explanation": "caf\xe9"}}'), "not UTF-8"),
    (lambda p: p.write_text("[" * 50_000 + "]" * 50_000), "nested too deeply"),
])  # fmt: skip
def test_unreadable_verdict_file_is_a_clear_error(tmp_path, make, fragment):
    path = verdict_path(tmp_path, "c1")
    make(path)
    with pytest.raises(HumanVerdictError) as err:
        read_human_verdict(path, n_steps=4)
    assert str(path) in str(err.value) and fragment in str(err.value)
