"""The boundary to OpenAI-compatible endpoints, shared by the `llm` judges and the endpoint teacher.

Everything that crosses it is treated as hostile:

- **keys never leave**: every client is made by :func:`make_client`, which registers the key's value
  with :func:`redact`; every string that leaves an endpoint call (exception text, raw replies, log
  lines through :class:`RedactingFilter`) passes through :func:`redact`, which also removes
  ``Authorization``/``Bearer`` values and ``sk-``-style tokens;
- **a deadline, not a socket timeout**: ``timeout_s`` bounds the whole request (headers *and* body);
  a server that trickles one byte at a time is cut off (:class:`DeadlineTransport`) and the client's
  retries apply as for any timeout;
- **any reply is data**: :func:`reply_content` turns a raw response into ``(content, usage, problem)``
  and never raises, whatever the body (HTML under ``application/json``, ``choices: [{}]``,
  ``choices: null``, JSON nested 50,000 deep, ``usage.prompt_tokens: "abc"``);
- **bounded**: stored replies and error texts are capped (:data:`MAX_STORED_CHARS`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, fields, replace
from typing import Any

from qmr.config import Problem, field
from qmr.errors import UserError, did_you_mean

log = logging.getLogger(__name__)

MAX_STORED_CHARS = 20_000
MAX_BODY_BYTES = 4_000_000
REDACTED = "[REDACTED]"



@dataclass
class EndpointSpec:
    """One OpenAI-compatible endpoint (a value of ``endpoints`` in params.yaml). The `llm` judges
    (``judge.judges.<name>.endpoint``) and the silver teacher (``recovery.teacher``) name it."""

    base_url: str = field("", help="endpoint base URL, e.g. https://api.openai.com/v1 or http://localhost:8000/v1")
    model: str = field("", help="model name sent to the endpoint")
    api_key_env: str = field(
        "OPENAI_API_KEY", help="NAME of the environment variable holding the API key ('' = endpoint needs no key)"
    )
    max_retries: int = field(3, help="the openai client's retries on 429/5xx/timeouts (with its backoff)")
    timeout_s: float = field(120.0, help="deadline per request in seconds (headers and body)")
    concurrency: int = field(4, help="parallel requests to this endpoint")
    price_in_per_mtok: float = field(0.0, help="price per million prompt tokens (for the cost metric)")
    price_out_per_mtok: float = field(0.0, help="price per million completion tokens")

    def check(self, key: str = "") -> list[Problem]:
        p = f"{key}." if key else ""
        out: list[Problem] = []
        if not self.base_url.startswith(("http://", "https://")):
            out.append(Problem(f"{p}base_url", self.base_url, "an http(s):// URL"))
        if not self.model:
            out.append(Problem(f"{p}model", self.model, "a model name"))
        if self.api_key_env and not env_var_name_ok(self.api_key_env):
            # never echo the value: it may be the key itself, pasted here by mistake
            shown = f"<{len(self.api_key_env)} characters, not shown: it may be a key>"
            out.append(Problem(f"{p}api_key_env", shown, "the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key"))
        for name, low in (("max_retries", 0), ("concurrency", 1)):
            if getattr(self, name) < low:
                out.append(Problem(f"{p}{name}", getattr(self, name), f"an integer >= {low}"))
        if self.timeout_s <= 0:
            out.append(Problem(f"{p}timeout_s", self.timeout_s, "a number > 0"))
        for name in ("price_in_per_mtok", "price_out_per_mtok"):
            if getattr(self, name) < 0:
                out.append(Problem(f"{p}{name}", getattr(self, name), "a number >= 0"))
        return out


CONNECTION_FIELDS = tuple(f.name for f in fields(EndpointSpec))


def env_var_name_ok(name: str) -> bool:
    """A plausible environment variable NAME, and nothing that looks like a key pasted in its place
    (a key has '-' or is long with lower-case letters and digits mixed)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
        return False
    return not (len(name) >= 20 and re.search(r"[a-z]", name) and re.search(r"[0-9]", name))


def endpoint_named(endpoints: dict[str, EndpointSpec], name: str, key: str) -> EndpointSpec:
    """``endpoints[name]``; a `UserError` naming ``key`` and the defined endpoints otherwise."""
    spec = endpoints.get(name)
    if spec is None:
        defined = sorted(endpoints)
        raise UserError(
            f"{key}: got {name!r}; allowed: a name from endpoints: {', '.join(defined) or '(none defined)'}"
            f"{did_you_mean(name, defined)}"
        )
    return spec


def with_endpoint(spec: Any, endpoints: dict[str, EndpointSpec], key: str) -> Any:
    """A judge spec with its connection fields taken from the endpoint it names (``spec.endpoint``);
    ``spec`` itself when it names none (inline fields)."""
    name = getattr(spec, "endpoint", "")
    if not name:
        return spec
    ep = endpoint_named(endpoints, name, key)
    return replace(spec, endpoint="", **{f: getattr(ep, f) for f in CONNECTION_FIELDS})  # resolved: inline now


class EndpointConfigError(UserError):
    """An endpoint cannot start (its API key variable is unset, ...); raised before any call."""


