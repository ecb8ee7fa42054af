"""Paper-style tables from the metrics files (never typed numbers) and PNG figures for offline viewing."""

from __future__ import annotations

from typing import Any


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join("—" if c is None else str(c) for c in row) + " |" for row in rows]
    return out


def accuracy_table(evaluate: dict, benchmarks: list[str]) -> list[str]:
    """Table 1 layout: accuracy (%) with degradation vs fp, flips, and the Linear-weight compression."""
    header = ["model", "variant", "scheme"] + [f"{b} acc % (deg %)" for b in benchmarks] + [f"{b} flips" for b in benchmarks] + ["Linear bytes ÷"]
    rows = []
    for model, variants in evaluate.items():
        for variant, entry in variants.items():
            size = entry.get("size", {})
            rows.append(
                [model, variant, size.get("scheme", "FP")]
                + [f"{_pct(entry[b]['accuracy'])} ({entry[b]['degradation_pct']:+.1f})" for b in benchmarks if b in entry]
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
    out: list[str] = []
    for model, variants in vote.items():
        rows = []
        for variant, m in variants.items():
            acc = m.get("accuracy", {})
            for judge, jm in m.get("judges", {}).items():
                a = acc.get(judge, {})
                rows.append([variant, judge, jm["valid_rate"], jm["abstain_rate"], a.get("step_accuracy"), a.get("type_accuracy"), jm["calls"], jm["cost"]])
            if "ensemble" in acc:
                a = acc["ensemble"]
                rows.append([variant, "**ensemble**", None, None, a.get("step_accuracy"), a.get("type_accuracy"), m.get("calls", {}).get("made"), None])
            rules = m.get("rules", {})
            rows.append([variant, "rules", ", ".join(f"{k} {v}" for k, v in rules.items()), f"kappa {m.get('agreement', {}).get('fleiss_kappa')}", None, None, None, None])
        out += [f"**{model}**", ""] + _table(["variant", "judge", "valid", "abstain", "step acc (vs toy truth)", "type acc", "calls", "cost $"], rows) + [""]
    return out


def restore_table(restore: dict) -> list[str]:
    """Table 2 / Appendix F layout: fp, quantized, restored per benchmark with the recovery ratio."""
    rows = []
    for model, variants in restore.items():
        for variant, e in variants.items():
            for bench, m in e.items():
                if not isinstance(m, dict) or "accuracy_fp" not in m:
                    continue
                rows.append(
                    [model, variant, e.get("subset"), e.get("objective"), bench, _pct(m["accuracy_fp"]), _pct(m["accuracy_quantized"]),
                     _pct(m["accuracy_restored"]), m.get("recovery_ratio"), e.get("pairs")]
                )
    return _table(["model", "variant", "subset", "objective", "benchmark", "fp %", "quantized %", "restored %", "recovery", "pairs"], rows)


def align_table(align: dict) -> list[str]:
    """Format alignment (paper §3.1.2): compliance and accuracy of the base model before and after."""
    rows = []
    for model, e in align.items():
        b, a = e.get("before") or {}, e.get("after") or {}
        rows.append([model, e.get("method"), e.get("examples", ""), e.get("steps", ""), _pct(b.get("format_compliance")),
                     _pct(a.get("format_compliance")), _pct(b.get("accuracy")), _pct(a.get("accuracy")), b.get("problems", "")])  # fmt: skip
    return _table(["model", "method", "examples", "steps", "compliance before %", "compliance after %", "accuracy before %", "accuracy after %", "problems"], rows)


def render_report(
    evaluate: dict, vote: dict | None, restore: dict | None, benchmarks: list[str], ablation: list[str] | None = None, align: dict | None = None
) -> str:
    lines = ["# qmr report", "", "Generated by `qmr report` from `metrics/*.json`; every number below comes from those files.",
             "Wall-clock numbers (training seconds, tokens/s) vary run to run and live in `metrics/speed/`.", ""]
    if align:
        lines += ["## Format alignment before quantization (§3.1.2)", "",
                  "Compliance = share of outputs with steps before a final `The answer is N.`; quantization applies to the aligned model.", ""]
        lines += align_table(align) + [""]
    lines += ["## Accuracy and degradation (Table 1 layout)", "", "Degradation = (acc_fp − acc_q) / acc_fp. Flips = problems fp solves and the variant does not.", ""]
    lines += accuracy_table(evaluate, benchmarks) + [""]
    if vote:
        lines += ["## Where reasoning breaks: first-error types (Appendix E layout)", ""] + taxonomy_table(vote)
        lines += ["## Judges: validity, agreement, accuracy against the toy ground truth, cost", ""] + judge_table(vote)
    if restore:
        lines += ["## Restoration (Table 2 layout)", "", "Recovery ratio = (acc_restored − acc_q) / (acc_fp − acc_q).", ""] + restore_table(restore) + [""]
    if ablation:
        lines += ["## Ablation across `recovery.subset` experiments", ""] + ablation + [""]
    return "\n".join(lines) + "\n"


def save_figures(evaluate: dict, vote: dict | None, restore_logs: dict[str, list[dict]], out_dir) -> list[str]:
    """PNG figures: accuracy per variant, error-type distribution, DPO loss/margin curves."""
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
