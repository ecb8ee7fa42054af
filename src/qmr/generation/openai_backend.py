"""`openai` generation backend: any OpenAI-compatible server (vLLM, SGLang, TGI, ...), the real `openai` client.

Two modes (``generate.server``):

- **external** (``base_url``): a deployment the user already serves, possibly multi-GPU or multi-node;
  each variant maps to a served model name (``server.model`` template with ``{model}``/``{variant}``,
  or ``server.served[variant]``);
- **managed** (``command``): the stage starts the server for the checkpoint it needs (the variant's
  checkpoint, plus the restored LoRA adapter through ``{lora_args}``), waits until ``/v1/models``
  answers, generates, and stops it (:mod:`qmr.generation.server`). vLLM then lives in its own
  virtualenv: its pins never meet llmcompressor's.

``api: completions`` (default) sends the prompt exactly as qmr templated it (the same text the
transformers backend tokenizes; a prompt that already starts with the tokenizer's BOS is sent with
``add_special_tokens: false`` so the server adds no second one); ``api: chat`` sends the user message
and the server applies the chat template. Requests run ``server.concurrency`` at a time; the openai
client retries 429/5xx/timeouts (``server.max_retries``, deadline ``server.timeout_s``). Batches of
``generate.batch_size`` prompts (in prompt order) are the resume unit, as in the transformers backend:
each is reported to ``on_batch`` when its last request finishes, and ``done`` batches are not sent again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from qmr.endpoints import MAX_STORED_CHARS, cap, make_client, redact, register_env_secrets, safe_error
from qmr.errors import UserError
from qmr.generation.base import Completion, ServerSpec

log = logging.getLogger(__name__)


class GenerationServerError(UserError):
    """A request the server kept failing (after the client's retries), or a reply without completions."""


class ChatMessage:
    """The prompt "tokenizer" of ``api: chat``: `build_prompt` asks it to apply a chat template and gets
    the user message back; the server applies the model's own template."""

    chat_template = "server-side"
    bos_token = None

    @staticmethod
    def apply_chat_template(messages, tokenize=False, add_generation_prompt=True):
        return "\n\n".join(m["content"] for m in messages if m.get("role") == "user")


def split_tokens(total: int, texts: list[str]) -> list[int]:
    """``total`` completion tokens (the reply's usage, for all choices) shared out by text length; the
    shares sum to ``total``. Without usage (0): about four characters per token."""
    if total <= 0:
        return [max(1, -(-len(t) // 4)) if t else 0 for t in texts]
    if len(texts) == 1:
        return [total]
    weights = [max(1, len(t)) for t in texts]
    exact = [total * w / sum(weights) for w in weights]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(texts)), key=lambda i: shares[i] - exact[i])[: total - sum(shares)]:
        shares[i] += 1
    return shares


def reply_texts(body: bytes, api: str, n: int) -> tuple[list[str] | None, int, str]:
    """``(texts, completion_tokens, problem)`` of a completions/chat reply body; never raises."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, 0, f"the reply is not JSON ({len(body)} bytes)"
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        return None, 0, "the reply has no choices"
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    tokens = usage.get("completion_tokens")
    tokens = tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0 else 0
    choices = sorted((c for c in data["choices"] if isinstance(c, dict)), key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int) else 0)
    texts = []
    for c in choices:
        if api == "completions":
            text = c.get("text")
        else:
            message = c.get("message")
            text = message.get("content") if isinstance(message, dict) else None
            if text is None and isinstance(message, dict):
                text = ""  # a message without content (a refusal, a tool call): an empty answer
        if not isinstance(text, str):
            return None, 0, f"choices[{len(texts)}] has no {'text' if api == 'completions' else 'message.content'} string"
        texts.append(cap(text, MAX_STORED_CHARS))
    if len(texts) != n:
        return None, 0, f"the reply has {len(texts)} choice(s) for n={n} (does the server support `n`?)"
    return texts, tokens, ""


class OpenAIBackend:
    supports_resume = True  # generate(done=..., on_batch=...): batches are fixed by the prompt list alone

    def __init__(
        self,
        model_path: str,
        *,
        server: ServerSpec | None = None,
        api: str = "completions",
        model: str = "",
        variant: str = "",
        device: str = "auto",
        batch_size: int = 256,
        adapter: str | None = None,
        max_new_tokens: int = 96,
        max_model_len: int = 0,
        tensor_parallel_size: int = 1,
    ):
        from qmr.checkpoints import resolve_model_path

        self.spec = server or ServerSpec()
        self.api = api
        self.batch_size = batch_size
        self.path, self.revision = resolve_model_path(model_path)
        self.adapter = str(Path(adapter).resolve()) if adapter else None
        self.served = self.spec.served_name(model, variant)
        self.managed = bool(self.spec.command)
        self._server = None
        self._failed = False
        self._max_new_tokens, self._max_model_len, self._tp = max_new_tokens, max_model_len, tensor_parallel_size
        register_env_secrets([self.spec.api_key_env])
        self.tokenizer = ChatMessage() if api == "chat" else self._load_tokenizer()
        self._bos = getattr(self.tokenizer, "bos_token", None) if api == "completions" else None
        # what else decides the completions: a resumed run must talk to the same served model the same way
        self.resume_identity = {"backend": "openai", "api": api, "served": self.served,
                                "server": "managed" if self.managed else redact(self.spec.base_url)}  # fmt: skip

    def _load_tokenizer(self):
        """The checkpoint's tokenizer (for chat-templated prompts), when it can be read without a download."""
        if not Path(self.path).is_dir():
            return None
        try:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(self.path)
        except Exception as exc:  # noqa: BLE001 - no tokenizer files: plain prompts still work
            log.info("no tokenizer read from %s (%s): plain prompts only", self.path, type(exc).__name__)
            return None

    # -- the server ---------------------------------------------------------------------------
    def command_values(self, port: int) -> dict:
        from qmr.generation.server import allowed_lora_rank, derive_max_model_len, lora_rank

        local = Path(self.path)
        path = str(local.resolve()) if local.exists() else self.path
        lora = []
        if self.adapter:
            lora = ["--enable-lora", "--max-lora-rank", str(allowed_lora_rank(lora_rank(self.adapter))),
                    "--lora-modules", f"{self.served}={self.adapter}"]  # fmt: skip
        return {
            "path": path, "port": str(port), "served": self.served,
            "base_served": f"{self.served}-base" if self.adapter else self.served,
            "adapter": self.adapter or "", "lora_args": lora,
            "revision_args": ["--revision", self.revision] if self.revision else [],
            "max_model_len": str(derive_max_model_len(self._max_model_len, self._max_new_tokens, path)),
            "tensor_parallel_size": str(self._tp),
        }  # fmt: skip

    def base_url(self) -> str:
        """The server's URL; in managed mode the server is started on first use."""
        if not self.managed:
            return self.spec.base_url
        if self._server is None:
            from qmr.generation.server import ManagedServer, free_port, server_argv

            port = free_port()
            self._server = ManagedServer(server_argv(self.spec.command, self.command_values(port)), port, self.spec.ready_timeout_s)
            self._server.start()
            import atexit

            atexit.register(self.close)
        return self._server.url

    def close(self) -> None:
        """Stop the managed server (no-op for an external one, or when already stopped); its log is
        kept when a request failed."""
        if self._server is not None:
            server, self._server = self._server, None
            server.stop(keep_log=self._failed)

    # -- generation -----------------------------------------------------------------------------
    def _request(self, client, prompt: str, *, n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int) -> list[Completion]:
        kwargs = {"model": self.served, "n": n, "temperature": temperature, "top_p": top_p if temperature > 0 else 1.0,
                  "max_tokens": max_new_tokens, "seed": seed}  # fmt: skip
        t0 = time.perf_counter()
        try:
            if self.api == "completions":
                extra = {"add_special_tokens": False} if self._bos and prompt.startswith(self._bos) else None
                raw = client.completions.with_raw_response.create(prompt=prompt, extra_body=extra, **kwargs)
            else:
                raw = client.chat.completions.with_raw_response.create(messages=[{"role": "user", "content": prompt}], **kwargs)
            body = raw.http_response.content
        except Exception as exc:  # noqa: BLE001 - the client's retries are spent: one line for the user
            raise GenerationServerError(
                f"generate.server: model {self.served!r} at {redact(client.base_url)} failed after "
                f"{self.spec.max_retries} retries: {safe_error(exc)} (is the server up and serving that name? "
                "finished batches are kept: re-run to continue)"
            ) from None
        seconds = time.perf_counter() - t0
        texts, tokens, problem = reply_texts(body, self.api, n)
        if texts is None:
            raise GenerationServerError(f"generate.server: model {self.served!r} at {redact(client.base_url)}: {problem}")
        shares = split_tokens(tokens, texts)
        total = max(1, sum(shares))
        return [Completion(text=t.strip(), tokens=k, seconds=seconds * k / total) for t, k in zip(texts, shares, strict=True)]

    def generate(
        self,
        prompts: list[str],
        *,
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 96,
        seed: int = 0,
        progress: bool = True,
        done: dict[int, list[list[Completion]]] | None = None,
        on_batch: Callable[[int, list[list[Completion]]], None] | None = None,
    ) -> list[list[Completion]]:
        """n completions per prompt, in prompt order (prompt ``i`` is sent with seed ``seed + i``)."""
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        from tqdm.auto import tqdm

        bs = self.batch_size
        results: list[list[Completion]] = [[] for _ in prompts]
        remaining: dict[int, int] = {}
        todo: list[int] = []
        for start in range(0, len(prompts), bs):
            idx = range(start, min(start + bs, len(prompts)))
            if done and start in done:
                for i, comps in zip(idx, done[start], strict=True):
                    results[i] = list(comps)
            else:
                remaining[start] = len(idx)
                todo.extend(idx)
        bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc="generate", unit="prompt", disable=not progress)
        if not todo:
            bar.close()
            return results
        client = make_client(base_url=self.base_url(), api_key_env=self.spec.api_key_env, timeout_s=self.spec.timeout_s,
                             max_retries=self.spec.max_retries, who="generate.server", connections=self.spec.concurrency)  # fmt: skip
        sampling = {"n": n, "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}
        pool = ThreadPoolExecutor(max_workers=self.spec.concurrency, thread_name_prefix="qmr-generate")
        queue = iter(todo)
        running: dict = {}
        try:
            def submit() -> None:
                for i in queue:  # at most `concurrency` queued: a failure stops the run without a backlog
                    running[pool.submit(self._request, client, prompts[i], seed=seed + i, **sampling)] = i
                    if len(running) >= self.spec.concurrency:
                        return

            submit()
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    i = running.pop(fut)
                    results[i] = fut.result()
                    start = i - i % bs
                    remaining[start] -= 1
                    if remaining[start] == 0 and on_batch is not None:
                        on_batch(start, [results[j] for j in range(start, min(start + bs, len(prompts)))])
                    bar.update(1)
                submit()
        except BaseException:
            self._failed = True
            for fut in running:
                fut.cancel()
            client.close()  # in-flight requests end now instead of at their deadline
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            bar.close()
        client.close()
        return results
