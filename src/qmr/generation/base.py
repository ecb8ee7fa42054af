"""The generation backend interface and its config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from qmr.config import Problem, field
from qmr.endpoints import env_var_name_ok
from qmr.registry import Registry

# Generation backends: name -> the Backend class, imported when selected.
BACKENDS = Registry(
    "generate.backend",
    {
        "transformers": "qmr.generation.hf:TransformersBackend",
        "vllm": "qmr.generation.vllm_backend:VLLMBackend",
        "openai": "qmr.generation.openai_backend:OpenAIBackend",
    },
)
EXTRAS = {"vllm": "vllm"}  # backend -> the optional package it imports (installed by the user: no qmr extra)
Backend_ = BACKENDS.literal()

# What `generate.server.model` and `generate.server.served` may name, and what `generate.server.command` may use.
NAME_PLACEHOLDERS = ("model", "variant")
COMMAND_PLACEHOLDERS = ("path", "port", "served", "base_served", "adapter", "lora_args", "revision_args",
                        "max_model_len", "tensor_parallel_size")  # fmt: skip


def _placeholders_problem(template: str, allowed: tuple[str, ...]) -> str | None:
    """What is wrong with ``template``'s ``{name}`` placeholders (unknown names, stray braces), or None."""
    import string

    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        return f"a template with balanced braces ({exc})"
    unknown = sorted({n for n in names if n not in allowed})
    if unknown:
        return "placeholders among " + ", ".join("{" + a + "}" for a in allowed) + " (unknown: " + ", ".join(unknown) + ")"
    return None


@dataclass
class ServerSpec:
    """The OpenAI-compatible server `backend: openai` generates against: an external deployment
    (``base_url``), or one the stage starts per checkpoint (``command``) and stops when done."""

    base_url: str = field("", help="external mode: the deployment's base URL, e.g. http://gpu-node:8000/v1 ('' with `command`)")
    command: str = field(
        "", help="managed mode: the server command the stage starts for each checkpoint, e.g. `.venv-vllm/bin/vllm serve "
        "{path} --port {port} --served-model-name {base_served} {lora_args} --max-model-len {max_model_len}`; "
        "placeholders: " + ", ".join("{" + p + "}" for p in COMMAND_PLACEHOLDERS) + " (see the README)")
    model: str = field("{model}/{variant}", help="the served model name requests use; {model} = the models key, {variant} = the "
                       "variant slug (`<slug>+restored` for restored models, `aligned` in align)")
    served: dict[str, str] = field(default_factory=dict, help="variant -> served model name, for names no `model` template "
                                   "gives (e.g. fp: Qwen/Qwen2.5-7B-Instruct); variants not listed use `model`")
    api_key_env: str = field("", help="NAME of the environment variable holding the server's API key ('' = no key)")
    concurrency: int = field(32, help="requests in flight at once", ge=1, le=4096)
    max_retries: int = field(3, help="the openai client's retries on 429/5xx/timeouts (with its backoff)", ge=0, le=100)
    timeout_s: float = field(600.0, help="deadline per request in seconds (headers and body)")
    ready_timeout_s: float = field(900.0, help="managed mode: how long to wait for the started server's /v1/models")

    def served_name(self, model: str, variant: str) -> str:
        return self.served.get(variant) or self.model.format(model=model, variant=variant)

    def check(self, key: str) -> list[Problem]:
        out = []
        if self.command:
            import shlex

            if self.base_url:
                out.append(Problem(f"{key}.base_url", self.base_url, "'' with `command` (the stage serves at http://127.0.0.1:<a free port>/v1)"))
            try:
                shlex.split(self.command)
            except ValueError as exc:
                out.append(Problem(f"{key}.command", self.command, f"a command line ({exc})"))
            bad = _placeholders_problem(self.command, COMMAND_PLACEHOLDERS)
            if bad:
                out.append(Problem(f"{key}.command", self.command, bad))
        elif self.base_url and not self.base_url.startswith(("http://", "https://")):
            out.append(Problem(f"{key}.base_url", self.base_url, "an http(s):// URL"))
        bad = _placeholders_problem(self.model, NAME_PLACEHOLDERS)
        if bad or not self.model:
            out.append(Problem(f"{key}.model", self.model, bad or "a served model name (template)"))
        for variant, name in self.served.items():
            if not name:
                out.append(Problem(f"{key}.served.{variant}", name, "a served model name"))
        if self.api_key_env and not env_var_name_ok(self.api_key_env):
            shown = f"<{len(self.api_key_env)} characters, not shown: it may be a key>"
            out.append(Problem(f"{key}.api_key_env", shown, "the NAME of an environment variable (e.g. VLLM_API_KEY), not a key"))
        for name in ("timeout_s", "ready_timeout_s"):
            if not getattr(self, name) > 0:
                out.append(Problem(f"{key}.{name}", getattr(self, name), "a number > 0"))
        return out


@dataclass
class GenerateConfig:
    """How every variant generates its step-by-step solutions (the same for all variants)."""

    backend: Backend_ = field("transformers", help="generation backend")
    benchmarks: list[str] = field(default_factory=lambda: ["test"], help="benchmarks (keys of `benchmarks`) to generate on")
    samples: int = field(1, help="samples per problem (majority vote when > 1)")
    temperature: float = field(0.0, help="0 = greedy; > 0 samples")
    top_p: float = field(1.0, help="nucleus sampling mass when temperature > 0")
    max_new_tokens: int = field(96, help="generation length limit")
    batch_size: int = field(256, help="prompts per forward batch")
    device: Literal["auto", "cpu", "cuda"] = field("auto", help="auto = CUDA when present, else CPU")
    tensor_parallel_size: int = field(1, help="vLLM only (in-process, or {tensor_parallel_size} of a managed server): GPUs per model")
    max_model_len: int = field(0, help="vLLM only: context length the engine reserves (0 = max(4096, max_new_tokens + 2048), "
                               "capped at the model's own)", ge=0, le=10_000_000)
    api: Literal["completions", "chat"] = field(
        "completions", help="openai backend: completions sends the prompt as templated here (exact), chat sends the "
        "user message and lets the server apply the chat template")
    server: ServerSpec = field(default_factory=ServerSpec, help="openai backend: the server (external base_url or managed command)")

    def check(self, key: str) -> list[Problem]:
        out = []
        for name in ("samples", "max_new_tokens", "batch_size", "tensor_parallel_size"):
            if getattr(self, name) < 1:
                out.append(Problem(f"{key}.{name}", getattr(self, name), "an integer >= 1"))
        if self.temperature < 0:
            out.append(Problem(f"{key}.temperature", self.temperature, "a number >= 0"))
        if self.samples > 1 and self.temperature == 0:
            out.append(Problem(f"{key}.samples", self.samples, "1 when temperature is 0 (greedy samples are identical)"))
        if self.backend == "vllm" and self.device == "cpu":
            out.append(Problem(f"{key}.device", self.device, "'auto' or 'cuda' with backend vllm (vLLM needs a GPU; use backend transformers on CPU)"))
        if not 0 < self.top_p <= 1:
            out.append(Problem(f"{key}.top_p", self.top_p, "a number in (0, 1]"))
        if self.backend == "openai" and not (self.server.base_url or self.server.command):
            out.append(Problem(f"{key}.server", "base_url: '', command: ''", "a base_url (a deployment you serve) or a "
                               "command (a server the stage starts) with backend openai"))
        return out


@dataclass
class Completion:
    text: str
    tokens: int
    seconds: float


class Backend(Protocol):
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
    ) -> list[list[Completion]]:
        """n completions per prompt, in prompt order."""
        ...
