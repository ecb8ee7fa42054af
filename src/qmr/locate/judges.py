"""Judges, pluggable by name: ``arithmetic`` and ``reference`` (offline) and ``llm`` (any
OpenAI-compatible chat endpoint).

A judge looks at one `Case` and returns a **judgment** dict (DESIGN.md schema, plus bookkeeping):

``id, variant, sample, judge, kind, model, prompt_version, input_hash, raw, primary_error_type`` (one of the 7
types, ``"no_error"``, or None when abstaining/invalid), ``error_step`` (1-indexed into
``case.qt_steps`` or None), ``explanation, confidence_score, valid, abstain, error, error_kind,
tokens_in, tokens_out, cost, calls, retries``.

``valid`` says the answer passed validation (an abstention is valid); ``abstain`` says the judge
declines to vote (offline judges that find nothing). ``error``/``error_kind`` are set when the endpoint
failed (after the client's own retries): such judgments are never cached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, Protocol

from qmr.config import Problem, field
from qmr.endpoints import CONNECTION_FIELDS, EndpointSpec
from qmr.locate.cases import Case, input_hash
from qmr.locate.taxonomy import TYPES
from qmr.registry import Registry

log = logging.getLogger(__name__)

#: What a judge kind can see (its ``sees`` trait), with the error types it detects. The vote reads it
#: (`qmr.locate.vote`): a specialist's silence or later finding does not contradict an earlier error of
#: a type it cannot see. ``all``: every type; ``computational``: only computational errors (the
#: ``arithmetic`` judge); ``step``: every error, but only where it is, not its type (a step-only judge
#: such as a rollout locator; its judgment may carry no type, and it is compared on the step).
SIGHTS: dict[str, tuple[str, ...]] = {
    "all": TYPES,
    "computational": ("computational_error",),
    "step": TYPES,
}

# Judge kinds: name -> a factory ``(name, spec) -> Judge``, imported when a judge of that kind is built;
# the trait ``sees`` (a key of SIGHTS, default ``all``) says which errors the kind can see.
JUDGE_KINDS = Registry(
    "judge.judges.<name>.kind",
    {
        "arithmetic": "qmr.locate.offline:arithmetic_judge",
        "reference": "qmr.locate.offline:reference_judge",
        "llm": "qmr.locate.llm:LLMJudge",
        "rollout": "qmr.locate.rollout:rollout_judge",
    },
    traits={
        "arithmetic": {"sees": "computational"},
        "reference": {"sees": "all"},
        "llm": {"sees": "all"},
        "rollout": {"sees": "step"},
    },
)
JudgeKind = JUDGE_KINDS.literal()


def sight_of(kind: str | None) -> str:
    """What a judge of ``kind`` can see: a key of `SIGHTS` (``all`` for a kind the table does not know,
    e.g. judgments written before the kind was registered)."""
    sight = JUDGE_KINDS.trait(kind, "sees", "all") if isinstance(kind, str) else "all"
    return sight if sight in SIGHTS else "all"

TEMPLATE_PACKAGE = "qmr.locate.templates"


def template_names() -> list[str]:
    """Prompt versions available (template file names without ``.txt``)."""
    root = resources.files(TEMPLATE_PACKAGE)
    return sorted(p.name[:-4] for p in root.iterdir() if p.name.endswith(".txt"))


def load_template(prompt_version: str) -> str:
    name = prompt_version if prompt_version.endswith(".txt") else f"{prompt_version}.txt"
    path = resources.files(TEMPLATE_PACKAGE) / name
    if not path.is_file():
        raise FileNotFoundError(
            f"prompt_version: got {prompt_version!r}; allowed: {', '.join(template_names())} (files in {TEMPLATE_PACKAGE})"
        )
    return path.read_text(encoding="utf-8")


@dataclass
class JudgeSpec:
    """One judge of the ensemble (a value of ``judge.judges`` in params.yaml)."""

    kind: JudgeKind = field(
        "llm", help="arithmetic | reference (offline) | llm (OpenAI-compatible endpoint) | rollout (Monte-Carlo "
        "rollouts of a policy model from each prefix: where the chance of reaching the answer collapses)"
    )
    endpoint: str = field(
        "", help="llm: name of an entry of `endpoints` (URL, model, key variable, retries, timeout, concurrency, "
        "prices); or give those fields here instead"
    )
    base_url: str = field(
        "", help="llm: endpoint base URL, e.g. https://api.openai.com/v1 or http://localhost:8000/v1"
    )
    model: str = field("", help="llm: model name sent to the endpoint")
    api_key_env: str = field(
        "OPENAI_API_KEY",
        help="llm: NAME of the environment variable holding the API key ('' = endpoint needs no key)",
    )
    prompt_version: str = field(
        "judge_v1", help="llm: prompt template file in qmr/locate/templates (without .txt)"
    )
    temperature: float = field(0.0, help="llm: sampling temperature")
    max_tokens: int = field(1024, help="llm: completion token limit per call")
    reasks: int = field(1, help="llm: re-asks after an invalid reply before recording it invalid")
    max_retries: int = field(
        3, help="llm: the openai client's retries on 429/5xx/timeouts (with its backoff)"
    )
    timeout_s: float = field(120.0, help="llm: per-request timeout in seconds")
    concurrency: int = field(4, help="llm: parallel requests to this endpoint")
    price_in_per_mtok: float = field(0.0, help="llm: price per million prompt tokens (for the cost metric)")
    price_out_per_mtok: float = field(0.0, help="llm: price per million completion tokens")
    policy: str = field(
        "", help="rollout: who continues the prefixes: '' = the reference variant (evaluate.reference) through the "
        "generation backend; or the name of an entry of `endpoints` (an OpenAI-compatible chat endpoint, given the "
        "plain problem and the kept steps)"
    )
    samples: int = field(8, help="rollout: continuations sampled per prefix")
    rollout_temperature: float = field(0.7, help="rollout: the policy's sampling temperature (> 0)")
    alpha: float = field(0.05, help="rollout: significance level of the one-sided two-proportion z-test of a drop")
    min_drop: float = field(0.5, help="rollout: smallest drop in success rate from the problem alone that counts as a collapse")
    search: Literal["linear", "binary"] = field(
        "linear", help="rollout: linear = every prefix (the full potential curve); binary = bisect for the first "
        "collapse (OmegaPRM; 1 + log2(steps) prefixes)"
    )

    def check(self, key: str = "") -> list[Problem]:
        p = f"{key}." if key else ""
        out: list[Problem] = []
        if self.kind == "rollout":
            return self._check_rollout(p)
        if self.kind != "llm":
            return out
        if self.endpoint:
            for name in ("base_url", "model"):
                if getattr(self, name):
                    out.append(Problem(f"{p}{name}", getattr(self, name), f"empty when endpoint is set (endpoints.{self.endpoint} has it)"))
            return out + self._check_prompting(p)
        # inline connection fields: the same rules as an entry of `endpoints` (one home: EndpointSpec.check)
        inline = EndpointSpec(**{f: getattr(self, f) for f in CONNECTION_FIELDS})
        return inline.check(key) + self._check_prompting(p)

    def _check_rollout(self, p: str) -> list[Problem]:
        out: list[Problem] = []
        if self.samples < 2:
            out.append(Problem(f"{p}samples", self.samples, "an integer >= 2 (a success rate needs several rollouts)"))
        if not 0.0 < self.rollout_temperature <= 2.0:
            out.append(Problem(f"{p}rollout_temperature", self.rollout_temperature, "a number in (0, 2] (rollouts are sampled)"))
        if not 0.0 < self.alpha < 1.0:
            out.append(Problem(f"{p}alpha", self.alpha, "a number in (0, 1)"))
        if not 0.0 <= self.min_drop <= 1.0:
            out.append(Problem(f"{p}min_drop", self.min_drop, "a number in [0, 1]"))
        return out

    def _check_prompting(self, p: str) -> list[Problem]:
        """The judge's own settings (with or without a named endpoint)."""
        out: list[Problem] = []
        try:
            load_template(self.prompt_version)
        except FileNotFoundError:
            out.append(Problem(f"{p}prompt_version", self.prompt_version, "one of " + ", ".join(template_names())))
        if not 0.0 <= self.temperature <= 2.0:
            out.append(Problem(f"{p}temperature", self.temperature, "a number in [0, 2]"))
        for name, low in (("max_tokens", 1), ("reasks", 0)):
            if getattr(self, name) < low:
                out.append(Problem(f"{p}{name}", getattr(self, name), f"an integer >= {low}"))
        return out


