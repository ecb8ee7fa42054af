"""Locate: the first faulty step of each failure and its error type (paper §3.1.3, Appendix C).

Modules: `taxonomy` (7 types, 4 categories, precedence), `cases` (failure cases), `arith` (exact
claims), `judges` (JudgeSpec, build_judge, the judgment record), `offline` (arithmetic and reference
judges, toy ground truth), `llm` (OpenAI-compatible judge), `cache` (response cache, run_judges,
cheap-first), `vote` (VoteSpec, voting rules, audit), `annotation` (packets, human verdicts), `metrics`
(metrics/vote.json entries, plot rows), `judge_bench` (ProcessBench scoring, PRM800K converters).

What the ``judge`` stage calls, in order::

    from qmr.locate.cases import failure_cases, case_to_dict
    from qmr.locate.judges import JudgeSpec, build_judge
    from qmr.locate.cache import run_judges
    from qmr.locate.llm import raise_if_endpoint_dead

    cases = failure_cases(bench_records, fp_traces, qt_traces, variant, kind)   # per benchmark, concatenated
    judges = {name: build_judge(name, spec) for name, spec in specs.items()}    # unset key variable -> error now
    run = run_judges(cases, judges, cache_path, cheap_first=vote_spec if cheap else None)
    raise_if_endpoint_dead(run.judgments)
    write_jsonl(cases_path, map(case_to_dict, cases)); write_jsonl(judgments_path, run.judgments)
    run.stats -> metrics (calls, calls_saved, tokens, cost per judge)

What the ``vote`` stage calls, in order::

    from qmr.locate.cases import case_from_dict
    from qmr.locate.vote import VoteSpec, vote_all, group_judgments
    from qmr.locate.annotation import write_packet, packet_dir, verdict_path, apply_human_verdicts
    from qmr.locate.metrics import vote_metrics, error_type_rows, first_error_rows
    from qmr.locate.offline import ground_truth_for

    labels = vote_all(judgments, vote_spec, [c.id for c in cases], variant)
    grouped = group_judgments(judgments)
    for lab in labels:
        if lab["needs_human"] or lab["audit"]:
            write_packet(packet_dir(annotation_root, lab["id"]), case_of[lab["id"]],
                         list(grouped.get(lab["id"], {}).values()), lab,
                         verdict=verdict_path(verdict_root, lab["id"]))
    labels = apply_human_verdicts(labels, verdict_root, cases)   # verdicts: an input, not a packet file
    metrics = vote_metrics(labels, judgments, cases, ground_truth_for(cases) or None)
    rows = error_type_rows(labels, variant), first_error_rows(labels, cases, variant=variant)

Downstream (silver) uses labels whose ``rule`` is unanimous/threshold/human and whose type is not
``no_error``; ``label["sample"]`` names the judged trace sample.
"""
