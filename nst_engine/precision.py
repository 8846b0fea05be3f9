"""The precision policy: whether the VGG convolutions run under bf16 autocast.

`NST_PRECISION` (or a request's `precision`) is one of:

- `auto`: bf16 on CUDA devices that support it and on CPUs with native bf16 arithmetic
  (AVX512-BF16 or AMX), fp32 elsewhere. Without native support bf16 is emulated and slower.
- `fp32` / `bf16`: forced.

Only the convolutions change; Grams, losses, targets and L-BFGS stay in fp32.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from .api import PRECISIONS, EngineError, InputError

log = logging.getLogger(__name__)

ENV_VAR = "NST_PRECISION"
CPUINFO = Path("/proc/cpuinfo")
# x86 flags (Linux names) that mean the CPU multiplies bf16 natively.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# ATen's dispatch levels below which oneDNN's bf16 kernels cannot be reached at all.
_NO_VECTOR_CAPABILITIES = frozenset({"DEFAULT", "NO AVX"})


def cpu_flags(path: Path = CPUINFO) -> frozenset[str] | None:
    """The feature flags the kernel reports for the first CPU, or None where unreadable."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, aarch64
            return frozenset(value.split())
    return None


def _torch_says_native_bf16() -> bool:
    """Fallback where /proc/cpuinfo is missing: torch's own cpuinfo probe (AVX512-BF16, or AMX,
    whose tiles come with bf16 on every CPU that has them)."""
    probes = (torch.cpu._is_avx512_bf16_supported, torch.cpu._is_amx_tile_supported)
    return any(probe() for probe in probes)


def cpu_has_native_bf16(flags: Iterable[str] | None = None, capability: str | None = None) -> bool:
    """Whether this CPU (or the given `flags` and ATen `capability`) has native bf16.

    `flags` default to /proc/cpuinfo's; `capability` to torch.backends.cpu.get_cpu_capability().
    A build or an ATEN_CPU_CAPABILITY setting that dispatches to no vector kernels at all counts
    as no support whatever the flags say.
    """
    if capability is None:
        capability = torch.backends.cpu.get_cpu_capability()
    if capability.upper() in _NO_VECTOR_CAPABILITIES:
        return False
    if flags is None:
        found = cpu_flags()
        if found is None:
            return _torch_says_native_bf16()
        flags = found
    return not NATIVE_BF16_FLAGS.isdisjoint(flags)


def setting(requested: str | None = None) -> str:
    """The precision asked for: `requested`, else $NST_PRECISION, else 'auto'.

    A bad request is an InputError; a bad NST_PRECISION is the operator's, an EngineError.
    """
    if requested is not None:
        value = requested.strip().lower()
        if value not in PRECISIONS:
            raise InputError(f"Precision must be one of: {', '.join(PRECISIONS)}.")
        return value
    value = (os.environ.get(ENV_VAR, "") or "auto").strip().lower()
    if value not in PRECISIONS:
        raise EngineError(f"{ENV_VAR} is '{value}'; it must be one of: {', '.join(PRECISIONS)}.")
    return value


def use_bf16(
    device: torch.device,
    requested: str | None = None,
    *,
    cpu_native: bool | None = None,
) -> bool:
    """Whether to run the convolutions in bf16 on `device` under the policy.

    `cpu_native` overrides the CPU detection (for tests and benches).
    """
    value = setting(requested)
    if value != "auto":
        return value == "bf16"
    if device.type == "cuda":  # bf16 tensor cores: Ampere (sm_80) and later
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        return cpu_has_native_bf16() if cpu_native is None else cpu_native
    return False
