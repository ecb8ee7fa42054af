"""Stage `vote`: the voting protocol -> consensus labels, annotation packets, metrics/vote.json.

Escalated and audit cases get a packet under data/annotation/<model>/<variant>/<case>/. Annotators'
verdicts are an input: annotations/<model>/<variant>/<case>.json (git-tracked, a dependency of this
stage) overrides the automated label, so a plain `dvc repro` applies a new verdict from here on.
"""

from __future__ import annotations

import logging

from qmr import paths
from qmr.io import read_json, read_jsonl, write_csv, write_json, write_jsonl

log = logging.getLogger(__name__)


def run(params) -> None:
    from qmr.locate.annotation import apply_human_verdicts, packet_dir, verdict_path, write_packet
    from qmr.locate.cases import case_from_dict
    from qmr.locate.metrics import (
        confusion_rows,
        error_type_rows,
        first_error_rows,
        potential_rows,
        vote_metrics,
    )
    from qmr.locate.offline import ground_truth_for
    from qmr.locate.vote import group_judgments, vote_all

    metrics: dict = {}
    speed: dict = {}
    type_rows, position_rows, confusion, potential = [], [], [], []
    for model in params.models:
        metrics[model] = {}
        for variant in params.judge.variants:
            cases = [case_from_dict(c) for c in read_jsonl(paths.cases(model, variant))]
            judgments = read_jsonl(paths.judgments(model, variant))
            case_of = {c.id: c for c in cases}
            labels = vote_all(judgments, params.vote, [c.id for c in cases], variant)
            grouped = group_judgments(judgments)
            root = paths.annotation_dir(model, variant)
            root.mkdir(parents=True, exist_ok=True)  # a DVC output even when nothing escalates
            verdicts = paths.verdicts_dir(model, variant)
            for lab in labels:
                lab["benchmark"] = case_of[lab["id"]].benchmark
                if lab["needs_human"] or lab["audit"]:
                    write_packet(
                        packet_dir(root, lab["id"]),
                        case_of[lab["id"]],
                        list(grouped.get(lab["id"], {}).values()),
                        lab,
                        verdict=verdict_path(verdicts, lab["id"]),
                    )
            labels = apply_human_verdicts(labels, verdicts, cases)
            write_jsonl(paths.labels(model, variant), labels)
            truth = ground_truth_for(cases)
            m = vote_metrics(labels, judgments, cases, truth or None)
            confusion += [{"model": model, **r} for r in confusion_rows(labels, truth, variant)]
            stats = read_json(paths.judgments(model, variant).with_suffix(".stats.json"))
            estimate = stats.get("estimate", {}).get("total", {})
            m["calls"] = {"made": stats["calls_made"], "saved": stats["calls_saved"], "estimated": estimate.get("calls", 0)}
            m["cost_usd"] = {"estimated": estimate.get("usd", 0.0), "spent": stats.get("budget", {}).get("spent_usd", 0.0)}
            judge_stats = stats.get("judges", {})
            m["rollouts"] = {"made": sum(int(s.get("rollouts", 0)) for s in judge_stats.values()),
                             "tokens": sum(int(s.get("tokens_out", 0)) for s in judge_stats.values() if "rollouts" in s)}  # fmt: skip
            # wall clock is kept apart from the quality metrics (those compare byte for byte across runs)
            speed.setdefault(model, {})[variant] = {
                "rollout_seconds": round(sum(float(s.get("seconds", 0.0)) for s in judge_stats.values()), 2),
                "judges": {n: {"seconds": round(float(s["seconds"]), 2)} for n, s in judge_stats.items() if "seconds" in s},
            }
            costly = [s for s in judge_stats.values() if "cheap_first_check" in s]
            if costly:  # cheap-first: what the costly judges saw
                m["cheap_first"] = {"skipped": costly[0]["skipped_cheap_first"], "checked": costly[0]["cheap_first_check"],
                                    "sent": costly[0]["cases"] - costly[0]["skipped_cheap_first"]}  # fmt: skip
            metrics[model][variant] = m
            type_rows += [{"model": model, **r} for r in error_type_rows(labels, variant)]
            position_rows += [{"model": model, **r} for r in first_error_rows(labels, cases, variant=variant)]
            potential += [{"model": model, **r} for r in potential_rows(judgments, cases, variant)]
            log.info("%s/%s: %d labels, rules %s", model, variant, len(labels), m.get("rules"))
    write_json(paths.metrics("vote"), metrics)
    write_json(paths.speed("vote"), speed)
    write_csv(paths.plots("vote") / "error_types.csv", type_rows)
    write_csv(paths.plots("vote") / "first_error_position.csv", position_rows)
    # judge ensemble vs the toy's exact ground truth (empty for real benchmarks, which have none)
    write_csv(paths.plots("vote") / "confusion.csv", confusion, ["model", "variant", "id", "actual", "predicted"])
    # rollout judges' potential curves: where the chance of reaching the answer collapses (empty without one)
    write_csv(paths.plots("vote") / "potential.csv", potential,
              ["model", "variant", "judge", "id", "kept_steps", "kept_fraction", "success_rate", "located_step"])  # fmt: skip
