"""The ``qmr`` command line: one thin command per DVC stage, plus utilities.

Every stage command validates the *whole* params file first (exit code 2 with one line per problem),
then runs ``qmr.stages.<stage>.run``. Imports are lazy so ``qmr --help`` is instant.
"""

from __future__ import annotations

import os
import sys
import time

import click


class _Group(click.Group):
    """Every command: a user error (:class:`qmr.errors.UserError`, or a missing input file) is one line
    on stderr and exit code 2, without a traceback; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context):
        from qmr.errors import UserError

        try:
            return super().invoke(ctx)
        except (UserError, FileNotFoundError) as exc:
            where = " ".join(filter(None, [ctx.command_path, ctx.invoked_subcommand]))
            click.echo(f"{where}: error: {exc}", err=True)
            sys.exit(2)


def _run_stage(ctx: click.Context, stage: str, **kwargs) -> None:
    import importlib
    import logging

    from qmr.errors import UserError
    from qmr.logs import setup_logging

    setup_logging(ctx.obj.get("verbose", False))
    started = time.perf_counter()
    seen: set[str] | None = None
    try:
        from qmr.params import load_params

        params = load_params(ctx.obj["params"])
        if os.environ.get("QMR_PARAMS_TRACE"):  # record the keys this stage reads (tests/test_pipeline.py)
            from qmr.config import traced

            params, seen = traced(params)
        importlib.import_module(f"qmr.stages.{stage}").run(params, **kwargs)
    except (UserError, FileNotFoundError, SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        from qmr.hub import describe_any

        line = describe_any(exc)  # the hub unreachable, gated, a missing revision: one line, exit 2
        if line is not None:
            raise UserError(line) from None
        logging.getLogger("qmr").exception("qmr %s failed", stage)  # a bug: its traceback in the log, exit 1
        sys.exit(1)
    finally:
        _log_stage(stage, kwargs, time.perf_counter() - started)
        if seen is not None:
            import json

            with open(os.environ["QMR_PARAMS_TRACE"], "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"stage": stage, **kwargs, "read": sorted(seen)}) + "\n")


def _log_stage(stage: str, options: dict, seconds: float) -> None:
    """With QMR_STAGE_LOG=FILE set, append this stage's wall time and peak memory to FILE (for `qmr bench`)."""
    import json
    import os
    import resource

    target = os.environ.get("QMR_STAGE_LOG")
    if not target:
        return
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    row = {"stage": stage, **options, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_kb / 1024, 1)}
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--params", "params_path", default="params.yaml", show_default=True, help="params file to read")
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
@click.version_option(package_name="qmr")
@click.pass_context
def main(ctx: click.Context, params_path: str, verbose: bool) -> None:
    """qmr: where quantization breaks math reasoning, and a cheap repair.

    The measure -> locate -> restore loop as DVC stages. Run the whole pipeline with `dvc repro`;
    each command below is one stage (dvc.yaml calls them with the right options).

    \b
    measure:  prepare -> base -> quantize -> generate -> evaluate
    locate:   judge -> vote
    restore:  silver -> restore -> reevaluate
    """
    from qmr.determinism import pin_cpu_kernels

    pin_cpu_kernels()  # before any command imports torch: the same CPU kernels on every x86-64 machine
    ctx.ensure_object(dict)
    ctx.obj["params"] = params_path
    ctx.obj["verbose"] = verbose


model_opt = click.option("--model", required=True, help="model name (a key of `models` in params.yaml)")
variant_opt = click.option("--variant", required=True, help="variant slug (a key of `quantize.variants`)")


@main.command()
@click.pass_context
def prepare(ctx):
    """Build every benchmark in `benchmarks` into data/benchmarks/<name>.jsonl.

    Toy benchmarks come from the seeded problem generator (train/mine/test are disjoint by
    construction and checked); real ones from local files or the hub, normalized to one schema.
    """
    _run_stage(ctx, "prepare")


@main.command()
@model_opt
@click.pass_context
def resolve(ctx, model):
    """Write models/spec/<model>.json: the model's params, plus the identity of a local model folder.

    Every per-model stage reads its model from this file (so model names may contain dots, as hub names
    do) and DVC re-runs them when it changes; the stage itself always runs (milliseconds).
    """
    _run_stage(ctx, "resolve", model=model)


