"""Corpus lifting: thousands to millions of clips in one resumable job.

    python -m engine.corpus INPUT... --output DIR [--workers N] [--batch-size B] [--backend torch]
    python -m engine.corpus INPUT... --output DIR --ray [--ray-address auto]       # Ray actors
    python -m engine.corpus INPUT... --output DIR --shard 3/16                     # Slurm arrays, torchrun

Inputs are folders (recursive), globs, list files and fsspec URLs (:mod:`engine.front.corpus.inputs`);
the output folder mirrors the input tree, and each output is the ``.npz`` that
``python -m engine.run --input CLIP`` writes for that clip, bit for bit in its arrays.
Clips are grouped by length (longest first) into batches, one autoregressive pass per batch, on
``--workers`` processes (default: one per core) or Ray actors (:mod:`engine.front.corpus.executor`,
:mod:`engine.front.corpus.ray_pool`), each with its own model (:mod:`engine.front.corpus.worker`).

Resumable and safe: this process alone writes; every output is written atomically and only then
recorded in the manifest (:mod:`engine.front.corpus.manifest`), so a rerun skips exactly the clips whose
outputs are complete (checked by size and SHA-256 against the manifest, with the same settings
and checkpoint) and lifts the rest; Ctrl-C (or SIGTERM from a scheduler) stops at once, leaving
complete outputs and a consistent manifest (exit status 130, 143 for SIGTERM). A bad clip is recorded as an error
and skipped; the exit status is then 2, and a rerun tries it again.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import InputError
from ..io import check_writable
from .inputs import ClipTask, discover, is_url, parse_shard, select_shard
from .manifest import Manifest, ManifestState, file_digest, manifest_name, now
from .worker import DEFAULT_BATCH, ClipOutcome, LiftSettings, host_cpus

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
SORT_WINDOW_CHUNKS = 8     # clips are length-sorted within windows of this many chunks per worker


@dataclass(frozen=True)
class CorpusConfig:
    """A corpus job: what to lift (inputs, settings) and how to spread it."""
    inputs: tuple[str, ...]
    output: Path
    lift: LiftSettings = field(default_factory=LiftSettings)
    workers: int | None = None           # None: one per core (local), one per --threads CPUs (Ray)
    ray: bool = False
    ray_address: str | None = None
    shard: tuple[int, int] | None = None
    quiet: bool = False

    def __post_init__(self):
        if self.workers is not None and not 1 <= self.workers <= 4096:
            raise InputError(f"--workers must be in [1, 4096], got {self.workers}")
        if self.ray_address is not None and not self.ray:
            raise InputError("--ray-address needs --ray")
        if is_url(str(self.output)):
            raise InputError(f"--output {self.output}: outputs go to a local (or mounted) folder")


@dataclass
class WorkerStats:
    clips: int = 0
    errors: int = 0
    frames: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0


@dataclass
class Summary:
    """What a job did (also printed at its end)."""
    clips: int = 0                       # clips of the job (this shard)
    skipped: int = 0                     # complete from earlier runs
    lifted: int = 0
    errors: int = 0
    frames: int = 0
    seconds: float = 0.0                 # lifting, after the workers were ready
    startup_seconds: float = 0.0         # discovery, resume check, workers loading the model
    workers: dict[str, WorkerStats] = field(default_factory=dict)
    interrupted: bool = False
    terminated: bool = False             # the interrupt was SIGTERM
    executor: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# -- scheduling ------------------------------------------------------------------------------
def length_hint(source: str) -> int:
    """Frames of a local .npy/.npz clip from its array header (0 when unknown: JSON, URLs)."""
    if is_url(source):
        return 0
    try:
        if source.lower().endswith(".npy"):
            with open(source, "rb") as f:
                return _frames_of(_npy_shape(f))
        if source.lower().endswith(".npz"):
            with zipfile.ZipFile(source) as z, z.open("keypoints.npy") as f:
                return _frames_of(_npy_shape(f))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        pass
    return 0


def _npy_shape(f) -> tuple:
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(f)[0]


def _frames_of(shape: tuple) -> int:
    return int(shape[-3]) if len(shape) >= 3 else 0


def chunked(tasks: list[ClipTask], batch: int, window: int) -> Iterator[list[ClipTask]]:
    """Batches of similar length: each window of clips sorted longest first, cut every ``batch``.

    Longest first also balances the workers: the short clips fill the gaps at the end.
    """
    for w in range(0, len(tasks), window):
        part = sorted(tasks[w:w + window], key=lambda t: -length_hint(t.source))
        for i in range(0, len(part), batch):
            yield part[i:i + batch]


# -- outputs ---------------------------------------------------------------------------------
def write_outcome(outcome: ClipOutcome, root: Path, exports: tuple[str, ...]) -> dict[str, list]:
    """Write a clip's .npz and exports as engine.run does (all or none); {relative path: [bytes, sha256]}."""
    from ..io import OutputGroup
    from ..writers import stage_output
    arrays = outcome.arrays
    with OutputGroup() as group:
        paths = stage_output(group, root / outcome.task.output, arrays, exports, json.loads(str(arrays["meta"])))
    return {p.relative_to(root).as_posix(): list(file_digest(p)) for p in paths}


