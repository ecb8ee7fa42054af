"""Stage `judge`: every judge's verdict on every failure (fp right, variant wrong) of one variant.

Answers of `llm` judges are cached (qmr.paths.judge_cache) as soon as they arrive: a re-run or a run
resumed after a kill makes no call for a case already answered.
"""

from __future__ import annotations

import logging

from qmr import paths
from qmr.errors import UserError, choose
from qmr.io import read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)


def run(params, model: str, variant: str) -> None:
    from qmr.locate.cache import run_judges
    from qmr.locate.cases import case_to_dict, failure_cases
    from qmr.locate.judges import build_judge
    from qmr.locate.llm import raise_if_endpoint_dead

    choose("model", model, params.models)
    choose("variant", variant, params.quantize.variants)
    ref = params.evaluate.reference
    judges = {name: build_judge(name, spec, params.endpoints) for name, spec in params.judge.judges.items()}  # key env vars checked here
    cases = []
    for bench in params.generate.benchmarks:
        cases += failure_cases(
            read_jsonl(paths.benchmark(bench)),
            read_jsonl(paths.traces(model, ref, bench)),
            read_jsonl(paths.traces(model, variant, bench)),
            variant,
            params.benchmarks[bench].kind,
        )
    log.info("%s/%s: %d failures to judge with %s", model, variant, len(cases), ", ".join(judges))
    result = run_judges(
        cases, judges, paths.judge_cache(model), cheap_first=params.vote if params.judge.cheap_first else None, progress=True
    )
    raise_if_endpoint_dead(result.judgments)
    write_jsonl(paths.cases(model, variant), [case_to_dict(c) for c in cases])
    write_jsonl(paths.judgments(model, variant), result.judgments)
    write_json(paths.judgments(model, variant).with_suffix(".stats.json"), {"calls_made": result.calls_made, "calls_saved": result.calls_saved, "judges": result.stats})
    # failed calls and invalid replies are not cached: above the allowed share the stage fails, so DVC
    # does not record it as done and the next `dvc repro` re-asks exactly those
    limit = params.judge.max_failed_share
    over = []
    for name, s in result.stats.items():
        asked = s["cases"] - s["skipped_cheap_first"]
        bad = s["failed"] + s["invalid"]
        if judges[name].cacheable and asked and bad / asked > limit:
            over.append(f"judge {name!r}: {bad} of {asked} case(s) failed or gave invalid replies ({s['failed']} failed, "
                        f"{s['invalid']} invalid; {bad / asked:.0%} > judge.max_failed_share {limit:.0%})")  # fmt: skip
    if over:
        raise UserError("; ".join(over) + ". The valid answers are cached: fix the endpoint (or raise the share) and run "
                        "`dvc repro` again to re-ask only the others.")  # fmt: skip