@main.command()
@model_opt
@click.pass_context
def base(ctx, model):
    """Resolve the base model into models/base/<model>.

    source toy: train the tiny reasoner from scratch (params `base.toy`: size, wall budget, seed);
    source hub/local: write a pointer pinning the hub id + revision or the local path.
    """
    _run_stage(ctx, "base", model=model)


@main.command()
@click.pass_context
def align(ctx):
    """Format-align every base model into models/aligned/<model> (paper §3.1.2).

    method lora_sft: LoRA SFT (trl + peft) on the worked solutions of benchmark `align.data` in the
    step format, merged into the weights; format compliance and accuracy are measured on
    `align.eval_samples` problems before and after (metrics/align.json). method none: a pointer to
    the base model. Quantization applies to the aligned model.
    """
    _run_stage(ctx, "align")


@main.command()
@model_opt
@variant_opt
@click.pass_context
def quantize(ctx, model, variant):
    """Quantize a model with the variant's llmcompressor recipe (rtn, gptq, awq, smoothquant).

    Writes a compressed-tensors checkpoint with recipe.yaml and size statistics to
    models/quantized/<model>/<variant>; method `none` (fp) writes a pointer to the aligned model.
    """
    _run_stage(ctx, "quantize", model=model, variant=variant)


@main.command()
@model_opt
@variant_opt
@click.option("--benchmark", required=True, help="benchmark name (a key of `benchmarks`)")
@click.pass_context
def generate(ctx, model, variant, benchmark):
    """Generate step-by-step solutions of one benchmark with one variant, and grade them.

    Writes traces (one JSON line per problem and sample) to data/traces/<model>/<variant>/<benchmark>.jsonl.
    """
    _run_stage(ctx, "generate", model=model, variant=variant, benchmark=benchmark)


@main.command()
@click.pass_context
def evaluate(ctx):
    """Accuracy (majority vote), degradation vs fp, flips, format compliance, size and speed.

    Writes metrics/evaluate.json (model -> variant -> benchmark) and plots/evaluate/.
    """
    _run_stage(ctx, "evaluate")


@main.command()
@model_opt
@variant_opt
@click.pass_context
def judge(ctx, model, variant):
    """Judge every failure of a variant (fp right, variant wrong) with every judge in `judge.judges`.

    Offline judges (arithmetic, reference) and OpenAI-compatible endpoints (llm). LLM answers are
    cached as they arrive: re-runs and resumed runs make no repeated calls. API keys are read from
    the environment variable each judge names (`api_key_env`), never from params.
    """
    _run_stage(ctx, "judge", model=model, variant=variant)


@main.command()
@click.pass_context
def vote(ctx):
    """Voting protocol -> labels (first faulty step + error type), annotation packets, metrics/vote.json.

    Baseline + auxiliaries: unanimous accept, accept at `vote.threshold`, otherwise escalate to humans
    (packets under data/annotation/). A verdict in annotations/<model>/<variant>/<case>.json (an input:
    commit it, then `dvc repro`) overrides the label.
    """
    _run_stage(ctx, "vote")


@main.command()
@model_opt
@variant_opt
@click.pass_context
def silver(ctx, model, variant):
    """Build Silver Bullet DPO pairs for `recovery.subset` from failures on the mining split.

    Prompt = problem + quantized trace before the first faulty step; chosen = a teacher continuation
    verified correct; rejected = the quantized model's own continuation.
    """
    _run_stage(ctx, "silver", model=model, variant=variant)


@main.command()
@model_opt
@variant_opt
@click.pass_context
def restore(ctx, model, variant):
    """Train a LoRA adapter on the quantized model with DPO (or `restore.objective`) on the silver pairs."""
    _run_stage(ctx, "restore", model=model, variant=variant)


@main.command()
@click.pass_context
def reevaluate(ctx):
    """Evaluate restored models; metrics/restore.json with accuracy fp/quantized/restored and recovery ratio."""
    _run_stage(ctx, "reevaluate")


@main.command()
@click.pass_context
def report(ctx):
    """Paper-style tables in metrics/report.md and PNG figures in plots/report/, from the metrics files."""
    _run_stage(ctx, "report")


