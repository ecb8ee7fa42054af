"""Checkpoints on disk: pointer files, identity, early checks.

A directory holding ``qmr_model.json`` (``{"path": "<dir or hub id>", "revision": ...}``) is a
*pointer*: every loader follows it (a relative ``path`` resolves against the working directory).
`base` writes one for hub/local models, `align` with ``method: none``, `quantize` for ``fp`` and
``prequantized`` variants. :func:`checkpoint_identity` names a checkpoint's files so that resumable
generation and training notice when it was rewritten.
"""

from __future__ import annotations

import json
from pathlib import Path

from qmr.io import DataFileError

POINTER_FILE = "qmr_model.json"


class CheckpointError(DataFileError):
    """A model path that is neither a usable checkpoint directory nor a hub id."""


def _looks_like_hub_id(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not path.startswith((".", "~"))


def check_checkpoint(path: str) -> None:
    """Fail early, naming the path, when ``path`` cannot be a checkpoint: a missing directory that is
    not a hub id (``org/name``), a directory without ``config.json``, or a ``config.json`` that is not
    JSON. Hub ids are left to transformers (and its offline mode)."""
    where = Path(path)
    if not where.exists():
        if _looks_like_hub_id(path):
            return
        raise CheckpointError(
            f"{path}: checkpoint not found; allowed: a model directory with config.json (run the stage that "
            "writes it, e.g. `dvc repro quantize`) or a hub id 'org/name'"
        )
    config = where / "config.json"
    if not where.is_dir() or not config.is_file():
        raise CheckpointError(f"{path}: not a checkpoint; allowed: a directory holding config.json and the weights")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config}: corrupt checkpoint config (not valid JSON: {exc}); re-create it (`dvc repro -f` the stage that wrote it)") from None
_MAX_POINTER_HOPS = 8


def resolve_model_path(path: str | Path, revision: str | None = None) -> tuple[str, str | None]:
    """Follow ``qmr_model.json`` pointers; return (local dir or hub id, revision)."""
    current, rev = str(path), revision
    for _ in range(_MAX_POINTER_HOPS):
        pointer = Path(current) / POINTER_FILE
        if not pointer.is_file():
            return current, rev
        try:
            data = json.loads(pointer.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{pointer}: not valid JSON ({exc.msg}); re-create it (`dvc repro -f` the stage that wrote it)") from None
        if not isinstance(data, dict) or not isinstance(data.get("path"), str) or not data["path"]:
            raise CheckpointError(
                f'{pointer}: expected {{"path": "<dir or hub id>", "revision": ...}}, got {data!r}'
            )
        current, rev = data["path"], data.get("revision")
    raise CheckpointError(f"{path}: more than {_MAX_POINTER_HOPS} nested {POINTER_FILE} pointers")


def write_pointer(directory: str | Path, target: str, revision: str | None = None, identity: list | None = None) -> Path:
    """Write ``directory/qmr_model.json`` pointing at ``target`` (a dir or hub id); ``identity`` (of a
    local folder, see :func:`checkpoint_identity`) makes the pointer change when the folder does."""
    from qmr.io import write_json

    out = Path(directory) / POINTER_FILE
    write_json(out, {"path": str(target), "revision": revision, **({"identity": identity} if identity is not None else {})})
    return out


def checkpoint_identity(path: str | None) -> list | None:
    """Name, size and mtime of every file of a local checkpoint: changes whenever it is rewritten."""
    if path is None:
        return None
    resolved, revision = resolve_model_path(path)
    root = Path(resolved)
    if not root.is_dir():
        return [resolved, revision]
    return [[str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(root.rglob("*")) if f.is_file()]



def enable_kv_cache(directory: str | Path) -> None:
    """Switch the KV cache back on in a checkpoint just written to ``directory`` (``config.json`` and,
    where present, ``generation_config.json``). Trainers turn it off (transformers' ``Trainer`` sets
    ``config.use_cache = args.use_cache``, False) and llmcompressor re-saves the *source's* config.json,
    so a checkpoint would otherwise carry ``use_cache: false`` on into every later stage."""
    for name in ("config.json", "generation_config.json"):
        path = Path(directory) / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("use_cache", True) is not True or name == "config.json" and "use_cache" not in data:
            data["use_cache"] = True
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
