"""Paper-style tables from the metrics files (never typed numbers) and PNG figures for offline viewing."""

from __future__ import annotations

from typing import Any

from qmr.stats import verdict

INTERVALS = ("Brackets: 95% intervals — Wilson over problems for one run's accuracy, a bootstrap over problems for one "
             "run's recovery ratio, a Student t-interval over seeds for a mean over runs. \"not significant\": the two "
             "intervals overlap (a conservative reading: separate intervals mean a real difference, overlapping ones "
             "do not prove there is none).")  # fmt: skip


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _ci(ci: list[float] | None, pct: bool = True) -> str:
    """`` [lo, hi]`` after a value (percent points or ratio), or nothing without an interval."""
    if not ci:
        return ""
    return f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if pct else f" [{ci[0]:.2f}, {ci[1]:.2f}]"


def _vs(a: list[float] | None, b: list[float] | None) -> str:
    return verdict(a, b) or "—"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join("—" if c is None else str(c) for c in row) + " |" for row in rows]
    return out


def accuracy_table(evaluate: dict, benchmarks: list[str], reference: str | None = None) -> list[str]:
    """Table 1 layout: accuracy (%) [95% CI] with degradation vs fp, flips, and the Linear-weight
    compression; a degradation whose interval overlaps the ``reference`` variant's is "not significant"."""
    header = ["model", "variant", "scheme"] + [f"{b} acc % [95% CI] (deg %)" for b in benchmarks] + [f"{b} flips" for b in benchmarks] + ["Linear bytes ÷"]
    rows = []
    for model, variants in evaluate.items():
        ref = variants.get(reference) if reference else None
        for variant, entry in variants.items():
            size = entry.get("size", {})
            cells = []
            for b in benchmarks:
                if b not in entry:
                    continue
                m = entry[b]
                note = ""
                if ref is not None and variant != reference and b in ref and verdict(m.get("accuracy_ci"), ref[b].get("accuracy_ci")) == "not significant":
                    note = ", not significant"
                cells.append(f"{_pct(m['accuracy'])}{_ci(m.get('accuracy_ci'))} ({m['degradation_pct']:+.1f}{note})")
            rows.append(
                [model, variant, size.get("scheme", "FP")]
                + cells
                + [entry[b]["flips"] for b in benchmarks if b in entry]
                + [size.get("linear_compression_ratio", 1.0)]
            )
    return _table(header, rows)


def taxonomy_table(vote: dict) -> list[str]:
    """Appendix E layout: error categories/types per variant, counts (share), first-error position."""
    out: list[str] = []
    for model, variants in vote.items():
        if not variants:
            continue
        types = list(next(iter(variants.values()))["types"])
        header = ["variant", "failures", "decided"] + types + ["first error step (mean)", "as fraction of trace (mean)"]
        rows = []
        for variant, m in variants.items():
            pos = m.get("first_error_step", {})
            rows.append(
                [variant, m["cases"], m["decided"]]
                + [f"{m['types'][t]['count']} ({_pct(m['types'][t]['share'])}%)" for t in types]
                + [pos.get("mean"), pos.get("mean_fraction")]
            )
        out += [f"**{model}**", ""] + _table(header, rows) + [""]
    return out


def judge_table(vote: dict) -> list[str]:
    """Each judge's step accuracy against the toy's ground truth (on the cases it was sent; ``coverage``:
    the share of those it spoke on), abstention and cost (calls, dollars, rollouts) side by side, then
    the ensemble. (Rollout seconds are wall clock: metrics/speed/vote.json.)"""
    out: list[str] = []
    for model, variants in vote.items():
        rows = []
        for variant, m in variants.items():
            acc = m.get("accuracy", {})
            for judge, jm in m.get("judges", {}).items():
                a = acc.get(judge, {})
                rows.append([variant, judge, jm["judgments"], jm["abstain_rate"], a.get("step_accuracy_answered"), a.get("coverage"),
                             a.get("type_accuracy_answered"), jm["calls"], jm["cost"], jm.get("rollouts", 0)])  # fmt: skip
            if "ensemble" in acc:
                a = acc["ensemble"]
                rows.append([variant, "**ensemble**", m.get("cases"), None, a.get("step_accuracy_answered"), a.get("coverage"),
                             a.get("type_accuracy_answered"), m.get("calls", {}).get("made"), None, m.get("rollouts", {}).get("made")])  # fmt: skip
            rules = m.get("rules", {})
            cheap = m.get("cheap_first")
            sent = f"; cheap-first sent {cheap['sent']} of {m.get('cases')} case(s) to the costly judges ({cheap['checked']} decided ones as a check)" if cheap else ""
            rows.append([variant, "rules", ", ".join(f"{k} {v}" for k, v in rules.items()) + sent,
                         f"kappa {m.get('agreement', {}).get('fleiss_kappa')}", None, None, None, None, None, None])  # fmt: skip
        out += [f"**{model}**", ""] + _table(["variant", "judge", "judged", "abstain", "step acc (vs toy truth, where it spoke)", "coverage",
                                              "type acc", "calls", "cost $", "rollouts"], rows) + [""]  # fmt: skip
    return out


