"""The boundary to the Hugging Face hub: one clear line for every way it can fail.

``huggingface_hub``/``datasets`` raise a zoo of exceptions (httpx/requests connection errors after
retries, ``GatedRepoError``, ``RevisionNotFoundError``, ``RepositoryNotFoundError``, offline-mode
errors), each with a long traceback. :func:`hub_errors` turns them into one :class:`HubError` line
naming the params key, the hub id and revision, and what to do; :func:`probe` asks the hub about a
repository and revision (metadata only, seconds) so `prepare`, `base` and `qmr params check --preflight`
can fail before any download.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from qmr.errors import UserError

PROBE_TIMEOUT_S = 10.0


class HubError(UserError, RuntimeError):
    """The hub cannot give what params ask for (unreachable, gated, missing id or revision)."""


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE / HF_DATASETS_OFFLINE, as huggingface_hub and datasets
    read them): the user asked for the local cache only."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in names)


def describe(exc: BaseException, key: str, repo: str, revision: str | None, kind: str) -> str | None:
    """One line for a hub failure, or None when ``exc`` is not one (a bug: let it propagate)."""
    from huggingface_hub import errors as hf

    where = f"{key}: {kind} {repo!r}" + (f" at revision {revision!r}" if revision else "")
    url = f"https://huggingface.co/{'datasets/' if kind == 'dataset' else ''}{repo}"
    if isinstance(exc, hf.GatedRepoError):
        return f"{where} is gated; accept its terms at {url} and set HF_TOKEN (or `hf auth login`)"
    if isinstance(exc, hf.RevisionNotFoundError):
        return f"{where}: revision not found; allowed: a commit SHA, branch or tag of {url}"
    if isinstance(exc, hf.RepositoryNotFoundError):
        return f"{where}: not found on the hub (or private: set HF_TOKEN); check the id at {url}"
    if isinstance(exc, hf.OfflineModeIsEnabled) or (offline() and isinstance(exc, (FileNotFoundError, ConnectionError, OSError))):
        return (f"{where}: not in the local cache and HF_HUB_OFFLINE is set; download it once online "
                "(`qmr prepare` / `dvc repro`), or unset HF_HUB_OFFLINE")  # fmt: skip
    if isinstance(exc, hf.HfHubHTTPError) and not _is_connection_error(exc):
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        return f"{where}: the hub answered HTTP {status}; try again later or check HF_TOKEN"
    if _is_connection_error(exc):
        return (f"{where}: cannot reach the Hugging Face hub ({type(exc).__name__}); check the network or "
                "HF_ENDPOINT, set HF_HUB_OFFLINE=1 to use files cached earlier, or use source: local with a path")  # fmt: skip
    return None


def _is_connection_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"ConnectError", "ConnectTimeout", "TransportError", "NetworkError", "TimeoutException", "ConnectionError",
                "LocalEntryNotFoundError"}:  # fmt: skip  (the last: a download that fell back to an empty cache)
        return True
    text = str(exc)
    return "Couldn't reach" in text or "Name or service not known" in text or "Connection refused" in text


def describe_any(exc: BaseException) -> str | None:
    """The safety net of every stage (``qmr.cli``): a hub failure raised anywhere (transformers, peft,
    datasets) as one line, the repository taken from the message where it names one."""
    import re

    try:
        from huggingface_hub import errors as hf
    except ImportError:  # pragma: no cover - a core dependency
        return None
    hub_types = (hf.GatedRepoError, hf.RevisionNotFoundError, hf.RepositoryNotFoundError, hf.OfflineModeIsEnabled, hf.LocalEntryNotFoundError)
    if not (isinstance(exc, hub_types) or "huggingface" in str(exc).lower() or "Couldn't reach" in str(exc)):
        return None
    found = re.search(r"['\"]([\w.-]+/[\w.-]+)['\"]", str(exc))
    kind = "dataset" if "dataset" in str(exc).lower() else "model"
    return describe(exc, "hub", found.group(1) if found else "(see the log)", None, kind)


@contextlib.contextmanager
def hub_errors(key: str, repo: str, revision: str | None, kind: str) -> Iterator[None]:
    """Run a hub download; a hub failure becomes one :class:`HubError` line (no traceback)."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified below; anything else propagates unchanged
        line = describe(exc, key, repo, revision, kind)
        if line is None:
            raise
        raise HubError(line) from None


def probe(key: str, repo: str, revision: str | None, kind: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Ask the hub whether ``repo`` at ``revision`` exists and is readable (metadata only): None when it
    is, else the one-line problem. Offline mode is not a problem here (nothing is asked)."""
    if offline():
        return None
    from huggingface_hub import HfApi

    api = HfApi()
    info = api.dataset_info if kind == "dataset" else api.model_info
    try:
        found = info(repo, revision=revision, timeout=timeout)
        if getattr(found, "gated", False):  # metadata is public; the files need accepted terms and a token
            api.auth_check(repo, repo_type=kind)
    except Exception as exc:  # noqa: BLE001
        return describe(exc, key, repo, revision, kind) or f"{key}: {kind} {repo!r}: {type(exc).__name__}"
    return None
