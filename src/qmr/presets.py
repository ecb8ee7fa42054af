"""Model presets: the paper's real-model settings composed into one params file.

A preset is three YAML files merged section by section (within a top-level section, a later file's
keys replace the earlier one's): ``presets/paper.yaml`` (benchmarks, quantization variants, generation, recovery,
restore), ``presets/judges-paper.yaml`` (the judge ensemble and voting rules) and
``presets/models/<name>.yaml`` (the model, pinned by hub id and revision).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from qmr.errors import UserError

PRESETS = Path("presets")
LAYERS = ("paper.yaml", "judges-paper.yaml")


def available(root: Path = PRESETS) -> list[str]:
    return sorted(p.stem for p in (root / "models").glob("*.yaml"))


def compose(name: str, root: Path = PRESETS) -> dict:
    """The params dict of preset ``name``; ValueError naming the choices when there is no such preset."""
    model_file = root / "models" / f"{name}.yaml"
    if not model_file.is_file():
        raise UserError(f"preset: got {name!r}; allowed: {', '.join(available(root)) or '(none found under ' + str(root / 'models') + ')'}")
    params: dict = {}
    for path in [root / layer for layer in LAYERS] + [model_file]:
        for section, value in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).items():
            if isinstance(value, dict) and isinstance(params.get(section), dict) and section != "models":
                params[section] = {**params[section], **value}
            else:
                params[section] = value
    return params


def dump(params: dict, name: str) -> str:
    header = f"# Composed by `qmr params preset {name}` from presets/{{{', '.join(LAYERS)}}} and presets/models/{name}.yaml\n"
    return header + yaml.safe_dump(params, sort_keys=False, default_flow_style=False)
