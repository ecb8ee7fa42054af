"""Model presets: the paper's real-model settings composed into one params file, plus the smoke overlay.

A preset is three YAML files merged section by section (within a top-level section, a later file's
keys replace the earlier one's): ``presets/paper.yaml`` (benchmarks, quantization variants, generation, recovery,
restore), ``presets/judges-paper.yaml`` (the judge ensemble and voting rules) and
``presets/models/<name>.yaml`` (the model, pinned by hub id and revision). Every benchmark of a preset
loads from the dataset hub, pinned by id and commit, so composing needs no file on disk.

``apply_sets`` overrides keys of a composed dict (``qmr params preset NAME --set key=value``);
``smoke`` caps every benchmark, training stage and generation so the whole DAG runs in minutes
(``--smoke``; ``qmr params smoke`` applies it to any params file, e.g. the toy default, or prints it
as ``dvc exp run -S`` overrides via ``exp_args``).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from qmr.config import yaml_loader
from qmr.errors import UserError, did_you_mean

PRESETS = Path("presets")
LAYERS = ("paper.yaml", "judges-paper.yaml")

# --smoke: problems per benchmark, optimizer steps per training stage, generated tokens per answer.
SMOKE_PROBLEMS = 8
SMOKE_STEPS = 2
SMOKE_TOY_STEPS = 20  # the toy base trains from scratch: a few more (still about a second) than an adapter
SMOKE_NEW_TOKENS = 64


def available(root: Path = PRESETS) -> list[str]:
    return sorted(p.stem for p in (root / "models").glob("*.yaml"))


def compose(name: str, root: Path = PRESETS) -> dict:
    """The params dict of preset ``name``; UserError naming the choices when there is no such preset."""
    model_file = root / "models" / f"{name}.yaml"
    if not model_file.is_file():
        raise UserError(f"preset: got {name!r}; allowed: {', '.join(available(root)) or '(none found under ' + str(root / 'models') + ')'}"
                        + did_you_mean(name, available(root)))  # fmt: skip
    params: dict = {}
    for path in [root / layer for layer in LAYERS] + [model_file]:
        layer = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml_loader()) or {}  # noqa: S506 - a SafeLoader subclass
        for section, value in layer.items():
            if isinstance(value, dict) and isinstance(params.get(section), dict) and section != "models":
                params[section] = {**params[section], **value}
            else:
                params[section] = value
    return params


def listing(root: Path = PRESETS) -> list[str]:
    """One line per preset: name, hub id (and revision), size hint."""
    rows = []
    for name in available(root):
        models = (yaml.safe_load((root / "models" / f"{name}.yaml").read_text(encoding="utf-8")) or {}).get("models") or {}
        spec = next(iter(models.values()), {}) or {}
        hub = spec.get("hub_id") or spec.get("path") or "?"
        rev = f"@{str(spec['revision'])[:12]}" if spec.get("revision") else ""
        rows.append((name, hub + rev, size_hint(hub)))
    width = max((len(r[0]) for r in rows), default=0)
    hub_width = max((len(r[1]) for r in rows), default=0)
    return [f"{n:{width}s}  {h:{hub_width}s}  {s}" for n, h, s in rows]


def size_hint(hub_id: str) -> str:
    """'1.5B parameters, ~3 GB in bf16' from a hub id such as Qwen/Qwen2.5-1.5B-Instruct ('' when unknown)."""
    m = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z])", hub_id.split("/")[-1])
    if not m:
        return ""
    billions = float(m.group(1))
    return f"{m.group(1)}B parameters, ~{2 * billions:.3g} GB in bf16"


def dump(params: dict, name: str, sets: list[str] | tuple[str, ...] = (), smoked: bool = False) -> str:
    how = f"qmr params preset {name}" + (" --smoke" if smoked else "") + "".join(f" --set {s}" for s in sets)
    header = f"# Composed by `{how}` from presets/{{{', '.join(LAYERS)}}} and presets/models/{name}.yaml\n"
    return header + yaml.safe_dump(params, sort_keys=False, default_flow_style=False)


# --------------------------------------------------------------------------------------------------
# --set key=value


def apply_sets(params: dict, sets: list[str] | tuple[str, ...]) -> dict:
    """A copy of ``params`` with each ``key=value`` applied. The key is dotted; since model names contain
    dots (``models.qwen2.5-0.5b-instruct.path``), each level takes the longest run of parts that names an
    existing key or a field of the schema. The value is parsed as YAML (``8``, ``true``, ``null``,
    ``[a, b]``, text). An unknown key is a UserError naming it, with a did-you-mean."""
    from qmr.params import Params

    out = copy.deepcopy(params)
    for item in sets:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--set: got {item!r}; allowed: KEY=VALUE, e.g. generate.max_new_tokens=1024")
        try:
            value = yaml.load(text, Loader=yaml_loader())  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            raise UserError(f"--set {key}: value {text!r} is not valid YAML ({' '.join(str(exc).split())[:120]})") from None
        _set_path(out, key.strip(), value, Params)
    return out


def _schema_children(tp: Any) -> tuple[dict[str, Any] | None, Any]:
    """(field name -> type) of a dataclass type, or (None, item type) of a ``dict[str, T]``; (None, None) for a leaf."""
    tp = _strip_optional(tp)
    if dataclasses.is_dataclass(tp):
        return dict(typing.get_type_hints(tp)), None
    if typing.get_origin(tp) is dict:
        args = typing.get_args(tp)
        return None, args[1] if args else Any
    return None, None


def _strip_optional(tp: Any) -> Any:
    args = typing.get_args(tp)
    if args and type(None) in args and typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", ())):
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else tp
    return tp


def _set_path(root: dict, key: str, value: Any, schema: Any) -> None:
    parts = key.split(".")
    node: Any = root
    tp: Any = schema
    done: list[str] = []
    i = 0
    while i < len(parts):
        if not isinstance(node, dict):
            raise UserError(f"--set {key}: {'.'.join(done)} is {node!r}, not a section; allowed: a key under a mapping")
        fields, item_tp = _schema_children(tp)
        names = list(node) + [f for f in (fields or {}) if f not in node]
        j = next((j for j in range(len(parts), i, -1) if ".".join(parts[i:j]) in names), None)
        if j is None:
            where = ".".join(done) or "the top level"
            guess = next((g for k in range(len(parts), i, -1) if (g := did_you_mean(".".join(parts[i:k]), names))), "")
            raise UserError(f"--set {key}: no key {'.'.join(parts[i:])!r} under {where}; allowed: {', '.join(names) or '(none)'}" + guess)
        name = ".".join(parts[i:j])
        done.append(name)
        tp = fields[name] if fields and name in fields else item_tp
        if j == len(parts):
            node[name] = value
            return
        if node.get(name) is None:
            node[name] = {}
        node = node[name]
        i = j


# --------------------------------------------------------------------------------------------------
# --smoke


def smoke(params: dict, problems: int = SMOKE_PROBLEMS, steps: int = SMOKE_STEPS) -> dict:
    """A copy of ``params`` that runs the whole DAG in minutes, as a check before the real run: every
    benchmark capped at ``problems`` problems (size 0 = all becomes the cap), every training stage at
    ``steps`` optimizer steps (the toy base at ``SMOKE_TOY_STEPS``), calibration, evaluation samples,
    generated tokens, teacher tries and silver pairs small. Models, variants, judges and the DAG's shape
    are kept, so every stage instance of the real run runs once."""
    p = copy.deepcopy(params)

    def cap(section: dict, key: str, limit: int, zero_means_all: bool = True) -> None:
        value = section.get(key)
        if value is None or (value == 0 and zero_means_all) or value > limit:
            section[key] = limit

    for spec in (p.get("benchmarks") or {}).values():
        if isinstance(spec, dict):
            cap(spec, "size", problems)
    toy = (p.get("base") or {}).get("toy")
    if isinstance(toy, dict):
        toy["train_seconds"] = 0
        cap(toy, "max_steps", SMOKE_TOY_STEPS)
        toy["warmup_steps"] = min(int(toy.get("warmup_steps", 30)), SMOKE_TOY_STEPS // 4)
    for section in ("align", "restore"):
        p.setdefault(section, {})["max_steps"] = steps  # > 0 overrides epochs
    align = p["align"]
    cap(align, "samples", problems)
    cap(align, "eval_samples", problems, zero_means_all=False)
    cap(align, "max_new_tokens", SMOKE_NEW_TOKENS, zero_means_all=False)
    cal = p.setdefault("quantize", {}).setdefault("calibration", {})
    cap(cal, "samples", problems, zero_means_all=False)
    gen = p.setdefault("generate", {})
    cap(gen, "max_new_tokens", SMOKE_NEW_TOKENS, zero_means_all=False)
    if gen.get("samples", 1) > 1:
        gen["samples"] = 2
    rec = p.setdefault("recovery", {})
    cap(rec, "max_pairs", problems)
    cap(rec, "teacher_tries", 2, zero_means_all=False)
    return p


def exp_args(before: dict, after: dict, prefix: str = "") -> list[str]:
    """The ``dvc exp run -S key=value`` arguments that turn ``before`` into ``after`` (changed leaves;
    ``+key=value``, Hydra's append, for a key ``before`` does not have)."""
    out: list[str] = []
    for key, value in after.items():
        dotted = f"{prefix}{key}"
        old = before.get(key) if isinstance(before, dict) else None
        if isinstance(value, dict) and isinstance(old, dict):
            out += exp_args(old, value, dotted + ".")
        elif value != old:
            text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
            text = text[:-4].strip() if text.endswith("\n...") else text
            out += ["-S", f"{'' if isinstance(before, dict) and key in before else '+'}{dotted}={text}"]
    return out
