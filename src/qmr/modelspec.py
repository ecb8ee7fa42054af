"""The resolved model spec: ``models.<name>`` of params.yaml, written to ``models/spec/<name>.json``.

Every per-model stage (`base`, `quantize`, `generate`, `silver`, `restore`, `reevaluate`) reads its
model's spec from this file, never from ``params.yaml``, and dvc.yaml declares the file as their dep.
Two reasons:

* **Names with dots.** DVC splits a params dep at every dot, so ``models.qwen2.5-0.5b-instruct``
  cannot be declared; a file path can.
* **Local folders are dependencies.** For ``source: local`` the spec carries the identity (name, size,
  mtime of every file) of the model folder, so rebuilding a model at the same path changes the file and
  re-runs what depends on it. The `resolve` stage is ``always_changed`` (it is how DVC watches state
  outside the repository, here milliseconds of work); DVC re-runs the downstream stages only when the
  file's content changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qmr import paths
from qmr.config import CHECK_PATHS, Problem, field
from qmr.errors import UserError


@dataclass
class ModelSpec:
    """One model the pipeline runs on (a key of ``models``)."""

    source: Literal["toy", "hub", "local"] = field("toy", help="toy = train the embedded reasoner; hub = pinned hub id; local = a directory")
    hub_id: str | None = field(None, help="hub model id, e.g. Qwen/Qwen2.5-1.5B-Instruct (source: hub)")
    revision: str | None = field(None, help="hub commit/tag to pin (source: hub)")
    path: str | None = field(None, help="local Hugging Face model directory (source: local)")
    prompt_style: Literal["plain", "chat"] = field("plain", help="plain for the toy; chat uses the model's chat template")

    def check(self, key: str) -> list[Problem]:
        out = []
        if self.source == "hub" and not self.hub_id:
            out.append(Problem(f"{key}.hub_id", self.hub_id, "a hub model id when source is 'hub'"))
        if self.source == "hub" and not self.revision:
            out.append(Problem(f"{key}.revision", self.revision, "a pinned revision (commit or tag) when source is 'hub'"))
        if self.source == "local":
            if not self.path:
                out.append(Problem(f"{key}.path", self.path, "a local model directory when source is 'local'"))
            elif CHECK_PATHS.get() and not Path(self.path).is_dir():
                out.append(Problem(f"{key}.path", self.path, "an existing Hugging Face model directory (not found; "
                                   "or source: hub with hub_id and revision)"))
        return out


def spec_dict(spec, model: str) -> dict:
    """The spec as written: the params fields plus, for local models, the folder's identity."""
    from qmr.checkpoints import checkpoint_identity
    from qmr.config import to_dict

    out = {"name": model, **to_dict(spec)}
    if spec.source == "local":
        if not spec.path or not Path(spec.path).is_dir():
            raise UserError(f"models.{model}.path: got {spec.path!r}; allowed: an existing model directory")
        out["identity"] = checkpoint_identity(spec.path)
    return out


def write_spec(spec, model: str) -> Path:
    """Write ``models/spec/<model>.json``; its bytes change only when the spec (or the local folder) does."""
    from qmr.io import write_json

    path = paths.model_spec(model)
    write_json(path, spec_dict(spec, model))
    return path


def load_spec(model: str, models=None):
    """The ``ModelSpec`` of ``model``: from ``models/spec/<model>.json`` (written by the `resolve` stage,
    which DVC always runs first), or, when a stage runs by hand before any `resolve`, from ``models``
    (``params.models``; an unknown name is a UserError listing the known ones)."""
    from qmr.config import ConfigError, from_dict

    path = paths.model_spec(model)
    if not path.is_file():
        if models is not None:
            from qmr.errors import choose

            return choose("model", model, models)
        raise UserError(f"--model: got {model!r}; no resolved spec at {path}; run `dvc repro resolve@{model}` (or `qmr resolve --model {model}`) first")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); re-create it with `qmr resolve --model {model}`") from None
    fields = {k: v for k, v in raw.items() if k not in ("name", "identity")} if isinstance(raw, dict) else raw
    problems: list = []
    spec = from_dict(ModelSpec, fields, f"models.{model}", problems)
    if problems:
        raise ConfigError(problems, source=str(path))
    return spec
