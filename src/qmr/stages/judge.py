"""Stage `judge`: every judge's verdict on every failure (fp right, variant wrong) of one variant.

Answers of `llm` judges are cached (qmr.paths.judge_cache) as soon as they arrive: a re-run or a run
resumed after a kill makes no call for a case already answered.

Only the benchmarks of ``judge.benchmarks`` are judged (``auto``: free-form answers, multiple choice
skipped). Before any paid call the stage logs the estimated calls, tokens and dollars per llm judge
(recorded in the ``.stats.json`` beside the judgments and in metrics/vote.json); ``judge.budget_usd``
caps one run: past it no call is sent, what finished is written and cached, and the stage exits 2
saying how to continue.
"""

from __future__ import annotations

import logging

from qmr import paths
from qmr.errors import UserError, choose
from qmr.io import read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)


def run(params, model: str, variant: str) -> None:
    from qmr.locate.budget import Budget, money
    from qmr.locate.cache import run_judges
    from qmr.locate.cases import case_to_dict, failure_cases, judged_benchmarks
    from qmr.locate.judges import build_judge
    from qmr.locate.llm import raise_if_endpoint_dead

    choose("model", model, params.models)
    choose("variant", variant, params.quantize.variants)
    ref = params.evaluate.reference
    judges = {name: build_judge(name, spec, params.endpoints) for name, spec in params.judge.judges.items()}  # key env vars checked here
    cfg = params.judge
    benches, skipped = judged_benchmarks(cfg.benchmarks, list(params.generate.benchmarks),
                                         {b: params.benchmarks[b].kind for b in params.generate.benchmarks})  # fmt: skip
    for bench, why in skipped.items():
        log.info("%s/%s: benchmark %s not judged: %s", model, variant, bench, why)
    cases = []
    for bench in benches:
        cases += failure_cases(
            read_jsonl(paths.benchmark(bench)),
            read_jsonl(paths.traces(model, ref, bench)),
            read_jsonl(paths.traces(model, variant, bench)),
            variant,
            params.benchmarks[bench].kind,
        )
    log.info("%s/%s: %d failures to judge with %s", model, variant, len(cases), ", ".join(judges))
    closers, teachers = _bind_rollouts(params, model, variant, judges, benches)
    budget = Budget(cfg.budget_usd)
    try:
        result = run_judges(cases, judges, paths.judge_cache(model), cheap_first=params.vote if cfg.cheap_first else None,
                            progress=True, budget=budget, title=f"judge {model}/{variant}",
                            check_sample=cfg.cheap_first_check, seed=params.vote.seed)  # fmt: skip
    finally:
        for close in closers:
            close()
    raise_if_endpoint_dead(result.judgments)
    write_jsonl(paths.cases(model, variant), [case_to_dict(c) for c in cases])
    write_jsonl(paths.judgments(model, variant), result.judgments)
    for partial in (paths.cache_dir() / "rollout" / model / variant).glob("gen-*.partial.jsonl"):
        partial.unlink()  # the judgments are written: the policy's resume batches are no longer needed
    write_json(paths.judgments(model, variant).with_suffix(".stats.json"), {
        "calls_made": result.calls_made, "calls_saved": result.calls_saved, "judges": result.stats,
        "benchmarks": {"judged": benches, "skipped": skipped},
        "estimate": result.estimate, "budget": {**result.budget, "remaining_calls": len(result.over_budget)},
    })  # fmt: skip
    if result.over_budget:
        left = {ci for ci, _ in result.over_budget}
        raise UserError(
            f"judge.budget_usd: {money(cfg.budget_usd)} reached: spent {money(result.budget['spent_usd'])} on "
            f"{result.budget['calls']} call(s) this run; {len(left)} of {len(cases)} case(s) not fully judged "
            f"({len(result.over_budget)} call(s) not made). Everything answered is cached: raise judge.budget_usd "
            "(or set it to null) and run `dvc repro` again; cached answers are not paid twice."
        )
    # failed calls and invalid replies are not cached: above the allowed share the stage fails, so DVC
    # does not record it as done and the next `dvc repro` re-asks exactly those
    limit = cfg.max_failed_share
    over = []
    for name, s in result.stats.items():
        asked = s["cases"] - s["skipped_cheap_first"]
        bad = s["failed"] + s["invalid"]
        if judges[name].cacheable and asked and bad / asked > limit:
            over.append(f"judge {name!r}: {bad} of {asked} case(s) failed or gave invalid replies ({s['failed']} failed, "
                        f"{s['invalid']} invalid; {bad / asked:.0%} > judge.max_failed_share {limit:.0%})")  # fmt: skip
    for name, teacher in teachers.items():  # an endpoint policy: failed calls are not cached, so a re-run asks again
        if teacher.calls and teacher.failed / teacher.calls > limit:
            over.append(f"judge {name!r} (policy endpoint {cfg.judges[name].policy!r}): {teacher.failed} of {teacher.calls} rollout "
                        f"call(s) failed ({teacher.failed / teacher.calls:.0%} > judge.max_failed_share {limit:.0%})")  # fmt: skip
    if over:
        raise UserError("; ".join(over) + ". The valid answers are cached: fix the endpoint (or raise the share) and run "
                        "`dvc repro` again to re-ask only the others.")  # fmt: skip


