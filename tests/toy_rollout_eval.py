"""Measure the rollout judge on every failure of some variants of the toy workspace (after `dvc repro`
has built models/quantized/toy/fp and data/judgments): step accuracy against the generator's ground
truth, coverage, rollouts and seconds, for linear and binary search, and the offline judges and the vote
with and without it on the same cases (every case rolled out, i.e. no cheap-first cascade).

    PYTHONPATH=src python tests/toy_rollout_eval.py [variant ...] [--samples 8] [--search linear,binary]

Settings other than those flags come from params.yaml (judge.judges.rollout, generate, vote).
"""

from __future__ import annotations

import argparse
import json
import time

from qmr import paths
from qmr.io import read_jsonl
from qmr.locate.cases import case_from_dict
from qmr.locate.metrics import vote_metrics
from qmr.locate.offline import ground_truth_for
from qmr.locate.rollout import RolloutJudge, policy_from_backend
from qmr.locate.vote import VoteSpec, vote_all
from qmr.params import load_params


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("variants", nargs="*", default=["rtn-w2g128", "rtn-w2g32"])
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--temperature", type=float, default=None)
    ap.add_argument("--search", default="linear,binary")
    ap.add_argument("--limit", type=int, default=0, help="first N cases per variant (0 = all)")
    args = ap.parse_args()
    params = load_params("params.yaml")
    spec = params.judge.judges["rollout"]
    from qmr.determinism import set_determinism
    from qmr.generation import backend_from_config
    from qmr.grading import grade

    set_determinism(params.vote.seed, params.threads)
    backend = backend_from_config(params.generate, str(paths.quantized_model("toy", params.evaluate.reference)))
    out = {}
    for variant in args.variants:
        cases = [case_from_dict(c) for c in read_jsonl(paths.cases("toy", variant))]
        cases = cases[: args.limit] if args.limit else cases
        ids = {c.id for c in cases}
        offline = [j for j in read_jsonl(paths.judgments("toy", variant)) if j["judge"] != "rollout" and j["id"] in ids]
        prompts = {}
        for bench in {c.benchmark for c in cases}:
            prompts.update({(bench, str(t["id"])): t["prompt"] for t in read_jsonl(paths.traces("toy", variant, bench))})
        truth = ground_truth_for(cases)
        for search in args.search.split(","):
            judge = RolloutJudge("rollout", samples=args.samples or spec.samples, alpha=spec.alpha, min_drop=spec.min_drop, search=search)
            policy = policy_from_backend(backend.generate, temperature=args.temperature or spec.rollout_temperature,
                                         max_new_tokens=params.generate.max_new_tokens, seed=params.vote.seed)
            judge.bind(policy, prompt_of=lambda c, prompts=prompts: prompts[(c.benchmark, c.id)], grade=lambda t, c: grade(t, c.gold_answer, "integer")[1])
            start = time.perf_counter()
            rolled = judge.judge_many(cases)
            seconds = time.perf_counter() - start
            js = offline + rolled
            with_rollout = vote_all(js, params.vote, [c.id for c in cases], variant)
            m = vote_metrics(with_rollout, js, cases, truth)
            base = VoteSpec(baseline=params.vote.baseline, auxiliaries=[a for a in params.vote.auxiliaries if a != "rollout"],
                            min_votes=params.vote.min_votes, audit_fraction=0.0)
            m0 = vote_metrics(vote_all(offline, base, [c.id for c in cases], variant), offline, cases, truth)
            row = {
                "cases": len(cases), "seconds": round(seconds, 1), "rollouts": sum(j["rollouts"] for j in rolled),
                "tokens": sum(j["tokens_out"] for j in rolled),
                "rollout": m["accuracy"]["rollout"], "ensemble_with_rollout": m["accuracy"]["ensemble"],
                "escalated_with_rollout": m["escalated"], "reference": m0["accuracy"]["reference"],
                "ensemble_offline": m0["accuracy"]["ensemble"], "escalated_offline": m0["escalated"],
            }
            out[f"{variant}/{search}"] = row
            print(f"{variant}/{search}: {len(cases)} cases, {row['rollouts']} rollouts, {row['tokens']} tokens, {seconds:.0f} s; "
                  f"rollout step acc (answered) {row['rollout']['step_accuracy_answered']} coverage {row['rollout']['coverage']}; "
                  f"reference {row['reference']['step_accuracy']}; ensemble offline {row['ensemble_offline']['step_accuracy']} "
                  f"(escalated {row['escalated_offline']}), with rollout {row['ensemble_with_rollout']['step_accuracy']} "
                  f"(escalated {row['escalated_with_rollout']})", flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
