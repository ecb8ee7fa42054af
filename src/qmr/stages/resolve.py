"""Stage `resolve`: ``models.<model>`` of params.yaml -> models/spec/<model>.json (see qmr.modelspec)."""

from __future__ import annotations

import logging

from qmr.errors import choose
from qmr.modelspec import write_spec

log = logging.getLogger(__name__)


def run(params, model: str) -> None:
    spec = choose("model", model, params.models)
    path = write_spec(spec, model)
    log.info("resolved model %s (%s) -> %s", model, spec.source, path)