class Judge(Protocol):
    """What `run_judges` needs from a judge. ``judge`` must be thread-safe."""

    name: str
    kind: str
    model: str
    prompt_version: str
    concurrency: int
    cacheable: bool

    def judge(self, case: Case) -> dict[str, Any]: ...


def make_judgment(case: Case, judge: Judge, **fields: Any) -> dict[str, Any]:
    """A judgment record with every schema field present (defaults: an abstention with no calls)."""
    rec: dict[str, Any] = {
        "id": case.id,
        "variant": case.variant,
        "sample": case.qt_sample,
        "judge": judge.name,
        "kind": judge.kind,
        "model": judge.model,
        "prompt_version": judge.prompt_version,
        "input_hash": input_hash(case),
        "raw": None,
        "primary_error_type": None,
        "error_step": None,
        "explanation": "",
        "confidence_score": None,
        "valid": True,
        "abstain": True,
        "error": None,
        "error_kind": None,
        "tokens_in": 0,
        "tokens_out": 0,
        "cost": 0.0,
        "calls": 0,
        "retries": 0,
        "rollouts": 0,
        "seconds": 0.0,
        "potential": None,
    }
    unknown = set(fields) - set(rec)
    if unknown:
        raise KeyError(f"unknown judgment fields: {sorted(unknown)}")
    rec.update(fields)
    return rec


def speaks(judgment: dict[str, Any] | None) -> bool:
    """Does this judgment count as a vote? (present, valid, not abstaining, with a type — or, for a
    step-only judge kind (``sees: step``), with a type or a step)."""
    if judgment is None or not judgment.get("valid") or judgment.get("abstain"):
        return False
    if judgment.get("primary_error_type") is not None:
        return True
    return judgment.get("error_step") is not None and sight_of(judgment.get("kind")) == "step"


def build_judge(name: str, spec: JudgeSpec, endpoints: dict | None = None) -> Judge:
    """Instantiate judge ``name`` from its spec; an ``llm`` judge that names an endpoint takes its
    connection fields from ``endpoints`` (params ``endpoints``). An ``llm`` judge checks its API-key
    variable here, before any work, and raises an `EndpointConfigError` naming it when it is unset."""
    from qmr.endpoints import with_endpoint

    spec = with_endpoint(spec, endpoints or {}, f"judge.judges.{name}.endpoint")
    problems = spec.check(f"judges.{name}")
    if problems:
        from qmr.config import ConfigError

        raise ConfigError(problems, source=f"judge {name!r}")
    return JUDGE_KINDS.load(spec.kind, f"judge.judges.{name}.kind")(name, spec)
