"""Stage `report`: metrics/report.md (paper-style tables) and PNG figures under plots/report/."""

from __future__ import annotations

import logging

from qmr import paths
from qmr.io import read_json, write_csv, write_text

log = logging.getLogger(__name__)


def run(params) -> None:
    from qmr.report import render_report, save_figures

    evaluate = read_json(paths.metrics("evaluate"))
    vote = read_json(paths.metrics("vote")) if paths.metrics("vote").exists() else None
    restore = read_json(paths.metrics("restore")) if paths.metrics("restore").exists() else None
    logs = {}
    for model in params.models:
        for variant in params.recovery.variants:
            log_path = paths.restored_model(model, variant) / "train_log.json"
            if log_path.exists():
                logs[f"{model}/{variant}"] = read_json(log_path)
    ablation = None
    ablation_json = paths.METRICS / "ablation.json"  # written by `qmr ablation` from DVC experiments
    if ablation_json.exists():
        from qmr.ablation import render as render_ablation
        from qmr.ablation import with_timings

        data = read_json(ablation_json)
        timings_json = paths.speed("ablation")  # the experiments' training seconds (wall-clock, kept apart)
        timings = read_json(timings_json) if timings_json.exists() else None
        if data.get("model") in params.models:  # another model's experiments are not this report's
            ablation = render_ablation(data["model"], data["variant"], with_timings(data["experiments"], timings), data["summary"])
        else:
            log.info("%s holds experiments of model %r, not one of this params file's: left out", ablation_json, data.get("model"))
    align = read_json(paths.metrics("align")) if paths.metrics("align").exists() else None
    text = render_report(evaluate, vote, restore, list(params.generate.benchmarks), ablation=ablation, align=align,
                         reference=params.evaluate.reference)
    write_text(paths.METRICS / "report.md", text)
    potential_csv = paths.plots("vote") / "potential.csv"
    potential = []
    if potential_csv.exists():
        import csv

        with potential_csv.open(encoding="utf-8", newline="") as f:
            potential = list(csv.DictReader(f))
    figures = save_figures(evaluate, vote, logs, paths.plots("report"), potential=potential,
                           potential_variants=list(params.recovery.variants))  # the restored (most degraded) variants
    curves = [{"run": run, "step": r["step"], "loss": r["loss"]} for run, rows in logs.items() for r in rows]
    write_csv(paths.plots("report") / "train_curves.csv", curves, ["run", "step", "loss"])
    # reward margins exist for preference objectives only: an sft run gets no (flat, empty) line
    margins = [
        {"run": run, "step": r["step"], "margin": r["rewards/margins"]}
        for run, rows in logs.items()
        for r in rows
        if r.get("rewards/margins") is not None
    ]
    write_csv(paths.plots("report") / "train_margins.csv", margins, ["run", "step", "margin"])
    log.info("wrote metrics/report.md and %d figures", len(figures))
