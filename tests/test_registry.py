"""Registries at the extension points: every entry resolves, unknown names say what is allowed."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import yaml
from click.testing import CliRunner

from qmr.benchmarks import FORMATS
from qmr.cli import main
from qmr.errors import UserError
from qmr.generation.base import BACKENDS, EXTRAS
from qmr.locate.judges import JUDGE_KINDS
from qmr.quant.spec import METHODS
from qmr.registry import Registry
from qmr.restore.silver import SUBSETS
from qmr.restore.train import OBJECTIVES

REGISTRIES = [BACKENDS, FORMATS, JUDGE_KINDS, METHODS, OBJECTIVES, SUBSETS]


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.key)
def test_every_entry_resolves_to_a_callable(registry: Registry):
    for name in registry:
        extra = EXTRAS.get(name) if registry is BACKENDS else None
        if extra and importlib.util.find_spec(extra) is None:
            continue  # an optional extra that is not installed here
        assert callable(registry.load(name)), (registry.key, name)


def test_unknown_name_lists_the_table_and_suggests():
    with pytest.raises(UserError, match=r"restore.objective: got 'dpo-nll'; allowed: dpo, dpo_nll, gkd, kd, sft, step_dpo \(did you mean 'dpo_nll'\?\)"):
        OBJECTIVES.load("dpo-nll")
    with pytest.raises(UserError, match=r"recovery.subset: got 'me'; .* \(did you mean 'ME'\?\)"):
        SUBSETS.check("me")
    with pytest.raises(UserError, match=r"allowed: .*(?<!did you mean)"):
        METHODS.check("zzz")


def test_a_bad_entry_is_refused_at_definition():
    with pytest.raises(ValueError, match="module:attribute"):
        Registry("x", {"a": "qmr.nothing"})


def test_params_validation_and_show_take_names_from_the_tables(tmp_path, monkeypatch, default_params):
    monkeypatch.chdir(tmp_path)
    params = copy.deepcopy(default_params)
    params["restore"]["objective"] = "dpo-nll"
    params["recovery"]["subset"] = "me"
    params["judge"]["judges"]["reference"]["kind"] = "referee"
    params["quantize"]["variants"]["gptq-w4a16"]["method"] = "gtpq"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    checked = CliRunner().invoke(main, ["params", "check"])
    assert checked.exit_code == 2
    assert "restore.objective: got 'dpo-nll'; allowed: one of 'dpo', 'dpo_nll', 'gkd', 'kd', 'sft', 'step_dpo' (did you mean 'dpo_nll'?)" in checked.output
    assert "recovery.subset: got 'me'" in checked.output and "(did you mean 'ME'?)" in checked.output
    assert "judge.judges.reference.kind: got 'referee'; allowed: one of " + ", ".join(map(repr, JUDGE_KINDS)) in checked.output
    assert "quantize.variants.gptq-w4a16.method: got 'gtpq'; allowed: one of " + ", ".join(map(repr, METHODS)) in checked.output
    shown = CliRunner().invoke(main, ["params", "show"])
    assert shown.exit_code == 0
    for registry in (OBJECTIVES, BACKENDS):
        assert ", ".join(repr(n) for n in registry.names()) in shown.output, registry.key
