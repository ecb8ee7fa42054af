"""Stage `generate`: one variant x one benchmark -> graded, step-segmented traces."""

from __future__ import annotations

import logging

from qmr import paths
from qmr.errors import choose
from qmr.io import read_jsonl
from qmr.modelspec import load_spec

log = logging.getLogger(__name__)


def run(params, model: str, variant: str, benchmark: str) -> None:
    from qmr.traces import generate_traces

    load_spec(model, params.models)  # validates --model
    choose("variant", variant, params.quantize.variants)
    choose("benchmark", benchmark, params.benchmarks)
    traces = generate_traces(
        params, model, str(paths.quantized_model(model, variant)), variant, benchmark, read_jsonl(paths.benchmark(benchmark)),
        write_to=paths.traces(model, variant, benchmark), partial=paths.generation_partial(model, variant, benchmark),
    )  # fmt: skip
    acc = sum(t["correct"] for t in traces) / max(1, len(traces))
    log.info("%s/%s on %s: %d traces, sample accuracy %.3f", model, variant, benchmark, len(traces), acc)
