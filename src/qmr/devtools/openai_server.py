"""A loopback OpenAI-compatible endpoint for tests and benchmarks (stdlib only).

``POST /v1/chat/completions`` answers like the real API (``choices[i].message.content``, ``usage``);
``POST /v1/completions`` (the legacy API vLLM serves for raw prompts) answers ``choices[i].text``;
both honour ``n`` (one responder call per choice, the request carrying ``_choice``). ``GET /v1/models``
lists the ``models`` given plus every model asked for. ``python -m qmr.devtools.openai_server --port
P`` runs one in the foreground (a stand-in for ``vllm serve`` in managed-mode tests).
What each request gets is decided, in order, by: the per-model script queue (`push(..., model=)`), the
global script queue (`push(...)`), the seeded failure-rate mode (``failure_rate`` of the requests get
one of ``failure_kinds``), else ``"ok"``. Actions:

- ``ok``: the responder's verdict (a dict -> wrapped as ``{"quantized_error_analysis": ...}``; a str ->
  sent verbatim), after the model's `Bias`;
- ``fence``: like ok, wrapped in a ```json fence with prose around it;
- ``invalid``: prose without JSON; ``bad_type``: JSON with a type outside the taxonomy;
- ``429`` / ``500``: an error status (with ``retry-after-ms`` so client retries are fast);
- ``hang``: sleep ``hang_s`` (past the client's timeout) before answering;
- ``latency:<s>``: answer ok after ``s`` seconds (``latency_s`` adds to every request);
- hostile replies (the hardening tests): ``echo_key_400`` / ``echo_key_401`` / ``echo_key_500`` (an
  error whose message echoes the request's bearer token, as some gateways do), ``html_json`` (an HTML
  page under ``application/json``), ``text_plain`` (a 200 text/plain body), ``empty_choice``
  (``choices: [{}]``), ``no_choices``, ``null_choices``, ``deep_body`` / ``deep_content`` (JSON nested
  50,000 deep in the body / in the message), ``bad_usage`` (``usage.prompt_tokens: "abc"``),
  ``example_then_answer`` (the format example quoted before the real verdict), ``trickle`` (headers,
  then one byte every ``trickle_s`` seconds).

The default responder derives a plausible verdict from the prompt: it reads the quantized solution
section of the judge template (``Step k: ...`` lines), re-checks its arithmetic claims (first false one
-> ``computational_error``), else a stated answer differing from the last computed value ->
``procedural_error``, else ``logical_reasoning_error`` at the last step with low confidence. A `Bias`
per model makes several "models" disagree deterministically (a hash of model, salt and prompt decides
whether it applies).

    with OpenAIStubServer(biases={"m2": Bias(rate=0.5, step_offset=1)}) as srv:
        OpenAI(base_url=srv.url, api_key="x").chat.completions.create(model="m2", messages=[...])
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[dict[str, Any]], "dict[str, Any] | str"]


@dataclass
class Bias:
    """How one model deviates from the responder on a deterministic share (``rate``) of prompts."""

    rate: float = 1.0
    step_offset: int = 0
    error_type: str | None = None
    no_error: bool = False
    invalid: bool = False
    salt: str = ""

    def applies(self, model: str, prompt: str) -> bool:
        h = hashlib.sha256(f"{model}|{self.salt}|{prompt}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64 < self.rate


@dataclass
class Raw:
    """A reply sent byte for byte (hostile bodies), optionally one byte every ``trickle_s`` seconds."""

    body: bytes
    content_type: str = "application/json"
    trickle_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def _first_user(request: dict[str, Any]) -> str:
    if isinstance(request.get("prompt"), str):  # the completions API
        return request["prompt"]
    for m in request.get("messages", []):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else json.dumps(c)
    return ""


def quantized_steps(prompt: str) -> list[str]:
    """The numbered steps of the quantized solution section of a judge prompt."""
    m = re.search(r"<quantized_solution[^>]*>\n(.*?)\n</quantized_solution>", prompt, re.S)
    if not m:
        return []
    parts = re.split(r"(?m)^Step \d+: ", m.group(1))
    return [p.strip() for p in parts[1:]]


def default_responder(request: dict[str, Any]) -> dict[str, Any]:
    from qmr.locate.arith import claims_in, stated_answer
    from qmr.locate.offline import first_false_claim

    steps = quantized_steps(_first_user(request))
    if not steps:
        return {
            "primary_error_type": "no_error",
            "error_step": None,
            "explanation": "no steps",
            "confidence_score": 0.5,
        }
    claim = first_false_claim(steps)
    if claim is not None:
        return {
            "primary_error_type": "computational_error",
            "error_step": claim.step,
            "explanation": f"'{claim.describe()}' is arithmetically wrong",
            "confidence_score": 0.9,
        }
    last = None
    for i, s in enumerate(steps, start=1):
        cl = claims_in(s)
        if cl:
            last = cl[-1].claimed
        is_ans, ans = stated_answer(s)
        if is_ans and ans is not None and last is not None and ans != last:
            return {
                "primary_error_type": "procedural_error",
                "error_step": i,
                "explanation": "the stated answer does not follow from the last computation",
                "confidence_score": 0.8,
            }
    return {
        "primary_error_type": "logical_reasoning_error",
        "error_step": len(steps),
        "explanation": "the final step does not answer the question correctly",
        "confidence_score": 0.5,
    }


def arithmetic_responder(request: dict[str, Any]) -> str:
    """A step-formatted "solution" for generation tests: adds the first two numbers of the question
    (greedy requests always give the same text; sampled ones vary with ``seed`` and the choice)."""
    prompt = _first_user(request)
    nums = [int(x) for x in re.findall(r"\d+", prompt.split("Question:", 1)[-1])[:2]] or [1, 1]
    a, b = (nums + nums)[:2]
    if float(request.get("temperature") or 0) > 0:
        h = hashlib.sha256(f"{request.get('seed')}|{request.get('_choice', 0)}|{prompt}".encode()).digest()
        b += h[0] % 3 - 1  # a third of the samples slip
    return f"{a} + {b} = {a + b}\nThe answer is {a + b}."


class _Server(ThreadingHTTPServer):
    request_queue_size = 512  # listen backlog (socketserver's 5 drops connections beyond it: a 1 s SYN retry each)
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class OpenAIStubServer:
    def __init__(
        self,
        responder: Responder | None = None,
        biases: dict[str, Bias] | None = None,
        failure_rate: float = 0.0,
        failure_kinds: tuple[str, ...] = ("429", "500"),
        seed: int = 0,
        latency_s: float = 0.0,
        models: tuple[str, ...] = (),
        port: int = 0,
        hang_s: float = 5.0,
        retry_after_ms: int = 1,
        trickle_s: float = 0.5,
    ):
        self.responder: Responder = responder or default_responder
        self.biases = dict(biases or {})
        self.failure_rate = failure_rate
        self.failure_kinds = failure_kinds
        self.latency_s = latency_s
        self.models = tuple(models)
        self._port = port
        self.hang_s = hang_s
        self.retry_after_ms = retry_after_ms
        self.trickle_s = trickle_s
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._queue: deque[str] = deque()
        self._model_queues: dict[str, deque[str]] = {}
        self._stop = threading.Event()
        self.requests = 0
        self.by_model: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.log: list[dict[str, Any]] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> OpenAIStubServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # /v1/models
                body = {
                    "object": "list",
                    "data": [{"id": m, "object": "model"} for m in sorted({*server.models, *server.by_model})],
                }
                self._send(200, body)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                try:
                    request = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._send(
                        400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}}
                    )
                    return
                if not self.path.rstrip("/").endswith(("/chat/completions", "/v1/completions")):
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                status, body, headers = server._handle(request, self.headers.get("authorization", ""))
                self._send(status, body, headers)

            def _send(self, status: int, body: dict[str, Any] | Raw, headers: dict[str, str] | None = None) -> None:
                raw = body if isinstance(body, Raw) else Raw(json.dumps(body).encode())
                try:
                    self.send_response(status)
                    self.send_header("content-type", raw.content_type)
                    self.send_header("content-length", str(len(raw.body)))
                    for k, v in {**(headers or {}), **raw.headers}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    if not raw.trickle_s:
                        self.wfile.write(raw.body)
                        return
                    for i in range(len(raw.body)):
                        if server._stop.wait(raw.trickle_s):
                            return
                        self.wfile.write(raw.body[i : i + 1])
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

        self._httpd = _Server(("127.0.0.1", self._port), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OpenAIStubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting -----------------------------------------------------------------------------
    def push(self, *actions: str, model: str | None = None) -> None:
        with self._lock:
            q = self._queue if model is None else self._model_queues.setdefault(model, deque())
            q.extend(actions)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests = 0
            self.by_model.clear()
            self.actions.clear()
            self.log.clear()

    def _next_action(self, model: str) -> str:
        with self._lock:
            q = self._model_queues.get(model)
            if q:
                return q.popleft()
            if self._queue:
                return self._queue.popleft()
            if self.failure_rate > 0 and self._rng.random() < self.failure_rate:
                return self._rng.choice(self.failure_kinds)
            return "ok"

    # -- answering -----------------------------------------------------------------------------
    def _handle(self, request: dict[str, Any], authorization: str = "") -> tuple[int, dict[str, Any] | Raw, dict[str, str]]:
        model = str(request.get("model", ""))
        prompt = _first_user(request)
        action = self._next_action(model)
        with self._lock:
            self.requests += 1
            self.by_model[model] += 1
            self.actions[action.split(":")[0]] += 1
            self.log.append(
                {
                    "model": model,
                    "action": action,
                    "prompt_sha": hashlib.sha256(prompt.encode()).hexdigest()[:16],
                    "messages": len(request.get("messages", [])),
                }
            )
        if self.latency_s:
            self._stop.wait(self.latency_s)
        retry = {"retry-after-ms": str(self.retry_after_ms)}
        if action == "429":
            return (
                429,
                {
                    "error": {
                        "message": "rate limited (stub)",
                        "type": "rate_limit_error",
                        "code": "rate_limit_exceeded",
                    }
                },
                retry,
            )
        if action == "500":
            return 500, {"error": {"message": "internal error (stub)", "type": "server_error"}}, retry
        hostile = self._hostile(action, model, prompt, request, authorization)
        if hostile is not None:
            return hostile
        if action == "hang":
            self._stop.wait(self.hang_s)
        elif action.startswith("latency:"):
            self._stop.wait(float(action.split(":", 1)[1]))
        n = request.get("n") if isinstance(request.get("n"), int) and 1 <= request.get("n") <= 128 else 1
        contents = []
        for choice in range(n):
            if action == "invalid":
                contents.append("I believe the quantized model goes wrong somewhere in the middle of its solution.")
            else:
                contents.append(self._verdict_content(model, prompt, {**request, "_choice": choice} if n > 1 else request, action))
        return 200, self._completion(model, request, contents[0], more=contents[1:]), {}

    def _hostile(self, action: str, model: str, prompt: str, request: dict[str, Any], authorization: str):
        """The replies of a misbehaving endpoint or gateway (see the module docstring), or None."""
        token = authorization.split(" ", 1)[-1]
        if action.startswith("echo_key_"):
            status = int(action.rsplit("_", 1)[1])
            return status, {"error": {"message": f"Incorrect API key provided: {token}. Header was 'Authorization: {authorization}'",
                                      "type": "invalid_request_error"}}, {"retry-after-ms": str(self.retry_after_ms)}  # fmt: skip
        ok = self._completion(model, request, self._verdict_content(model, prompt, request, "ok"))
        deep = "[" * 50_000 + "]" * 50_000
        if action == "html_json":
            return 200, Raw(b"<html><body><h1>502 Bad Gateway</h1></body></html>"), {}
        if action == "text_plain":
            return 200, Raw(b"OK", content_type="text/plain"), {}
        if action == "empty_choice":
            return 200, {**ok, "choices": [{}]}, {}
        if action == "no_choices":
            return 200, {k: v for k, v in ok.items() if k != "choices"}, {}
        if action == "null_choices":
            return 200, {**ok, "choices": None}, {}
        if action == "deep_body":
            return 200, Raw(('{"choices": ' + deep + "}").encode()), {}
        if action == "deep_content":
            return 200, self._completion(model, request, deep), {}
        if action == "bad_usage":
            return 200, {**ok, "usage": {"prompt_tokens": "abc", "completion_tokens": [1], "total_tokens": None}}, {}
        if action == "example_then_answer":
            example = json.dumps({"quantized_error_analysis": {"primary_error_type": "conceptual_misunderstanding",
                                                               "error_step": 1, "explanation": "...", "confidence_score": 0.9}})  # fmt: skip
            verdict = self._verdict_content(model, prompt, request, "ok")
            text = f"The required format is {example}. My answer:\n{verdict}"
            return 200, self._completion(model, request, text), {}
        if action == "trickle":
            return 200, Raw(json.dumps(ok).encode(), trickle_s=self.trickle_s), {}
        return None

    def _verdict_content(self, model: str, prompt: str, request: dict[str, Any], action: str) -> str:
        verdict = self.responder(request)
        if isinstance(verdict, str):
            return verdict
        verdict = dict(verdict)
        bias = self.biases.get(model)
        if bias is not None and bias.applies(model, prompt):
            if bias.invalid:
                return "Sorry, I cannot decide."
            if bias.no_error:
                verdict.update(primary_error_type="no_error", error_step=None)
            else:
                if bias.error_type is not None:
                    verdict["primary_error_type"] = bias.error_type
                if bias.step_offset and verdict.get("error_step") is not None:
                    m = re.search(r'<quantized_solution[^>]*steps="(\d+)"', prompt)
                    n = int(m.group(1)) if m else 10**6
                    verdict["error_step"] = min(n, max(1, int(verdict["error_step"]) + bias.step_offset))
        if action == "bad_type":
            verdict["primary_error_type"] = "vibes_error"
        text = json.dumps({"quantized_error_analysis": verdict})
        if action == "fence":
            return f"Here is my analysis.\n```json\n{text}\n```\nHope this helps."
        return text

    @staticmethod
    def _completion(model: str, request: dict[str, Any], content: str, more: list[str] | tuple = ()) -> dict[str, Any]:
        legacy = "messages" not in request and "prompt" in request  # the completions API
        prompt_chars = len(_first_user(request)) if legacy else sum(
            len(m.get("content") or "")
            for m in request.get("messages", [])
            if isinstance(m.get("content"), str)
        )
        contents = [content, *more]
        p_tok, c_tok = max(1, prompt_chars // 4), sum(max(1, len(c) // 4) for c in contents)
        choices = [
            {"index": i, "text": c, "finish_reason": "stop", "logprobs": None} if legacy else
            {"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": "stop", "logprobs": None}
            for i, c in enumerate(contents)
        ]  # fmt: skip
        return {
            "id": f"{'cmpl' if legacy else 'chatcmpl'}-stub-{hashlib.sha256((model + content).encode()).hexdigest()[:12]}",
            "object": "text_completion" if legacy else "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": {"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok},
        }


def main(argv: list[str] | None = None) -> None:
    """Serve in the foreground until SIGTERM/SIGINT (a stand-in for ``vllm serve``)."""
    import argparse
    import signal

    ap = argparse.ArgumentParser(prog="python -m qmr.devtools.openai_server", description=main.__doc__)
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free one, printed)")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    ap.add_argument("--responder", choices=("judge", "arithmetic"), default="arithmetic", help="what answers say")
    ap.add_argument("--served-model-name", action="append", default=[], help="names /v1/models lists (repeatable)")
    ap.add_argument("--startup-delay", type=float, default=0.0, help="seconds before listening (a slow server)")
    ap.add_argument("--exit-code", type=int, default=None, help="exit with this code instead of serving (a broken server)")
    args, _unknown = ap.parse_known_args(argv)  # vLLM-style flags (--enable-lora ...) are accepted and ignored
    print(f"stub server argv: {argv if argv is not None else __import__('sys').argv[1:]}", flush=True)
    if args.exit_code is not None:
        print("stub server: failing on purpose", flush=True)
        raise SystemExit(args.exit_code)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if stop.wait(args.startup_delay):  # told to stop while "loading"
        return
    srv = OpenAIStubServer(responder=arithmetic_responder if args.responder == "arithmetic" else None, latency_s=args.latency,
                           models=tuple(args.served_model_name), port=args.port)  # fmt: skip
    srv.start()
    print(f"stub server listening on {srv.url}", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