@main.command("judge-bench")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--judges", "names", default="", help="comma-separated judge names from params (default: all)")
@click.option("--gold", "gold_file", type=click.Path(exists=True, dir_okay=False), help="benchmark file (jsonl/json/csv/parquet, read by the benchmark loaders) to attach gold answers and solutions from (matched by problem text)")
@click.option("--gold-format", default="auto", show_default=True, help="format of the --gold file: auto (detected from its fields) or one of the benchmark formats (gsm8k, math, aime, mmlu, prm800k, toy, records)")
@click.option("--no-ensemble", is_flag=True, help="score judges only, not the voting ensemble")
@click.option("--model", default=None, help="rollout judges: the policy that continues each prefix: a local model directory, or MODEL/VARIANT of this workspace (models/quantized/MODEL/VARIANT); generation settings from params `generate`")
@click.option("--prompt-style", type=click.Choice(["auto", "plain", "chat"]), default="auto", show_default=True, help="rollout judges: how the policy is prompted (auto: the workspace model's style, else chat when the tokenizer has a chat template)")
@click.option("--json", "as_json", type=click.Path(dir_okay=False), help="also write the scores as JSON here")
@click.pass_context
def judge_bench_cmd(ctx, file, names, gold_file, gold_format, no_ensemble, model, prompt_style, as_json):
    """Score the configured judges (and the vote ensemble) on FILE in ProcessBench format.

    FILE is a JSON list of {id, problem, steps: [str], final_answer_correct, label} where label is the
    0-based index of the first wrong step or -1. Prints ProcessBench's metrics per judge: accuracy on
    erroneous samples, accuracy on correct samples, and their harmonic mean (F1); then abstentions,
    invalid replies and escalations. A judge that abstains on every item is warned about (and listed
    under "warnings" in --json). `qmr processbench-from-published OUT --source FILE` converts
    ProcessBench's published files, `qmr processbench-from-prm800k OUT --source FILE` PRM800K step
    ratings.
    """
    from qmr.io import write_json
    from qmr.locate.judge_bench import format_scores, judge_bench_from_params
    from qmr.logs import setup_logging
    from qmr.params import load_params

    setup_logging(ctx.obj.get("verbose", False))
    params = load_params(ctx.obj["params"])
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    scores = judge_bench_from_params(
        params, file, chosen, gold_file=gold_file, ensemble=not no_ensemble, gold_format=gold_format,
        model=model, prompt_style=prompt_style,
    )
    if gold_file:
        click.echo(
            f"attached gold solutions to {scores['gold_attached']}/{scores['items']} items "
            f"(--gold read as format {scores['gold_format']})",
            err=True,
        )
    click.echo("\n".join(format_scores(scores)))
    if as_json:
        write_json(as_json, scores)


@main.command("processbench-from-published")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--source", type=click.Path(exists=True, dir_okay=False), required=True, help="a published ProcessBench split: <split>.json from the hub dataset Qwen/ProcessBench, or its parquet / JSON-lines copy")
@click.option("--split", default=None, help="the split's name for the items' source (gsm8k, math, olympiadbench, omnimath; default: from the ids)")
def processbench_from_published_cmd(out, source, split):
    """Convert a published ProcessBench split into the ProcessBench-format file OUT that `qmr judge-bench` reads."""
    from qmr.processbench import processbench_from_published, read_published, write_processbench

    items = processbench_from_published(read_published(source), split=split, source=source)
    write_processbench(out, items)
    n_err = sum(it["label"] >= 0 for it in items)
    click.echo(f"{out}: {len(items)} items ({n_err} with an error, {len(items) - n_err} correct)")


@main.command("processbench-from-prm800k")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--source", type=click.Path(exists=True, dir_okay=False), required=True, help="a PRM800K stepwise-critic parquet or raw-format JSON/JSONL file")
@click.option("--alternatives", is_flag=True, help="add one item per further position with a -1 alternative")
def judge_bench_prm800k(out, source, alternatives):
    """Convert PRM800K step ratings into a ProcessBench-format file OUT (first -1 step = label)."""
    from qmr.processbench import (
        processbench_from_prm800k_raw,
        processbench_from_stepwise_critic,
        read_prm800k_raw,
        write_processbench,
    )

    if source.endswith(".parquet"):
        import pandas as pd

        items = processbench_from_stepwise_critic(pd.read_parquet(source), alternatives=alternatives)
    else:
        items = processbench_from_prm800k_raw(read_prm800k_raw(source))
    write_processbench(out, items)
    n_err = sum(it["label"] >= 0 for it in items)
    click.echo(f"{out}: {len(items)} items ({n_err} with an error, {len(items) - n_err} correct)")


