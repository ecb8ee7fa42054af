"""Stage `base`: train the toy reasoner, or pin a real model, into models/base/<model>."""

from __future__ import annotations

import logging

from qmr import paths
from qmr.checkpoints import write_pointer
from qmr.determinism import kernel_info, set_determinism
from qmr.errors import choose
from qmr.io import write_json

log = logging.getLogger(__name__)


def run(params, model: str) -> None:
    spec = choose("model", model, params.models)
    out = paths.base_model(model)
    if spec.source == "toy":
        from qmr.toy.train import train_toy_model

        set_determinism(params.base.toy.seed, params.threads)
        # the same generator settings as `prepare`, so training and evaluation problems look alike
        stats = train_toy_model(params.base.toy, out, threads=params.threads, data=params.prepare.toy)
        timing = {k: stats.pop(k) for k in ("seconds", "tokens_per_s")}
        write_json(paths.METRICS / "base" / f"{model}.json", {k: v for k, v in stats.items() if isinstance(v, (int, float, str))})
        write_json(paths.speed("base", model),
                   {"steps": stats["steps"], "threads": params.threads, **timing, "kernels": kernel_info()})
        log.info("trained toy model %s: %d steps, final loss %s, %d parameters", model, stats["steps"], stats["final_loss"], stats["n_params"])
    elif spec.source == "hub":
        write_pointer(out, spec.hub_id, spec.revision)
    else:
        write_pointer(out, spec.path)
