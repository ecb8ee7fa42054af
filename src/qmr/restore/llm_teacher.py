"""A teacher behind an OpenAI-compatible chat endpoint (an entry of params ``endpoints``, as the `llm` judges use).

The teacher sees the plain problem prompt (``Question: …\\nAnswer:\\n``, never the local model's chat
template: the endpoint applies its own) and the quantized model's correct prefix, and continues the
solution in the same step format; `build_pairs` keeps only continuations the grader verifies.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

INSTRUCTION = (
    "Continue the following step-by-step solution from exactly where it stops. Keep one step per line "
    'and finish with "The answer is N." Reply with the continuation only, no repetition of the given text.'
)


def llm_teacher(spec, *, temperature: float = 0.7, max_tokens: int = 1024, cache=None, who: str = "recovery.teacher"):
    """Return a ``Teacher`` (prompts, n) -> n continuations per prompt, using the openai client.

    ``spec``: the endpoint (`qmr.endpoints.EndpointSpec`, or any object with its fields);
    ``max_tokens``: the completion limit per continuation (the silver stage passes generate.max_new_tokens,
    the fp teacher's budget).

    ``cache``: a JSON Lines response cache, one line per answered prompt, keyed by the endpoint, model,
    prompt and sampling settings. A prompt found there is not sent again, so a killed run resumes
    without repeating (paid) calls. A call that fails or returns no usable message gives an empty
    continuation (never verified, so never a pair), is counted (``teacher.failed``), and its prompt is
    not cached, so a re-run asks again. Nothing an endpoint sends can raise out of here.
    """
    import hashlib
    import json
    import threading

    from qmr.endpoints import cap, make_client, redact, reply_content, safe_error
    from qmr.io import JsonlAppender

    client = make_client(base_url=spec.base_url, api_key_env=spec.api_key_env, timeout_s=spec.timeout_s,
                         max_retries=spec.max_retries, who=who)  # fmt: skip
    appender = JsonlAppender(cache) if cache is not None else None
    answered = {r["key"]: r["continuations"] for r in appender.existing() if isinstance(r, dict) and "key" in r} if appender else {}
    lock = threading.Lock()

    def cache_key(prompt: str, n: int) -> str:
        what = [spec.base_url.rstrip("/"), spec.model, max_tokens, temperature, n, INSTRUCTION, prompt]
        return hashlib.sha256(json.dumps(what).encode("utf-8")).hexdigest()

    def ask(prompt: str) -> str | None:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=spec.model,
                messages=[{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": prompt}],
                temperature=temperature,
                max_tokens=max_tokens,
            )
        except Exception as exc:  # noqa: BLE001 - any failure (openai.OpenAIError or not) must not end the stage
            log.warning("teacher %s: call failed: %s", spec.model, safe_error(exc))
            return None
        content, _usage, problem = reply_content(raw)
        if content is None:
            log.warning("teacher %s: unusable reply: %s", spec.model, redact(problem))
            return None
        return cap(redact(content).strip())

    def one(prompt: str, n: int) -> list[str]:
        ckey = cache_key(prompt, n)
        if ckey in answered:
            return list(answered[ckey])
        got = [ask(prompt) for _ in range(n)]  # one request per try: not every endpoint supports n > 1
        failed = sum(c is None for c in got)
        out = [c or "" for c in got]
        with lock:
            teacher.failed += failed
            teacher.calls += n
            if appender is not None and not failed:
                appender.append({"key": ckey, "continuations": out})
                answered[ckey] = out
        return out

    def teacher(prompts: list[str], n: int) -> list[list[str]]:
        with ThreadPoolExecutor(max_workers=max(1, spec.concurrency)) as pool:
            return list(pool.map(lambda p: one(p, n), prompts))

    teacher.plain_prompts = True  # type: ignore[attr-defined]  # build_pairs sends the plain problem + prefix
    teacher.failed = 0  # type: ignore[attr-defined]
    teacher.calls = 0  # type: ignore[attr-defined]
    return teacher
