"""Data-parallel training of one run with torchrun (gloo on CPU stands in for NCCL on GPUs)."""
import json
import subprocess
import sys

import pytest

from moebench.dg.datasets import build_dataset


@pytest.mark.slow
def test_torchrun_two_ranks_trains_one_run(tmp_path):
    data = tmp_path / "colored.npz"
    build_dataset("colored_digits", data, seed=0, image_size=8, max_images=240)
    hp = tmp_path / "hp.yaml"
    hp.write_text(
        "hparams:\n  defaults: {lr: 0.001, weight_decay: 0.0, batch_size: 8, backbone: vit_digits, patch_size: 4,\n"
        "    embed_dim: 16, depth: 2, num_heads: 2, mlp_ratio: 2.0, drop_path_rate: 0.0, pretrained: null,\n"
        "    moe_init: random}\n  algorithms: {erm: {}}\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "moebench.cli.dg.train", "--dataset", "colored_digits", "--data-path", str(data),
           "--algorithm", "erm", "--test-envs", "0", "--hparams-file", str(hp), "--steps", "5",
           "--checkpoint-freq", "2", "--device", "cpu", "--threads", "1", "--output-dir", str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 2, 4]  # written once, by rank 0
    assert (tmp_path / "run" / "done").exists()
