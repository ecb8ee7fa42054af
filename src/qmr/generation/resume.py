"""Resumable generation: each finished batch is appended to a partial file; a killed run called
again with the same arguments reuses those batches and ends with identical completions."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def resume_state(partial_path, fingerprint: dict):
    """(appender, finished batches) for a resumable run: an earlier run's finished batches are reused
    only when everything that decides them (checkpoint, prompts, sampling, batching) is unchanged."""
    from qmr.generation import Completion
    from qmr.io import JsonlAppender

    appender = JsonlAppender(partial_path)
    rows = appender.existing()
    if rows and rows[0].get("fingerprint") != fingerprint:
        appender.close()
        partial_path.unlink()
        appender, rows = JsonlAppender(partial_path), []
    if not rows:
        appender.append({"fingerprint": fingerprint})
    done = {r["batch"]: [[Completion(**c) for c in comps] for comps in r["completions"]] for r in rows[1:]}
    if done:
        log.info("resuming %s: %d finished batch(es) from an interrupted run", partial_path, len(done))
    return appender, done


def resumable_generate(backend, prompts: list[str], sampling: dict, partial, identity: dict, progress: bool = True) -> list:
    """``backend.generate(prompts, **sampling)``, appending each finished batch to ``partial``: a killed
    run called again with the same arguments reuses those batches and ends with identical completions.
    ``identity`` names everything else that decides them (checkpoint files, batch size, threads). The
    caller removes ``partial`` once its own output is written. Backends without resume support just run.
    """
    import dataclasses
    import hashlib
    import json

    if not getattr(backend, "supports_resume", False):
        return backend.generate(prompts, **sampling, progress=progress)
    fingerprint = {**sampling, **identity, **getattr(backend, "resume_identity", {}),
                   "prompts": hashlib.sha256(json.dumps(prompts).encode()).hexdigest()}  # fmt: skip
    appender, done = resume_state(partial, fingerprint)
    try:
        return backend.generate(
            prompts, **sampling, progress=progress, done=done,
            on_batch=lambda start, comps: appender.append({"batch": start, "completions": [[dataclasses.asdict(c) for c in cs] for cs in comps]}),
        )  # fmt: skip
    finally:
        appender.close()
