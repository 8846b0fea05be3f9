"""The precision policy: CPU bf16 detection (answered both ways) and the settings it reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nst_engine import precision
from nst_engine.api import EngineError, InputError, StyleRequest, StyleSource

CPU = torch.device("cpu")
X86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse avx2 {extra}\n\n"
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd {extra}\n\n"


@pytest.mark.parametrize(
    ("text", "native"),
    [
        (X86.format(extra="avx512f avx512_bf16"), True),
        (X86.format(extra="amx_tile amx_bf16"), True),
        (X86.format(extra="avx512f avx512bw"), False),  # AVX-512 alone emulates bf16
        (X86.format(extra=""), False),
    ],
)
def test_cpu_flags_decide_native_bf16(tmp_path: Path, text: str, native: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    flags = precision.cpu_flags(cpuinfo)
    assert flags is not None and "avx2" in flags
    assert precision.cpu_has_native_bf16(flags, capability="AVX512") is native


def test_flags_of_an_arm_cpu_and_a_missing_file(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(ARM.format(extra="bf16"))
    assert precision.cpu_flags(cpuinfo) == {"fp", "asimd", "bf16"}
    assert precision.cpu_flags(tmp_path / "absent") is None


def test_no_vector_dispatch_means_no_bf16_whatever_the_flags() -> None:
    flags = {"avx512_bf16", "amx_bf16"}
    assert precision.cpu_has_native_bf16(flags, capability="AVX512")
    assert not precision.cpu_has_native_bf16(flags, capability="DEFAULT")


def test_this_machine_is_detected_from_its_own_flags() -> None:
    flags = precision.cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo here")
    expected = bool({"avx512_bf16", "amx_bf16"} & flags)
    assert precision.cpu_has_native_bf16() is expected


def test_auto_follows_the_hardware_and_forced_values_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(precision.ENV_VAR, raising=False)
    assert precision.use_bf16(CPU, cpu_native=True) is True
    assert precision.use_bf16(CPU, cpu_native=False) is False
    assert precision.use_bf16(CPU, "fp32", cpu_native=True) is False
    assert precision.use_bf16(CPU, "bf16", cpu_native=False) is True
    monkeypatch.setenv(precision.ENV_VAR, "BF16")
    assert precision.use_bf16(CPU, cpu_native=False) is True
    assert precision.use_bf16(CPU, "auto", cpu_native=False) is False  # the request wins
    monkeypatch.setenv(precision.ENV_VAR, "fp32")
    assert precision.use_bf16(CPU, cpu_native=True) is False


def test_bad_settings_are_typed_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(precision.ENV_VAR, "fp16")
    with pytest.raises(EngineError, match="NST_PRECISION"):
        precision.setting()
    with pytest.raises(InputError, match="auto, fp32, bf16"):
        precision.setting("half")
    with pytest.raises(InputError, match="Precision"):
        StyleRequest(content=b"x", styles=(StyleSource(name="udnie"),), precision="fp16")


def test_without_cpuinfo_torchs_own_probe_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback asks torch.cpu (torch._C._cpu has no bf16 probe, so asking it always said
    no): here it must agree with this machine's flags, and it follows torch's answer."""
    flags = precision.cpu_flags()
    if flags is not None:
        assert precision._torch_says_native_bf16() is bool(precision.NATIVE_BF16_FLAGS & flags)
    monkeypatch.setattr(precision, "cpu_flags", lambda: None)
    for avx512_bf16, amx in ((True, False), (False, True), (False, False)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert precision.cpu_has_native_bf16(capability="AVX512") is (avx512_bf16 or amx)
