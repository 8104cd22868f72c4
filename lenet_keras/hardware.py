"""What this machine computes bfloat16 with, and the precision `train.precision = "auto"` runs.

bfloat16 (`mixed_bfloat16`) is only fast where the hardware has native bfloat16 matrix units:
Intel AMX (`amx_bf16`) or AVX512-BF16 (`avx512_bf16`) on x86 CPUs, Tensor Cores of compute
capability 8.0 or newer (A100 and later) on NVIDIA GPUs. Elsewhere (an AVX2-only laptop CPU,
AVX-512 without BF16) TensorFlow and oneDNN emulate it with conversions around float32 math and
it runs slower than float32. The decision is read from the CPU flags (/proc/cpuinfo) and the GPU's
compute capability, never from timing, so it is the same every time on one machine.

oneDNN's `ONEDNN_MAX_CPU_ISA` caps which instructions its kernels use (oneDNN's documented
values: SSE41, AVX, AVX2, AVX2_VNNI, AVX2_VNNI_2, AVX512_CORE, AVX512_CORE_VNNI,
AVX512_CORE_BF16, AVX10_1_512 / AVX512_CORE_FP16, AVX10_1_512_AMX / AVX512_CORE_AMX,
AVX10_1_512_AMX_FP16 / AVX512_CORE_AMX_FP16, DEFAULT / ALL); the ISA class here honours it, so an
AMX machine with `ONEDNN_MAX_CPU_ISA=AVX2` counts as (and computes like) an AVX2 one.

Nothing here imports TensorFlow except `gpu_bfloat16`, which looks only when TensorFlow is
already loaded (a process that never imported it has no GPU in use).
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

ISA_CLASSES = ("amx", "avx512_bf16", "avx512", "avx2", "other")
"""CPU ISA classes, fastest first: "amx" (AMX-BF16 tiles), "avx512_bf16" (AVX-512 with BF16 dot
products), "avx512" (AVX-512 without BF16), "avx2" (AVX2 + FMA: most laptops and many cloud
VMs), "other" (anything older, or flags that cannot be read)."""

BFLOAT16_CLASSES = ("amx", "avx512_bf16")
"""The ISA classes with native bfloat16 matrix units."""

_ONEDNN_ORDER = {
    "SSE41": 0, "AVX": 1, "AVX2": 2, "AVX2_VNNI": 3, "AVX2_VNNI_2": 4, "AVX512_CORE": 5,
    "AVX512_CORE_VNNI": 6, "AVX512_CORE_BF16": 7, "AVX10_1_512": 8, "AVX512_CORE_FP16": 8,
    "AVX10_1_512_AMX": 9, "AVX512_CORE_AMX": 9, "AVX10_1_512_AMX_FP16": 10, "AVX512_CORE_AMX_FP16": 10,
}
"""oneDNN's `ONEDNN_MAX_CPU_ISA` values in its own order (a cap admits every value at or below it)."""
_CLASS_NEEDS = {"amx": 9, "avx512_bf16": 7, "avx512": 5, "avx2": 2}
"""The lowest `ONEDNN_MAX_CPU_ISA` rank that lets oneDNN use each class's instructions."""

