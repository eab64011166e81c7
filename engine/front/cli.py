"""Command line: lift 2D keypoint files to 3D poses.

    python -m engine.run --input keypoints.npy [--image-size W H] [--output OUT.npz]

Input: .npy, or .npz with key ``keypoints`` (and optionally ``image_size``), shaped (T, J, 2)
pixel coordinates in Human3.6M joint order, or (T, J, 3) with a confidence channel in [0, 1].
An .npz may also hold ``gt_poses_3d`` (T, 17, 3) mm, camera frame: the root-relative MPJPE of the
output against it is printed in the summary and recorded as meta ``gt_mpjpe_mm``.
Output (.npz): ``poses_3d`` float32 (T, J, 3) millimetres, camera frame, root (pelvis) relative;
``poses_3d_std`` (T, J) spread over the hypotheses in mm; ``joint_names``; ``meta`` (JSON).
Any bad input prints one line on stderr and exits with status 2 without writing an output.

Also (see --help): other layouts converted to Human3.6M (``--format``, :mod:`engine.front.formats`);
MMPose/rtmlib/AlphaPose JSON and OpenPose JSON folders (:mod:`engine.front.readers`); several people
(``--person``, ``--all-people``); missing joints (NaN x and y) and ``--conf-threshold`` filled in
time (:mod:`engine.front.resample`); ``--fps`` resampling to the model's rate and back; the output also
holds ``root_trajectory`` (T, 3) mm (camera-frame pelvis; focal length estimated when no
``--intrinsics``, :mod:`engine.core.intrinsics`) and ``keypoints_2d`` (T, 17, 3), the H36M pixels +
confidence that were lifted; ``--export json,csv,bvh`` (:mod:`engine.front.writers`); folders, globs and
several files in one command (:mod:`engine.front.batch`: each clip's output is written when it is done;
with several inputs a bad one is reported and skipped, and the exit status is 2 at the end);
``--encoder-only``: the context encoder's estimate alone, no HPIM, diffusion or STPG (tens of times
faster, deterministic; ``poses_3d_std`` all zeros, meta ``encoder_only: true``; the sampler flags
are rejected with it).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..core.backend import available_backends
from ..core.errors import InputError
from ..core.skeleton import H36M17
from .formats import FORMATS
from .io import OutputGroup, check_writable, npz_arrays
from .writers import parse_exports

EXIT_BAD_INPUT = 2


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only when it has one worth showing (not None, not a store_true False,
    and not already written in the help text)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False) or "default" in text or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (status 2) instead of usage + message."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m engine.run",
        description="Lift 2D keypoints (Human3.6M 17-joint order, pixels) to root-relative 3D poses "
                    "with StarPose (autoregressive diffusion + spatial-temporal physical guidance). "
                    "Joint order: " + ", ".join(f"{i} {n}" for i, n in enumerate(H36M17.joint_names)) + ".",
        formatter_class=_HelpFormatter)
    p.add_argument("--input", required=True, type=Path, nargs="+", metavar="INPUT",
                   help="keypoints .npy, or .npz with key 'keypoints' (T, J, 2) pixels or (T, J, 3) with confidence "
                        "((P, T, J, C) for P people; NaN x and y = a missing joint); MMPose/rtmlib/AlphaPose .json; "
                        "an OpenPose JSON folder; "
                        "an .npz may add 'gt_poses_3d' (T, 17, 3) mm to get the MPJPE of the output reported; "
                        "or several clips: a folder of them, a quoted glob ('clips/*.npz'), several paths")
    p.add_argument("--output", type=Path, default=None,
                   help="output .npz (default: <input stem>_3d.npz beside the input); a folder when there are "
                        "several inputs; with --all-people OUT.npz becomes OUT_p<ID>.npz")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="2D keypoint layout, converted to Human3.6M-17 (pelvis, spine, thorax, head synthesised "
                        "where missing; see engine/front/formats.py). Default: h36m for .npy/.npz, guessed from the "
                        "joint count for JSON (17 coco, 26 halpe26, 133 coco_wholebody), openpose25 for OpenPose")
    p.add_argument("--person", type=int, default=None, metavar="ID",
                   help="lift this person of a multi-person file (track_id / idx / person_id, else the "
                        "position in the frame; 4-D arrays: the first axis)")
    p.add_argument("--all-people", action="store_true",
                   help="lift every person of the file, one output each: <stem>_p<ID>_3d.npz")
    p.add_argument("--conf-threshold", type=float, default=None, metavar="C",
                   help="joints with confidence below C count as missing, like NaN coordinates: filled by "
                        "linear interpolation in time (nearest valid frame at the ends) with confidence 0 "
                        "(default: only NaN x, y is missing)")
    p.add_argument("--normalized", action="store_true",
                   help="x, y are fractions of the image width/height in [0, 1] (MediaPipe landmarks); "
                        "they are multiplied by --image-size")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of the input, 1 to 10000; resampled (linear) to the model's rate (50 Hz) for "
                        "lifting and the 3D resampled back to the input frames (default: the .npz 'fps', else the "
                        "model's)")
    p.add_argument("--export", default=None, metavar="LIST",
                   help="also write these beside the .npz, comma separated: json (per frame, named joints), "
                        "csv (one row per frame, pelvis_x ... mm), bvh (Y-up, cm, for Blender & co.)")
    p.add_argument("--image-size", nargs=2, type=int, metavar=("W", "H"), default=None,
                   help="image width and height in pixels (needed to normalise the keypoints unless the "
                        ".npz has 'image_size' or --intrinsics is given, which implies W=2*CX, H=2*CY)")
    p.add_argument("--intrinsics", nargs=4, type=float, metavar=("FX", "FY", "CX", "CY"), default=None,
                   help="camera intrinsics in pixels (default: f = 1.145 * max(W, H), the Human3.6M ratio, "
                        "principal point at the image centre, for lifting; the root_trajectory output then uses "
                        "a focal length estimated from the 2D and the lifted 3D when that fits clearly better, "
                        "see meta 'intrinsics_source')")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="model checkpoint (.safetensors); default: the shipped 'small' model "
                        "(engine/weights/starpose_small.safetensors, trained on CMU + HDM05 mocap)")
    p.add_argument("--backend", default="torch", metavar="{" + ",".join(available_backends()) + "}",
                   help="execution backend: torch (the eager reference), onnx (ONNX Runtime), cpp (the C++ runner), "
                        "triton (CUDA only), and any other registered in the 'starpose.backends' entry points "
                        "(engine/core/backend.py)")
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the backend, repeatable: onnx and cpp take threads (ORT intra-op threads "
                        "per session, default 1) and export_dir; triton takes dtype (float32|float16), "
                        "rows_per_program (1|3|7) and cuda_graphs (true|false)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    p.add_argument("--hypotheses", type=int, default=None, help="N hypotheses (default: the checkpoint's)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the checkpoint's)")
    p.add_argument("--aggregation", choices=("mean", "reproj"), default=None,
                   help="how hypotheses become one pose: mean, or per-joint best 2D reprojection")
    p.add_argument("--guidance-mode", choices=("x0", "full"), default=None,
                   help="STPG gradient w.r.t. the clean estimate (x0, fast) or through the denoiser (full, Eq. 9)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--no-guidance", action="store_true", help="disable STPG physics guidance")
    p.add_argument("--rho", type=float, default=None,
                   help="STPG step scale in metres per unit gradient (default: the checkpoint's; lower it "
                        "for jittery detector 2D, see the README)")
    p.add_argument("--encoder-only", action="store_true",
                   help="lift with the context encoder alone (its initial estimate: no HPIM, diffusion or STPG "
                        "guidance), tens of times faster and deterministic but less accurate; poses_3d_std is all "
                        "zeros and meta says encoder_only; cannot be combined with --hypotheses, --steps, "
                        "--aggregation, --guidance-mode, --no-guidance or --rho; --seed has no effect")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch CPU threads (1 to 256). The autoregressive loop is thousands of tiny operations: "
                        "one thread is the fastest on an idle 2-core machine and the only setting that does not "
                        "collapse when another process is busy (the onnx and cpp backends use one ORT thread "
                        "unless --backend-option threads=N); more threads only help the --encoder-only path on "
                        "long clips")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def _fail(msg: str) -> int:
    print("error: " + msg.replace("\r", "\\r").replace("\n", "\\n"), file=sys.stderr)   # always one line
    return EXIT_BAD_INPUT


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: finished outputs kept, the one in progress not written."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading
    args = build_parser().parse_args(argv)
    written: list[Path] = []          # outputs finished so far, reported if the run is interrupted
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run(args, written)
    except InputError as e:
        return _fail(str(e))
    except KeyboardInterrupt as e:
        if written:
            print(f"interrupted: {len(written)} finished output(s) kept; the clip in progress was "
                  "not written", file=sys.stderr)
        else:
            print("interrupted: no output written", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except OSError as e:              # the file system refused something the checks did not foresee
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e}")
    except MemoryError:
        return _fail("out of memory; lift shorter clips (split the input) or use fewer --hypotheses")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _check_args(args) -> list[str]:
    from .validate import lift_flags
    lift_flags(args)
    if args.person is not None and args.all_people:
        raise InputError("--person and --all-people exclude each other")
    return list(parse_exports(args.export)) if args.export is not None else []


def _check_output_names(clip: Path, out: Path, exports: list[str]) -> None:
    """Refuse an output that would overwrite its own input or one of its own exports."""
    if out.resolve() == clip.resolve():
        raise InputError(f"--output {out} is the input file itself; choose another name")
    for kind in exports:
        if out.with_suffix("." + kind).resolve() == out.resolve():
            raise InputError(f"--output {out} would be overwritten by the --export {kind} file of the same "
                             "name; give --output a .npz name")


def _check_distinct_outputs(clips: list[Path], output: Path | None) -> None:
    """Refuse several inputs that would write the same output (e.g. a.npy and a.json -> a_3d.npz)."""
    from .batch import output_path
    seen: dict[Path, Path] = {}
    for clip in clips:
        out = output_path(clip, None, output, True).resolve()
        if out in seen:
            raise InputError(f"{seen[out]} and {clip} would both be written to {out}; lift them separately "
                             "with --output, or rename one")
        seen[out] = clip


def _run(args, written: list[Path]) -> int:
    import torch

    from .api import StarPoseLifter
    from .batch import expand_inputs
    from .validate import key_values

    exports = _check_args(args)
    torch.set_num_threads(args.threads)
    sampler = {"hypotheses": args.hypotheses, "steps": args.steps, "aggregation": args.aggregation,
               "guidance": False if args.no_guidance else None, "guidance_mode": args.guidance_mode, "rho": args.rho}
    api = StarPoseLifter(args.checkpoint, args.device, args.backend, seed=args.seed,
                         backend_options=dict(key_values(args.backend_option)),
                         **{k: v for k, v in sampler.items() if v is not None})
    clips, batch = expand_inputs(args.input)
    if not batch:
        _lift_clip(args, api, clips[0], False, exports, written)
        return 0
    if args.output is not None and args.output.exists() and not args.output.is_dir():
        raise InputError(f"--output {args.output}: with several inputs --output must be a folder")
    _check_distinct_outputs(clips, args.output)
    failed = 0
    for i, clip in enumerate(clips):
        if not args.quiet:
            print(f"[{i + 1}/{len(clips)}] {clip}", file=sys.stderr)
        try:
            _lift_clip(args, api, clip, True, exports, written)
        except InputError as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
    if not args.quiet:
        print(f"{len(clips) - failed} of {len(clips)} inputs lifted", file=sys.stderr)
    return EXIT_BAD_INPUT if failed else 0


def _lift_clip(args, api, clip: Path, batch: bool, exports: list[str], written: list[Path]) -> None:
    """Read, check and prepare every person first (so a bad input writes nothing), then lift."""
    from .api import clip_setup
    from .batch import output_path
    from .readers import read_input
    from .writers import export_paths, stage_output

    raw = read_input(clip)
    setup = clip_setup(raw, str(clip), args.format, args.image_size, args.intrinsics, args.normalized, args.fps)
    clips = api.prepare_file(raw, setup, str(clip), str(clip), args.person, args.all_people, args.conf_threshold,
                             check_layout=args.format is None, normalized=args.normalized)
    raw = None                                # the file's arrays are no longer needed (peak memory)
    prepared = []
    for pid, one in clips:
        out = output_path(clip, pid if args.all_people else None, args.output, batch)
        _check_output_names(clip, out, exports)
        for target in [out, *export_paths(out, exports)]:       # before lifting, not after
            check_writable(target)
        prepared.append((one, out))
    del clips

    for one, out in prepared:
        bar = None
        if not args.quiet and one.frames_lifted >= 200:
            from tqdm import tqdm
            bar = tqdm(total=one.frames_lifted, unit="frame", desc="lifting", file=sys.stderr)
        t0 = time.perf_counter()
        try:
            res = api.lift_clips([one], progress=bar.update if bar else None, encoder_only=args.encoder_only)[0]
        finally:
            if bar is not None:
                bar.close()
        dt = time.perf_counter() - t0
        meta = res["meta"]
        arrays = npz_arrays(res)
        group = OutputGroup()                 # the .npz and its exports: all written, or none
        try:
            with group:
                stage_output(group, out, arrays, exports, meta)
        finally:                              # a Ctrl-C held back during the renames fires after them
            if group.committed:
                written.append(out)
        if not args.quiet:
            n = one.kp.shape[0]
            d = api.cfg.diffusion
            how = "context encoder only" if args.encoder_only else f"{d.hypotheses} hypotheses x {d.sample_steps} steps"
            acc = f"; MPJPE vs gt_poses_3d in the input: {meta['gt_mpjpe_mm']:.1f} mm" if "gt_mpjpe_mm" in meta else ""
            if api.setup_s["backend"] > 5.0 and not written[:-1]:     # a first-call export happened
                acc += (f"; set-up before lifting took {sum(api.setup_s.values()):.1f} s (ONNX export, cached "
                        "for the next runs)")
            print(f"lifted {n} frames in {dt:.2f} s ({n / dt:.1f} frames/s, backend {args.backend}, {how}) -> {out}"
                  f"{acc}", file=sys.stderr)
        print(out)
        for path in export_paths(out, exports):      # every file written, one per line (scripts read them)
            print(path)


if __name__ == "__main__":
    sys.exit(main())
