"""The generation backend interface and its config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from qmr.config import Problem, field
from qmr.registry import Registry

# Generation backends: name -> the Backend class, imported when selected.
BACKENDS = Registry(
    "generate.backend",
    {
        "transformers": "qmr.generation.hf:TransformersBackend",
        "vllm": "qmr.generation.vllm_backend:VLLMBackend",
    },
)
EXTRAS = {"vllm": "vllm"}  # backend -> the optional extra (and top-level package) it needs
Backend_ = BACKENDS.literal()


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
    tensor_parallel_size: int = field(1, help="vLLM only: GPUs per model")

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
