"""Command line: lift a 2D keypoint file to 3D poses.

    python -m engine.run --input keypoints.npy [--image-size W H] [--output OUT.npz]

Input: .npy, or .npz with key ``keypoints`` (and optionally ``image_size``), shaped (T, J, 2)
pixel coordinates in Human3.6M joint order, or (T, J, 3) with a confidence channel in [0, 1].
Output (.npz): ``poses_3d`` float32 (T, J, 3) millimetres, camera frame, root (pelvis) relative;
``poses_3d_std`` (T, J) spread over the hypotheses in mm; ``joint_names``; ``meta`` (JSON).
Any bad input prints one line on stderr and exits with status 2 without writing an output.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .camera import Intrinsics
from .io import InputError, load_keypoints, result_arrays, write_npz_atomic

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (status 2) instead of usage + message."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m engine.run",
        description="Lift 2D keypoints (Human3.6M 17-joint order, pixels) to root-relative 3D poses "
                    "with StarPose (autoregressive diffusion + spatial-temporal physical guidance).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input", required=True, type=Path,
                   help="keypoints .npy, or .npz with key 'keypoints' (T, J, 2) pixels or (T, J, 3) with confidence")
    p.add_argument("--output", type=Path, default=None,
                   help="output .npz (default: <input stem>_3d.npz beside the input)")
    p.add_argument("--image-size", nargs=2, type=int, metavar=("W", "H"), default=None,
                   help="image width and height in pixels (needed to normalise the keypoints unless the "
                        ".npz has 'image_size' or --intrinsics is given, which implies W=2*CX, H=2*CY)")
    p.add_argument("--intrinsics", nargs=4, type=float, metavar=("FX", "FY", "CX", "CY"), default=None,
                   help="camera intrinsics in pixels (default: f = 1.145 * max(W, H), the Human3.6M ratio, "
                        "principal point at the image centre)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="model checkpoint (.safetensors); default: the shipped 'small' model trained on CMU mocap")
    p.add_argument("--backend", default="torch", help="execution backend (see engine.backends)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    p.add_argument("--hypotheses", type=int, default=None, help="N hypotheses (default: the checkpoint's)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the checkpoint's)")
    p.add_argument("--aggregation", choices=("mean", "reproj"), default=None,
                   help="how hypotheses become one pose: mean, or per-joint best 2D reprojection")
    p.add_argument("--guidance-mode", choices=("x0", "full"), default=None,
                   help="STPG gradient w.r.t. the clean estimate (x0, fast) or through the denoiser (full, Eq. 9)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--no-guidance", action="store_true", help="disable STPG physics guidance")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _resolve_intrinsics(args, extras) -> Intrinsics:
    size = tuple(args.image_size) if args.image_size else extras.get("image_size")
    if args.intrinsics is not None:
        fx, fy, cx, cy = args.intrinsics
        if size is None:
            size = (int(round(2 * cx)), int(round(2 * cy)))
        return Intrinsics(fx, fy, cx, cy, int(size[0]), int(size[1]))
    if size is None:
        raise InputError("--image-size W H is required: pixel keypoints cannot be normalised without the "
                         "image size (or pass --intrinsics FX FY CX CY)")
    return Intrinsics.default_for(int(size[0]), int(size[1]))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except InputError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print("interrupted: no output written", file=sys.stderr)
        return 130


def _run(args) -> int:
    import torch

    from .backends import BackendUnavailable, make_backend
    from .checkpoint import DEFAULT_CHECKPOINT, CheckpointError, load_checkpoint
    from .pipeline import Lifter, VideoInput

    for name in ("hypotheses", "steps"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise InputError(f"--{name} must be >= 1, got {v}")
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    if args.image_size is not None and min(args.image_size) <= 0:
        raise InputError(f"--image-size must be positive, got {args.image_size[0]} {args.image_size[1]}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise InputError(f"--device {args.device!r} is not a valid torch device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: CUDA is not available on this machine")

    ckpt = args.checkpoint or DEFAULT_CHECKPOINT
    if args.checkpoint is None and not DEFAULT_CHECKPOINT.is_file():
        raise InputError(f"no shipped default model at {DEFAULT_CHECKPOINT}; pass --checkpoint PATH")
    try:
        model = load_checkpoint(ckpt, device)
    except CheckpointError as e:
        raise InputError(str(e)) from None

    kp, extras = load_keypoints(args.input, model.num_joints)
    try:
        intr = _resolve_intrinsics(args, extras)
    except ValueError as e:
        raise InputError(str(e)) from None

    if args.steps is not None and args.steps > model.cfg.diffusion.train_steps:
        raise InputError(f"--steps {args.steps} exceeds the model's {model.cfg.diffusion.train_steps} "
                         "training steps")
    diffusion = {k: v for k, v in (("hypotheses", args.hypotheses), ("sample_steps", args.steps),
                                   ("aggregation", args.aggregation)) if v is not None}
    guidance = {"enabled": False} if args.no_guidance else {}
    if args.guidance_mode:
        guidance["mode"] = args.guidance_mode
    try:
        cfg = model.cfg.with_overrides(diffusion=diffusion, guidance=guidance)
    except ValueError as e:
        raise InputError(str(e)) from None
    try:
        backend = make_backend(args.backend, model, str(device))
    except BackendUnavailable as e:
        raise InputError(str(e)) from None

    out = args.output or args.input.with_name(f"{args.input.stem}_3d.npz")
    video = VideoInput.from_pixels(kp, intr)
    bar = None
    if not args.quiet and video.frames >= 200:
        from tqdm import tqdm
        bar = tqdm(total=video.frames, unit="frame", desc="lifting", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        result = Lifter(model, backend, cfg).lift([video], seed=args.seed,
                                                  progress=bar.update if bar else None)[0]
    finally:
        if bar is not None:
            bar.close()
    dt = time.perf_counter() - t0
    meta = {
        "preset": model.cfg.name, "checkpoint": str(ckpt), "seed": args.seed, "backend": args.backend,
        "device": str(device), "hypotheses": cfg.diffusion.hypotheses, "steps": cfg.diffusion.sample_steps,
        "aggregation": cfg.diffusion.aggregation, "guidance": cfg.guidance.enabled,
        "guidance_mode": cfg.guidance.mode, "units": "mm",
        "frame": "camera (x right, y down, z forward), root-relative (pelvis = 0)",
        "intrinsics_px": [intr.fx, intr.fy, intr.cx, intr.cy], "image_size": [intr.width, intr.height],
        "fps_model": model.cfg.fps, "frames": video.frames, "input": str(args.input),
    }
    write_npz_atomic(out, **result_arrays(result.poses, result.spread, model.skeleton.joint_names, meta))
    if not args.quiet:
        print(f"lifted {video.frames} frames in {dt:.2f} s ({video.frames / dt:.1f} frames/s, "
              f"backend {args.backend}, {cfg.diffusion.hypotheses} hypotheses x {cfg.diffusion.sample_steps} "
              f"steps) -> {out}", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
