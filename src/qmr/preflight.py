"""`qmr params check --preflight`: what would stop the DAG late, found in seconds before it starts.

Without downloading weights or calling a model it checks

* **keys**: the API-key variable of every endpoint the DAG will call (llm judges of judged variants,
  the silver teacher of restored variants, the generation server) is set — and, with ``--reach``
  (default), that the endpoint answers ``GET /models`` with that key;
* **extras**: the packages the params need are importable (``datasets`` for hub benchmarks, ``vllm``
  for the in-process vLLM backend, ``llmcompressor`` for GPTQ/AWQ/SmoothQuant);
* **a GPU** where one is required (the vLLM backend, ``generate.device: cuda``), and the server
  program of the `openai` backend's managed mode;
* **the hub**: every hub model and dataset id resolves at its pinned revision, and gated ones are
  accessible (metadata only; skipped under HF_HUB_OFFLINE),

and prints the plan: the stages DVC will run and how many instances of each.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Endpoint:
    """One endpoint the DAG will call, with the params keys that name it."""

    key: str  # where its connection fields live (endpoints.<name> or judge.judges.<name>)
    base_url: str
    model: str
    api_key_env: str
    users: list[str] = field(default_factory=list)


def endpoints_called(params) -> list[Endpoint]:
    """Every endpoint a `dvc repro` on ``params`` will call (nothing for judges of no judged variant)."""
    found: dict[str, Endpoint] = {}

    def add(key: str, spec, user: str) -> None:
        ep = found.setdefault(key, Endpoint(key, spec.base_url, spec.model, spec.api_key_env))
        ep.users.append(user)

    endpoints = params.endpoints or {}
    if params.judge.variants:
        for name, spec in (params.judge.judges or {}).items():
            if spec.kind != "llm":
                continue
            if spec.endpoint:
                add(f"endpoints.{spec.endpoint}", endpoints[spec.endpoint], f"judge.judges.{name}")
            else:
                add(f"judge.judges.{name}", spec, f"judge.judges.{name}")
    if params.recovery.variants and params.recovery.teacher != "fp":
        add(f"endpoints.{params.recovery.teacher}", endpoints[params.recovery.teacher], "recovery.teacher")
    server = params.generate.server  # the `openai` generation backend, external mode
    if params.generate.backend == "openai" and server.base_url:
        add("generate.server", server, "generate")
    return list(found.values())


def server_command_problems(params) -> list[str]:
    """Managed mode of the `openai` backend: the server command's program must exist here."""
    import shlex
    import shutil

    server = params.generate.server
    if params.generate.backend != "openai" or not server.command:
        return []
    program = shlex.split(server.command)[0]
    if shutil.which(program) is None:
        return [f"generate.server.command: program {program!r} not found (not on PATH and not a file); allowed: the path of "
                "the server's executable, e.g. .venv-vllm/bin/vllm"]  # fmt: skip
    return []


def check_endpoint(ep: Endpoint, reach: bool, timeout_s: float = 10.0) -> str | None:
    """The problem with one endpoint (its key variable unset; unreachable; key refused), or None."""
    users = ", ".join(ep.users)
    if ep.api_key_env and not os.environ.get(ep.api_key_env):
        return f"{ep.key}.api_key_env: environment variable {ep.api_key_env} is not set (used by {users}); export the key in it"
    if not reach:
        return None
    from qmr.endpoints import make_client, redact

    try:
        client = make_client(base_url=ep.base_url, api_key_env=ep.api_key_env, timeout_s=timeout_s, max_retries=0, who=ep.key)
        client.models.list()
    except Exception as exc:  # noqa: BLE001 - every failure is the user's to see, in one redacted line
        status = getattr(exc, "status_code", None)
        if status in (401, 403):
            return f"{ep.key}: {ep.base_url} refused the key in {ep.api_key_env} (HTTP {status}; used by {users})"
        if status is not None:  # some servers have no /models: the endpoint answered, which is what we ask
            return None
        return f"{ep.key}: cannot reach {ep.base_url} ({type(exc).__name__}: {redact(str(exc))[:120]}; used by {users})"
    return None