AUTO = "auto"
"""`train.precision = "auto"`: `mixed_bfloat16` where bfloat16 units exist, else `float32`."""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU feature flags of the first processor in /proc/cpuinfo (or of `cpuinfo`, its text).

    An empty set where the file does not exist (macOS, Windows) or cannot be read.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def onednn_cap(environ=None) -> tuple[str, int] | None:
    """`ONEDNN_MAX_CPU_ISA` (or the older `DNNL_MAX_CPU_ISA`) as (value, rank), None when unset
    or "DEFAULT"/"ALL".

    Raises:
        ValueError: the variable holds a value oneDNN does not know (it would ignore it).
    """
    environ = os.environ if environ is None else environ
    value = (environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    if value in ("", "DEFAULT", "ALL"):
        return None
    if value not in _ONEDNN_ORDER:
        raise ValueError(f"ONEDNN_MAX_CPU_ISA={value!r} is not one of oneDNN's values "
                         f"({', '.join(_ONEDNN_ORDER)}, DEFAULT)")
    return value, _ONEDNN_ORDER[value]


def hardware_isa_class(flags: frozenset[str]) -> str:
    """The ISA class (`ISA_CLASSES`) the CPU flags alone allow."""
    if "amx_bf16" in flags and "amx_tile" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags and "fma" in flags:
        return "avx2"
    return "other"


def isa_class(flags: frozenset[str] | None = None, environ=None) -> str:
    """The ISA class this process computes with: the CPU's (`hardware_isa_class`), lowered to what
    `ONEDNN_MAX_CPU_ISA` lets oneDNN use.

    Raises:
        ValueError: `ONEDNN_MAX_CPU_ISA` holds a value oneDNN does not know.
    """
    found = hardware_isa_class(cpu_flags() if flags is None else flags)
    cap = onednn_cap(environ)
    if cap is None:
        return found
    for name in ISA_CLASSES[ISA_CLASSES.index(found):]:
        if name == "other" or _CLASS_NEEDS[name] <= cap[1]:
            return name
    return "other"


def describe_isa(flags: frozenset[str] | None = None, environ=None) -> str:
    """One line for people: the class and what makes it, e.g. "avx2 (AVX2 + FMA, no AVX-512, no AMX)" or
    "avx2 (ONEDNN_MAX_CPU_ISA=AVX2 on an amx CPU)"."""
    flags = cpu_flags() if flags is None else flags
    found, used = hardware_isa_class(flags), isa_class(flags, environ)
    if used != found:
        return f"{used} (ONEDNN_MAX_CPU_ISA={onednn_cap(environ)[0]} on an {found} CPU)"
    return f"{used} ({_ISA_WORDS[used]})"


_ISA_WORDS = {
    "amx": "AMX-BF16 tiles and AVX512-BF16",
    "avx512_bf16": "AVX512-BF16, no AMX",
    "avx512": "AVX-512 without BF16, no AMX",
    "avx2": "AVX2 + FMA, no AVX-512, no AMX",
    "other": "no AVX2 + FMA in the CPU flags",
}


def gpu_bfloat16() -> tuple[bool, str] | None:
    """(has bfloat16 units, description) of the first GPU TensorFlow sees, None without a GPU or
    when TensorFlow is not loaded. NVIDIA compute capability 8.0 (Ampere) or newer has them."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return None
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    capability = details.get("compute_capability")
    name = details.get("device_name", gpus[0].name)
    if not capability:
        return False, f"GPU {name} (compute capability unknown)"
    return tuple(capability) >= (8, 0), f"GPU {name} (compute capability {capability[0]}.{capability[1]})"


@dataclass(frozen=True)
class Precision:
    """The precision a run asked for (`requested`, a `train.precision` value), the Keras dtype
    policy it runs (`ran`) and why, in words (`reason`); `isa_class` is the CPU's
    (`isa_class()`), recorded even when a GPU decided."""

    requested: str
    ran: str
    reason: str
    isa_class: str

    def to_dict(self) -> dict[str, str]:
        """The manifest's `precision` block: {"requested", "ran", "reason", "isa_class"}."""
        return {"requested": self.requested, "ran": self.ran, "reason": self.reason, "isa_class": self.isa_class}


def bfloat16_units(flags: frozenset[str] | None = None, environ=None) -> tuple[bool, str]:
    """(native bfloat16 units, where): a GPU with compute capability >= 8.0 when TensorFlow uses
    one, else the CPU's ISA class (`BFLOAT16_CLASSES`)."""
    gpu = gpu_bfloat16()
    if gpu is not None:
        return gpu
    described = describe_isa(flags, environ)
    return isa_class(flags, environ) in BFLOAT16_CLASSES, f"CPU class {described}"


def resolve_precision(requested: str, flags: frozenset[str] | None = None, environ=None) -> Precision:
    """The Keras dtype policy to run for `train.precision = requested`.

    "auto" runs "mixed_bfloat16" where `bfloat16_units` finds native units, else "float32"; any
    other value runs as asked (an explicit "mixed_bfloat16" without units too: see
    `warn_if_emulated`).
    """
    isa = isa_class(flags, environ)
    native, where = bfloat16_units(flags, environ)
    if requested != AUTO:
        return Precision(requested, requested, f"asked for; {where}", isa)
    if native:
        return Precision(requested, "mixed_bfloat16", f"auto: {where} has native bfloat16 units", isa)
    return Precision(requested, "float32", f"auto: {where} has no native bfloat16 units", isa)


_warned: set[str] = set()


def warn_if_emulated(precision: Precision, flags: frozenset[str] | None = None, environ=None) -> str | None:
    """Warn (once per process) when "mixed_bfloat16" was asked for explicitly on hardware without
    bfloat16 units; returns the message (None when there is nothing to say)."""
    if precision.requested != "mixed_bfloat16":
        return None
    native, where = bfloat16_units(flags, environ)
    if native:
        return None
    message = (f"train.precision = 'mixed_bfloat16' on {where}: bfloat16 is "
               "emulated here and training typically runs several times slower than float32 (README, "
               "'Precision'); train.precision=auto (or float32) avoids it")
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return message
