"""A managed OpenAI-compatible server: started for one checkpoint, used, and always stopped.

``generate.server.command`` (e.g. ``vllm serve {path} --port {port} ...`` from vLLM's own virtualenv) is
split into arguments first and its placeholders filled per argument, so paths with spaces stay one
argument and nothing goes through a shell; an argument that is exactly ``{lora_args}`` or
``{revision_args}`` expands to several (or none). The server runs in its own process group with its
output in a log file; :class:`ManagedServer` waits until ``/v1/models`` answers, and on exit (normal,
exception, Ctrl-C or SIGTERM) terminates the whole group, then kills it. On Linux the server also gets
SIGTERM if this process dies without cleaning up (SIGKILL).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qmr.endpoints import redact
from qmr.errors import UserError

log = logging.getLogger(__name__)

ALLOWED_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's max_lora_rank accepts
STOP_GRACE_S = 30.0
LOG_TAIL_CHARS = 1500


def lora_rank(adapter: str | None) -> int:
    """The rank of a PEFT adapter directory (its adapter_config.json ``r``), 16 when unknown."""
    if not adapter:
        return 16
    config = Path(adapter) / "adapter_config.json"
    return int(json.loads(config.read_text(encoding="utf-8")).get("r", 16)) if config.is_file() else 16


def allowed_lora_rank(rank: int) -> int:
    """The smallest rank vLLM allows for ``max_lora_rank`` that holds an adapter of rank ``rank``."""
    for allowed in ALLOWED_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise UserError(f"restore.lora_r: got {rank}; allowed: at most {ALLOWED_LORA_RANKS[-1]} to serve the adapter with vLLM")


def model_context(path: str) -> int | None:
    """The context length a local checkpoint's config.json declares (``max_position_embeddings``)."""
    config = Path(path) / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("max_position_embeddings") or (data.get("text_config") or {}).get("max_position_embeddings")
    return int(value) if isinstance(value, int) and value > 0 else None


def derive_max_model_len(configured: int, max_new_tokens: int, path: str | None = None) -> int:
    """``generate.max_model_len``, or when 0: max(4096, max_new_tokens + 2048) capped at the model's own
    context length (Llama-3.1's 131k would otherwise reserve a KV cache for 131k tokens per sequence)."""
    if configured:
        return configured
    want = max(4096, max_new_tokens + 2048)
    context = model_context(path) if path else None
    return min(want, context) if context else want


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_argv(template: str, values: dict[str, str | list[str]]) -> list[str]:
    """``template`` split like a shell would, each argument filled from ``values``; an argument that is
    exactly one placeholder with a list value becomes those arguments (none for an empty list)."""
    argv: list[str] = []
    for arg in shlex.split(template):
        name = arg[1:-1] if arg.startswith("{") and arg.endswith("}") and arg.count("{") == 1 else None
        if name is not None and isinstance(values.get(name), list):
            argv.extend(values[name])  # type: ignore[arg-type]
            continue
        argv.append(arg.format(**{k: (" ".join(v) if isinstance(v, list) else v) for k, v in values.items()}))
    return argv


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    os.setsid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


class ManagedServer:
    """``with ManagedServer(argv, port, ready_timeout_s) as url:`` — the server's ``/v1`` base URL."""

    def __init__(self, argv: list[str], port: int, ready_timeout_s: float, *, who: str = "generate.server.command"):
        self.argv, self.port, self.ready_timeout_s, self.who = argv, port, ready_timeout_s, who
        self.url = f"http://127.0.0.1:{port}/v1"
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self._old_sigterm = None

    def shown(self) -> str:
        return redact(shlex.join(self.argv))

    def tail(self) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path else ""
        except OSError:
            return ""
        text = redact(text.strip())[-LOG_TAIL_CHARS:]
        return " | ".join(line for line in text.splitlines()[-8:] if line.strip())

    def start(self) -> str:
        fd, name = tempfile.mkstemp(prefix="qmr-server-", suffix=".log")
        self.log_path = Path(name)
        log.info("starting the generation server: %s (log: %s)", self.shown(), self.log_path)
        with os.fdopen(fd, "wb") as out:
            try:
                self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             preexec_fn=_die_with_parent)  # fmt: skip
            except OSError as exc:
                raise UserError(f"{self.who}: cannot start {self.shown()!r}: {exc.strerror or exc}; allowed: an executable "
                                "command (e.g. the full path of `vllm` in its own virtualenv)") from None
        if threading_main():
            self._old_sigterm = signal.signal(signal.SIGTERM, _sigterm_to_exit)
        try:
            self._wait_ready()
        except BaseException:
            self.stop(keep_log=True)
            raise
        return self.url

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            code = self.proc.poll() if self.proc else None
            if code is not None:
                raise UserError(f"{self.who}: the server exited with code {code} before it was ready ({self.shown()}); "
                                f"its log ({self.log_path}): {self.tail() or '(empty)'}")  # fmt: skip
            try:
                if httpx.get(f"{self.url}/models", timeout=2.0).status_code < 500:
                    log.info("generation server ready at %s", self.url)
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise UserError(f"{self.who}: the server did not answer {self.url}/models within generate.server.ready_timeout_s="
                                f"{self.ready_timeout_s:g} s ({self.shown()}); its log ({self.log_path}): {self.tail() or '(empty)'}")
            time.sleep(0.2)

    def stop(self, keep_log: bool = False) -> None:
        """Stop the server's whole process group; its log file is removed unless ``keep_log``."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("the generation server ignored SIGTERM for %.0f s: killing it", STOP_GRACE_S)
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # also whatever it started (vLLM's engine processes)
            except ProcessLookupError:
                pass
            proc.wait()
        elif proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        if self.log_path is not None and proc is not None:
            if keep_log:
                log.warning("generation server stopped; its log is kept: %s", self.log_path)
            else:
                log.info("generation server stopped")
                self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, exc_type, *exc) -> None:
        self.stop(keep_log=exc_type is not None)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _sigterm_to_exit(signum, frame):  # pragma: no cover - exercised through the subprocess tests
    raise SystemExit(128 + signum)  # unwinds through `finally`, so the server is stopped