def required_extras(params) -> dict[str, str]:
    """package -> why it is needed."""
    need: dict[str, str] = {}
    hub = [n for n, b in params.benchmarks.items() if b.source == "hub"]
    if hub:
        need["datasets"] = f"hub benchmarks ({', '.join(hub)}); pip install 'qmr[hub]'"
    if params.generate.backend == "vllm":
        need["vllm"] = "generate.backend: vllm (install vLLM in this environment, or use backend openai with `vllm serve`)"
    methods = sorted({v.method for v in (params.quantize.variants or {}).values()} & {"gptq", "awq", "smoothquant"})
    if methods:
        need["llmcompressor"] = f"quantize methods {', '.join(methods)}"
    if endpoints_called(params) or params.generate.backend == "openai":
        need["openai"] = "the endpoints the DAG calls"
    return need


def gpu_problems(params) -> list[str]:
    wants = []
    if params.generate.backend == "vllm":
        wants.append("generate.backend: vllm")
    if params.generate.device == "cuda":
        wants.append("generate.device: cuda")
    if not wants:
        return []
    import torch

    if torch.cuda.is_available():
        return []
    return [f"{w}: needs a CUDA GPU and torch.cuda.is_available() is False here" for w in wants]


def hub_problems(params) -> tuple[list[str], list[str]]:
    """(problems, notes) from asking the hub about every model and dataset (metadata only)."""
    from qmr.hub import offline, probe

    targets = [(f"models.{n}", m.hub_id, m.revision, "model") for n, m in params.models.items() if m.source == "hub"]
    targets += [(f"benchmarks.{n}", b.hub_id, b.revision, "dataset") for n, b in params.benchmarks.items() if b.source == "hub"]
    if not targets:
        return [], []
    if offline():
        return [], [f"HF_HUB_OFFLINE is set: {len(targets)} hub ids not checked (they must be in the local cache)"]
    return [p for t in targets if (p := probe(*t))], [f"hub: {len(targets)} ids resolve at their pinned revisions"]


def plan(dvc_yaml: str = "dvc.yaml") -> list[str]:
    """The stages of the DAG and the number of instances of each, in DVC's order, read by DVC itself."""
    if not os.path.exists(dvc_yaml):
        return [f"(no {dvc_yaml} here: run from the project root to see the plan)"]
    from dvc.repo import Repo

    with Repo(".") as repo:
        names = [s.name for s in repo.index.stages]
        changed = set()
        try:
            changed = {name.split(":")[-1] for name in repo.status()}
        except Exception as exc:  # noqa: BLE001 - a plan without the change set is still a plan
            log.debug("dvc status failed: %s", exc)
    counts = Counter(n.split("@")[0] for n in names)
    todo = Counter(n.split("@")[0] for n in names if n in changed)
    return [f"  {stage:<12} {counts[stage]:>4} instance(s), {todo[stage]:>4} to run" for stage in dict.fromkeys(n.split("@")[0] for n in names)]


def preflight(params, reach: bool = True) -> tuple[list[str], list[str]]:
    """(problems, report lines)."""
    problems: list[str] = []
    lines: list[str] = []
    unset: dict[str, list[str]] = {}  # one line per missing variable, naming every endpoint that needs it
    for ep in endpoints_called(params):
        if ep.api_key_env and not os.environ.get(ep.api_key_env):
            unset.setdefault(ep.api_key_env, []).append(f"{ep.key} ({', '.join(ep.users)})")
            continue
        problem = check_endpoint(ep, reach)
        if problem:
            problems.append(problem)
        else:
            lines.append(f"endpoint {ep.key}: {'answers' if reach else 'key set'} ({ep.model} at {ep.base_url}; used by {', '.join(ep.users)})")
    problems[:0] = [f"environment variable {var} is not set; needed by {', '.join(users)}" for var, users in unset.items()]
    for package, why in required_extras(params).items():
        if importlib.util.find_spec(package) is None:
            problems.append(f"package {package} is not installed; needed for {why}")
    problems += gpu_problems(params)
    problems += server_command_problems(params)
    hub, notes = hub_problems(params)
    problems += hub
    lines += notes
    return problems, lines
