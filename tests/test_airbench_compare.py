"""The side-by-side tool reads airbench94's own printed table (the format of
airbench==0.1.8's `print_training_details`) and the peer wrapper's last lines."""

from __future__ import annotations

import pytest

from lenet_keras import airbench_compare

PEER_OUTPUT = """\
-----------------------------------------------------------------------------------------
|  run     |  epoch  |  train_loss  |  train_acc  |  val_acc  |  tta_val_acc  |  total_time_seconds  |
-----------------------------------------------------------------------------------------
|       0  |      0  |      1.6017  |     0.5000  |   0.5912  |               |            101.2034  |
|          |      1  |      1.3914  |     0.6982  |   0.6833  |               |            203.1111  |
|          |      9  |      1.0410  |     0.9012  |   0.8859  |               |            985.0000  |
|          |   eval  |              |             |           |       0.8968  |           1002.5853  |
-----------------------------------------------------------------------------------------
precision=bf16 threads=2 wall_s=1069.0
peak_rss_mib=2871.5
"""


def test_parse_peer_reads_the_last_epoch_the_tta_row_and_the_wrappers_lines():
    parsed = airbench_compare.parse_peer(PEER_OUTPUT)
    assert parsed == {"accuracy": pytest.approx(88.59), "tta_accuracy": pytest.approx(89.68),
                      "training_seconds": 1002.5853, "wall_seconds": 1069.0, "peak_rss_mib": 2871.5, "epochs": 3}


def test_parse_peer_refuses_output_without_the_final_eval_row():
    truncated = "\n".join(line for line in PEER_OUTPUT.splitlines() if "eval" not in line)
    with pytest.raises(ValueError, match="no final 'eval' row"):
        airbench_compare.parse_peer(truncated)