def clip_record(outcome: ClipOutcome, files: dict | None, settings_id: str, checkpoint_sha256: str) -> dict:
    t = outcome.task
    return {"type": "clip", "clip": t.key, "input": t.source, "output": t.output, "status": outcome.status,
            "frames": outcome.frames, "seconds": round(outcome.seconds, 4), "error": outcome.error,
            "settings_id": settings_id, "checkpoint_sha256": checkpoint_sha256, "files": files,
            "worker": outcome.worker, "time": now()}


# -- the job -----------------------------------------------------------------------------------
def run_corpus(cfg: CorpusConfig, log=None) -> Summary:
    """Run a corpus job (module doc); raises InputError before lifting for a bad job.

    ``log``: where the summary lines go (default: stderr).
    """
    from .executor import make_executor
    t_start = time.perf_counter()
    s = cfg.lift
    ckpt = s.checkpoint_path
    if not ckpt.is_file():
        raise InputError(f"checkpoint not found: {ckpt}")
    ckpt_sha = file_digest(ckpt)[1]
    settings_id = s.settings_id(ckpt_sha)
    plan = discover(list(cfg.inputs))
    tasks = select_shard(plan.tasks, cfg.shard)
    clashes = [(t, why) for t, why in plan.clashes if select_shard([t], cfg.shard)]
    root = Path(cfg.output)
    if root.exists() and not root.is_dir():
        raise InputError(f"--output {root} is a file; give a folder")
    check_writable(root / manifest_name(cfg.shard), "the manifest")
    state = ManifestState.load(root)
    todo = [t for t, redo in zip(tasks, state.incomplete([t.key for t in tasks], settings_id, ckpt_sha)) if redo]
    summary = Summary(clips=len(tasks) + len(clashes), skipped=len(tasks) - len(todo))
    say = (lambda msg: None) if cfg.quiet else (lambda msg: print(msg, file=log or sys.stderr, flush=True))
    shard = f" (shard {cfg.shard[0]}/{cfg.shard[1]})" if cfg.shard else ""
    say(f"{summary.clips} clips{shard} under {plan.root}: {summary.skipped} complete from earlier runs, "
        f"{len(todo)} to lift -> {root}")
    with Manifest(root / manifest_name(cfg.shard)) as manifest:
        manifest.append({"type": "run", "time": now(), "settings_id": settings_id, "settings": s.result_settings(),
                         "checkpoint": str(ckpt), "checkpoint_sha256": ckpt_sha, "inputs": list(cfg.inputs),
                         "shard": list(cfg.shard) if cfg.shard else None, "clips": summary.clips,
                         "to_lift": len(todo), "batch_size": s.batch, "threads": s.threads})
        for task, why in clashes:
            _record(summary, manifest, ClipOutcome(task, "error", error=why), None, settings_id, ckpt_sha)
        if not todo:
            summary.startup_seconds = time.perf_counter() - t_start
            _report(summary, root, cfg, say)
            return summary
        workers = cfg.workers if cfg.ray else (cfg.workers or max(1, min(host_cpus() // s.threads, len(todo))))
        executor = make_executor(s, ckpt_sha, workers, cfg.ray, cfg.ray_address)
        summary.executor = f"{executor.name} x {executor.workers}"
        for info in executor.infos:
            manifest.append({"type": "worker", "time": now(), **info})
            if info.get("batch_check", "").startswith("failed"):
                say(f"worker {info['worker']}: a clip lifted in a batch of {s.batch} would not be bit-identical "
                    "to the same clip lifted alone on this machine; it lifts one clip per pass")
        try:
            summary.startup_seconds = time.perf_counter() - t_start
            _lift(cfg, executor, todo, root, manifest, summary, settings_id, ckpt_sha)
        except KeyboardInterrupt as e:
            summary.interrupted, summary.terminated = True, isinstance(e, Terminated)
        finally:
            executor.close()
    _report(summary, root, cfg, say)
    return summary


def _lift(cfg: CorpusConfig, executor, todo: list[ClipTask], root: Path, manifest: Manifest, summary: Summary,
          settings_id: str, ckpt_sha: str) -> None:
    s = cfg.lift
    bar = None
    if not cfg.quiet:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), unit="clip", desc="corpus", file=sys.stderr, dynamic_ncols=True)
    t0 = time.perf_counter()
    window = s.batch * executor.workers * SORT_WINDOW_CHUNKS
    try:
        for outcomes in executor.run(chunked(todo, s.batch, window)):
            for o in outcomes:
                files = None
                if o.status == "ok":
                    try:
                        files = write_outcome(o, root, s.exports)
                    except Exception as e:          # noqa: BLE001 - a full disk or a bad export: this clip only
                        why = f"cannot write the output: {e.strerror if isinstance(e, OSError) and e.strerror else e}"
                        o = ClipOutcome(o.task, "error", o.frames, o.seconds, why, None, o.worker, o.peak_rss_mb)
                _record(summary, manifest, o, files, settings_id, ckpt_sha)
                summary.seconds = time.perf_counter() - t0
                if bar is not None:
                    bar.set_postfix_str(f"{summary.frames} frames, {summary.fps:.1f} frames/s, "
                                        f"{summary.errors} errors", refresh=False)
                    bar.update(1)
    finally:
        summary.seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()


def _record(summary: Summary, manifest: Manifest, o: ClipOutcome, files, settings_id: str, ckpt_sha: str) -> None:
    manifest.append(clip_record(o, files, settings_id, ckpt_sha))
    w = summary.workers.setdefault(o.worker or "-", WorkerStats())
    w.clips += 1
    w.seconds += o.seconds
    w.peak_rss_mb = max(w.peak_rss_mb, o.peak_rss_mb)
    if o.status == "ok":
        summary.lifted += 1
        summary.frames += o.frames
        w.frames += o.frames
    else:
        summary.errors += 1
        w.errors += 1


def _report(summary: Summary, root: Path, cfg: CorpusConfig, say) -> None:
    for wid, w in sorted(summary.workers.items()):
        if wid == "-":                   # clips never handed to a worker (clashing outputs)
            continue
        rate = f", {w.frames / w.seconds:.1f} frames/s busy" if w.seconds > 0 and w.frames else ""
        mem = f", peak {w.peak_rss_mb:.0f} MiB" if w.peak_rss_mb else ""
        say(f"  worker {wid}: {w.clips} clips ({w.errors} errors), {w.frames} frames, {w.seconds:.1f} s{rate}{mem}")
    how = f" on {summary.executor}" if summary.executor else ""
    stop = "interrupted: " if summary.interrupted else ""
    say(f"{stop}{summary.lifted} clips lifted ({summary.frames} frames) in {summary.seconds:.1f} s = "
        f"{summary.fps:.1f} frames/s{how} (+{summary.startup_seconds:.1f} s start-up); {summary.skipped} complete "
        f"from earlier runs; {summary.errors} errors (see {root / manifest_name(cfg.shard)})")


def write_summary(summary: Summary, path: Path) -> None:
    from dataclasses import asdict

    from ..io import write_atomic
    doc = asdict(summary)
    doc["fps"] = summary.fps
    write_atomic(path, lambda f: f.write(json.dumps(doc, indent=1, sort_keys=True)), binary=False)


# -- command line --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from ...core.backend import available_backends
    from ..formats import FORMATS
    p = argparse.ArgumentParser(
        prog="python -m engine.corpus",
        description="Lift a corpus of 2D keypoint clips to 3D: batched, on worker processes, Ray actors or "
                    "scheduler shards, resumable. Each output is the .npz engine.run writes for that clip; "
                    "the lifting flags mean what they mean there (python -m engine.run --help).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="folders (recursive), quoted globs ('data/**/*.npz'), list files (.txt/.lst: one path a "
                        "line) or fsspec URLs (s3://bucket/clips/)")
    p.add_argument("--output", required=True, type=Path, help="output folder; mirrors the input tree")
    run = p.add_argument_group("how to run")
    run.add_argument("--backend", default="torch", choices=available_backends(),
                     help="torch (batched; default) or cpp/onnx/triton (one clip per pass)")
    run.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                     help="an option of the backend, repeatable (as engine.run's)")
    run.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1")
    run.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    run.add_argument("--batch-size", type=int, default=None,
                     help=f"clips per autoregressive pass (default {DEFAULT_BATCH} with torch, 1 otherwise)")
    run.add_argument("--workers", type=int, default=None,
                     help="worker processes or Ray actors, each with its own model (default: one per "
                          "--threads CPUs of this machine, or of the Ray cluster)")
    run.add_argument("--ray", action="store_true", help="lift on Ray actors (pip install -e '.[ray]')")
    run.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="join this Ray cluster ('auto', ray://host:10001) instead of starting a local one")
    run.add_argument("--shard", default=None, metavar="I/N",
                     help="lift only shard I of N (0-based; e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); "
                          "each shard has its own manifest file")
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    run.add_argument("--summary-json", type=Path, default=None, metavar="PATH",
                     help="also write the job's summary (counts, frames/s, per-worker stats) as JSON")
    lift = p.add_argument_group("lifting (as engine.run)")
    lift.add_argument("--checkpoint", default=None, help="model .safetensors (default: the shipped model)")
    lift.add_argument("--seed", type=int, default=0)
    lift.add_argument("--hypotheses", type=int, default=None)
    lift.add_argument("--steps", type=int, default=None)
    lift.add_argument("--aggregation", choices=("mean", "reproj"), default=None)
    lift.add_argument("--guidance-mode", choices=("x0", "full"), default=None)
    lift.add_argument("--no-guidance", action="store_true")
    lift.add_argument("--rho", type=float, default=None)
    lift.add_argument("--encoder-only", action="store_true")
    lift.add_argument("--format", choices=FORMATS, default=None)
    lift.add_argument("--person", type=int, default=None, metavar="ID")
    lift.add_argument("--conf-threshold", type=float, default=None, metavar="C")
    lift.add_argument("--normalized", action="store_true")
    lift.add_argument("--fps", type=float, default=None)
    lift.add_argument("--image-size", nargs=2, type=int, metavar=("W", "H"), default=None)
    lift.add_argument("--intrinsics", nargs=4, type=float, metavar=("FX", "FY", "CX", "CY"), default=None)
    lift.add_argument("--export", default=None, metavar="LIST", help="also write json,csv,bvh beside each .npz")
    return p


