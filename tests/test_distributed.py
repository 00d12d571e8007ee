"""Data-parallel training (``torchrun`` with the gloo backend on two CPU processes) trains the
same model as one process with the same seed and the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from test_training import _corpus

from ser.models import registry
from ser.models.bundle import load_bundle
from ser.train import loop

SR = 8000
LABELS = ["angry", "happy", "neutral", "sad"]
#: 48 balanced training utterances (class weights all 1): one process with batch 16 and two
#: with batch 8 each step over the same 16 utterances (DistributedSampler, same seed).
PARAMS = dict(labels=LABELS, arch="small_cnn", arch_params={"channels": [4, 8], "dropout": 0.0},
              features={"n_mels": 24, "n_fft": 256, "hop_length": 80}, window_s=0.5,
              sample_rate=SR, lr=1e-3, weight_decay=0.0, patience=5, seed=0, device="cpu",
              augment=False, balance_corpora=False, epochs=2, progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _weights(folder) -> torch.Tensor:
    state = torch.load(folder / "model.pt", weights_only=True)
    return torch.cat([v.flatten().float() for k, v in sorted(state.items()) if v.is_floating_point()])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    utt = _corpus(root)
    utt.to_csv(root / "utterances.csv", index=False)
    env = {**os.environ, "SER_RESULTS_DIR": str(root / "results"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    for name, batch in (("ddp", 8), ("single", 16), ("half_batch", 8)):
        (root / f"{name}.yaml").write_text(yaml.safe_dump({**PARAMS, "batch_size": batch}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           f"--master_port={_free_port()}", "-m", "ser.train.loop",
           "--utterances", str(root / "utterances.csv"), "--out", str(root / "ddp"),
           "--params", str(root / "ddp.yaml")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    os.environ["SER_RESULTS_DIR"] = str(root / "results")
    try:
        for name in ("single", "half_batch"):
            loop.main(["--utterances", str(root / "utterances.csv"), "--out", str(root / name),
                       "--params", str(root / f"{name}.yaml")])
    finally:
        del os.environ["SER_RESULTS_DIR"]
    return root


def test_two_gloo_processes_train_the_model_of_one_process(runs) -> None:
    ddp, single, other = (_weights(runs / n) for n in ("ddp", "single", "half_batch"))
    meta = load_bundle(runs / "ddp").meta["train_params"]
    assert meta["world_size"] == 2 and meta["batch_size"] == 8
    torch.manual_seed(PARAMS["seed"])  # the initial weights, as train() draws them
    init = registry.build_model("small_cnn", n_labels=4, sample_rate=SR, features=PARAMS["features"],
                                **PARAMS["arch_params"]).state_dict()
    start = torch.cat([v.flatten().float() for k, v in sorted(init.items()) if v.is_floating_point()])
    moved = (single - start).norm()
    gap = (ddp - single).norm() / moved
    print(f"relative gap ddp vs one process: {gap:.4f}; half batch: {(other - single).norm() / moved:.4f}")
    assert gap < 0.05
    # not a vacuous tolerance: one process stepping every 8 utterances lands much further away
    assert (other - single).norm() / moved > 5 * gap
    x = np.random.default_rng(0).standard_normal((8, int(0.5 * SR))).astype(np.float32) * 0.1
    np.testing.assert_allclose(load_bundle(runs / "ddp").predict_proba(x),
                               load_bundle(runs / "single").predict_proba(x), atol=2e-2)
