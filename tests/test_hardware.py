"""`lenet_keras.hardware`: the CPU's ISA class from its flags (and ONEDNN_MAX_CPU_ISA), the precision
`train.precision = "auto"` runs, the warning for emulated bfloat16, and what a run records of it."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

from lenet_keras import compare_stats, hardware, train
from lenet_keras.errors import RunDirectoryError

AMX = frozenset("fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8".split())
AVX512_BF16 = frozenset("sse2 avx avx2 fma avx512f avx512_bf16".split())
AVX512 = frozenset("sse2 avx avx2 fma avx512f avx512bw".split())
AVX2 = frozenset("sse2 avx avx2 fma f16c".split())
OLD = frozenset("sse2 sse4_1 avx".split())
NO_CAP: dict[str, str] = {}


def test_cpu_flags_are_read_from_the_flags_line():
    text = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\nbugs\t\t: sysret_ss_attrs\n"
    assert hardware.cpu_flags(text) == {"fpu", "avx2", "fma"}
    assert hardware.cpu_flags("model name : no flags line") == frozenset()


@pytest.mark.parametrize("flags, expected", [(AMX, "amx"), (AVX512_BF16, "avx512_bf16"), (AVX512, "avx512"),
                                             (AVX2, "avx2"), (OLD, "other"), (frozenset(), "other")])
def test_isa_class_of_each_kind_of_cpu(flags, expected):
    assert hardware.isa_class(flags, NO_CAP) == expected


@pytest.mark.parametrize("cap, expected", [("AVX2", "avx2"), ("avx512_core", "avx512"), ("AVX512_CORE_BF16", "avx512_bf16"),
                                           ("AVX10_1_512_AMX", "amx"), ("DEFAULT", "amx"), ("SSE41", "other")])
def test_onednn_max_cpu_isa_lowers_the_class(cap, expected):
    assert hardware.isa_class(AMX, {"ONEDNN_MAX_CPU_ISA": cap}) == expected


def test_a_cap_above_the_cpu_does_not_raise_it_and_a_bad_cap_is_named():
    assert hardware.isa_class(AVX2, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}) == "avx2"
    with pytest.raises(ValueError, match="ONEDNN_MAX_CPU_ISA='AVX3'"):
        hardware.isa_class(AMX, {"ONEDNN_MAX_CPU_ISA": "avx3"})
    assert "ONEDNN_MAX_CPU_ISA=AVX2 on an amx CPU" in hardware.describe_isa(AMX, {"ONEDNN_MAX_CPU_ISA": "AVX2"})


@pytest.mark.parametrize("flags, environ, ran", [
    (AMX, NO_CAP, "mixed_bfloat16"), (AVX512_BF16, NO_CAP, "mixed_bfloat16"), (AVX512, NO_CAP, "float32"),
    (AVX2, NO_CAP, "float32"), (AMX, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "float32"),
])
def test_auto_runs_bfloat16_only_with_native_units(flags, environ, ran):
    precision = hardware.resolve_precision("auto", flags, environ)
    assert (precision.requested, precision.ran) == ("auto", ran)
    assert precision.isa_class == hardware.isa_class(flags, environ)
    assert ("has native" if ran == "mixed_bfloat16" else "has no native") in precision.reason


@pytest.mark.parametrize("asked", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_an_explicit_precision_runs_as_asked_on_any_cpu(asked):
    for flags in (AMX, AVX2):
        assert hardware.resolve_precision(asked, flags, NO_CAP).ran == asked


def test_explicit_bfloat16_without_units_warns_once_with_the_way_out(monkeypatch):
    monkeypatch.setattr(hardware, "_warned", set())
    emulated = hardware.resolve_precision("mixed_bfloat16", AVX2, NO_CAP)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hardware.warn_if_emulated(emulated, AVX2, NO_CAP)
        hardware.warn_if_emulated(emulated, AVX2, NO_CAP)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "slower than float32" in text and "train.precision=auto" in text and "avx2" in text
    native = hardware.resolve_precision("mixed_bfloat16", AMX, NO_CAP)
    assert hardware.warn_if_emulated(native, AMX, NO_CAP) is None
    assert hardware.warn_if_emulated(hardware.resolve_precision("auto", AVX2, NO_CAP), AVX2, NO_CAP) is None


def test_compare_groups_by_the_precision_that_ran():
    base = {"config": {"train": {"precision": "auto", "epochs": 2}, "seed": 0}}
    on_amx = {**base, "precision": {"requested": "auto", "ran": "mixed_bfloat16"}}
    on_avx2 = {**base, "precision": {"requested": "auto", "ran": "float32"}}
    assert compare_stats.flat_config(on_amx)["train.precision"] == "mixed_bfloat16"
    assert compare_stats.flat_config(on_avx2)["train.precision"] == "float32"
    assert compare_stats.flat_config(base)["train.precision"] == "auto"  # an older manifest: as asked


def test_resuming_in_another_precision_is_refused(tmp_path):
    here = hardware.Precision("auto", "float32", "auto: CPU class avx2", "avx2")
    manifest = {"precision": {"requested": "auto", "ran": "mixed_bfloat16", "reason": "auto: CPU class amx",
                              "isa_class": "amx"}}
    with pytest.raises(RunDirectoryError, match="trained in mixed_bfloat16.*this machine runs float32.*amx"):
        train.check_same_precision(tmp_path, manifest, here)
    train.check_same_precision(tmp_path, {"precision": {**manifest["precision"], "ran": "float32"}}, here)
    train.check_same_precision(tmp_path, {}, here)  # a manifest from before precision was recorded


def test_a_run_says_and_records_which_precision_ran_and_why(tmp_path, mnist_dir):
    command = [sys.executable, "-m", "lenet_keras", "train", "mnist_lenet5_quick", "train.epochs=1",
               "data.train_subset=600", "data.test_subset=200", "--runs-dir", str(tmp_path), "--data-dir", str(mnist_dir)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = hardware.resolve_precision("auto")
    first = done.stdout.splitlines()[0]
    assert first == f"precision: {expected.ran} ({expected.reason})", done.stdout[:500]
    manifest = json.loads((tmp_path / "mnist_lenet5_quick" / "run-001" / "manifest.json").read_text())
    assert manifest["config"]["train"]["precision"] == "auto"
    assert manifest["precision"] == expected.to_dict()