_secrets: set[str] = set()
_lock = threading.Lock()
_PATTERNS = [
    re.compile(r"(?i)(authorization\s*[:=]\s*)(\S+(?:\s+\S+)?)"),
    re.compile(r"(?i)(bearer\s+)([A-Za-z0-9._~+/=-]{6,})"),
    re.compile(r"()(\bsk-[A-Za-z0-9_-]{8,})"),
]


def register_secret(value: str | None) -> None:
    """Remember a secret's value so that :func:`redact` removes it from every outgoing string."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def register_env_secrets(names) -> None:
    """Register the values of these environment variables (the configured key variables)."""
    for name in names:
        if name:
            register_secret(os.environ.get(name))


def redact(text: Any) -> str:
    """``text`` as a string with every registered secret and bearer-style token replaced."""
    s = text if isinstance(text, str) else str(text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for value in secrets:
        if value in s:
            s = s.replace(value, REDACTED)
    for pat in _PATTERNS:
        s = pat.sub(lambda m: m.group(1) + REDACTED, s)
    return s


def cap(text: str, limit: int = MAX_STORED_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters cut]"


def safe_error(exc: BaseException) -> str:
    """``Type: message`` of an exception, redacted and capped, for records and logs."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a hostile __str__
        text = "(unprintable)"
    return cap(redact(f"{type(exc).__name__}: {text}"), 2_000)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record's message (installed on qmr's log handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


# --------------------------------------------------------------------------------------------------
# a whole-request deadline


class DeadlineTransport:
    """An httpx transport wrapper: the response body must arrive within ``deadline_s`` of the request
    (httpx's own timeouts bound each read, so a trickling server could otherwise hold a call forever).
    Exceeding it raises ``httpx.ReadTimeout``, which the openai client retries like any timeout."""

    def __init__(self, deadline_s: float, inner=None):
        import httpx

        self.deadline_s = deadline_s
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request):
        import httpx

        start = time.monotonic()
        response = self.inner.handle_request(request)
        deadline = start + self.deadline_s
        stream = response.stream

        class _Bounded(httpx.SyncByteStream):
            def __iter__(self):
                total = 0
                for chunk in stream:
                    total += len(chunk)
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("the response did not complete within the deadline", request=request)
                    if total > MAX_BODY_BYTES:
                        raise httpx.ReadError(f"the response body exceeds {MAX_BODY_BYTES} bytes", request=request)
                    yield chunk

            def close(self):
                stream.close()

        if time.monotonic() > deadline:
            response.close()
            raise httpx.ReadTimeout("the response headers did not arrive within the deadline", request=request)
        return httpx.Response(response.status_code, headers=response.headers, stream=_Bounded(), request=request,
                              extensions=response.extensions)  # fmt: skip

    def close(self) -> None:
        self.inner.close()


def make_client(*, base_url: str, api_key_env: str, timeout_s: float, max_retries: int, who: str, connections: int | None = None):
    """An ``openai.OpenAI`` client for one endpoint, its key read from ``api_key_env`` and registered
    for redaction, every request bounded by a ``timeout_s`` deadline. Raises ``EndpointConfigError`` (a
    user error) naming ``who`` when the variable is unset. ``connections``: the pool size for that many
    requests at once (httpx keeps only 20 connections alive by default)."""
    import httpx
    from openai import OpenAI

    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise EndpointConfigError(
                f"{who}: environment variable {api_key_env} is not set ({who}.api_key_env names it); export the "
                "endpoint's API key in it, or set api_key_env: '' for an endpoint that needs no key"
            )
        register_secret(api_key)
    else:
        api_key = "no-key"
    inner = None
    if connections:
        size = max(connections, 20)
        inner = httpx.HTTPTransport(limits=httpx.Limits(max_connections=size, max_keepalive_connections=size))
    http = httpx.Client(transport=DeadlineTransport(timeout_s, inner), timeout=httpx.Timeout(timeout_s))  # type: ignore[arg-type]
    return OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout_s, http_client=http)


# --------------------------------------------------------------------------------------------------
# replies


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float) and value == value and abs(value) < 1e12:
        return max(0, int(value))
    return 0


def reply_content(raw) -> tuple[str | None, dict[str, int], str]:
    """``(content, usage, problem)`` from an openai raw response (``with_raw_response``); never raises.

    ``content`` is None with ``problem`` saying why when the reply carries no usable message.
    """
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    try:
        body = raw.http_response.content
    except Exception as exc:  # noqa: BLE001 - whatever the transport raises
        return None, usage, f"unreadable response body ({safe_error(exc)})"
    try:
        data = json.loads(body)
    except RecursionError:
        return None, usage, "the response body is JSON nested too deeply"
    except (ValueError, UnicodeDecodeError):
        ctype = raw.http_response.headers.get("content-type", "?")
        return None, usage, f"the response body is not JSON (content-type {ctype}, {len(body)} bytes)"
    if not isinstance(data, dict):
        return None, usage, f"the response body is a JSON {type(data).__name__}, not an object"
    u = data.get("usage")
    if isinstance(u, dict):
        usage = {"prompt_tokens": _to_int(u.get("prompt_tokens")), "completion_tokens": _to_int(u.get("completion_tokens"))}
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return None, usage, f"the reply has no choices (choices: {cap(json.dumps(choices), 80) if choices is not None else 'missing or null'})"
    first = choices[0]
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        return None, usage, "choices[0].message.content is missing or not a string"
    return content, usage, ""