def _bind_rollouts(params, model: str, variant: str, judges: dict, benches: list[str]) -> list:
    """Give each ``rollout`` judge its policy: the reference variant (evaluate.reference, a dependency of
    the stage) through the generation backend, resumable under ``.qmr-cache/rollout/``, prompted as the
    model was (the quantized trace's own ``prompt``); or, with ``policy: <endpoint>``, that endpoint
    (plain problem prompt + kept steps; answers cached under ``.qmr-cache/rollout/``). Graded with the
    benchmark's grader. Returns the closers of the backends it started and the endpoint teachers by
    judge name (their failed-call counts)."""
    from qmr.generation import close_backend, resumable_sampler
    from qmr.grading import grade
    from qmr.locate.rollout import policy_from_backend, policy_from_teacher
    from qmr.prompts import build_prompt

    closers, teachers = [], {}
    prompts: dict[tuple[str, str], str] = {}
    kinds = {b: params.benchmarks[b].kind for b in benches}
    cache = paths.cache_dir() / "rollout" / model
    for name, judge in judges.items():
        if not getattr(judge, "batched", False):
            continue
        spec = params.judge.judges[name]
        grader = lambda text, c: grade(text, c.gold_answer, kinds[c.benchmark])[1]  # noqa: E731
        if spec.policy:  # an endpoint continues the plain problem prompt + the kept steps
            from qmr.endpoints import endpoint_named
            from qmr.restore.llm_teacher import llm_teacher

            endpoint = endpoint_named(params.endpoints, spec.policy, f"judge.judges.{name}.policy")
            teacher = llm_teacher(endpoint, temperature=spec.rollout_temperature, max_tokens=params.generate.max_new_tokens,
                                  cache=cache / f"{name}-responses.jsonl", who=f"judge.judges.{name}.policy")  # fmt: skip
            judge.bind(policy_from_teacher(teacher), prompt_of=lambda c: build_prompt(c.question), grade=grader,
                       policy_name=f"endpoint {spec.policy}")  # fmt: skip
            teachers[name] = teacher
            continue
        policy_variant = params.evaluate.reference
        if not closers:
            from qmr.determinism import set_determinism

            set_determinism(params.vote.seed, params.threads)  # sampled rollouts: same params, same judgments
        if not prompts:
            for bench in benches:
                prompts.update({(bench, str(t["id"])): t["prompt"] for t in read_jsonl(paths.traces(model, variant, bench)) if t.get("prompt")})
        backend, generate = resumable_sampler(params, model, policy_variant, cache / variant)
        closers.append(lambda b=backend: close_backend(b))
        policy = policy_from_backend(generate, temperature=spec.rollout_temperature, max_new_tokens=params.generate.max_new_tokens,
                                     seed=params.vote.seed)  # fmt: skip
        judge.bind(policy, prompt_of=lambda c: prompts[(c.benchmark, c.id)], grade=grader, policy_name=f"{model}/{policy_variant}")
    return closers, teachers