@main.command("processbench-from-gsm8k")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--source", type=click.Path(exists=True, dir_okay=False), required=True, help="a raw GSM8K file ({question, answer} rows with <<a*b=c>> annotations and '#### N'; the socratic copy works too)")
@click.option("--seed", default=0, show_default=True, type=int, help="seed of the record order, the corrupted step, the error kind and the answer line's format")
@click.option("-n", "n", default=None, type=int, help="at most this many items (default: one per record)")
@click.option("--annotations", type=click.Choice(["keep", "strip", "prose"]), default="strip", show_default=True, help="keep the calculator annotations <<a*b=c>> in the steps, strip them (model output has none), or strip them and rewrite each calculation as prose (seeded: 'a × b = c', 'a times b is c', '20% of 50 is 10', 'half of 8 is 4', or the result alone)")
@click.option("--error-share", default=0.5, show_default=True, type=float, help="share of records given an injected first error (records that cannot be corrupted stay correct)")
def processbench_from_gsm8k_cmd(out, source, seed, n, annotations, error_share):
    """Build GSM8K-style first-error items OUT (ProcessBench format) from GSM8K worked solutions: correct
    solutions, and solutions with one calculation corrupted (a wrong result, a wrong number from the
    problem, or a wrong operator) whose later steps carry the wrong value (label = that step)."""
    from qmr.devtools.processbench_gsm8k import processbench_from_gsm8k
    from qmr.io import read_jsonl
    from qmr.processbench import write_processbench

    items = processbench_from_gsm8k(read_jsonl(source), seed=seed, n=n, annotations=annotations, error_share=error_share)
    write_processbench(out, items)
    n_err = sum(it["label"] >= 0 for it in items)
    click.echo(f"{out}: {len(items)} items ({n_err} with an error, {len(items) - n_err} correct)")