def config_from_args(args: argparse.Namespace) -> CorpusConfig:
    """The one place where flags become the job's config."""
    from ..validate import key_values
    from ..writers import parse_exports
    exports = parse_exports(args.export) if args.export else ()
    lift = LiftSettings(
        checkpoint=args.checkpoint, backend=args.backend, device=args.device, threads=args.threads,
        batch_size=args.batch_size, seed=args.seed, hypotheses=args.hypotheses, steps=args.steps,
        aggregation=args.aggregation, guidance_mode=args.guidance_mode, no_guidance=args.no_guidance, rho=args.rho,
        encoder_only=args.encoder_only, format=args.format, person=args.person,
        conf_threshold=args.conf_threshold, normalized=args.normalized, fps=args.fps,
        image_size=tuple(args.image_size) if args.image_size else None,
        intrinsics=tuple(args.intrinsics) if args.intrinsics else None, exports=exports,
        backend_options=key_values(args.backend_option))
    return CorpusConfig(tuple(args.inputs), args.output, lift, args.workers, args.ray, args.ray_address,
                        parse_shard(args.shard) if args.shard else None, args.quiet)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's time limit), handled like Ctrl-C; exit status 143 as engine.run."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _terminate)
    try:
        summary = run_corpus(config_from_args(args))
        if args.summary_json is not None:
            write_summary(summary, args.summary_json)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as e:
        print("interrupted before lifting: no output written", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    if summary.interrupted:
        return EXIT_TERMINATED if summary.terminated else EXIT_INTERRUPTED
    return EXIT_BAD_INPUT if summary.errors else 0


if __name__ == "__main__":
    sys.exit(main())
