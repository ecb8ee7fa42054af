"""Every repository path the stages read or write, in one place.

The core library never builds repo paths; stages ask this module. Paths are relative to the project
root (the current directory, as `dvc repro` runs stages there), so dvc.yaml and this module agree.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(".")
PARAMS = ROOT / "params.yaml"
DATA = ROOT / "data"
MODELS = ROOT / "models"
METRICS = ROOT / "metrics"
PLOTS = ROOT / "plots"
VERDICTS = ROOT / "annotations"   # human verdicts: an input (git-tracked), never written by a stage


def benchmark(name: str) -> Path:
    return DATA / "benchmarks" / f"{name}.jsonl"


def model_spec(model: str) -> Path:
    """The resolved ``models.<model>`` (written by `resolve`; what per-model stages read)."""
    return MODELS / "spec" / f"{model}.json"


def base_model(model: str) -> Path:
    return MODELS / "base" / model


def aligned_model(model: str) -> Path:
    return MODELS / "aligned" / model


def quantized_model(model: str, variant: str) -> Path:
    return MODELS / "quantized" / model / variant


def traces(model: str, variant: str, bench: str) -> Path:
    return DATA / "traces" / model / variant / f"{bench}.jsonl"


def judgments(model: str, variant: str) -> Path:
    return DATA / "judgments" / model / f"{variant}.jsonl"


def judge_cache(model: str) -> Path:
    return cache_dir() / "judge" / f"{model}.jsonl"


def labels(model: str, variant: str) -> Path:
    return DATA / "labels" / model / f"{variant}.jsonl"


def annotation_dir(model: str, variant: str) -> Path:
    """Annotation packets (an output of `vote`)."""
    return DATA / "annotation" / model / variant


def verdicts_dir(model: str, variant: str) -> Path:
    """Annotators' verdicts for one variant (an input of `vote`)."""
    return VERDICTS / model / variant


def silver(model: str, variant: str) -> Path:
    return DATA / "silver" / model / f"{variant}.jsonl"


def restored_model(model: str, variant: str) -> Path:
    return MODELS / "restored" / model / variant


def restored_traces(model: str, variant: str, bench: str) -> Path:
    return DATA / "traces_restored" / model / variant / f"{bench}.jsonl"


def metrics(stage: str) -> Path:
    return METRICS / f"{stage}.json"


def speed(stage: str, model: str | None = None) -> Path:
    """Wall-clock numbers (seconds, tokens/s): noisy, so kept apart from the quality metrics."""
    return METRICS / "speed" / (f"{stage}/{model}.json" if model else f"{stage}.json")


def plots(stage: str) -> Path:
    return PLOTS / stage


def cases(model: str, variant: str) -> Path:
    return DATA / "judgments" / model / f"{variant}.cases.jsonl"


def cache_dir() -> Path:
    """Local response caches (judges, teachers): outside DVC outputs, so re-runs make no repeated calls."""
    import os

    return Path(os.environ.get("QMR_CACHE_DIR", ".qmr-cache"))


def generation_partial(model: str, variant: str, bench: str) -> Path:
    """Finished batches of a running generation (removed once its output is written)."""
    return cache_dir() / "generate" / model / variant / f"{bench}.partial.jsonl"