@main.command()
@click.option("--tolerances", default=".ci/tolerances.yaml", show_default=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--rev", default="HEAD", show_default=True, help="git revision holding the reference metrics")
@click.option("--spread", is_flag=True, help="instead of gating: the spread of every watched quantity over the "
              "workspace and the DVC experiments of REV (e.g. seeds), beside its tolerance")
@click.option("--exp", "exps", multiple=True, help="with --spread: only these experiments (names or revs)")
@click.option("--json", "as_json", is_flag=True, help="with --spread: print the rows as JSON")
def gate(tolerances, rev, spread, exps, as_json):
    """CI metrics gate: `dvc metrics diff` against REV; exit 1 when a watched metric moves too far.

    \b
    The tolerance file (.ci/tolerances.yaml) maps metrics files to dot-path globs and rules:
      "toy.fp.test.accuracy": {max_drop: 0.03}
      "toy.*.test.recovery_ratio": {aggregate: mean, max_drop: 0.2}
    A pattern that matches no metric fails the gate (a typo must not pass silently). Tolerances come
    from the measured spread of correct runs: `qmr gate --spread` after `dvc exp run -S base.toy.seed=N`.
    """
    from qmr import gate as g

    rules = g.read_tolerances(tolerances)
    if spread:
        import json

        runs = g.experiment_runs(rev, exps)
        rows = g.spread(runs, rules, reference=next(iter(runs)))
        click.echo(json.dumps({"runs": list(runs), "rows": rows}, indent=1) if as_json else "\n".join(g.format_spread(runs, rows)))
        return
    violations, watched = g.check(g.metrics_diff(rev), rules)
    click.echo("\n".join(g.format_watched(watched)))
    if violations:
        click.echo(f"\nqmr gate: {len(violations)} problem(s) against {tolerances}:", err=True)
        for v in violations:
            click.echo(f"  - {v}", err=True)
        sys.exit(1)
    click.echo(f"qmr gate: {len(watched)} watched metrics within tolerance")


@main.command()
@click.option("--model", default=None, help="model key (default: the first in params)")
@click.option("--variant", default=None, help="restored variant (default: the first of recovery.variants)")
@click.option("--rev", "revs", multiple=True, help="baseline git revision(s) whose experiments to read (default: HEAD)")
@click.option("--num", default=1, show_default=True, help="also read experiments of this many first-parent commits back (-1: all)")
@click.option("--out", "out_stem", default="metrics/ablation", show_default=True,
              help="writes OUT.json and OUT.md, and the training seconds to speed/<name>.json beside OUT")
@click.option("--against", "against", multiple=True, metavar="KEY=VALUE",
              help="compare with this setting instead of the baseline commit's, e.g. --against recovery.subset=ALL "
                   "--against restore.objective=sft (repeatable; must name exactly one setting)")
@click.pass_context
def ablation(ctx, model, variant, revs, num, out_stem, against):
    """Ablation tables from DVC experiments: recovery per setting, n seeds, mean ± std and 95% t-interval.

    Experiments that differ only in seeds (every params key named `seed`: seed, base.toy.seed,
    recovery.seed, restore.seed, ...) form one setting; each setting's test recovery is compared
    with the baseline commit's (or --against's): "not significant" when the intervals overlap, and
    paired by seed (the mean per-seed difference and its t-interval; "not significant" when it holds 0).

    \b
    Run experiments first, e.g.:
      for s in ALL CE ME EE RAND_NS ALL_NS; do for seed in 0 1 2; do
        dvc exp run --queue -S recovery.subset=$s -S recovery.seed=$seed -S restore.seed=$seed; done; done
      dvc queue start -j 1
    then `qmr ablation` and `dvc repro report` to put the tables into metrics/report.md.
    """
    from pathlib import Path

    from qmr.ablation import collect, experiment_records, param_keys, render, split_timings, summarize
    from qmr.config import load_yaml
    from qmr.io import write_json, write_text
    from qmr.logs import setup_logging
    from qmr.params import load_params

    setup_logging(ctx.obj.get("verbose", False))
    pairs = {}
    for item in against:  # checked before DVC reads any experiment
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            from qmr.errors import UserError

            raise UserError(f"--against {item!r}: expected KEY=VALUE, e.g. recovery.subset=ALL")
        pairs[key.strip()] = value.strip()
    params = load_params(ctx.obj["params"])
    keys = param_keys(load_yaml(Path(ctx.obj["params"]).read_text(encoding="utf-8"), str(ctx.obj["params"])))
    model = model or next(iter(params.models))
    variant = variant or params.recovery.variants[0]
    records = experiment_records(collect(revs=list(revs) or None, num=num), model, variant, keys)
    if not records:
        from qmr.errors import UserError

        raise UserError("no finished experiments with metrics/restore.json found; run `dvc exp run` first")
    summary = summarize(records, against=pairs or None)
    text = "\n".join(render(model, variant, records, summary)) + "\n"
    untimed, timings = split_timings(records)  # wall-clock seconds go under speed/, beside the other timings
    write_json(Path(out_stem + ".json"), {"model": model, "variant": variant, "experiments": untimed, "summary": summary})
    stem = Path(out_stem)
    write_json(stem.parent / "speed" / (stem.name + ".json"), timings)
    write_text(Path(out_stem + ".md"), text)
    click.echo(text)


BENCH_SECTIONS = ("generation", "judge", "openai", "storage", "kernels", "pipeline")


@main.command()
@click.option("--stage-log", type=click.Path(exists=True, dir_okay=False), help="a QMR_STAGE_LOG file from a `dvc repro` to break down per stage")
@click.option("--prompts", default=200, show_default=True, help="test prompts for the generation comparison")
@click.option("--cases", default=40, show_default=True, help="failure cases for the judging comparison")
@click.option("--requests", "requests", default=128, show_default=True, help="prompts for the openai-backend concurrency comparison")
@click.option("--out", "out_stem", default="bench/results", show_default=True, help="writes OUT.json and OUT.md")
@click.option("--only", "sections", multiple=True, type=click.Choice(BENCH_SECTIONS),
              help="measure only these sections (repeatable); the others keep their earlier results in OUT.json")
@click.pass_context
def bench(ctx, stage_log, prompts, cases, requests, out_stem, sections):
    """Measure costs side by side on this machine: generation batching, judge concurrency and cache,
    openai-backend generation at concurrency 32 vs 1 (loopback server, 200 ms per request),
    quantized storage (toy and paper-sized models), pinned vs native CPU kernels (toy base training),
    and per-stage time and memory of a pipeline run.

    \b
    Needs the default pipeline's outputs (run `dvc repro` first). For the per-stage table:
      QMR_STAGE_LOG=$PWD/bench/stages.jsonl dvc repro -f && qmr bench --stage-log bench/stages.jsonl
    """
    import json
    import platform
    import tempfile
    from pathlib import Path

    from qmr import bench as b
    from qmr import paths
    from qmr.determinism import set_determinism
    from qmr.io import read_jsonl, write_json, write_text
    from qmr.locate.cases import case_from_dict
    from qmr.logs import setup_logging
    from qmr.params import load_params
    from qmr.prompts import build_prompt

    setup_logging(ctx.obj.get("verbose", False))
    params = load_params(ctx.obj["params"])
    model = next(iter(params.models))
    set_determinism(params.seed, params.threads)
    run = set(sections or BENCH_SECTIONS)
    earlier = Path(out_stem + ".json")
    results: dict = json.loads(earlier.read_text()) if sections and earlier.is_file() else {}
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {params.threads}, python {platform.python_version()}"
    if "generation" in run:
        records = read_jsonl(paths.benchmark("test"))[:prompts]
        results["generation"] = b.generation_speed(str(paths.quantized_model(model, params.evaluate.reference)),
                                                   [build_prompt(r["question"]) for r in records], params.generate.max_new_tokens)  # fmt: skip
    if "judge" in run:
        variant = params.recovery.variants[0]
        judge_cases = [case_from_dict(c) for c in read_jsonl(paths.cases(model, variant))[:cases]]
        with tempfile.TemporaryDirectory() as tmp:
            results["judge"] = b.judge_speed(judge_cases, Path(tmp))
    if "openai" in run:
        from qmr.toy.problems import generate_split

        questions = [r["question"] for r in generate_split("test", requests, seed=params.seed)]
        results["openai"] = b.openai_generation_speed([build_prompt(q) for q in questions], max_new_tokens=params.generate.max_new_tokens)
    if "storage" in run:
        results["storage"] = b.storage_table()
        results["toy_storage"] = b.toy_storage()
    if "kernels" in run:
        results["kernels"] = b.kernel_speed(Path(ctx.obj["params"]))
    if stage_log and "pipeline" in run:
        results["pipeline"] = b.stage_breakdown(Path(stage_log))
    write_json(Path(out_stem + ".json"), results)
    text = b.render(results)
    write_text(Path(out_stem + ".md"), text)
    click.echo(text)


@main.group(cls=_Group)
def params():
    """Inspect and validate params files."""


@params.command("check")
@click.argument("path", required=False)
@click.option("--preflight", is_flag=True, help="also check what would stop the DAG late: API-key variables of every endpoint it "
              "calls (and that each answers), extras, a GPU where required, hub ids and revisions; then print the plan")
@click.option("--no-reach", is_flag=True, help="with --preflight: check that key variables are set, but do not call the endpoints")
@click.pass_context
def params_check(ctx, path, preflight, no_reach):
    """Validate PATH (default: the file of the global --params option) against the schema, including
    that every local file or directory it names exists; exit 2 listing every problem.

    With --preflight, also everything a `dvc repro` would otherwise find late (after hours of
    generation), without downloading weights: see qmr.preflight.
    """
    from qmr.params import load_params

    path = path or ctx.obj["params"]
    params = load_params(path)
    if not preflight:
        click.echo(f"{path}: ok")
        return
    from qmr.errors import UserError
    from qmr.preflight import plan
    from qmr.preflight import preflight as run_preflight

    problems, lines = run_preflight(params, reach=not no_reach)
    if problems:
        raise UserError(f"{path}: preflight found {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
    click.echo(f"{path}: ok; preflight passed")
    for line in lines:
        click.echo(f"  {line}")
    click.echo("plan (dvc repro):")
    for line in plan():
        click.echo(line)


@params.command("preset")
@click.argument("name", required=False)
@click.option("-o", "--out", default="-", show_default=True, help="write the composed params here (- = stdout)")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="override one key of the composed params (dotted; model names keep their dots; the value is "
              "YAML), e.g. --set benchmarks.aime.size=30 (repeatable)")
@click.option("--smoke", is_flag=True, help="cap every benchmark at a few problems and every training stage at a few "
              "steps: the whole DAG in minutes, as a check before the real run")
@click.option("--list", "list_", is_flag=True, help="list the presets (name, hub id, size) and exit")
@click.option("--presets", "root", default="presets", show_default=True, type=click.Path(file_okay=False), help="presets folder")
def params_preset(name, out, sets, smoke, list_, root):
    """Compose the real-model preset NAME (presets/models/NAME.yaml), validate it, write it.

    Composing needs no file on disk (every benchmark loads from the hub, pinned by id and commit);
    `qmr params check` and `qmr prepare` then check that any local path you --set exists.
    Nothing is written when the result is invalid (exit 2, one line per problem).

    \b
    Examples, on a GPU machine with hub access:
      qmr params preset --list
      qmr params preset qwen2.5-1.5b-instruct --smoke -o params.yaml && dvc repro   # minutes: a check
      qmr params preset qwen2.5-1.5b-instruct -o params.yaml && dvc repro           # the real run
      qmr params preset llama-3.1-8b-instruct --set models.llama-3.1-8b-instruct.source=local \\
          --set models.llama-3.1-8b-instruct.path=/models/llama8b -o params.yaml
    """
    from pathlib import Path

    from qmr.config import ConfigError
    from qmr.errors import UserError
    from qmr.io import write_text
    from qmr.params import validate
    from qmr.presets import apply_sets, available, compose, dump, listing
    from qmr.presets import smoke as smoked

    if list_:
        click.echo("\n".join(listing(Path(root))) or f"no presets under {Path(root) / 'models'}")
        return
    if not name:
        raise UserError(f"preset: a NAME is needed; allowed: {', '.join(available(Path(root)))} (or --list)")
    params = compose(name, Path(root))
    if smoke:
        params = smoked(params)
    params = apply_sets(params, sets)
    try:
        validate(params, source=f"preset {name}", check_paths=False)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    text = dump(params, name, sets, smoke)
    if out == "-":
        click.echo(text, nl=False)
    else:
        write_text(Path(out), text)
        click.echo(f"{out}: preset {name}{' (smoke)' if smoke else ''} (validated; `qmr params check` also checks local paths)", err=True)


@params.command("smoke")
@click.option("-o", "--out", default="-", show_default=True, help="write the smoked params here (- = stdout)")
@click.option("--exp-args", is_flag=True, help="print only the `-S key=value` overrides, for `dvc exp run`")
@click.pass_context
def params_smoke(ctx, out, exp_args):
    """The params file of the global --params option (default params.yaml), capped for a smoke run: every
    benchmark at a few problems, every training stage at a few steps, short generations (the same caps
    as `qmr params preset NAME --smoke`). Validated before anything is written.

    \b
    As a DVC experiment in a temporary copy (the workspace is left as it is):
      dvc exp run --temp -n smoke $(qmr params smoke --exp-args)
    """
    from pathlib import Path

    from qmr.config import load_yaml
    from qmr.io import write_text
    from qmr.params import load_params, validate
    from qmr.presets import exp_args as overrides
    from qmr.presets import smoke

    path = ctx.obj["params"]
    load_params(path)  # the file itself is valid first
    raw = load_yaml(Path(path).read_text(encoding="utf-8"), path)
    smoked = smoke(raw)
    validate(smoked, source=f"{path} (smoked)")
    if exp_args:
        import shlex

        click.echo(" ".join(shlex.quote(a) for a in overrides(raw, smoked)))
        return
    import yaml

    text = f"# `qmr --params {path} params smoke`: {path} capped for a smoke run\n" + yaml.safe_dump(smoked, sort_keys=False)
    if out == "-":
        click.echo(text, nl=False)
    else:
        write_text(Path(out), text)
        click.echo(f"{out}: {path} capped for a smoke run (validated)", err=True)


@params.command("show")
@click.argument("prefix", required=False, default="")
@click.option("--width", default=100, show_default=True, help="wrap lines at this width")
def params_show(prefix, width):
    """List every params key (those under PREFIX, e.g. `models` or `restore.`) with its type, default
    and meaning, including the fields of each model, benchmark, variant, judge and endpoint entry
    (`models.<name>.*`, `quantize.variants.<slug>.*`, ...). Nothing is cut: long lines wrap."""
    import textwrap

    from qmr.config import describe
    from qmr.params import Params

    rows = [r for r in describe(Params) if r[0].startswith(prefix)]
    if not rows:
        from qmr.errors import UserError, did_you_mean

        raise UserError(f"no params key starts with {prefix!r}" + did_you_mean(prefix, [r[0] for r in describe(Params)]))
    for key, tp, default, help_ in rows:
        head = f"{key}: {tp}" + (f" (default: {default})" if default else "")
        click.echo(textwrap.fill(head, width, subsequent_indent="      ", break_on_hyphens=False))
        if help_:
            click.echo(textwrap.fill(help_, width, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False))


if __name__ == "__main__":
    main()
