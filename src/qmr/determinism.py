"""Same params, same metrics: fixed seeds, fixed thread counts and pinned CPU kernels.

Seeds and threads make two runs on one machine agree bit for bit. Across machines that is not
enough: torch picks its CPU kernels by the host's instruction set (ATen dispatches to DEFAULT, AVX2
or AVX-512 code; MKL picks its own code path by CPU vendor and ISA), and a small model trained for
thousands of steps, then rounded to 2 bits, turns those last-bit differences into points of accuracy.
:func:`pin_cpu_kernels` fixes the kernels to one instruction set every current x86-64 CPU has (AVX2)
before torch is imported, so every machine runs the same code path:

- ``ATEN_CPU_CAPABILITY=avx2``: ATen's vectorized kernels (softmax, exp, norms, elementwise ops);
- ``MKL_CBWR=AVX2,STRICT``: MKL's conditional numerical reproducibility (GEMM, LAPACK) — without it
  MKL chooses a path by CPU vendor and ISA (measured: a different GEMM result on an AMD EPYC);
- ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN's JIT kernels (used by some CPU ops and bf16 paths).

Host settings that would move MKL or oneDNN off that path (``MKL_ENABLE_INSTRUCTIONS``,
``MKL_DEBUG_CPU_TYPE``, ``DNNL_MAX_CPU_ISA``, fp-math modes) are removed from the environment.
``QMR_CPU_KERNELS=native`` turns the pin off (the host's fastest kernels; bits then depend on the
CPU). Not covered: other CPU architectures (aarch64: no pin is applied), CPUs without AVX2, other
torch/MKL builds, and GPUs (CUDA kernels are pinned by neither; see the README).
"""

from __future__ import annotations

import logging
import os
import platform
import random
import sys
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

KERNELS_ENV = "QMR_CPU_KERNELS"
#: the environment each pin sets before torch loads
PINS: dict[str, dict[str, str]] = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "native": {},
}
#: host variables that select other MKL/oneDNN code paths; removed when a pin is active
OVERRIDDEN = ("MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE", "DNNL_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE",
              "DNNL_DEFAULT_FPMATH_MODE")
X86 = ("x86_64", "amd64", "i386", "i686")


def pin_cpu_kernels(environ: MutableMapping[str, str] = os.environ) -> str:
    """Pin the CPU kernels (see the module docstring); call before torch is imported.

    Returns the pin in force: ``avx2``, or ``native`` when turned off or not on x86-64.
    """
    choice = environ.get(KERNELS_ENV, "avx2").strip().lower() or "avx2"
    if choice not in PINS:
        from qmr.config import ConfigError, Problem

        raise ConfigError([Problem(KERNELS_ENV, choice, " | ".join(PINS))], source="environment")
    if choice == "native" or platform.machine().lower() not in X86:
        return "native"
    if "torch" in sys.modules and any(environ.get(k) != v for k, v in PINS[choice].items()):
        log.warning("torch was imported before the CPU kernels were pinned; this process runs the host's kernels")
    for name in OVERRIDDEN:
        environ.pop(name, None)
    environ.update(PINS[choice])
    return choice


def kernel_info() -> dict:
    """The kernels this process runs and the host CPU: recorded in metrics/speed/ beside wall times,
    so that a metrics diff across machines can be explained."""
    import torch

    pin = os.environ.get(KERNELS_ENV, "avx2").strip().lower() or "avx2"
    if platform.machine().lower() not in X86:
        pin = "native"
    capability = torch.backends.cpu.get_cpu_capability()
    info = {
        "pin": pin,
        "aten_cpu_capability": capability,
        "mkl_cbwr": os.environ.get("MKL_CBWR", ""),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "torch": torch.__version__,
    }
    if pin != "native" and capability.lower() != pin:
        log.warning("CPU kernels: pinned to %s but ATen runs %s (torch imported before the pin, or a CPU "
                    "without %s): metrics may differ from other machines'", pin, capability, pin.upper())
    return info


def cpu_model() -> str:
    """The host CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def set_determinism(seed: int, threads: int) -> None:
    import numpy as np
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["PYTHONHASHSEED"] = str(seed)
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
