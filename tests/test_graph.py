"""The pipeline graph tells the truth: these tests fail when dvc.yaml drifts from the code.

(a) no stage module imports another stage module;
(b) every stage's code deps in dvc.yaml cover the transitive closure of the `qmr` modules its stage
    module imports (statically: every `import` at any depth, plus registry entries naming a module);
(c) the stages of dvc.yaml = the CLI's stage commands = src/qmr/stages/*.py.

The checks are plain functions over (source root, dvc.yaml) so that the tests below can also show
them failing on a deliberately broken copy.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
# packages whose __init__ every module import runs but which hold no behaviour (checked below)
INERT = ("qmr/__init__.py", "qmr/stages/__init__.py")
_MODULE_STRING = re.compile(r"^qmr(\.[a-z_][a-z0-9_]*)+(:[A-Za-z_][A-Za-z0-9_]*)?$")  # registry entries


def module_path(src: Path, name: str) -> Path | None:
    base = src / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(src: Path, path: Path) -> set[str]:
    """`qmr` modules that ``path`` imports anywhere (module level or inside functions), and module
    names written as strings (registry tables such as generation.BACKENDS)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(src).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "qmr")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            if base.split(".")[0] != "qmr":
                continue
            found.add(base)
            for alias in node.names:  # `from qmr import paths`: a module, not a name
                if module_path(src, f"{base}.{alias.name}"):
                    found.add(f"{base}.{alias.name}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.match(node.value):
            name = node.value.split(":")[0]
            if module_path(src, name):
                found.add(name)
    return found


def import_closure(src: Path, module: str) -> set[Path]:
    """Source files of ``module`` and of every `qmr` module it imports, transitively, with the
    ``__init__`` of each package on the way (importing ``qmr.a.b`` runs ``qmr/a/__init__.py``)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in seen or module_path(src, prefix) is None:
                continue
            seen.add(prefix)
            todo.extend(imported_modules(src, module_path(src, prefix)))
    return {module_path(src, name) for name in seen}


def stage_deps(dvc: dict) -> dict[str, list[str]]:
    return {name: (stage.get("do", stage).get("deps") or []) for name, stage in dvc["stages"].items()}


def _dep_path(dep) -> str:
    return next(iter(dep)) if isinstance(dep, dict) else dep


def covered(file: str, deps: list[str]) -> bool:
    return any(file == d or file.startswith(d.rstrip("/") + "/") for d in deps)


def uncovered_imports(root: Path, dvc: dict) -> dict[str, list[str]]:
    """stage -> source files in its import closure that its dvc.yaml deps do not cover."""
    src = root / "src"
    out = {}
    for stage, deps in stage_deps(dvc).items():
        deps = [_dep_path(d) for d in deps]
        files = import_closure(src, f"qmr.stages.{stage}")
        rel = sorted(str(f.relative_to(root)) for f in files if str(f.relative_to(src)) not in INERT)
        missing = [f for f in rel if not covered(f, deps)]
        if missing:
            out[stage] = missing
    return out


def stage_imports_stage(src: Path) -> dict[str, list[str]]:
    out = {}
    for path in sorted((src / "qmr" / "stages").glob("*.py")):
        if path.name == "__init__.py":
            continue
        bad = sorted(m for m in imported_modules(src, path) if m.startswith("qmr.stages."))
        if bad:
            out[path.stem] = bad
    return out


def cli_stage_commands(src: Path) -> set[str]:
    """Stage names the CLI runs through `_run_stage(ctx, "<stage>", ...)`."""
    tree = ast.parse((src / "qmr" / "cli.py").read_text(encoding="utf-8"))
    return {
        node.args[1].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_run_stage" and isinstance(node.args[1], ast.Constant)
    }


def _dvc(root: Path = ROOT) -> dict:
    return yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------
# the checks on the project itself
# ------------------------------------------------------------------------------------------------


def test_no_stage_imports_a_stage():
    assert stage_imports_stage(SRC) == {}


def test_each_stage_declares_its_import_closure():
    assert uncovered_imports(ROOT, _dvc()) == {}


def test_dvc_stages_cli_commands_and_stage_modules_agree():
    from click.testing import CliRunner

    from qmr.cli import main

    modules = {p.stem for p in (SRC / "qmr" / "stages").glob("*.py") if p.name != "__init__.py"}
    in_dvc = set(_dvc()["stages"])
    in_cli = cli_stage_commands(SRC)
    assert in_dvc == modules == in_cli, {"dvc.yaml": sorted(in_dvc), "stages/": sorted(modules), "cli": sorted(in_cli)}
    for stage in in_cli:  # and each one is a registered command that calls `dvc.yaml`'s cmd
        assert stage in main.commands
        assert CliRunner().invoke(main, [stage, "--help"]).exit_code == 0
    for name, stage in _dvc()["stages"].items():
        assert stage.get("do", stage)["cmd"].split()[:2] == ["qmr", name]


def test_inert_package_inits_hold_no_behaviour():
    """The two package __init__ files left out of the closure hold only a docstring and constants."""
    for rel in INERT:
        tree = ast.parse((SRC / rel).read_text(encoding="utf-8"))
        kinds = {type(node).__name__ for node in tree.body}
        assert kinds <= {"Expr", "Assign", "ImportFrom"}, (rel, kinds)
        assert all(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body if isinstance(n, ast.ImportFrom))


def test_no_import_cycle():
    """Module-level imports form no cycle (lazy imports inside functions may point back)."""
    src = SRC
    graph: dict[str, set[str]] = {}
    for path in (src / "qmr").rglob("*.py"):
        name = ".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        deps = set()
        for node in tree.body:  # module level only
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qmr"):
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names if module_path(src, f"{node.module}.{a.name}"))
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("qmr"))
        graph[name] = {d for d in deps if d != name and module_path(src, d)}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


# ------------------------------------------------------------------------------------------------
# the same checks fail on a deliberately broken copy
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copytree(SRC, tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    return tmp_path


def test_broken_copy_stage_importing_a_stage_is_caught(copy: Path):
    restore = copy / "src" / "qmr" / "stages" / "restore.py"
    restore.write_text(restore.read_text() + "\n\ndef _late():\n    from qmr.stages.quantize import run  # noqa\n")
    assert stage_imports_stage(copy / "src") == {"restore": ["qmr.stages.quantize"]}
    # and `quantize`'s files are now part of restore's closure, which dvc.yaml does not declare
    assert "src/qmr/stages/quantize.py" in uncovered_imports(copy, _dvc(copy))["restore"]


def test_broken_copy_removed_dep_is_caught(copy: Path):
    dvc = _dvc(copy)
    deps = dvc["stages"]["reevaluate"]["deps"]
    deps.remove("src/qmr/grading.py")
    assert uncovered_imports(copy, dvc) == {"reevaluate": ["src/qmr/grading.py"]}


def test_broken_copy_new_lazy_import_is_caught(copy: Path):
    evaluation = copy / "src" / "qmr" / "evaluation.py"
    evaluation.write_text(evaluation.read_text() + "\n\ndef _late():\n    from qmr.locate import taxonomy  # noqa\n")
    missing = uncovered_imports(copy, _dvc(copy))
    assert "src/qmr/locate/taxonomy.py" in missing["evaluate"]


def test_broken_copy_registry_entry_is_caught(copy: Path):
    gen = copy / "src" / "qmr" / "generation" / "base.py"
    text = gen.read_text()
    assert '"vllm": "qmr.generation.vllm_backend:VLLMBackend"' in text
    gen.write_text(text.replace('"vllm": "qmr', '"fancy": "qmr.toy.tokenizer:X",\n        "vllm": "qmr'))
    missing = uncovered_imports(copy, _dvc(copy))
    assert "src/qmr/toy/tokenizer.py" in missing["generate"]


def test_broken_copy_stage_without_dvc_entry_is_caught(copy: Path):
    (copy / "src" / "qmr" / "stages" / "extra.py").write_text('"""A stage nobody declared."""\n\ndef run(params):\n    pass\n')
    modules = {p.stem for p in (copy / "src" / "qmr" / "stages").glob("*.py") if p.name != "__init__.py"}
    assert modules - set(_dvc(copy)["stages"]) == {"extra"}


def _declared_params(dvc: dict, params: dict) -> list[str]:
    """Every params dep of dvc.yaml, expanded over the values its templates take in ``params``."""
    out = []
    for stage in dvc["stages"].values():
        body = stage.get("do", stage)
        for entry in body.get("params") or []:
            key = entry if isinstance(entry, str) else next(iter(entry))
            subs = {
                "${key}": list(params.get("models") or {}),
                "${item.model}": list(params.get("models") or {}),
                "${item.variant}": list((params.get("quantize") or {}).get("variants") or {}),
                "${item.benchmark}": list((params.get("generate") or {}).get("benchmarks") or []),
                "${align.eval_benchmark}": [(params.get("align") or {}).get("eval_benchmark")],
            }
            keys = [key]
            for pattern, values in subs.items():
                keys = [k.replace(pattern, str(v)) for k in keys for v in (values if pattern in k else [None])]
            out += keys
    return out


def _missing(params: dict, keys: list[str]) -> list[str]:
    missing = []
    for key in keys:
        cur = params
        for part in key.split("."):
            if not isinstance(cur, dict) or part not in cur:
                missing.append(key)
                break
            cur = cur[part]
    return sorted(set(missing))


def test_every_declared_param_is_spelt_out_in_params_and_presets():
    """DVC refuses a params dep missing from params.yaml; a preset composes the same keys."""
    from qmr.presets import available, compose

    dvc = _dvc()
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    assert _missing(params, _declared_params(dvc, params)) == []
    for name in available(ROOT / "presets"):
        composed = compose(name, ROOT / "presets")
        # (model names carry dots, as hub names do: no params dep may be addressed through one)
        assert _missing(composed, _declared_params(dvc, composed)) == [], name
