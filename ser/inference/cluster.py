"""Recordings as units of work: on this process, or on a Dask cluster (``--cluster``).

:func:`run_recordings` yields each recording's outcome; ``ser predict``
(:func:`ser.inference.files.predict_paths`) and stage 04
(:func:`ser.inference.table.predict_table`) keep every table, checkpoint and resume in the
calling process, so where a recording was computed changes nothing in the outputs.

With ``cluster`` (:func:`parse_cluster`): ``"local"`` or ``"local:N"`` starts a
``dask.distributed`` ``LocalCluster`` of N single-threaded worker processes (default one
per CPU core); ``"tcp://HOST:PORT"`` connects to a running scheduler (``dask scheduler``
plus ``dask worker`` processes on other machines, or the clusters of ``dask-jobqueue`` on
SLURM and ``dask-kubernetes``). Every worker must see the model bundle and the audio at
the same paths (a shared file system); it loads the bundle once and checks that its
fingerprint is the client's. One task per recording: a worker that dies mid-recording
has its task rescheduled by the scheduler on another worker (up to
``distributed.scheduler.allowed-failures`` times, then the recording is a failure,
``KilledWorker``); a recording's own error (unreadable file) is returned, never retried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import pickle
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ser.inference import recording
from ser.inference.options import InferenceOptions
from ser.inference.protocol import ModelBundle
from ser.inference.stamp import model_stamp
from ser.inference.workers import Workers
from ser.models.bundle import load_bundle

#: Prefix of a ``cluster`` value naming a LocalCluster.
LOCAL = "local"


@dataclass(frozen=True)
class ClusterSpec:
    """Where recordings run: ``n_workers`` local processes, or a scheduler ``address``."""

    address: str | None = None
    n_workers: int | None = None


def parse_cluster(value: str) -> ClusterSpec:
    """``"local"``, ``"local:N"`` or ``"tcp://HOST:PORT"`` (also ``tls://``, ``ucx://``).

    Raises:
        ValueError: anything else, naming the accepted forms.
    """
    text = str(value).strip()
    if text == LOCAL:
        return ClusterSpec(n_workers=os.cpu_count() or 1)
    if text.startswith(LOCAL + ":"):
        n = text[len(LOCAL) + 1:]
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"cluster {value!r}: the number of local workers must be an integer >= 1 "
                             "(e.g. local:4)")
        return ClusterSpec(n_workers=int(n))
    scheme, sep, rest = text.partition("://")
    if sep and scheme in ("tcp", "tls", "ucx", "inproc") and rest:
        return ClusterSpec(address=text)
    raise ValueError(f"cluster must be 'local', 'local:N' or a scheduler address such as "
                     f"tcp://HOST:8786; got {value!r}")


@contextlib.contextmanager
def connect(spec: ClusterSpec, *, log: Callable[[str], None] | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` of ``spec`` (a LocalCluster is started and closed here; a
    remote scheduler is only connected to). Prints the dashboard link through ``log``."""
    from distributed import Client, LocalCluster

    log = log or (lambda msg: print(msg, file=sys.stderr))
    if spec.address is None:
        with LocalCluster(n_workers=spec.n_workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
                Client(cluster) as client:
            _announce(client, f"local cluster of {spec.n_workers} worker processes", log)
            yield client
        return
    with Client(spec.address, timeout="30s") as client:
        _announce(client, f"scheduler {spec.address}", log)
        yield client


def _announce(client: Any, what: str, log: Callable[[str], None]) -> None:
    try:
        import bokeh  # noqa: F401 - the dashboard is served only when bokeh is installed
        dashboard = f"dashboard {client.dashboard_link}"
    except ImportError:
        dashboard = "no dashboard (install bokeh to serve one)"
    log(f"[ser] dask: {what}, {len(client.scheduler_info().get('workers', {}))} workers; {dashboard}")


@dataclass(frozen=True)
class Job:
    """One recording: its key in the caller's tables, its file, its speaker reference
    (:class:`ser.inference.speaker_norm.UnitReference` ``.reference``; None for other bundles)
    the spans to silence before the model and the prosody (``[k, 2]`` seconds: other
    speakers' turns in caregiver mode, :mod:`ser.inference.speakers`; None: none), and the
    model features of its windows known from the speaker-reference pass
    (:class:`ser.inference.recording.KnownFeatures`; None: none)."""

    key: str
    path: Path
    reference: Mapping[str, Any] | None = None
    silence_s: np.ndarray | None = None
    known: recording.KnownFeatures | None = None


@dataclass(frozen=True)
class Outcome:
    """What a recording gave: :meth:`get` returns ``(windows, info)`` as
    :func:`ser.inference.recording.predict_file` does, or raises its error."""

    frame: pd.DataFrame | None = None
    info: Mapping[str, Any] | None = None
    too_short: str | None = None
    error: BaseException | None = None

    def get(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        """``(windows, info)``, or the recording's error raised."""
        if self.too_short is not None:
            raise recording.TooShortError(self.too_short, info=dict(self.info or {}))
        if self.error is not None:
            raise self.error
        return self.frame, dict(self.info or {})  # type: ignore[return-value]


class RemoteError(RuntimeError):
    """An error raised on a Dask worker that could not travel back as itself."""


def _portable(e: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any exception that does not round-trip
        return RemoteError(f"{type(e).__name__}: {e}")


@dataclass(frozen=True)
class _BundleSpec:
    path: str
    precision: str
    runtime: str
    fingerprint: str | None


@functools.lru_cache(maxsize=2)
def _worker_bundle(spec: _BundleSpec) -> ModelBundle:
    """The bundle on a worker, loaded once per worker process."""
    bundle = load_bundle(spec.path, precision=spec.precision, runtime=spec.runtime)
    found = model_stamp(bundle).get("fingerprint")
    if spec.fingerprint is not None and found != spec.fingerprint:
        raise RuntimeError(f"model bundle {spec.path} on this worker is not the client's (fingerprint "
                           f"{found} vs {spec.fingerprint}); give every machine the same bundle")
    return bundle


def _outcome(bundle: ModelBundle, job: Job, *, options: InferenceOptions, pool: Workers | None,
             timings: dict[str, float] | None = None,
             on_progress: Callable[[float], None] | None = None) -> Outcome:
    """One recording through :func:`ser.inference.recording.predict_file`; its error is its outcome."""
    try:
        model = bundle.with_reference(job.reference) if job.reference is not None else bundle
        frame, info = recording.predict_file(model, job.path, options=options, pool=pool,
                                             timings=timings, on_progress=on_progress,
                                             silence_s=job.silence_s, known=job.known)
    except recording.TooShortError as e:
        return Outcome(info=e.info, too_short=str(e))
    except Exception as e:  # noqa: BLE001 - a recording's error is its outcome
        return Outcome(error=e)
    return Outcome(frame=frame, info=info)


def _remote_predict(spec: _BundleSpec, job: Job, options: InferenceOptions) -> Outcome:
    """The task of one recording on a Dask worker (its own errors returned, not raised)."""
    import torch
    from distributed import get_worker

    torch.set_num_threads(max(1, int(get_worker().state.nthreads)))
    out = _outcome(_worker_bundle(spec), job, options=options, pool=None)
    return out if out.error is None else dataclasses.replace(out, error=_portable(out.error))


def _bundle_spec(bundle: ModelBundle) -> _BundleSpec:
    return _BundleSpec(path=str(bundle.path), precision=str(getattr(bundle, "precision", "fp32")),
                       runtime=str(getattr(bundle, "runtime", "torch")),
                       fingerprint=model_stamp(bundle).get("fingerprint"))


def run_recordings(bundle: ModelBundle, jobs: Sequence[Job], *, options: InferenceOptions,
                   pool: Workers | None, cluster: str | None = None,
                   timings: dict[str, float] | None = None,
                   on_progress: Callable[[float], None] | None = None,
                   log: Callable[[str], None] | None = None) -> Iterator[tuple[Job, Outcome]]:
    """Each job's outcome: in input order on this process (``cluster`` None, features in
    ``pool``), or in order of completion on a Dask cluster (:func:`parse_cluster`).

    Args:
        bundle: the loaded bundle (on a cluster, each worker loads it from ``bundle.path``).
        jobs: the recordings.
        options: resolved inference options.
        pool: feature workers of this process (unused on a cluster).
        cluster: ``None``, ``"local"``, ``"local:N"`` or ``"tcp://HOST:PORT"``.
        timings: seconds per step (this process only).
        on_progress: called with seconds of audio done (per block here, per recording on a cluster).
        log: where the cluster's description and dashboard link go (default stderr).

    Raises:
        ValueError: a malformed ``cluster``.
    """
    if cluster is None:
        for job in jobs:
            yield job, _outcome(bundle, job, options=options, pool=pool, timings=timings,
                                on_progress=on_progress)
        return
    spec = parse_cluster(cluster)
    if not jobs:
        return
    from distributed import as_completed

    bspec = _bundle_spec(bundle)
    remote = dataclasses.replace(options, workers=0)  # a worker computes its features itself
    run_id = uuid.uuid4().hex[:12]
    with connect(spec, log=log) as client:
        futures = {client.submit(_remote_predict, bspec, job, remote, pure=False,
                                 key=f"ser-recording-{run_id}-{i}"): job
                   for i, job in enumerate(jobs)}
        try:
            for fut in as_completed(futures):
                job = futures[fut]
                try:
                    outcome = fut.result()
                except Exception as e:  # noqa: BLE001 - KilledWorker, a lost scheduler, ...
                    outcome = Outcome(error=_portable(e))
                if on_progress is not None and outcome.info:
                    on_progress(float(outcome.info.get("duration_s") or 0.0))
                yield job, outcome
        finally:
            client.cancel(list(futures))