def restore_table(restore: dict) -> list[str]:
    """Table 2 / Appendix F layout: fp, quantized, restored per benchmark [95% CI] with the recovery ratio,
    and whether restored differs from quantized and from fp beyond the intervals."""
    rows = []
    for model, variants in restore.items():
        for variant, e in variants.items():
            for bench, m in e.items():
                if not isinstance(m, dict) or "accuracy_fp" not in m:
                    continue
                fp, q, r = m.get("accuracy_fp_ci"), m.get("accuracy_quantized_ci"), m.get("accuracy_restored_ci")
                ratio = m.get("recovery_ratio")
                rows.append(
                    [model, variant, e.get("subset"), e.get("objective"), bench, f"{_pct(m['accuracy_fp'])}{_ci(fp)}",
                     f"{_pct(m['accuracy_quantized'])}{_ci(q)}", f"{_pct(m['accuracy_restored'])}{_ci(r)}",
                     None if ratio is None else f"{ratio}{_ci(m.get('recovery_ratio_ci'), pct=False)}",
                     _vs(r, q), _vs(r, fp), e.get("pairs")]  # fmt: skip
                )
    return _table(["model", "variant", "subset", "objective", "benchmark", "fp %", "quantized %", "restored %", "recovery",
                   "restored vs quantized", "restored vs fp", "pairs"], rows)  # fmt: skip


def align_table(align: dict) -> list[str]:
    """Format alignment (paper §3.1.2): compliance and accuracy of the base model before and after."""
    rows = []
    for model, e in align.items():
        b, a = e.get("before") or {}, e.get("after") or {}
        rows.append([model, e.get("method"), e.get("examples", ""), e.get("steps", ""), _pct(b.get("format_compliance")),
                     _pct(a.get("format_compliance")), _pct(b.get("accuracy")), _pct(a.get("accuracy")), b.get("problems", "")])  # fmt: skip
    return _table(["model", "method", "examples", "steps", "compliance before %", "compliance after %", "accuracy before %", "accuracy after %", "problems"], rows)


def render_report(
    evaluate: dict, vote: dict | None, restore: dict | None, benchmarks: list[str], ablation: list[str] | None = None,
    align: dict | None = None, reference: str | None = None,
) -> str:
    lines = ["# qmr report", "", "Generated by `qmr report` from `metrics/*.json`; every number below comes from those files.",
             "Wall-clock numbers (training seconds, tokens/s) vary run to run and live in `metrics/speed/`.", "", INTERVALS, ""]
    if align:
        lines += ["## Format alignment before quantization (§3.1.2)", "",
                  "Compliance = share of outputs with steps before a final `The answer is N.`; quantization applies to the aligned model.", ""]
        lines += align_table(align) + [""]
    lines += ["## Accuracy and degradation (Table 1 layout)", "", "Degradation = (acc_fp − acc_q) / acc_fp. Flips = problems fp solves and the variant does not.", ""]
    lines += accuracy_table(evaluate, benchmarks, reference) + [""]
    if vote:
        lines += ["## Where reasoning breaks: first-error types (Appendix E layout)", ""] + taxonomy_table(vote)
        lines += ["## Judges: validity, agreement, accuracy against the toy ground truth, cost", ""] + judge_table(vote)
    if restore:
        lines += ["## Restoration (Table 2 layout)", "", "Recovery ratio = (acc_restored − acc_q) / (acc_fp − acc_q).", ""] + restore_table(restore) + [""]
    if ablation:
        lines += ["## Ablation across DVC experiments (seeds grouped)", ""] + ablation + [""]
    return "\n".join(lines) + "\n"


