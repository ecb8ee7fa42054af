"""The ``llm`` judge: an OpenAI-compatible chat endpoint through the official ``openai`` client.

The prompt is a versioned template file (``templates/<prompt_version>.txt``, ``{{placeholders}}``)
showing the problem, the gold answer, the full-precision trace and the quantized trace with numbered
steps (`qmr.steps.number_steps`). The reply must be the paper's Appendix C JSON::

    {"quantized_error_analysis": {"primary_error_type": ..., "error_step": ..., "explanation": ...,
                                  "confidence_score": ...}}

`parse_verdict` tolerates ```json fences, prose around the object, a flat object without the outer
key, and spellings like "Computational Error"; it rejects a type outside the taxonomy, an
``error_step`` outside 1..len(steps) (null is required for ``no_error``), or a confidence outside
[0, 1]. An invalid reply is re-asked ``reasks`` times (the conversation continues with the reason),
then recorded ``valid: False``. Transport failures (429, 5xx, timeouts, refused connections) are
retried by the client itself (``max_retries``, its exponential backoff, ``Retry-After`` honoured); a
call still failing is recorded invalid with ``error``/``error_kind`` and is not cached, so a re-run
retries it. `raise_if_endpoint_dead` turns "every call failed to connect" into one clear error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any

from qmr.endpoints import cap, make_client, redact, reply_content, safe_error
from qmr.errors import UserError
from qmr.locate.cases import Case
from qmr.locate.judges import JudgeSpec, load_template, make_judgment
from qmr.locate.taxonomy import ANSWERS, NO_ERROR, normalize_type
from qmr.steps import number_steps

log = logging.getLogger(__name__)

#: error kinds meaning "the endpoint is unusable", not "this request failed"
DEAD_KINDS = frozenset({"connection", "timeout", "auth", "not_found"})

REASK = (
    "Your reply could not be used: {reason}. Reply again with ONLY the JSON object "
    '{{"quantized_error_analysis": {{"primary_error_type": ..., "error_step": ..., "explanation": ..., '
    '"confidence_score": ...}}}} as specified above.'
)


class EndpointDeadError(UserError, RuntimeError):
    """Every call of a judge failed to reach its endpoint."""


def render_prompt(template: str, case: Case) -> str:
    values = {
        "question": case.question.strip(),
        "gold_answer": str(case.gold_answer),
        "fp_answer": "" if case.fp_pred is None else str(case.fp_pred),
        "fp_trace": number_steps(case.fp_steps) if case.fp_steps else "(not available)",
        "qt_answer": "" if case.qt_pred is None else str(case.qt_pred),
        "qt_graded": {True: "correct", False: "incorrect", None: "unknown"}[case.qt_correct],
        "qt_trace": number_steps(case.qt_steps) if case.qt_steps else "(empty)",
        "n_steps": str(len(case.qt_steps)),
    }
    out = template
    for key, value in values.items():
        out = out.replace("{{" + key + "}}", value)
    return out


# --------------------------------------------------------------------------------------------------
# reply parsing


MAX_PARSE_CHARS = 100_000
MAX_OBJECT_STARTS = 2_000


def _json_objects(text: str) -> list[Any]:
    """Every JSON object in ``text`` in reading order (```json fences first, then the bare text);
    bounded in size and work, and never raises (deep nesting is skipped)."""
    text = text[:MAX_PARSE_CHARS]
    fenced = re.findall(r"```(?:json|JSON)?\s*(.*?)```", text, re.S)
    out: list[Any] = []
    dec = json.JSONDecoder()
    for cand in [*fenced, text]:
        s = cand.strip()
        try:
            out.append(json.loads(s))
            continue
        except (ValueError, RecursionError):
            pass
        pos, starts = 0, 0
        while starts < MAX_OBJECT_STARTS:
            i = s.find("{", pos)
            if i < 0:
                break
            starts += 1
            try:
                obj, end = dec.raw_decode(s, i)
            except (ValueError, RecursionError):
                pos = i + 1
                continue
            out.append(obj)
            pos = end
    return out


def _looks_like_verdict(obj: dict) -> bool:
    inner = obj.get("quantized_error_analysis", obj)
    return isinstance(inner, dict) and "primary_error_type" in inner


def _as_step(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(?:step\s*)?(\d+)\s*", value, re.I)
        if m:
            return int(m.group(1))
    return None


def parse_verdict(text: str | None, n_steps: int) -> tuple[dict[str, Any] | None, str]:
    """(verdict, "") for a valid reply, (None, reason) otherwise."""
    if not text or not text.strip():
        return None, "the reply is empty"
    objs = [o for o in _json_objects(text) if isinstance(o, dict)]
    if not objs:
        return None, "no JSON object found in the reply"
    # the last verdict-shaped object: a reply may quote the format example before its answer
    obj = next((o for o in reversed(objs) if _looks_like_verdict(o)), objs[-1])
    inner = obj.get("quantized_error_analysis", obj)
    if not isinstance(inner, dict):
        return None, "quantized_error_analysis is not an object"
    raw_type = inner.get("primary_error_type")
    etype = normalize_type(raw_type)
    if etype is None:
        return None, f"primary_error_type: got {raw_type!r}; allowed: {', '.join(ANSWERS)}"
    step: int | None = None
    if etype != NO_ERROR:
        raw_step = inner.get("error_step")
        step = _as_step(raw_step)
        if step is None or not 1 <= step <= n_steps:
            return None, f"error_step: got {raw_step!r}; allowed: an integer from 1 to {n_steps}"
    conf = inner.get("confidence_score")
    if conf is not None:
        try:
            conf = float(conf)
        except (TypeError, ValueError):
            return None, f"confidence_score: got {conf!r}; allowed: a number in [0, 1]"
        if not 0.0 <= conf <= 1.0:
            return None, f"confidence_score: got {conf!r}; allowed: a number in [0, 1]"
    explanation = inner.get("explanation", "")
    return {
        "primary_error_type": etype,
        "error_step": step,
        "explanation": explanation if isinstance(explanation, str) else json.dumps(explanation),
        "confidence_score": conf,
    }, ""


# --------------------------------------------------------------------------------------------------
# the judge


def _error_kind(exc: BaseException) -> str:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return "auth"
    if isinstance(exc, openai.NotFoundError):
        return "not_found"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limit"
    if isinstance(exc, openai.BadRequestError):
        return "bad_request"
    if isinstance(exc, openai.APIStatusError):
        return "server" if exc.status_code >= 500 else f"status_{exc.status_code}"
    return "other"


class LLMJudge:
    kind = "llm"
    cacheable = True

    def __init__(self, name: str, spec: JudgeSpec):
        self.name = name
        self.spec = spec
        self.model = spec.model
        self.prompt_version = spec.prompt_version
        self.concurrency = spec.concurrency
        self.template = load_template(spec.prompt_version)
        self.template_sha256 = hashlib.sha256(self.template.encode("utf-8")).hexdigest()
        # everything that changes the answer: a cached reply is reused only when all of it is the same
        what = [spec.prompt_version, self.template_sha256, spec.base_url.rstrip("/"), spec.model, spec.temperature,
                spec.max_tokens, spec.reasks]  # fmt: skip
        self.fingerprint = hashlib.sha256(json.dumps(what).encode("utf-8")).hexdigest()[:24]
        self._client = make_client(base_url=spec.base_url, api_key_env=spec.api_key_env, timeout_s=spec.timeout_s,
                                   max_retries=spec.max_retries, who=f"judge.judges.{name}")  # fmt: skip

    def prompt(self, case: Case) -> str:
        return render_prompt(self.template, case)

    def _cost(self, tokens_in: int, tokens_out: int) -> float:
        return round(
            tokens_in * self.spec.price_in_per_mtok / 1e6 + tokens_out * self.spec.price_out_per_mtok / 1e6, 8
        )

    def judge(self, case: Case, budget=None) -> dict[str, Any]:
        """One verdict for ``case``; never raises (any failure becomes an invalid judgment with a reason).

        A call that fails (transport error after the client's retries, or a reply that carries no
        message) is recorded with ``error``/``error_kind`` and is not cached, so a re-run asks again;
        a reply that does not parse is re-asked ``reasks`` times, then recorded ``valid: False`` with
        ``error_kind: invalid_reply`` (not cached either).

        ``budget`` (a `qmr.locate.budget.Budget`): every call, re-asks included, is reserved against it
        before it is sent; a refused call ends the judgment with ``error_kind: over_budget`` (not
        cached; the run that gets it stops asking).
        """
        import openai

        messages: list[dict[str, str]] = [{"role": "user", "content": self.prompt(case)}]
        n_steps = len(case.qt_steps)
        tokens_in = tokens_out = calls = retries = 0
        content = ""
        reason = ""

        def failed(kind: str, error: str, explanation: str) -> dict[str, Any]:
            log.warning("judge %s, case %s: call failed (%s): %s", self.name, case.id, kind, error)
            return make_judgment(case, self, raw=cap(redact(content)) if content else None, valid=False, abstain=False,
                                 explanation=explanation, error=error, error_kind=kind, tokens_in=tokens_in,
                                 tokens_out=tokens_out, cost=self._cost(tokens_in, tokens_out), calls=calls,
                                 retries=retries)  # fmt: skip

        for _attempt in range(1 + self.spec.reasks):
            ticket = None
            if budget is not None:
                ticket = budget.reserve(self, messages)
                if ticket is None:
                    return make_judgment(case, self, raw=cap(redact(content)) if content else None, valid=False, abstain=False,
                                         explanation=f"not asked: judge.budget_usd reached after {calls} call(s)", error_kind="over_budget",
                                         tokens_in=tokens_in, tokens_out=tokens_out, cost=self._cost(tokens_in, tokens_out),
                                         calls=calls, retries=retries)  # fmt: skip
            calls += 1
            try:
                raw = self._client.chat.completions.with_raw_response.create(
                    model=self.spec.model,
                    messages=messages,  # type: ignore[arg-type]
                    temperature=self.spec.temperature,
                    max_tokens=self.spec.max_tokens,
                )
            except openai.OpenAIError as exc:
                retries += self.spec.max_retries
                if budget is not None:
                    budget.settle(ticket, self, None, None)
                return failed(_error_kind(exc), safe_error(exc), f"call failed after the client's retries: {type(exc).__name__}")
            except Exception as exc:  # noqa: BLE001 - a hostile endpoint must not end the stage
                if budget is not None:
                    budget.settle(ticket, self, None, None)
                return failed("other", safe_error(exc), f"call failed: {type(exc).__name__}")
            retries += int(getattr(raw, "retries_taken", 0) or 0)
            text, usage, problem = reply_content(raw)
            if budget is not None:
                budget.settle(ticket, self, usage["prompt_tokens"], usage["completion_tokens"])
            tokens_in += usage["prompt_tokens"]
            tokens_out += usage["completion_tokens"]
            if text is None:
                return failed("malformed_reply", redact(problem), f"unusable reply: {redact(problem)}")
            content = text
            verdict, reason = parse_verdict(content, n_steps)
            if verdict is not None:
                verdict["explanation"] = cap(redact(verdict["explanation"]), 4_000)
                return make_judgment(case, self, raw=cap(redact(content)), valid=True, abstain=False, tokens_in=tokens_in,
                                     tokens_out=tokens_out, cost=self._cost(tokens_in, tokens_out), calls=calls,
                                     retries=retries, **verdict)  # fmt: skip
            log.debug("judge %s, case %s: invalid reply (%s)", self.name, case.id, reason)
            messages = [
                *messages,
                {"role": "assistant", "content": cap(content, 8_000)},
                {"role": "user", "content": REASK.format(reason=reason)},
            ]
        log.warning("judge %s, case %s: invalid reply after %d call(s): %s", self.name, case.id, calls, redact(reason))
        return make_judgment(case, self, raw=cap(redact(content)), valid=False, abstain=False,
                             explanation=cap(redact(f"invalid reply after {calls} call(s): {reason}"), 4_000), error_kind="invalid_reply",
                             tokens_in=tokens_in, tokens_out=tokens_out, cost=self._cost(tokens_in, tokens_out),
                             calls=calls, retries=retries)  # fmt: skip


def raise_if_endpoint_dead(judgments: list[dict[str, Any]]) -> None:
    """Raise `EndpointDeadError` for an llm judge whose every judgment here failed to reach its endpoint.

    Pass the judgments of one run (cached answers never carry errors, so a judge with any success or
    any cached answer passes).
    """
    by_judge: dict[str, list[dict[str, Any]]] = {}
    for j in judgments:
        if j.get("kind") == "llm":
            by_judge.setdefault(j["judge"], []).append(j)
    dead = []
    for name, js in by_judge.items():
        if js and all(j.get("error_kind") in DEAD_KINDS for j in js):
            kinds = sorted({j["error_kind"] for j in js})
            dead.append(
                f"judge {name!r} (model {js[0].get('model')!r}): all {len(js)} call(s) failed ({', '.join(kinds)}); first error: {js[0].get('error')}"
            )
    if dead:
        raise EndpointDeadError(
            "endpoint unreachable — is the server up, the base_url right, the key valid?\n  "
            + "\n  ".join(dead)
        )
