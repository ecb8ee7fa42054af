"""`endpoints` is the one home of an OpenAI-compatible endpoint: llm judges and the silver teacher name it."""

from __future__ import annotations

import copy

import yaml
from click.testing import CliRunner

from qmr.cli import main
from qmr.endpoints import EndpointSpec
from qmr.locate.judges import JudgeSpec, build_judge


def _check(tmp_path, params) -> tuple[int, str]:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, ["params", "check"])
    return result.exit_code, result.output


def _with_endpoint(default_params) -> dict:
    params = copy.deepcopy(default_params)
    params["endpoints"] = {"local": {"base_url": "http://127.0.0.1:8000/v1", "model": "m", "api_key_env": "", "concurrency": 2}}
    params["judge"]["judges"]["llm"] = {"kind": "llm", "endpoint": "local", "max_tokens": 64}
    return params


def test_a_judge_takes_its_connection_from_the_named_endpoint(monkeypatch):
    endpoints = {"local": EndpointSpec(base_url="http://127.0.0.1:8000/v1", model="m", api_key_env="", concurrency=2, timeout_s=7.0)}
    judge = build_judge("llm", JudgeSpec(kind="llm", endpoint="local", max_tokens=64), endpoints)
    assert (judge.spec.base_url, judge.spec.model, judge.spec.concurrency, judge.spec.timeout_s) == ("http://127.0.0.1:8000/v1", "m", 2, 7.0)
    assert judge.spec.max_tokens == 64  # the judge's own settings stay the judge's


def test_params_with_endpoints_validate(tmp_path, monkeypatch, default_params):
    monkeypatch.chdir(tmp_path)
    params = _with_endpoint(default_params)
    params["recovery"]["teacher"] = "local"
    assert _check(tmp_path, params)[0] == 0


def test_unknown_endpoint_and_teacher_named_by_judge_are_clear_errors(tmp_path, monkeypatch, default_params):
    monkeypatch.chdir(tmp_path)
    params = _with_endpoint(default_params)
    params["judge"]["judges"]["llm"]["endpoint"] = "lcoal"
    params["recovery"]["teacher"] = "llm"  # a judge, not an endpoint
    code, out = _check(tmp_path, params)
    assert code == 2
    assert "judge.judges.llm.endpoint: got 'lcoal'; allowed: a name from endpoints: local (did you mean 'local'?)" in out
    assert "recovery.teacher: got 'llm'; allowed: 'fp' or a name from endpoints: local" in out


def test_endpoint_and_inline_url_together_are_refused(tmp_path, monkeypatch, default_params):
    monkeypatch.chdir(tmp_path)
    params = _with_endpoint(default_params)
    params["judge"]["judges"]["llm"]["base_url"] = "http://other/v1"
    code, out = _check(tmp_path, params)
    assert code == 2 and "judge.judges.llm.base_url: got 'http://other/v1'; allowed: empty when endpoint is set" in out


def test_a_bad_endpoint_names_its_key(tmp_path, monkeypatch, default_params):
    monkeypatch.chdir(tmp_path)
    params = _with_endpoint(default_params)
    params["endpoints"]["local"]["timeout_s"] = 0
    code, out = _check(tmp_path, params)
    assert code == 2 and "endpoints.local.timeout_s: got 0.0; allowed: a number > 0" in out