def save_figures(evaluate: dict, vote: dict | None, restore_logs: dict[str, list[dict]], out_dir,
                 potential: list[dict] | None = None, potential_variants: list[str] | None = None) -> list[str]:  # fmt: skip
    """PNG figures: accuracy per variant, error-type distribution, DPO loss/margin curves, and the rollout
    judge's potential curves (``potential``: rows of plots/vote/potential.csv; one panel per variant of
    ``potential_variants`` that has rows, default all)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for model, variants in evaluate.items():
        benches = [b for b in next(iter(variants.values())) if b != "size"]
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(variants) * len(benches)))
        labels, values = [], []
        for variant, entry in variants.items():
            for b in benches:
                labels.append(f"{variant} · {b}")
                values.append(100 * entry[b]["accuracy"])
        ax.barh(labels[::-1], values[::-1], color="#4477aa")
        ax.set_xlabel("accuracy (%)")
        ax.set_xlim(0, 100)
        ax.set_title(f"{model}: accuracy per variant")
        fig.tight_layout()
        path = out_dir / f"accuracy_{model}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    if vote:
        for model, variants in vote.items():
            if not variants:
                continue
            types = list(next(iter(variants.values()))["types"])
            fig, ax = plt.subplots(figsize=(8, 4))
            width = 0.8 / max(1, len(variants))
            for i, (variant, m) in enumerate(variants.items()):
                ax.bar([k + i * width for k in range(len(types))], [m["types"][t]["count"] for t in types], width, label=variant)
            ax.set_xticks([k + 0.4 - width / 2 for k in range(len(types))])
            ax.set_xticklabels([t.replace("_", "\n") for t in types], fontsize=7)
            ax.set_ylabel("first errors")
            ax.set_title(f"{model}: error types of the first faulty step")
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = out_dir / f"error_types_{model}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(str(path))
    shown = [v for v in (potential_variants or sorted({r["variant"] for r in potential or []})) if any(r["variant"] == v for r in potential or [])]
    if shown:
        variants = shown
        fig, axes = plt.subplots(1, len(variants), figsize=(4.2 * len(variants), 3.4), squeeze=False)
        for ax, variant in zip(axes[0], variants, strict=True):
            for cid in sorted({r["id"] for r in potential if r["variant"] == variant}):
                rows = sorted((r for r in potential if r["variant"] == variant and r["id"] == cid), key=lambda r: int(r["kept_steps"]))
                xs = [int(r["kept_steps"]) for r in rows]
                ys = [float(r["success_rate"]) for r in rows]
                line = ax.plot(xs, ys, marker="o", label=cid)[0]
                step = int(rows[0]["located_step"])
                if step in xs:
                    ax.plot([step], [ys[xs.index(step)]], marker="x", markersize=11, color=line.get_color())
            ax.set_title(f"{variant}", fontsize=9)
            ax.set_xlabel("steps of the quantized trace kept")
            ax.set_ylim(-0.05, 1.05)
            ax.legend(fontsize=6)
        axes[0][0].set_ylabel("fp rollouts reaching the answer")
        fig.suptitle("potential: where the chance of a right answer collapses (x: located first faulty step)", fontsize=9)
        fig.tight_layout()
        path = out_dir / "potential.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    if restore_logs:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
        for name, rows in restore_logs.items():
            steps = [r["step"] for r in rows if r.get("loss") is not None]
            a1.plot(steps, [r["loss"] for r in rows if r.get("loss") is not None], label=name)
            m = [(r["step"], r["rewards/margins"]) for r in rows if r.get("rewards/margins") is not None]
            if m:
                a2.plot([s for s, _ in m], [v for _, v in m], label=name)
        a1.set_title("restore: training loss")
        a2.set_title("restore: DPO reward margin")
        for a in (a1, a2):
            a.set_xlabel("step")
            a.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / "restore_training.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written
