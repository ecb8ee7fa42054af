"""A teacher behind an OpenAI-compatible chat endpoint (the same endpoint spec as the `llm` judges).

The teacher sees the problem prompt and the quantized model's correct prefix and continues the
solution in the same step format; `build_pairs` keeps only continuations the grader verifies.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

INSTRUCTION = (
    "Continue the following step-by-step solution from exactly where it stops. Keep one step per line "
    'and finish with "The answer is N." Reply with the continuation only, no repetition of the given text.'
)


def llm_teacher(spec, *, temperature: float = 0.7, cache=None):
    """Return a ``Teacher`` (prompts, n) -> n continuations per prompt, using the openai client.

    ``cache``: a JSON Lines response cache, one line per answered prompt, keyed by the endpoint, model,
    prompt and sampling settings. A prompt found there is not sent again, so a killed run resumes
    without repeating (paid) calls.
    """
    import hashlib
    import json
    import threading

    from openai import OpenAI

    from qmr.io import JsonlAppender
    from qmr.locate.judges import JudgeConfigError

    key = "no-key"
    if spec.api_key_env:
        key = os.environ.get(spec.api_key_env) or ""
        if not key:
            raise JudgeConfigError(f"recovery.teacher: environment variable {spec.api_key_env} is not set")
    client = OpenAI(base_url=spec.base_url, api_key=key, max_retries=spec.max_retries, timeout=spec.timeout_s)
    appender = JsonlAppender(cache) if cache is not None else None
    answered = {r["key"]: r["continuations"] for r in appender.existing()} if appender else {}
    lock = threading.Lock()

    def cache_key(prompt: str, n: int) -> str:
        what = [spec.base_url, spec.model, spec.max_tokens, temperature, n, INSTRUCTION, prompt]
        return hashlib.sha256(json.dumps(what).encode("utf-8")).hexdigest()

    def one(prompt: str, n: int) -> list[str]:
        ckey = cache_key(prompt, n)
        if ckey in answered:
            return list(answered[ckey])
        out = []
        for _ in range(n):  # one request per try: not every endpoint supports n > 1
            resp = client.chat.completions.create(
                model=spec.model,
                messages=[{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": prompt}],
                temperature=temperature,
                max_tokens=spec.max_tokens,
            )
            out.append((resp.choices[0].message.content or "").strip())
        if appender is not None:
            with lock:
                appender.append({"key": ckey, "continuations": out})
                answered[ckey] = out
        return out

    def teacher(prompts: list[str], n: int) -> list[list[str]]:
        with ThreadPoolExecutor(max_workers=max(1, spec.concurrency)) as pool:
            return list(pool.map(lambda p: one(p, n), prompts))

    return teacher
