"""benchmarks.onednn_profile: the verbose-line parser and the summary on real oneDNN 3.7 lines
(TensorFlow's, LeNet-5 at batch 32 under mixed_bfloat16 on an AMX CPU), and the tool end to end.

End to end, what oneDNN runs depends on the CPU: TensorFlow's own oneDNN ops (convolutions,
pooling, ...) are on by default only on CPUs with AVX512-VNNI, AVX512-BF16, AVX-VNNI or AMX
(`IsMklEnabled()`; TF_ENABLE_ONEDNN_OPTS=1/0 forces them on/off). Elsewhere (an AVX2-only CPU)
TensorFlow runs LeNet-5's convolutions in its Eigen kernels and oneDNN shows up only as `gemm_api`
rows (the matrix products Eigen hands it). The end-to-end tests ask TensorFlow which it is, check
what holds there, and run once more with the ops forced on, which works on every x86-64 CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys

import pytest

from benchmarks import onednn_profile as profile

from .conftest import REPO

CONV_FORWARD = ("onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx10_1_512_amx,forward_training,"
                "src:bf16::blocked:acdb::f0 wei:bf16:ap:blocked:Acdb16a::f0 bia:bf16:a:blocked:a::f0 "
                "dst:bf16::blocked:acdb::f0,attr-scratchpad:user,alg:convolution_direct,"
                "mb32_ic1oc6_ih28oh28kh5sh1dh0ph2_iw28ow28kw5sw1dw0pw2,0.25708")
CONV_BACKWARD_DATA = ("onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_bwd:avx10_1_512_amx+brg_conv_fwd:"
                      "avx10_1_512_amx,backward_data,src:bf16::blocked:acdb::f0 wei:bf16:ap:blocked:BcdA16a16b2a::f0 "
                      "bia:undef::undef::: dst:bf16::blocked:acdb::f0,,alg:convolution_direct,"
                      "mb32_ic16oc120_ih5oh1kh5sh1dh0ph0_iw5ow1kw5sw1dw0pw0,0.177002")
CONV_BACKWARD_WEIGHTS = ("onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv_bwd_w:avx10_1_512_amx,"
                         "backward_weights,src:bf16::blocked:acdb::f0 wei:bf16:ap:blocked:ABcd16b16a2b::f0 "
                         "bia:bf16::blocked:a::f0 dst:bf16::blocked:acdb::f0,,alg:convolution_direct,"
                         "mb32_ic16oc120_ih5oh1kh5sh1dh0ph0_iw5ow1kw5sw1dw0pw0,1.70703")
POOLING_BACKWARD = ("onednn_verbose,v1,primitive,exec,cpu,pooling,jit:avx512_core_bf16,backward_data,"
                    "src:bf16::blocked:acdb::f0 dst:bf16::blocked:acdb::f0,,alg:pooling_avg_exclude_padding,"
                    "mb32ic6_ih28oh14kh2sh2dh0ph0_iw28ow14kw2sw2dw0pw0,0.434082")
REORDER = ("onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:bf16::blocked:cdba::f0 "
           "dst:bf16:p:blocked:BcdA16b2a::f0,,,16x6x5x5,0.118896")
GEMM_API = ("onednn_verbose,v1,primitive,exec,cpu,gemm_api,,undef,src_f32::blocked:ba:f0 wei_f32::blocked:ab:f0 "
            "dst_f32::blocked:ab:f0,,,84x32:32x10,0.00488281")
BRIEF_EXAMPLE = ("onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv_bwd_w:avx10_1_512_amx,backward_weights,"
                 "src:bf16::blocked:acdb::f0 wei:bf16:a:blocked:ABcd16b16a2b::f0 bia:undef::undef::: "
                 "dst:bf16::blocked:acdb::f0,,alg:convolution_direct,mb128_ic256oc256_ih8oh8kh5sh1dh0ph2_iw8ow8kw5sw1dw0pw2,"
                 "84.957")
NOT_EXECUTIONS = [
    "onednn_verbose,v1,info,oneDNN v3.7.3 (commit N/A)",
    "onednn_verbose,v1,info,cpu,runtime:threadpool,nthr:2",
    "onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,prop_kind,"
    "memory_descriptors,attributes,auxiliary,problem_desc,exec_time",
    "onednn_verbose,v1,graph,info,template:operation,engine,partition_id,partition_kind,op_names,data_formats,"
    "logical_tensors,fpmath_mode,implementation,backend,exec_time",
    "Epoch 1/1",
    "",
]
MALFORMED = [
    CONV_FORWARD[:90],  # cut off by a crash: too few fields
    CONV_FORWARD[:-7] + "0.2onednn_verbose,v1,primitive,exec",  # two lines run together: the time is no number
    CONV_FORWARD.rsplit(",", 1)[0] + ",nan",
    REORDER.replace("cpu,reorder,", "cpu,,"),  # no primitive kind
]


def test_parse_line_reads_the_fields_of_real_lines():
    assert profile.parse_line(CONV_FORWARD) == {
        "kind": "convolution", "implementation": "brg_conv_fwd:avx10_1_512_amx", "propagation": "forward_training",
        "problem": "mb32_ic1oc6_ih28oh28kh5sh1dh0ph2_iw28ow28kw5sw1dw0pw2", "ms": 0.25708}
    weights = profile.parse_line(CONV_BACKWARD_WEIGHTS)
    assert (weights["implementation"], weights["propagation"], weights["ms"]) == (
        "brgconv_bwd_w:avx10_1_512_amx", "backward_weights", 1.70703)
    assert profile.parse_line(CONV_BACKWARD_DATA)["implementation"] == (
        "brg_conv_bwd:avx10_1_512_amx+brg_conv_fwd:avx10_1_512_amx")
    assert profile.parse_line(REORDER + "\n") == {"kind": "reorder", "implementation": "jit:uni", "propagation": "undef",
                                                  "problem": "16x6x5x5", "ms": 0.118896}
    assert profile.parse_line(GEMM_API)["implementation"] == ""  # gemm_api names none
    assert profile.parse_line(BRIEF_EXAMPLE)["ms"] == 84.957


@pytest.mark.parametrize("line", NOT_EXECUTIONS + MALFORMED)
def test_other_and_malformed_lines_are_skipped(line):
    assert profile.parse_line(line) is None


def test_convolution_problems_are_decoded_and_others_kept_as_they_are():
    assert profile.decode_problem("convolution", profile.parse_line(BRIEF_EXAMPLE)["problem"]) == (
        "mb128 ic256->oc256 8x8 k5")
    assert profile.decode_problem("convolution", "mb32_ic1oc6_ih28oh28kh5sh1dh0ph2_iw28ow28kw5sw1dw0pw2") == (
        "mb32 ic1->oc6 28x28 k5")
    assert profile.decode_problem("convolution", "mb1_g32ic32oc32_ih112oh112kh3sh1dh0ph1_iw112ow112kw3sw1dw0pw1") == (
        "mb1 ic32->oc32 112x112 k3")
    pooling = "mb32ic6_ih28oh14kh2sh2dh0ph0_iw28ow14kw2sw2dw0pw0"
    assert profile.decode_problem("pooling", pooling) == pooling
    assert profile.decode_problem("convolution", "something new") == "something new"


def _two_steps() -> list[dict]:
    """The real lines as two timed steps would print them, with noise in between."""
    step = [CONV_FORWARD, CONV_BACKWARD_DATA, CONV_BACKWARD_WEIGHTS, POOLING_BACKWARD, REORDER, GEMM_API,
            *NOT_EXECUTIONS, *MALFORMED]
    return [row for row in map(profile.parse_line, step + step) if row is not None]


def test_summarize_groups_sums_and_shares_per_row_and_per_propagation():
    result = profile.summarize(_two_steps(), steps=2, step_seconds=[0.010, 0.014])
    total = 2 * (0.25708 + 0.177002 + 1.70703 + 0.434082 + 0.118896 + 0.00488281)
    assert result["onednn_ms"] == pytest.approx(total)
    assert result["onednn_ms_per_step"] == pytest.approx(total / 2)
    assert [row["calls"] for row in result["rows"]] == [2] * 6
    first = result["rows"][0]  # largest first
    assert (first["propagation"], first["total_ms"], first["share"]) == (
        "backward_weights", pytest.approx(2 * 1.70703), pytest.approx(2 * 1.70703 / total))
    assert first["problem_short"] == "mb32 ic16->oc120 5x5 k5"
    assert sum(row["share"] for row in result["rows"]) == pytest.approx(1)
    by = result["by_propagation"]
    assert list(by) == ["forward_training", "backward_data", "backward_weights", "other"]
    assert by["backward_data"]["ms_per_step"] == pytest.approx(0.177002 + 0.434082)
    assert (by["other"]["calls"], by["other"]["ms_per_step"]) == (4, pytest.approx(0.118896 + 0.00488281))
    assert result["wall_ms_per_step"] == pytest.approx(12.0)
    assert result["onednn_share_of_wall"] == pytest.approx(total / 2 / 12.0)


def test_the_report_shows_the_table_and_the_time_outside_onednn():
    lines = profile.format_report(profile.summarize(_two_steps(), steps=2, step_seconds=[0.010, 0.014]))
    text = "\n".join(lines)
    assert "mb32 ic16->oc120 5x5 k5" in text and "mb32ic6_ih28oh14kh2sh2dh0ph0_iw28ow14kw2sw2dw0pw0" in text
    assert lines[-1] == ("oneDNN primitives: 2.699 ms of 12.000 ms wall per step (22.5%); the rest runs in "
                         "TensorFlow's own (Eigen) kernels")
    overlapped = profile.format_report(profile.summarize(_two_steps(), steps=2, step_seconds=[0.002]))
    assert overlapped[-1].startswith("oneDNN primitives: 2.699 ms of 2.000 ms wall per step (134.9%); over 100%")
    assert "Eigen" not in overlapped[-1]
    empty = profile.format_report(profile.summarize([], steps=1, step_seconds=[0.01]))
    assert "no oneDNN primitive ran" in empty[-1]


def test_only_the_lines_after_the_marker_are_read():
    stdout = "\n".join([CONV_BACKWARD_WEIGHTS, "onednn_verbose,v1,info,cpu,runtime:threadpool,nthr:2",
                        profile.MARKER, CONV_FORWARD, MALFORMED[0], REORDER, f"{profile.STEP_PREFIX}0.012500"])
    rows, seconds = profile.read_output(stdout)
    assert [row["kind"] for row in rows] == ["convolution", "reorder"] and rows[0]["propagation"] == "forward_training"
    assert seconds == [0.0125]
    with pytest.raises(ValueError, match="no line"):
        profile.read_output(CONV_FORWARD)


def test_help_runs_from_the_repository_root():
    done = subprocess.run([sys.executable, "-m", "benchmarks.onednn_profile", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "python -m benchmarks.onednn_profile" in done.stdout, done.stderr[-2000:]


def _needs_tensorflow() -> None:
    if importlib.util.find_spec("tensorflow") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("TensorFlow is not importable in CI")
        pytest.skip("TensorFlow is not importable")


def onednn_ops_on(extra_env: dict[str, str] | None = None) -> bool:
    """Whether TensorFlow runs its oneDNN ops in a fresh process with this environment (plus
    `extra_env`): its own answer, `IsMklEnabled()`, which reads TF_ENABLE_ONEDNN_OPTS and the CPU."""
    code = "from tensorflow.python.util import _pywrap_util_port as port; print('onednn_ops', port.IsMklEnabled())"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **(extra_env or {})}, capture_output=True,
                          text=True, timeout=300)
    answer = [line for line in done.stdout.splitlines() if line.startswith("onednn_ops ")]
    assert done.returncode == 0 and answer, done.stderr[-2000:]
    return answer[-1] == "onednn_ops True"


def _profile_lenet5(tmp_path, *env: str) -> tuple[dict, str]:
    """The tool on LeNet-5 at batch 32, one timed step, each `env` KEY=VALUE in the child: (JSON, stdout)."""
    out = tmp_path / "profile.json"
    argv = [sys.executable, "-m", "benchmarks.onednn_profile", "--model", "lenet5", "--batch-size", "32", "--steps",
            "1", "--json", str(out), *(arg for pair in env for arg in ("--env", pair))]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["steps"] == 1 and len(result["step_seconds"]) == 1 and result["env"] == list(env)
    return result, done.stdout


def _assert_consistent(result: dict, stdout: str) -> None:
    """Rows were read and the summary adds up: the rows' calls and milliseconds are the
    per-propagation figures' and the total's; shares sum to 1; the report's last line printed."""
    rows = result["rows"]
    assert rows and all(row["kind"] and row["calls"] >= 1 and row["total_ms"] >= 0 for row in rows), rows
    assert sum(row["total_ms"] for row in rows) == pytest.approx(result["onednn_ms"])
    assert result["onednn_ms_per_step"] == pytest.approx(result["onednn_ms"])  # one step
    by = result["by_propagation"]
    assert list(by) == [*profile.PROPAGATIONS, "other"]
    assert sum(group["calls"] for group in by.values()) == sum(row["calls"] for row in rows)
    assert sum(group["total_ms"] for group in by.values()) == pytest.approx(result["onednn_ms"])
    for name, group in by.items():
        mine = [row for row in rows if profile.propagation_group(row["propagation"]) == name]
        assert group["calls"] == sum(row["calls"] for row in mine), name
    assert sum(row["share"] for row in rows) == pytest.approx(1)
    assert 0 < result["onednn_ms_per_step"] and 0 < result["onednn_share_of_wall"]
    assert result["wall_ms_per_step"] == pytest.approx(1000 * result["step_seconds"][0])
    assert "oneDNN primitives: " in stdout


