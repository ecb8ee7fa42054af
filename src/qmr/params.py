"""The whole ``params.yaml`` schema, composed from each concept's config dataclass, and its validation.

``load_params()`` checks the entire file before any stage does work and raises ``ConfigError`` with
one line per problem (key, value, what is allowed); the CLI turns that into exit code 2.
Names are shared end to end: params section = dvc stage = CLI command = stage module = metrics file.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qmr.align import AlignConfig
from qmr.benchmarks import FORMATS
from qmr.config import (
    CHECK_PATHS,
    MAX_YAML_BYTES,
    SEED_MAX,
    ConfigError,
    Problem,
    field,
    from_dict,
    load_yaml,
)
from qmr.endpoints import EndpointSpec
from qmr.errors import did_you_mean
from qmr.generation.base import GenerateConfig
from qmr.locate.cases import judged_benchmarks
from qmr.locate.judges import JudgeSpec
from qmr.locate.vote import VoteSpec
from qmr.modelspec import ModelSpec
from qmr.quant.spec import QuantSpec
from qmr.restore.silver import RecoveryConfig
from qmr.restore.train import RestoreConfig
from qmr.toy.problems import ToyDataConfig
from qmr.toy.train import ToyModelConfig

TOY_SPLITS = ("train", "mine", "test")

WHERE_TO_GET = ("or load it from the hub: source: hub with hub_id and revision; README, 'Real models', "
                "lists each preset benchmark's pinned hub copy")  # fmt: skip


@dataclass
class BenchmarkSpec:
    """One benchmark split (a key of ``benchmarks``) in the benchmark record schema."""

    source: Literal["toy", "local", "hub"] = field("toy", help="toy generator, a local file, or a hub dataset")
    split: str = field("test", help="toy: train | mine | test; hub: the dataset split")
    size: int = field(0, help="number of problems (0 = all; a file or hub set: a sample drawn with `seed`, stratified by subject, in file order; toy: required > 0)", ge=0, le=10_000_000)
    role: Literal["train", "mine", "eval"] = field("eval", help="train (model training, calibration), mine (failure mining pool), eval (held out)")
    kind: Literal["math", "choice", "integer"] = field("math", help="answer kind for grading")
    path: str | None = field(None, help="local file (jsonl/json/csv/parquet) when source is 'local'")
    format: Literal[("auto", *FORMATS.names())] = field("auto", help="record format of a local/hub file (auto: guessed from the fields)")  # type: ignore[valid-type]
    families: list[str] | None = field(None, help="toy: problem families to draw from (null = all)")
    hub_id: str | None = field(None, help="hub dataset id (source: hub)")
    subset: str | None = field(None, help="hub dataset configuration name (source: hub)")
    revision: str | None = field(None, help="hub dataset revision to pin (source: hub): a commit SHA")
    data_files: str | list[str] | None = field(
        None, help="hub: file(s) of the dataset repository to read (null = the split's files as the dataset card "
        "declares them), e.g. one phase of PRM800K")

    def check(self, key: str) -> list[Problem]:
        out = []
        if self.source == "toy":
            if self.split not in TOY_SPLITS:
                out.append(Problem(f"{key}.split", self.split, "one of " + ", ".join(TOY_SPLITS) + " for the toy source"))
            if not 0 < self.size <= 50_000:
                out.append(Problem(f"{key}.size", self.size, "an integer from 1 to 50000 for the toy source"))
            if self.families is not None:
                from qmr.toy.problems import FAMILIES

                for i, fam in enumerate(self.families):
                    if fam not in FAMILIES:
                        out.append(Problem(f"{key}.families[{i}]", fam, "one of " + ", ".join(FAMILIES)))
        if self.size < 0:
            out.append(Problem(f"{key}.size", self.size, "an integer >= 0"))
        if self.source == "hub" and not (self.hub_id and self.revision):
            out.append(Problem(f"{key}.hub_id", self.hub_id, "a hub dataset id and a pinned revision when source is 'hub'"))
        if self.source == "local":
            if not self.path:
                out.append(Problem(f"{key}.path", self.path, "a file path when source is 'local'"))
            elif CHECK_PATHS.get() and not Path(self.path).exists():
                out.append(Problem(f"{key}.path", self.path, f"an existing file or folder (not found; {WHERE_TO_GET})"))
        return out


@dataclass
class PrepareConfig:
    """Building the benchmark files."""

    dedupe: bool = field(True, help="drop training/mining problems whose id or normalized text is in an eval split")
    toy: ToyDataConfig = field(default_factory=ToyDataConfig, help="toy problem generator: number ranges, split fractions")


@dataclass
class BaseConfig:
    """Resolving the base model; for the toy source, how to train it."""

    toy: ToyModelConfig = field(default_factory=ToyModelConfig, help="toy reasoner architecture and training budget")


@dataclass
class CalibrationConfig:
    benchmark: str = field("train", help="benchmark (role train) whose problems calibrate GPTQ/AWQ/SmoothQuant")
    samples: int = field(256, help="calibration sequences", ge=1, le=100_000)
    max_length: int = field(256, help="tokens per calibration sequence", ge=8, le=131_072)


@dataclass
class QuantizeConfig:
    """The variants: one llmcompressor recipe each; `fp` (method none) is the full-precision reference."""

    calibration: CalibrationConfig = field(default_factory=CalibrationConfig, help="calibration data")
    variants: dict[str, QuantSpec] = field(default_factory=dict, help="variant slug -> quantization spec")


@dataclass
class EvaluateConfig:
    reference: str = field("fp", help="the variant degradation and flips are measured against")


@dataclass
class JudgeConfig:
    """The judge ensemble: offline judges and any OpenAI-compatible endpoints, by name."""

    variants: list[str] = field(default_factory=list, help="variants whose failures are judged (keys of quantize.variants)")
    judges: dict[str, JudgeSpec] = field(default_factory=dict, help="judge name -> spec (kind arithmetic | reference | llm | rollout)")
    cheap_first: bool = field(
        False, help="consult the costly judges (llm, rollout) only where the offline judges leave a case undecided")
    cheap_first_check: int = field(
        0, help="with cheap_first: this many cases per variant that the offline judges decided go to the costly judges "
        "anyway (a seeded sample), so what the cascade costs in accuracy is measured", ge=0)
    max_failed_share: float = field(
        0.1, help="fail the stage (exit 2, answers so far kept in the cache) when more than this share of an llm "
        "judge's cases ended in a failed call or an invalid reply; `dvc repro` then re-asks only those")
    benchmarks: Literal["auto"] | list[str] = field(
        "auto", help="benchmarks whose failures are judged: auto = those of generate.benchmarks with a free-form answer "
        "(kind math or integer; multiple choice is skipped), or a list of names from generate.benchmarks")
    budget_usd: float | None = field(
        None, help="US dollars one `qmr judge` run (one model x variant) may spend on llm judges: each call is reserved "
        "against it before it is sent, and past it the stage stops (exit 2, answers so far cached; raise it and re-run, "
        "cached answers are not paid twice); null = no cap. The estimate is logged and recorded before any call", ge=0.0)


@dataclass
class Params:
    seed: int = field(0, help="global seed", ge=0, le=SEED_MAX)
    threads: int = field(2, help="torch threads in every stage (fixed for determinism)", ge=1, le=256)
    models: dict[str, ModelSpec] = field(default_factory=dict, help="model name -> spec")
    benchmarks: dict[str, BenchmarkSpec] = field(default_factory=dict, help="benchmark name -> spec")
    prepare: PrepareConfig = field(default_factory=PrepareConfig, help="stage prepare")
    base: BaseConfig = field(default_factory=BaseConfig, help="stage base")
    align: AlignConfig = field(default_factory=AlignConfig, help="stage align: format alignment before quantization")
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig, help="stage quantize")
    generate: GenerateConfig = field(default_factory=GenerateConfig, help="stage generate")
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig, help="stage evaluate")
    endpoints: dict[str, EndpointSpec] = field(
        default_factory=dict, help="OpenAI-compatible endpoints by name: llm judges and recovery.teacher refer to them"
    )
    judge: JudgeConfig = field(default_factory=JudgeConfig, help="stage judge")
    vote: VoteSpec = field(default_factory=VoteSpec, help="stage vote: the voting protocol")
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig, help="stage silver: which Silver Bullet pairs")
    restore: RestoreConfig = field(default_factory=RestoreConfig, help="stage restore: DPO + LoRA")

    def check(self, key: str) -> list[Problem]:
        out: list[Problem] = []
        if not self.models:
            out.append(Problem("models", self.models, "at least one model"))
        bench = self.benchmarks or {}
        for i, name in enumerate(self.generate.benchmarks):
            if name not in bench:
                out.append(Problem(f"generate.benchmarks[{i}]", name, "a key of benchmarks: " + ", ".join(sorted(bench))))
            elif bench[name].role == "train":
                out.append(Problem(f"generate.benchmarks[{i}]", name, "a benchmark with role eval or mine"))
        cal = self.quantize.calibration.benchmark
        if cal not in bench:
            out.append(Problem("quantize.calibration.benchmark", cal, "a key of benchmarks: " + ", ".join(sorted(bench))))
        elif bench[cal].role != "train":
            out.append(Problem("quantize.calibration.benchmark", cal, "a benchmark with role train (never calibrate on eval data)"))
        if self.align.method != "none":
            for key, name, role in (("align.data", self.align.data, "train"), ("align.eval_benchmark", self.align.eval_benchmark, "eval")):
                if name not in bench:
                    out.append(Problem(key, name, "a key of benchmarks: " + ", ".join(sorted(bench))))
                elif bench[name].role != role:
                    out.append(Problem(key, name, f"a benchmark with role {role}"))
        variants = self.quantize.variants or {}
        if self.evaluate.reference not in variants:
            out.append(Problem("evaluate.reference", self.evaluate.reference, "a key of quantize.variants: " + ", ".join(sorted(variants))))
        elif variants[self.evaluate.reference].method != "none":
            out.append(Problem("evaluate.reference", self.evaluate.reference, "a variant with method 'none' (full precision)"))
        if any(m.source == "toy" for m in self.models.values()):
            toy = self.base.toy
            for slug, spec in variants.items():
                g = spec.group_size
                if spec.method in ("rtn", "gptq", "awq") and g and (toy.hidden_size % g or toy.intermediate_size % g):
                    out.append(Problem(
                        f"quantize.variants.{slug}.group_size", g,
                        f"a divisor of the toy model's layer widths (base.toy.hidden_size={toy.hidden_size}, "
                        f"intermediate_size={toy.intermediate_size})",
                    ))
        # every name that becomes a path or a DVC key: one rule, checked before anything is written
        for section, names, extra in (("quantize.variants", variants, ""), ("benchmarks", bench, "_"),
                                      ("judge.judges", self.judge.judges or {}, "_"), ("endpoints", self.endpoints or {}, "_"),
                                      ("models", self.models, ".")):  # fmt: skip
            for name in names:
                if not _is_slug(name, extra):
                    allowed = "lower-case letters, digits, '-'" + "".join(f", {c!r}" for c in extra)
                    out.append(Problem(f"{section}.{name}", name, f"a name of 1-64 {allowed}, starting with a letter or digit "
                                       "(it becomes a file name)" + (" and no '..'" if extra == "." else "")))
        if isinstance(self.judge.benchmarks, list):
            for i, name in enumerate(self.judge.benchmarks):
                if name not in self.generate.benchmarks:
                    out.append(Problem(f"judge.benchmarks[{i}]", name, "'auto' or names from generate.benchmarks: "
                                       + ", ".join(self.generate.benchmarks) + did_you_mean(name, list(self.generate.benchmarks))))  # fmt: skip
        generated = [b for b in self.generate.benchmarks if b in bench]
        judged, _ = judged_benchmarks(self.judge.benchmarks, generated, {b: bench[b].kind for b in generated})
        mine = [b for b in generated if bench[b].role == "mine"]
        if self.recovery.variants and mine and not any(b in judged for b in mine):
            out.append(Problem("judge.benchmarks", self.judge.benchmarks, f"a setting that judges the mine benchmark {mine[0]!r} "
                               "(recovery.variants mines silver pairs from its labels)"))  # fmt: skip
        listed_benchmarks = self.judge.benchmarks if isinstance(self.judge.benchmarks, list) else []
        for field_name, listed in (("generate.benchmarks", self.generate.benchmarks), ("judge.benchmarks", listed_benchmarks),
                                   ("judge.variants", self.judge.variants),
                                   ("recovery.variants", self.recovery.variants)):  # fmt: skip (vote.auxiliaries: VoteSpec.check)
            twice = sorted({x for x in listed if listed.count(x) > 1})
            if twice:
                out.append(Problem(field_name, listed, f"each name once (listed more than once: {', '.join(twice)})"))
        quantized = sorted(k for k, v in variants.items() if v.method != "none")
        for i, v in enumerate(self.judge.variants):
            if v not in quantized:
                out.append(Problem(f"judge.variants[{i}]", v, "a quantized variant: " + ", ".join(quantized)))
        if not 0 <= self.base.toy.seed <= SEED_MAX:  # (the other seeds carry their range on their field)
            out.append(Problem("base.toy.seed", self.base.toy.seed, f"a number >= 0 and <= {SEED_MAX}"))
        if not 0.0 <= self.judge.max_failed_share <= 1.0:
            out.append(Problem("judge.max_failed_share", self.judge.max_failed_share, "a share in [0, 1]"))
        judges = self.judge.judges or {}
        if self.judge.variants and not judges:
            out.append(Problem("judge.judges", judges, "at least the vote's baseline judge when judge.variants is not empty"))
        for name in [self.vote.baseline, *self.vote.auxiliaries]:
            if (judges or self.judge.variants) and name not in judges:
                out.append(Problem("vote", name, "a judge name from judge.judges: " + ", ".join(sorted(judges))))
        for i, v in enumerate(self.recovery.variants):
            if v not in self.judge.variants:
                out.append(Problem(f"recovery.variants[{i}]", v, "a judged variant (judge.variants): " + ", ".join(self.judge.variants)))
        endpoints = self.endpoints or {}
        if self.recovery.teacher != "fp" and self.recovery.teacher not in endpoints:
            out.append(Problem("recovery.teacher", self.recovery.teacher, "'fp' or a name from endpoints: " + (", ".join(sorted(endpoints)) or "(none defined)")
                               + did_you_mean(self.recovery.teacher, ["fp", *endpoints])))
        for name, spec in judges.items():
            if spec.kind == "llm" and spec.endpoint and spec.endpoint not in endpoints:
                out.append(Problem(f"judge.judges.{name}.endpoint", spec.endpoint, "a name from endpoints: " + (", ".join(sorted(endpoints)) or "(none defined)")
                                   + did_you_mean(spec.endpoint, list(endpoints))))
        roles = {spec.role for spec in bench.values()}
        if self.recovery.variants and "mine" not in {bench[b].role for b in self.generate.benchmarks if b in bench}:
            out.append(Problem("generate.benchmarks", self.generate.benchmarks, "a benchmark with role mine (silver pairs are mined there)" + ("" if "mine" in roles else "; define one in benchmarks")))
        if self.recovery.exclude_families:
            from qmr.toy.problems import FAMILIES

            for i, fam in enumerate(self.recovery.exclude_families):
                if fam not in FAMILIES:
                    out.append(Problem(f"recovery.exclude_families[{i}]", fam, "one of " + ", ".join(FAMILIES)))
        if self.generate.backend == "vllm" and importlib.util.find_spec("vllm") is None:
            out.append(Problem("generate.backend", "vllm", "an installed backend: 'transformers', or 'openai' with `vllm serve` in its "
                               "own virtualenv (generate.server.command); vllm is no qmr extra: its pins conflict with llmcompressor's"))
        return out


def _is_slug(s: str, extra: str = "") -> bool:
    """1-64 characters: lower-case letters, digits, '-' and ``extra``; starts with a letter or digit;
    never '..' (so a name can never climb out of the folder it names a file in)."""
    return (0 < len(s) <= 64 and (s[0].islower() or s[0].isdigit()) and ".." not in s
            and all(c.islower() or c.isdigit() or c == "-" or c in extra for c in s))  # fmt: skip


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError([Problem("<file>", str(path), "an existing params file")], source=str(path))
    if not path.is_file():
        raise ConfigError([Problem("<file>", str(path), "a params file (this is a directory or not a regular file)")], source=str(path))
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError([Problem("<file>", str(path), f"a YAML file under {MAX_YAML_BYTES // 1_000_000} MB")], source=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem("<file>", str(path), f"a readable UTF-8 text file ({type(exc).__name__})")], source=str(path)) from None
    raw = load_yaml(text, str(path))
    if raw is None:
        raise ConfigError([Problem("<file>", str(path), "a YAML mapping of sections (the file is empty)")], source=str(path))
    return validate(raw, str(path))


def validate(raw, source: str = "params.yaml", check_paths: bool = True) -> Params:
    """The whole params dict ``raw`` (as read from ``source``) checked and typed; ``ConfigError`` listing
    every problem. ``check_paths=False`` skips only the existence of local files and directories."""
    problems: list[Problem] = []
    if isinstance(raw, dict):  # a section left out would silently take the code's defaults, which differ
        import dataclasses  # from the documented default file: every section is spelt out

        problems += [Problem(f.name, "<missing>", "the section, as in the default params.yaml (`qmr params show` lists "
                             "every key)") for f in dataclasses.fields(Params) if f.name not in raw]  # fmt: skip
    token = CHECK_PATHS.set(check_paths)
    try:
        params = from_dict(Params, raw, "", problems)
    finally:
        CHECK_PATHS.reset(token)
    if problems:
        raise ConfigError(problems, source=source)
    return params
