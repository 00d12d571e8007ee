"""``ser predict --cluster`` on dask.distributed: the same outputs row for row as one machine,
a worker killed mid-recording retried with nothing written lost, resume, failures named."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
import signals
import soundfile as sf

from ser.inference.cluster import ClusterSpec, parse_cluster
from ser.inference.files import output_paths, predict_paths
from ser.inference.options import InferenceOptions
from ser.models import registry, window
from ser.models.bundle import load_bundle, save_bundle
from ser.run.cli import main

SR = 16000
LABELS = ["angry", "happy", "neutral", "sad"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model") / "tiny_cnn"
    net = registry.build_model("small_cnn", n_labels=len(LABELS), sample_rate=SR, channels=[4, 8])
    save_bundle(d, net, labels=LABELS, sample_rate=SR, window_s=1.0, features=window.features_config(),
                arch="small_cnn", arch_params={"channels": [4, 8]}, train_params={}, split={}, metrics={})
    return d


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    for i, secs in enumerate((6.0, 4.0, 5.0)):
        sf.write(d / f"r{i}.wav", signals.voiced(secs, seed=i), SR, subtype="PCM_16")
    (d / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")  # unreadable
    sf.write(d / "short.wav", signals.voiced(0.4, seed=9), SR, subtype="PCM_16")  # too short
    return d


def _tables(out) -> dict[str, pd.DataFrame]:
    return {k: pd.read_csv(p) for k, p in output_paths(out).items()}


def _assert_same(a, b) -> None:
    for k in ("windows", "summary", "failures"):
        pd.testing.assert_frame_equal(a[k], b[k], check_exact=False, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def single(model_dir, audio_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "w.csv"
    assert main(["predict", str(model_dir), str(audio_dir), "-o", str(out), "--workers", "0",
                 "--quiet"]) == 1  # bad.wav failed
    return _tables(out)


@pytest.mark.parametrize(("value", "spec"), [("local:3", ClusterSpec(n_workers=3)),
                                             ("tcp://10.0.0.5:8786", ClusterSpec(address="tcp://10.0.0.5:8786")),
                                             ("local", ClusterSpec(n_workers=os.cpu_count() or 1))])
def test_parse_cluster(value, spec) -> None:
    assert parse_cluster(value) == spec


@pytest.mark.parametrize("value", ["local:0", "local:x", "10.0.0.5:8786", "http://host:1", ""])
def test_bad_cluster_is_refused(value, model_dir, audio_dir, capsys) -> None:
    with pytest.raises(ValueError, match="cluster"):
        parse_cluster(value)
    assert main(["predict", str(model_dir), str(audio_dir), "--cluster", value, "--quiet"]) == 2
    assert "--cluster" in capsys.readouterr().err


def test_local_cluster_gives_the_single_machine_tables(model_dir, audio_dir, single, tmp_path,
                                                       capsys) -> None:
    out = tmp_path / "w.csv"
    assert main(["predict", str(model_dir), str(audio_dir), "-o", str(out), "--cluster", "local:2"]) == 1
    err = capsys.readouterr().err
    assert "dask: local cluster of 2 worker processes" in err
    assert re.search(r"dashboard http://[^ ]+/status", err), err  # bokeh is pinned: it is served
    got = _tables(out)
    _assert_same(got, single)
    assert list(got["failures"]["file"]) == [str(audio_dir / "bad.wav")]
    assert "too_short" in set(got["summary"]["status"])


def test_killed_worker_is_retried_and_resume_works(model_dir, audio_dir, single, tmp_path) -> None:
    from distributed import Client, LocalCluster

    bundle = load_bundle(model_dir)
    options = InferenceOptions(workers=0)
    out = tmp_path / "w.csv"
    # a first run on two files; the cluster run resumes from it
    predict_paths(bundle, [audio_dir / "r0.wav", audio_dir / "r1.wav"], options=options, output=out,
                  progress=False)
    first = pd.read_csv(out)
    killed: list[str] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)

        def kill_the_first_busy_worker() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed:
                for addr, tasks in client.processing().items():
                    if any(str(t).startswith("ser-recording-") for t in tasks):
                        os.kill(pids[addr], signal.SIGKILL)  # mid-recording: its task is running
                        killed.append(addr)
                        return
                time.sleep(0.005)

        killer = threading.Thread(target=kill_the_first_busy_worker)
        killer.start()
        res = predict_paths(bundle, [audio_dir], options=options, output=out, progress=False,
                            cluster=cluster.scheduler_address)
        killer.join()
    assert killed, "no worker was caught running a recording"
    got = _tables(out)
    _assert_same(got, single)  # the killed worker's recording was retried elsewhere
    pd.testing.assert_frame_equal(got["windows"][got["windows"]["file"].isin(first["file"])], first)
    assert list(res.failures["file"]) == [str(audio_dir / "bad.wav")]
    assert np.isfinite(got["windows"].filter(like="p_").to_numpy()).all()


def test_stage_04_table_on_a_cluster_is_the_single_machine_table(model_dir, audio_dir, tmp_path) -> None:
    from distributed import LocalCluster

    from ser.inference.table import predict_table

    recs = pd.DataFrame({"recording": ["p002_care", "p001_control", "p001_care", "p003_care"],
                         "caregiver": ["p002", "p001", "p001", "p003"],
                         "level": ["expert", "beginner", "beginner", "expert"],
                         "phase": ["care", "control", "care", "care"],
                         "path": [str(audio_dir / n) for n in ("r0.wav", "bad.wav", "r1.wav", "r2.wav")]})
    bundle, options = load_bundle(model_dir), InferenceOptions(workers=0)
    ref = predict_table(bundle, recs, options=options, out_csv=tmp_path / "a.csv",
                        failures_csv=tmp_path / "a_fail.csv", progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster:
        got = predict_table(bundle, recs, options=options, out_csv=tmp_path / "b.csv",
                            failures_csv=tmp_path / "b_fail.csv", progress=False,
                            cluster=cluster.scheduler_address)
    pd.testing.assert_frame_equal(got, ref)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "b.csv"), pd.read_csv(tmp_path / "a.csv"))
    fails = pd.read_csv(tmp_path / "b_fail.csv")
    pd.testing.assert_frame_equal(fails, pd.read_csv(tmp_path / "a_fail.csv"))
    assert list(fails["recording"]) == ["p001_control"]
    with pytest.raises(ValueError, match="cluster"):
        predict_table(bundle, recs, options=options, out_csv=tmp_path / "c.csv",
                      failures_csv=tmp_path / "c_fail.csv", progress=False, cluster="local:none")