def _assert_convolutions_in_every_propagation(result: dict, stdout: str) -> None:
    convolutions = {row["propagation"] for row in result["rows"] if row["kind"] == "convolution"}
    assert {"forward_training", "backward_data", "backward_weights"} <= convolutions, result["rows"]
    assert all(result["by_propagation"][name]["calls"] > 0 for name in profile.PROPAGATIONS), result["by_propagation"]
    assert "mb32 ic1->oc6 28x28 k5" in stdout, stdout[-3000:]  # the first convolution, decoded


def test_end_to_end_lenet5_profiles_what_this_cpu_runs_in_onednn(tmp_path):
    """As the machine is: convolutions in every propagation where TensorFlow's oneDNN ops are on
    (AMX, AVX512-BF16/VNNI CPUs); where they are off (AVX2), no convolution or pooling rows, only
    what Eigen hands oneDNN (gemm_api), read and summed consistently."""
    _needs_tensorflow()
    ops_on = onednn_ops_on()
    print(f"\nTensorFlow's oneDNN ops here: {'on' if ops_on else 'off'} "
          f"(TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')})")
    result, stdout = _profile_lenet5(tmp_path)
    _assert_consistent(result, stdout)
    if ops_on:
        _assert_convolutions_in_every_propagation(result, stdout)
    else:
        kinds = {row["kind"] for row in result["rows"]}
        assert not kinds & {"convolution", "pooling"}, (
            f"TensorFlow says its oneDNN ops are off, yet oneDNN ran {sorted(kinds)}", result["rows"])
        assert "gemm_api" in kinds, result["rows"]  # LeNet-5's products, through oneDNN's sgemm
        assert all(result["by_propagation"][name]["calls"] == 0 for name in profile.PROPAGATIONS), (
            result["by_propagation"])


def test_end_to_end_lenet5_with_onednn_ops_forced_on_has_convolutions_in_every_propagation(tmp_path):
    """TF_ENABLE_ONEDNN_OPTS=1 in the child (the tool's --env) turns TensorFlow's oneDNN ops on, on
    any x86-64 CPU (AVX2 included): LeNet-5's convolutions then run in oneDNN in all three
    propagations, and the tool decodes their problems."""
    _needs_tensorflow()
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip(f"TensorFlow's oneDNN ops are x86-64 kernels; this CPU is {platform.machine()}")
    forced = {"TF_ENABLE_ONEDNN_OPTS": "1"}
    assert onednn_ops_on(forced), "TF_ENABLE_ONEDNN_OPTS=1 did not turn TensorFlow's oneDNN ops on"
    result, stdout = _profile_lenet5(tmp_path, "TF_ENABLE_ONEDNN_OPTS=1")
    _assert_consistent(result, stdout)
    _assert_convolutions_in_every_propagation(result, stdout)
