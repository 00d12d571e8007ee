"""Seconds per epoch of ``ssl_frozen`` head training with cached layer statistics vs without.

Trains :class:`ser.models.ssl_frozen.FrozenSSLClassifier` through ``ser.train.loop.train``
on a synthetic two-class corpus (``--utterances`` per class and speaker, 4 speakers:
2 train, 1 val, 1 test; 2 s tones with noise), once with ``cache_windows: 1`` (the
backbone runs once per utterance, then every epoch trains the head on the cached
statistics) and once with ``cache_windows: 0`` (the backbone runs on every window of
every epoch). The backbone is a random wav2vec2 of :func:`ser.models.transformer.tiny_config`
(``--size tiny``: hidden 32, 2 layers) or a small one (``--size small``: hidden 256,
4 layers, 4 heads, the tiny conv encoder). Prints the median seconds per epoch
(``history.csv``), the run's total seconds (``train_params.seconds``: cache building
included) and writes them to ``--out`` as JSON.

    .venv/bin/python benchmarks/bench_ssl_frozen_cache.py --size tiny --epochs 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import cpu_name  # noqa: E402
from ser.core.atomic import atomic_write_json  # noqa: E402
from ser.models import transformer  # noqa: E402
from ser.train import loop  # noqa: E402

SR = 16000


def corpus(folder: Path, *, per_class: int, seconds: float) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for s, split in enumerate(["train", "train", "val", "test"]):
        for lab, f0 in (("low", 140.0), ("high", 320.0)):
            for k in range(per_class):
                t = np.arange(int(seconds * SR)) / SR
                y = 0.3 * np.sin(2 * np.pi * f0 * (1 + 0.01 * k + 0.01 * s) * t)
                path = folder / f"s{s}_{lab}_{k}.wav"
                sf.write(path, (y + 0.02 * rng.standard_normal(len(t))).astype(np.float32), SR)
                rows.append({"path": str(path), "speaker": f"s{s}", "label": lab, "split": split})
    return pd.DataFrame(rows)


def backbone_config(size: str) -> dict:
    cfg = transformer.tiny_config("wav2vec2")
    if size == "small":
        cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads = 256, 4, 4
        cfg.intermediate_size, cfg.conv_dim = 1024, (256, 256)
    return transformer.config_dict(cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=("tiny", "small"), default="tiny")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--utterances", type=int, default=16, help="per class and speaker")
    ap.add_argument("--window-s", type=float, default=2.0)
    ap.add_argument("--out", default="results/benchmarks/ssl_frozen_cache.json")
    args = ap.parse_args()
    config = backbone_config(args.size)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        table = corpus(Path(tmp), per_class=args.utterances, seconds=args.window_s + 0.5)
        for cache_windows in (1, 0):
            torch.manual_seed(0)
            out = loop.train(table, out_dir=Path(tmp) / f"cache{cache_windows}", labels=["high", "low"],
                             arch="ssl_frozen", arch_params={"config": config, "cache_windows": cache_windows},
                             window_s=args.window_s, sample_rate=SR, epochs=args.epochs, batch_size=16,
                             patience=args.epochs, device="cpu", augment=False, pitch_norm_hz=0.0,
                             progress=False, cache=False)
            history = pd.read_csv(out / "history.csv")
            meta = json.loads((out / "model.json").read_text())
            rows[f"cache_windows={cache_windows}"] = {
                "median_epoch_s": round(float(statistics.median(history["seconds"])), 3),
                "total_s": meta["train_params"]["seconds"], "epochs": len(history),
                "n_train": meta["train_params"]["n_train"]}
    result = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "size": args.size,
              "window_s": args.window_s, "runs": rows}
    print(json.dumps(result, indent=1))
    os.makedirs(Path(args.out).parent, exist_ok=True)
    atomic_write_json(Path(args.out), result)


if __name__ == "__main__":
    main()
