"""Measured costs, side by side in one run on one machine (`qmr bench`); never asserted in tests.

- generation: batched vs one prompt at a time on the default model (tokens/s and their ratio);
- judging: an `llm` judge at its configured concurrency vs sequentially against the loopback
  OpenAI-compatible server with added latency, then a re-run served from the cache;
- openai generation: the `openai` backend at concurrency 32 vs 1 against the loopback server with
  added latency (a stand-in for a served deployment), same prompts, same answers;
- storage: bytes of the quantized Linear weights (W4A16 g128, W8A8 per channel) vs 16 bits, for the
  toy's checkpoints (measured on disk) and for the paper's models (computed from their architecture's
  parameter shapes on the meta device: nothing is downloaded);
- CPU kernels: toy base training pinned (``QMR_CPU_KERNELS=avx2``) vs the host's own kernels
  (``native``), alternating in subprocesses: tokens/s, and whether the weights differ;
- the pipeline: per-stage wall time and peak resident memory from a stage log (``QMR_STAGE_LOG``),
  e.g. of a fresh ``dvc repro`` and a ``dvc exp run -S recovery.subset=ME`` after it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from pathlib import Path

log = logging.getLogger(__name__)

# Architecture of the paper's models (their config.json on the hub): enough to lay out every Linear.
PAPER_ARCHITECTURES = {
    "Qwen2.5-0.5B-Instruct": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "Qwen2.5-1.5B-Instruct": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "Qwen2.5-3B-Instruct": dict(model_type="qwen2", hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "Qwen2.5-7B-Instruct": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
    "Llama-3.2-1B-Instruct": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "Llama-3.2-3B-Instruct": dict(model_type="llama", hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "Llama-3.1-8B-Instruct": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}  # fmt: skip


def quantized_linear_bytes(shapes: list[tuple[int, int]], bits: int, group_size: int | None, symmetric: bool) -> int:
    """Bytes of Linear weights of these (out, in) shapes at ``bits`` with 16-bit scales per group (and
    ``bits``-bit zero-points when asymmetric) — the layout `qmr.quant.run.linear_weight_bytes` counts."""
    total = 0
    for out, inp in shapes:
        groups = math.ceil(inp / group_size) if group_size else 1
        total += out * inp * bits + out * groups * 16 + (0 if symmetric else out * groups * bits)
    return total // 8


def linear_shapes(architecture: dict) -> list[tuple[int, int]]:
    """(out, in) of every decoder Linear (lm_head and embeddings stay in 16 bits, as in `quantize`)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**architecture)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return [tuple(m.weight.shape) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head")]


def storage_table() -> list[dict]:
    rows = []
    for name, arch in PAPER_ARCHITECTURES.items():
        shapes = linear_shapes(arch)
        fp16 = sum(o * i for o, i in shapes) * 2
        w4 = quantized_linear_bytes(shapes, 4, 128, symmetric=True)
        w8 = quantized_linear_bytes(shapes, 8, None, symmetric=True)
        rows.append({"model": name, "linear_params": fp16 // 2, "fp16_gb": round(fp16 / 1e9, 3), "w4a16_g128_gb": round(w4 / 1e9, 3),
                     "w8a8_gb": round(w8 / 1e9, 3), "w4a16_ratio": round(fp16 / w4, 2), "w8a8_ratio": round(fp16 / w8, 2)})  # fmt: skip
    return rows


def toy_storage(models_root: Path = Path("models/quantized")) -> list[dict]:
    rows = []
    for qjson in sorted(models_root.glob("*/*/quantize.json")):
        q = json.loads(qjson.read_text())
        if q.get("quantized_linear_bytes"):
            rows.append({"variant": qjson.parent.name, "scheme": q.get("scheme"), "quantized_linear_bytes": q["quantized_linear_bytes"],
                         "fp16_linear_bytes": q["fp16_linear_bytes"], "ratio": q.get("linear_compression_ratio")})  # fmt: skip
    return rows


def generation_speed(model_dir: str, prompts: list[str], max_new_tokens: int, batch_sizes: tuple[int, ...] = (64, 1)) -> dict:
    from qmr.generation.hf import TransformersBackend

    out = {}
    for bs in batch_sizes:
        backend = TransformersBackend(model_dir, device="cpu", batch_size=bs)
        t0 = time.perf_counter()
        done = backend.generate(prompts, max_new_tokens=max_new_tokens, progress=False)
        seconds = time.perf_counter() - t0
        tokens = sum(c.tokens for cs in done for c in cs)
        out[f"batch_{bs}"] = {"prompts": len(prompts), "tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1)}
    first, last = (f"batch_{b}" for b in (batch_sizes[0], batch_sizes[-1]))
    out["ratio"] = round(out[first]["tokens_per_s"] / out[last]["tokens_per_s"], 2)
    return out


def judge_speed(cases: list, tmp: Path, latency_s: float = 0.2, concurrency: int = 8) -> dict:
    import os

    from qmr.devtools.openai_server import OpenAIStubServer
    from qmr.locate.cache import run_judges
    from qmr.locate.judges import JudgeSpec, build_judge

    os.environ.setdefault("QMR_BENCH_KEY", "bench-not-a-secret")
    out = {}
    with OpenAIStubServer(latency_s=latency_s) as server:
        for label, conc in (("concurrent", concurrency), ("sequential", 1)):
            spec = JudgeSpec(kind="llm", base_url=server.url, model="bench", api_key_env="QMR_BENCH_KEY", concurrency=conc, timeout_s=10.0)
            cache = tmp / f"judge-{label}.jsonl"
            t0 = time.perf_counter()
            run = run_judges(cases, {"llm": build_judge("llm", spec)}, cache)
            out[label] = {"cases": len(cases), "concurrency": conc, "calls_made": run.calls_made, "seconds": round(time.perf_counter() - t0, 2)}
        t0 = time.perf_counter()
        again = run_judges(cases, {"llm": build_judge("llm", spec)}, cache)
        out["cached_rerun"] = {"calls_made": again.calls_made, "calls_saved": again.calls_saved, "seconds": round(time.perf_counter() - t0, 2)}
    out["latency_s"] = latency_s
    out["speedup"] = round(out["sequential"]["seconds"] / out["concurrent"]["seconds"], 2)
    return out


def openai_generation_speed(prompts: list[str], latency_s: float = 0.2, concurrency: int = 32, max_new_tokens: int = 80) -> dict:
    """The `openai` backend generating ``prompts`` at ``concurrency`` vs one request at a time, against
    the loopback server adding ``latency_s`` per request, run as a managed server in its own process
    (as a deployment would be: it does not share this process's GIL); the answers must be the same."""
    import sys

    from qmr.generation.base import ServerSpec
    from qmr.generation.openai_backend import OpenAIBackend

    command = f"{sys.executable} -m qmr.devtools.openai_server --port {{port}} --latency {latency_s}"
    out: dict = {"latency_s": latency_s}
    texts = {}
    for label, conc in (("concurrent", concurrency), ("sequential", 1)):
        backend = OpenAIBackend("loopback", server=ServerSpec(command=command, concurrency=conc, ready_timeout_s=60), batch_size=64)
        try:
            backend.base_url()  # started and ready before the clock starts
            t0 = time.perf_counter()
            done = backend.generate(prompts, max_new_tokens=max_new_tokens, progress=False)
            seconds = time.perf_counter() - t0
        finally:
            backend.close()
        texts[label] = [c[0].text for c in done]
        out[label] = {"prompts": len(prompts), "concurrency": conc, "requests": len(prompts), "seconds": round(seconds, 2),
                      "requests_per_s": round(len(prompts) / seconds, 1)}  # fmt: skip
        log.info("openai generation at concurrency %d: %.2f s", conc, seconds)
    out["same_answers"] = texts["concurrent"] == texts["sequential"]
    out["speedup"] = round(out["sequential"]["seconds"] / out["concurrent"]["seconds"], 2)
    out["ideal"] = round(len(prompts) / math.ceil(len(prompts) / concurrency), 1)  # waves of `concurrency` requests
    return out


def kernel_speed(params_file: Path, steps: int = 300, repeats: int = 3) -> dict:
    """Toy base training for ``steps`` steps, pinned vs native kernels, alternating ``repeats`` times.

    Each run is a fresh ``python -m qmr base`` in a scratch project (the pin is process-wide and must
    be set before torch loads). Returns per mode the tokens/s of every run, their median, the
    weights' hashes, and the ratio of medians (pinned / native).
    """
    import hashlib
    import os
    import statistics
    import subprocess
    import sys
    import tempfile

    import yaml

    from qmr.config import yaml_loader
    from qmr.determinism import OVERRIDDEN, PINS

    params = yaml.load(Path(params_file).read_text(encoding="utf-8"), Loader=yaml_loader())  # noqa: S506 - a SafeLoader subclass
    params["base"]["toy"].update(max_steps=steps, train_seconds=0)
    clean = {k: v for k, v in os.environ.items() if k not in {*PINS["avx2"], *OVERRIDDEN, "QMR_CPU_KERNELS", "QMR_STAGE_LOG"}}
    out: dict = {"steps": steps, "repeats": repeats, "avx2": {"tokens_per_s": [], "weights": set()},
                 "native": {"tokens_per_s": [], "weights": set()}}  # fmt: skip
    for _ in range(repeats):
        for mode in ("avx2", "native"):
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
                subprocess.run([sys.executable, "-m", "qmr", "base", "--model", next(iter(params["models"]))], cwd=tmp,
                               env={**clean, "QMR_CPU_KERNELS": mode}, check=True, capture_output=True)  # fmt: skip
                speed = json.loads(next(Path(tmp, "metrics/speed/base").glob("*.json")).read_text())
                weights = next(Path(tmp, "models/base").glob("*/model.safetensors")).read_bytes()
            out[mode]["tokens_per_s"].append(speed["tokens_per_s"])
            out[mode]["weights"].add(hashlib.sha256(weights).hexdigest()[:16])
            out[mode]["kernels"] = speed["kernels"]
            log.info("kernels %s: %.0f tokens/s", mode, speed["tokens_per_s"])
    for mode in ("avx2", "native"):
        out[mode]["median_tokens_per_s"] = round(statistics.median(out[mode]["tokens_per_s"]), 1)
        out[mode]["weights"] = sorted(out[mode]["weights"])
    out["ratio"] = round(out["avx2"]["median_tokens_per_s"] / out["native"]["median_tokens_per_s"], 3)
    return out


def stage_breakdown(log_path: Path) -> dict:
    """Per-stage totals from a QMR_STAGE_LOG file: runs, seconds, peak resident memory."""
    per: dict = defaultdict(lambda: {"runs": 0, "seconds": 0.0, "peak_rss_mb": 0.0})
    for line in log_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        entry = per[row["stage"]]
        entry["runs"] += 1
        entry["seconds"] = round(entry["seconds"] + row["seconds"], 2)
        entry["peak_rss_mb"] = max(entry["peak_rss_mb"], row["peak_rss_mb"])
    return {"stages": dict(per), "total_stage_seconds": round(sum(e["seconds"] for e in per.values()), 1)}


def render(results: dict) -> str:
    lines = [f"# qmr bench — {results['machine']}", ""]
    g = results.get("generation")
    if g:
        lines += ["## Generation (toy fp, CPU)", "", "| mode | prompts | tokens | seconds | tokens/s |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {v['prompts']} | {v['tokens']} | {v['seconds']} | {v['tokens_per_s']} |" for k, v in g.items() if isinstance(v, dict)]
        lines += ["", f"Batched / one-at-a-time: **{g['ratio']}×**.", ""]
    j = results.get("judge")
    if j:
        lines += [f"## Judging ({j['concurrent']['cases']} cases, loopback endpoint, {j['latency_s']} s added latency per request)", "",
                  "| mode | concurrency | calls | seconds |", "|---|---|---|---|",
                  f"| concurrent | {j['concurrent']['concurrency']} | {j['concurrent']['calls_made']} | {j['concurrent']['seconds']} |",
                  f"| sequential | 1 | {j['sequential']['calls_made']} | {j['sequential']['seconds']} |",
                  f"| re-run from cache | — | {j['cached_rerun']['calls_made']} | {j['cached_rerun']['seconds']} |", "",
                  f"Concurrent / sequential: **{j['speedup']}×** faster.", ""]  # fmt: skip
    o = results.get("openai")
    if o:
        c, q = o["concurrent"], o["sequential"]
        lines += [f"## Generation through the `openai` backend ({c['prompts']} prompts; loopback server in its own process, {o['latency_s']} s added latency per request)", "",
                  "| mode | concurrency | requests | seconds | requests/s |", "|---|---|---|---|---|",
                  f"| concurrent | {c['concurrency']} | {c['requests']} | {c['seconds']} | {c['requests_per_s']} |",
                  f"| sequential | 1 | {q['requests']} | {q['seconds']} | {q['requests_per_s']} |", "",
                  f"Concurrent / sequential: **{o['speedup']}×** faster (ideal {o['ideal']}×: waves of {c['concurrency']}); "
                  f"same answers: {o['same_answers']}.", ""]  # fmt: skip
    s = results.get("storage")
    if s:
        lines += ["## Quantized Linear weights vs 16 bits", "", "| model | Linear params | fp16 GB | W4A16 g128 GB | × | W8A8 GB | × |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['linear_params'] / 1e9:.2f}B | {r['fp16_gb']} | {r['w4a16_g128_gb']} | {r['w4a16_ratio']} | {r['w8a8_gb']} | {r['w8a8_ratio']} |" for r in s]
        lines += [""]
    k = results.get("kernels")
    if k:
        cpu = k["native"].get("kernels", {}).get("cpu", "?")
        lines += [f"## CPU kernels: toy base training, {k['steps']} steps, {k['repeats']} alternating runs each ({cpu})", "",
                  "| kernels | ATen | MKL_CBWR | tokens/s (runs) | median | weights sha256 |", "|---|---|---|---|---|---|"]
        for mode in ("avx2", "native"):
            m = k[mode]
            lines.append(f"| {mode} | {m['kernels']['aten_cpu_capability']} | {m['kernels']['mkl_cbwr'] or '—'} | "
                         f"{', '.join(f'{t:.0f}' for t in m['tokens_per_s'])} | {m['median_tokens_per_s']:.0f} | {', '.join(m['weights'])} |")
        lines += ["", f"Pinned / native: **{k['ratio']}×** the tokens/s.", ""]
    p = results.get("pipeline")
    if p:
        lines += ["## Pipeline (per stage: all instances summed)", "", "| stage | runs | seconds | peak RSS MB |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['runs']} | {v['seconds']} | {v['peak_rss_mb']} |" for k, v in p["stages"].items()]
        lines += ["", f"Sum of stage times: {p['total_stage_seconds']} s.", ""]
    return "\n".join(lines) + "\n"
