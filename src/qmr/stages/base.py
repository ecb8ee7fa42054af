"""Stage `base`: train the toy reasoner, or pin a real model, into models/base/<model>."""

from __future__ import annotations

import logging

from qmr import paths
from qmr.checkpoints import write_pointer
from qmr.determinism import kernel_info, set_determinism
from qmr.io import write_json
from qmr.modelspec import load_spec, spec_dict

log = logging.getLogger(__name__)


def run(params, model: str) -> None:
    spec = load_spec(model, params.models)
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
        return
    # hub / local: a pointer (the local folder's identity inside, so a rebuilt folder changes this output)
    if spec.source == "hub":
        from qmr.errors import UserError
        from qmr.hub import probe

        problem = probe(f"models.{model}", spec.hub_id, spec.revision, "model")  # before any download or GPU work
        if problem:
            raise UserError(problem)
        write_pointer(out, spec.hub_id, spec.revision)
        info = {"source": "hub", "hub_id": spec.hub_id, "revision": spec.revision}
    else:
        identity = spec_dict(spec, model)["identity"]
        write_pointer(out, spec.path, identity=identity)
        info = {"source": "local", "files": len(identity), "bytes": sum(size for _, size, _ in identity)}
    write_json(paths.METRICS / "base" / f"{model}.json", info)
    write_json(paths.speed("base", model), {"threads": params.threads, "kernels": kernel_info()})
    log.info("pinned %s model %s: %s", spec.source, model, info)
