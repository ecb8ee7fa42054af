"""Pinned CPU kernels: the same weights whatever kernels the host would pick (issue: same metrics on
any machine). The knobs are shown to matter (unpinned, they change the bits), then shown not to
matter under the pin."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qmr.determinism import OVERRIDDEN, PINS, pin_cpu_kernels

REPO = Path(__file__).resolve().parents[1]
x86 = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the pin covers x86-64 only")


def test_pin_sets_the_kernel_variables_and_removes_host_overrides():
    env = {"MKL_ENABLE_INSTRUCTIONS": "AVX512", "ATEN_CPU_CAPABILITY": "avx512", "DNNL_MAX_CPU_ISA": "AVX512_CORE", "HOME": "/x"}
    pin = pin_cpu_kernels(env)
    if platform.machine().lower() not in ("x86_64", "amd64"):
        assert pin == "native"
        return
    assert pin == "avx2"
    assert {k: env[k] for k in PINS["avx2"]} == PINS["avx2"]
    assert not set(OVERRIDDEN) & set(env) and env["HOME"] == "/x"


def test_native_leaves_the_host_alone_and_a_bad_value_is_a_config_error():
    env = {"QMR_CPU_KERNELS": "native", "MKL_CBWR": "COMPATIBLE"}
    assert pin_cpu_kernels(env) == "native" and env == {"QMR_CPU_KERNELS": "native", "MKL_CBWR": "COMPATIBLE"}
    from qmr.config import ConfigError

    with pytest.raises(ConfigError, match="QMR_CPU_KERNELS: got 'avx-2'; allowed: avx2 | native"):
        pin_cpu_kernels({"QMR_CPU_KERNELS": "avx-2"})


def test_this_process_runs_the_pinned_kernels():
    """conftest pins before torch loads, like the CLI: ATen reports the pinned capability."""
    from qmr.determinism import kernel_info

    info = kernel_info()
    if info["pin"] == "avx2":
        assert info["aten_cpu_capability"] == "AVX2" and info["mkl_cbwr"] == "AVX2,STRICT"
    assert info["cpu"] and info["torch"]


def _train(tmp: Path, name: str, env: dict) -> tuple[str, float]:
    """`qmr base` for 10 steps in a scratch project; returns (weights sha256, final loss)."""
    work = tmp / name
    work.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["base"]["toy"].update(max_steps=10, warmup_steps=2)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    clean = {k: v for k, v in os.environ.items() if k not in {*PINS["avx2"], *OVERRIDDEN, "QMR_CPU_KERNELS"}}
    proc = subprocess.run([sys.executable, "-m", "qmr", "base", "--model", "toy"], cwd=work, env={**clean, **env},
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    weights = (work / "models/base/toy/model.safetensors").read_bytes()
    loss = json.loads((work / "metrics/base/toy.json").read_text())["final_loss"]
    speed = json.loads((work / "metrics/speed/base/toy.json").read_text())
    assert speed["kernels"]["pin"] == env.get("QMR_CPU_KERNELS", "avx2")
    return hashlib.sha256(weights).hexdigest(), loss


@pytest.mark.slow
@x86
def test_pinned_weights_do_not_depend_on_the_hosts_kernel_choice(tmp_path):
    # unpinned, the dispatch knobs a different CPU would turn change the bits ...
    native_avx2 = _train(tmp_path, "native-avx2", {"QMR_CPU_KERNELS": "native", "ATEN_CPU_CAPABILITY": "avx2"})
    native_default = _train(tmp_path, "native-default", {"QMR_CPU_KERNELS": "native", "ATEN_CPU_CAPABILITY": "default"})
    native_mkl = _train(tmp_path, "native-mkl", {"QMR_CPU_KERNELS": "native", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"})
    assert native_default[0] != native_avx2[0] and native_mkl[0] != native_avx2[0]
    # ... and pinned, none of them does
    pinned = _train(tmp_path, "pinned", {})
    hostile = _train(tmp_path, "pinned-hostile", {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE",
                                                  "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"})  # fmt: skip
    assert pinned == hostile
    import torch

    if torch.backends.cpu.get_cpu_capability() == "AVX512":  # this host would dispatch to AVX-512 unpinned
        native_host = _train(tmp_path, "native-host", {"QMR_CPU_KERNELS": "native"})
        assert native_host[0] != native_avx2[0]  # the AVX-512 vs AVX2 dispatch changes the bits ...
        pinned_512 = _train(tmp_path, "pinned-avx512", {"ATEN_CPU_CAPABILITY": "avx512"})
        assert pinned_512 == pinned  # ... and the pin holds against it
