"""Python API: lift 2D keypoints to 3D in a few lines.

    from engine.front.api import StarPoseLifter
    lifter = StarPoseLifter()                                   # the shipped model, CPU, torch
    out = lifter.lift(kps, image_size=(1920, 1080), fps=30, format="coco")
    out["poses_3d"]          # (T, 17, 3) mm, camera frame, root (pelvis) relative
    out["root_trajectory"]   # (T, 3) mm, camera frame: where the pelvis is
    stream = lifter.stream(image_size=(1920, 1080), format="coco")   # engine.front.api.PoseStream
    for frame in frames: poses = stream.push(frame)            # (n, 17, 3) mm; stream.flush()
    fast = lifter.lift(kps, image_size=(1920, 1080), encoder_only=True)   # context encoder alone

The steps of :meth:`StarPoseLifter.lift` (engine.run and engine.corpus run the same ones:
:meth:`StarPoseLifter.prepare_clip` for steps 1-3; :meth:`StarPoseLifter.lift_clips`, or a
batched :meth:`engine.core.pipeline.Lifter.lift` followed by :meth:`StarPoseLifter.finish` per
clip in the corpus, for 4-6):

1. layout conversion to Human3.6M-17 (:func:`engine.front.formats.to_h36m`), input checks;
2. missing / low-confidence joints filled in time, confidence 0 (:func:`engine.front.resample.fill_missing`);
3. resampling from ``fps`` to the model's rate (``model.cfg.fps``, 50 Hz) when they differ;
4. lifting with :class:`engine.core.pipeline.Lifter` (given intrinsics, else the default ones); with
   ``encoder_only=True`` the context encoder's estimate alone (no HPIM, diffusion or STPG, tens of
   times faster, ``poses_3d_std`` all zeros; :meth:`engine.core.pipeline.Lifter.lift_encoder_only`);
5. the result resampled back to the source frame times;
6. the focal length estimated when no intrinsics were given (:mod:`engine.core.intrinsics`), and the
   root trajectory solved in closed form with the given or chosen intrinsics.

Every problem with the input raises :class:`engine.core.errors.InputError` (a ``ValueError``) with a
one-line message.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.backend import available_backends
from ..core.camera import Intrinsics, normalize_screen
from ..core.errors import InputError
from ..core.intrinsics import estimate_focal as _estimate_focal
from ..core.intrinsics import root_trajectory
from ..core.pipeline import MAX_NORMALIZED, VideoInput
from . import validate
from .formats import FORMATS, check_h36m_layout, to_h36m
from .resample import fill_missing, frames_at_rate, resample

FPS_RANGE = (1.0, 10000.0)
FOCAL_RATIO_RANGE = (0.01, 100.0)   # given focal length / image width


def prepare_keypoints(keypoints, fmt: str = "h36m", conf_threshold: float | None = None,
                      normalized_size: tuple[int, int] | None = None,
                      where: str = "keypoints", check_layout: bool = False,
                      image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Source keypoints -> ((T, 17, 3) filled H36M pixels + confidence, (T, 17) filled mask).

    ``check_layout``: refuse H36M-order input that looks like COCO-17 (:func:`engine.front.formats.check_h36m_layout`).
    ``image_size``: when given (and the input is not declared normalised), refuse coordinates that
    all lie within [0, 1.5] of a larger image: they are normalised coordinates without ``--normalized``.
    """
    if conf_threshold is not None:
        conf_threshold = validate.real(conf_threshold, "conf_threshold", 0.0, 1.0)
    kp = to_h36m(validate.numbers_array(keypoints, where), fmt, where)
    if check_layout and fmt == "h36m":
        check_h36m_layout(kp, where)
    if normalized_size is None and image_size is not None and min(image_size) >= 32:
        xy = kp[..., :2]
        finite = xy[np.isfinite(xy)]
        if finite.size and np.abs(finite).max() <= 1.5:
            raise InputError(f"{where}: every coordinate lies within [0, 1.5] of a {image_size[0]}x{image_size[1]} "
                             "image: these look like normalised [0, 1] coordinates; pass --normalized (they are "
                             "then multiplied by --image-size)")
    if normalized_size is not None:
        kp[..., 0] *= normalized_size[0]
        kp[..., 1] *= normalized_size[1]
    from ..core.skeleton import H36M17
    return fill_missing(kp, conf_threshold, H36M17.parents, where)


def resolve_intrinsics(image_size=None, intrinsics=None) -> tuple[Intrinsics, bool]:
    """(intrinsics to lift with, given?) from an image size and/or (fx, fy, cx, cy)."""
    if intrinsics is not None:
        if isinstance(intrinsics, Intrinsics):
            return intrinsics, True
        try:
            fx, fy, cx, cy = (float(v) for v in intrinsics)
        except (TypeError, ValueError):
            raise InputError("intrinsics must be an Intrinsics or four numbers fx, fy, cx, cy") from None
        size = image_size
        if size is None:
            if not (math.isfinite(2 * cx) and math.isfinite(2 * cy)):
                raise InputError(f"intrinsics must be finite, got cx={cx} cy={cy}")
            size = (int(round(2 * cx)), int(round(2 * cy)))
        try:
            intr = Intrinsics(fx, fy, cx, cy, int(size[0]), int(size[1]))
        except (ValueError, TypeError, OverflowError) as e:
            raise InputError(str(e)) from None
        w = float(intr.width)
        if not all(FOCAL_RATIO_RANGE[0] <= f / w <= FOCAL_RATIO_RANGE[1] for f in (fx, fy)):
            raise InputError(f"focal lengths fx={fx:g} fy={fy:g} px are implausible for a {intr.width} px wide "
                             f"image (allowed {FOCAL_RATIO_RANGE[0]:g} to {FOCAL_RATIO_RANGE[1]:g} times the width)")
        if not (abs(cx / w) <= 10 and abs(cy / w) <= 10):
            raise InputError(f"principal point cx={cx:g} cy={cy:g} lies far outside the "
                             f"{intr.width}x{intr.height} image")
        return intr, True
    if image_size is None:
        raise InputError("--image-size W H is required: pixel keypoints cannot be normalised without the "
                         "image size (or pass --intrinsics FX FY CX CY)")
    w, h = validate.image_size(image_size)
    return Intrinsics.default_for(w, h), False


@dataclass(frozen=True)
class ClipSetup:
    """How one read clip is lifted: its layout, intrinsics (given or default) and frame rate."""
    format: str
    intrinsics: Intrinsics
    intrinsics_given: bool
    fps: float | None
    normalized_size: tuple[int, int] | None        # multiply [0, 1] coordinates by this (W, H)


def clip_setup(raw, where: str, format: str | None = None, image_size=None, intrinsics=None,
               normalized: bool = False, fps: float | None = None) -> ClipSetup:
    """The settings of one clip read by :func:`engine.front.readers.read_input`, from the flags (None:
    from the file): the layout (numpy files are Human3.6M unless told; JSON guesses from the joint
    count), the image size or intrinsics, and the frame rate. Shared by engine.run and engine.corpus."""
    from .formats import guess_format
    fmt = format
    if fmt is None:
        if raw.kind in ("npy", "npz"):
            fmt = "h36m"
        else:
            joints = next(iter(raw.people.values())).shape[1]
            fmt = raw.format_hint or guess_format(joints)
            if fmt is None:
                raise InputError(f"{where}: cannot tell the keypoint layout of {joints} joints; pass --format")
    size = tuple(image_size) if image_size else raw.extras.get("image_size")
    if normalized and size is None:
        raise InputError("--normalized needs the image size: pass --image-size W H")
    intr, given = resolve_intrinsics(size, intrinsics)
    rate = fps if fps is not None else raw.extras.get("fps")
    if rate is not None and not (np.isfinite(rate) and rate > 0):
        raise InputError(f"{where}: the file's fps {rate} is not a positive number")
    return ClipSetup(fmt, intr, given, rate, (intr.width, intr.height) if normalized else None)


def check_ground_truth(gt: np.ndarray | None, kp: np.ndarray, where: str) -> None:
    """``gt_poses_3d`` of a clip must cover the same frames and joints as its keypoints."""
    if gt is not None and gt.shape[:2] != kp.shape[:2]:
        raise InputError(f"{where}: 'gt_poses_3d' has shape {gt.shape}, the keypoints "
                         f"{kp.shape[0]} frames of {kp.shape[1]} joints")


def config_overrides(hypotheses=None, steps=None, aggregation=None, guidance=None, guidance_mode=None,
                     rho=None) -> dict[str, dict]:
    """Sampler and guidance settings (None: the checkpoint's) -> ``cfg.with_overrides(**sections)``."""
    diffusion = {k: v for k, v in (("hypotheses", hypotheses), ("sample_steps", steps),
                                   ("aggregation", aggregation)) if v is not None}
    guide = {}
    if guidance is not None:
        guide["enabled"] = bool(guidance)
    if guidance_mode is not None:
        guide["mode"] = guidance_mode
    if rho is not None:
        guide["rho"] = float(rho)
    return {"diffusion": diffusion, "guidance": guide}


@dataclass
class PreparedClip:
    """One clip (one person) checked and ready to lift: steps 1-3 of the module doc."""
    kp: np.ndarray                      # (T, 17, 3) Human3.6M pixels + confidence, missing joints filled
    filled: np.ndarray                  # (T, 17) bool: the joints that were filled
    intrinsics: Intrinsics
    intrinsics_given: bool
    fps: float | None                   # the keypoints' rate; None: the model's
    model_fps: float                    # the rate the model lifts at
    meta: dict                          # what the output's meta records about the input
    ground_truth: np.ndarray | None = None   # (T, 17, 3) mm; the output's meta then has gt_mpjpe_mm

    @property
    def source_fps(self) -> float:
        return self.fps if self.fps is not None else self.model_fps

    @property
    def resampled(self) -> bool:
        """Whether the keypoints are resampled to the model's rate (and the result back)."""
        return abs(self.source_fps - self.model_fps) > 1e-6 * self.model_fps

    @property
    def frames_lifted(self) -> int:
        """Frames at the model's rate (the length of :meth:`video`)."""
        frames = self.kp.shape[0]
        return frames_at_rate(frames, self.source_fps, self.model_fps) if self.resampled else frames

    def video(self) -> VideoInput:
        """The frames at the model's rate, normalised: what the Lifter lifts. Built when needed and
        not kept, so a prepared clip waiting to be lifted (or being written) holds only its keypoints."""
        kp = resample(self.kp, self.source_fps, self.model_fps) if self.resampled else self.kp
        return VideoInput.from_pixels(kp, self.intrinsics)      # refuses coordinates far outside the image


def gt_mpjpe_mm(poses_mm: np.ndarray, gt_mm: np.ndarray, root: int = 0) -> float:
    """Root-relative MPJPE (mm) of output poses (T, J, 3) against ground truth of the same shape.

    Both are made relative to their own root joint first (the output already is), so a ground truth
    given with its camera-frame translation scores the same as a root-relative one.
    """
    from ..core.metrics import mpjpe
    pred = np.asarray(poses_mm, np.float64)
    gt = np.asarray(gt_mm, np.float64)
    if pred.shape != gt.shape:
        raise InputError(f"gt_poses_3d has shape {gt.shape}, the output {pred.shape}")
    return mpjpe(pred - pred[:, root:root + 1], gt - gt[:, root:root + 1])


def finish_lift(poses: np.ndarray, spread: np.ndarray, clip: PreparedClip, estimate_focal: bool = True) -> dict:
    """Steps 5-6 of the module doc for one lifted clip: ``poses`` (T', J, 3) and ``spread`` (T', J)
    metres at the model's rate, as :class:`engine.core.pipeline.LiftResult` holds them.

    Returns:
        dict with ``poses_m`` (T, J, 3), ``spread_m`` (T, J), ``root_m`` (T, 3) and ``meta``.
    """
    kp, intr, frames, src_fps, model_fps = clip.kp, clip.intrinsics, clip.kp.shape[0], clip.source_fps, clip.model_fps
    if clip.resampled:
        poses = resample(poses, model_fps, src_fps, frames)
        spread = resample(spread, model_fps, src_fps, frames)
    if not (np.isfinite(poses).all() and np.isfinite(spread).all()):
        raise InputError("lifting produced non-finite values: the input is far outside what the model handles")
    meta = {"intrinsics_px": [intr.fx, intr.fy, intr.cx, intr.cy], "image_size": [intr.width, intr.height],
            "fps_model": model_fps, "fps": src_fps, "fps_source": clip.fps, "resampled": clip.resampled,
            "frames": frames, "frames_lifted": clip.frames_lifted}
    conf = kp[..., 2]
    traj_intr = intr
    if clip.intrinsics_given:
        meta["intrinsics_source"] = "given"
    elif estimate_focal:
        est = _estimate_focal(poses, kp[..., :2], intr.width, intr.height, conf)
        traj_intr = Intrinsics(est.focal_px, est.focal_px, intr.cx, intr.cy, intr.width, intr.height)
        meta["intrinsics_source"] = "estimated" if est.used_estimate else "default"
        meta["focal_estimate"] = {"estimated_px": est.estimated_px, "default_px": est.default_px,
                                  "used": est.used_estimate, "rms_error_px": est.error_px,
                                  "rms_error_default_px": est.error_default_px}
    else:
        meta["intrinsics_source"] = "default"
    meta["trajectory_intrinsics_px"] = [traj_intr.fx, traj_intr.fy, traj_intr.cx, traj_intr.cy]
    root = root_trajectory(poses, kp[..., :2], traj_intr, conf)
    if not np.isfinite(root).all():
        raise InputError("the root trajectory is not finite: the 2D keypoints are degenerate")
    return {"poses_m": poses, "spread_m": spread, "root_m": root, "meta": meta}


class StarPoseLifter:
    """High-level lifter around :class:`engine.core.pipeline.Lifter`.

    Args:
        checkpoint: .safetensors path (default: the shipped model).
        device: torch device string.
        backend: execution backend name (:func:`engine.core.backend.available_backends`).
        model: an already built :class:`engine.core.model.StarPose` instead of ``checkpoint``.
        backend_options: the backend's options by name (its ``Options`` dataclass, e.g.
            ``{"threads": 2}`` for ``onnx`` / ``cpp``, ``{"dtype": "float16"}`` for ``triton``).
        **overrides: ``hypotheses``, ``steps``, ``aggregation`` ('mean' | 'reproj'), ``guidance``
            (bool), ``guidance_mode`` ('x0' | 'full'), ``rho`` (STPG step scale, metres), ``seed``.
    """

    def __init__(self, checkpoint: str | Path | None = None, device: str = "cpu", backend: str = "torch",
                 model=None, backend_options: Mapping[str, object] | None = None, **overrides):
        from ..core.backend import BackendUnavailable, make_backend
        from ..core.backend import backend_options as check_backend_options
        from ..core.checkpoint import DEFAULT_CHECKPOINT, CheckpointError, load_checkpoint
        from ..core.pipeline import Lifter
        known = {"hypotheses", "steps", "aggregation", "guidance", "guidance_mode", "rho", "seed"}
        bad = set(overrides) - known
        if bad:
            raise TypeError(f"unknown overrides {sorted(bad)}; known: {sorted(known)}")   # as Python for keywords
        self.device = validate.device(device)
        validate.choice(backend, "backend", available_backends())
        backend_options = dict(backend_options or {})
        try:
            check_backend_options(backend, str(self.device), backend_options)   # before the slow part
        except BackendUnavailable as e:
            raise InputError(str(e)) from None
        validate.sampler_overrides(overrides)
        self.seed = validate.seed(overrides.get("seed", 0))
        t0 = time.perf_counter()
        if model is None:
            ckpt = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
            if checkpoint is None and not DEFAULT_CHECKPOINT.is_file():
                raise InputError(f"no shipped default model at {DEFAULT_CHECKPOINT}; pass a checkpoint "
                                 "(--checkpoint PATH)")
            try:
                model = load_checkpoint(ckpt, self.device)
            except CheckpointError as e:
                raise InputError(str(e)) from None
            self.checkpoint = str(ckpt)
        else:
            model = model.to(self.device).eval()
            self.checkpoint = None
        self.model = model
        steps, trained = overrides.get("steps"), model.cfg.diffusion.train_steps
        if steps is not None and steps > trained:
            raise InputError(f"steps {steps} exceeds the model's {trained} training steps")
        sections = config_overrides(**{k: v for k, v in overrides.items() if k != "seed"})
        try:
            self.cfg = model.cfg.with_overrides(**sections)
        except (ValueError, TypeError) as e:
            raise InputError(str(e)) from None
        t1 = time.perf_counter()
        try:
            self.backend_name = backend
            self.backend = make_backend(backend, model, str(self.device), **backend_options)   # onnx/cpp: may export
        except BackendUnavailable as e:
            raise InputError(str(e)) from None
        self.setup_s = {"model": t1 - t0, "backend": time.perf_counter() - t1}   # seconds, export included
        try:
            self.lifter = Lifter(model, self.backend, self.cfg)
        except ValueError as e:
            raise InputError(str(e)) from None

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.model.skeleton.joint_names

    def lift(self, keypoints, image_size=None, intrinsics=None, fps: float | None = None, format: str = "h36m",
             conf_threshold: float | None = None, normalized: bool = False, estimate_focal: bool = True,
             seed: int | None = None, progress=None, encoder_only: bool = False) -> dict:
        """Lift one clip.

        Args:
            keypoints: (T, J, 2|3) in the layout ``format`` (pixels; or [0, 1] image fractions with
                ``normalized=True``); NaN x and y mark a missing joint.
            image_size: (W, H) pixels; optional when ``intrinsics`` are given (W = 2 cx, H = 2 cy).
            intrinsics: :class:`engine.core.camera.Intrinsics` or (fx, fy, cx, cy) pixels.
            fps: the keypoints' frame rate (default: the model's, no resampling).
            format: one of :data:`engine.front.formats.FORMATS`.
            conf_threshold: joints with a lower confidence count as missing.
            encoder_only: lift with the context encoder alone (no HPIM, diffusion or STPG; tens
                of times faster, deterministic, slightly less accurate): ``poses_3d_std`` is all zeros,
                the sampler settings of the constructor and ``seed`` are unused, and the meta says
                ``encoder_only: true``, ``method: 'encoder_only'``.
        Returns:
            dict of numpy arrays: ``poses_3d`` (T, 17, 3) mm root-relative camera frame,
            ``poses_3d_std`` (T, 17) mm, ``root_trajectory`` (T, 3) mm camera frame,
            ``keypoints_2d`` (T, 17, 3) the H36M pixels + confidence that were lifted (filled),
            ``joint_names``; and ``meta`` (a dict).
        """
        if not isinstance(format, str) or format not in FORMATS:
            raise InputError(f"unknown keypoint format {format!r}; choose from {', '.join(FORMATS)}")
        normalized = validate.flag(normalized, "normalized")      # the others: lift_clips checks them
        if normalized and image_size is None:
            raise InputError("normalised keypoints need the image size")
        intr, given = resolve_intrinsics(image_size, intrinsics)
        setup = ClipSetup(format, intr, given, fps, validate.image_size(image_size) if normalized else None)
        clip = self.prepare_clip(keypoints, setup, conf_threshold)
        return self.lift_clips([clip], seed, progress, encoder_only, estimate_focal)[0]

    def prepare_clip(self, keypoints, setup: ClipSetup, conf_threshold: float | None = None,
                     where: str = "keypoints", check_layout: bool = False, check_normalized: bool = False,
                     ground_truth: np.ndarray | None = None, meta: dict | None = None) -> PreparedClip:
        """Steps 1-3 for one person's keypoints: every input check, before anything is lifted.

        Args:
            keypoints: (T, J, 2|3) in the layout ``setup.format``.
            setup: layout, intrinsics, frame rate (:func:`clip_setup` for a file read by
                :func:`engine.front.readers.read_input`).
            where: how messages name the clip (a path, "clip person 2").
            check_layout: refuse Human3.6M-order input that looks like COCO-17.
            check_normalized: refuse pixel input whose coordinates all lie within [0, 1.5].
            ground_truth: (T, 17, 3) mm ground truth of the same frames (meta gt_mpjpe_mm).
            meta: what the output's meta should record about the input (file, person, ...).
        """
        fps = None if setup.fps is None else validate.real(setup.fps, "fps", *FPS_RANGE)
        intr = setup.intrinsics
        kp, filled = prepare_keypoints(keypoints, setup.format, conf_threshold, setup.normalized_size, where,
                                       check_layout=check_layout,
                                       image_size=(intr.width, intr.height) if check_normalized else None)
        check_ground_truth(ground_truth, kp, where)
        info = {"format": setup.format, "conf_threshold": conf_threshold, "filled_joints": int(filled.sum())}
        info.update(meta or {})
        clip = PreparedClip(kp, filled, intr, setup.intrinsics_given, fps, float(self.model.cfg.fps), info,
                            ground_truth)
        clip.video()                  # built once and dropped: every check of the lifted frames, now
        return clip

    def prepare_file(self, raw, setup: ClipSetup, where: str, input_name: str, person: int | None = None,
                     all_people: bool = False, conf_threshold: float | None = None, check_layout: bool = False,
                     normalized: bool = False) -> list[tuple[int | None, PreparedClip]]:
        """:meth:`prepare_clip` for the selected people of a file read by
        :func:`engine.front.readers.read_input` (engine.run and engine.corpus): messages name
        ``where`` (and the person when the file has several), the meta records ``input_name``, the
        person and ``normalized``, and a ``gt_poses_3d`` of the file becomes the ground truth."""
        from .readers import select_people
        people = select_people(raw, person, all_people, where)
        clips = []
        for pid, arr in people:
            label = where if pid is None or len(people) == 1 and person is None else f"{where} person {pid}"
            gt = raw.extras.get("gt_poses_3d", {}).get(0 if pid is None else pid)
            clips.append((pid, self.prepare_clip(arr, setup, conf_threshold, label, check_layout=check_layout,
                                                 check_normalized=True, ground_truth=gt,
                                                 meta={"input": input_name, "person": pid,
                                                       "normalized_input": bool(normalized)})))
        return clips

    def lift_clips(self, clips: list[PreparedClip], seed: int | None = None, progress=None,
                   encoder_only: bool = False, estimate_focal: bool = True) -> list[dict]:
        """Steps 4-6 for prepared clips, in one autoregressive pass: the outputs of :meth:`lift`."""
        seed = self.seed if seed is None else validate.seed(seed)
        progress = validate.callback(progress, "progress")
        encoder_only = validate.flag(encoder_only, "encoder_only")
        estimate_focal = validate.flag(estimate_focal, "estimate_focal")
        results = self.lifter.lift([c.video() for c in clips], seed=seed, progress=progress,
                                   encoder_only=encoder_only)
        outs = []
        for i, clip in enumerate(clips):       # each result released once finished (peak memory)
            result, results[i] = results[i], None
            outs.append(self.finish(clip, result.poses, result.spread, seed, encoder_only, estimate_focal))
            del result
        return outs

    def finish(self, clip: PreparedClip, poses: np.ndarray, spread: np.ndarray, seed: int,
               encoder_only: bool = False, estimate_focal: bool = True) -> dict:
        """Steps 5-6 for one clip's lifted ``poses`` / ``spread`` (metres, model rate; the fields of
        :class:`engine.core.pipeline.LiftResult`): the output of :meth:`lift`."""
        out = finish_lift(poses, spread, clip, estimate_focal)
        meta = self.describe(encoder_only)
        meta["seed"] = None if encoder_only else seed
        meta.update(clip.meta)
        meta.update(out["meta"])
        poses_mm = out["poses_m"] * 1000.0
        if clip.ground_truth is not None:
            meta["gt_mpjpe_mm"] = gt_mpjpe_mm(poses_mm, clip.ground_truth, self.model.skeleton.root)
        return {
            "poses_3d": poses_mm.astype(np.float32),
            "poses_3d_std": (out["spread_m"] * 1000.0).astype(np.float32),
            "root_trajectory": (out["root_m"] * 1000.0).astype(np.float32),
            "keypoints_2d": clip.kp.astype(np.float32),
            "joint_names": np.array(self.joint_names),
            "meta": meta,
        }

    def describe(self, encoder_only: bool = False) -> dict:
        """Model and sampler settings, as recorded in an output's meta.

        ``method`` is ``'diffusion'`` (the full model) or ``'encoder_only'`` (the context
        encoder's estimate alone); in the latter the sampler settings, unused, are None.
        """
        meta = {"preset": self.model.cfg.name, "checkpoint": self.checkpoint, "backend": self.backend_name,
                "device": str(self.device), "method": "encoder_only" if encoder_only else "diffusion",
                "encoder_only": bool(encoder_only), "hypotheses": self.cfg.diffusion.hypotheses,
                "steps": self.cfg.diffusion.sample_steps, "aggregation": self.cfg.diffusion.aggregation,
                "guidance": self.cfg.guidance.enabled, "guidance_mode": self.cfg.guidance.mode,
                "rho": self.cfg.guidance.rho, "units": "mm",
                "frame": "camera (x right, y down, z forward), root-relative (pelvis = 0)"}
        if encoder_only:
            meta.update(dict.fromkeys(("hypotheses", "steps", "aggregation", "guidance", "guidance_mode", "rho")))
        return meta

    def stream(self, image_size=None, intrinsics=None, mode: str = "exact", seed: int | None = None,
               encoder_only: bool = False, format: str = "h36m", fps: float | None = None) -> "PoseStream":
        """Live lifting: a :class:`PoseStream` (``push(frame)`` -> (n, 17, 3) millimetres, like :meth:`lift`).

        ``format`` converts each frame's layout as :meth:`lift` does; ``fps`` must be the model's
        rate (or None): a stream is not resampled. ``mode`` 'exact' (offline result, latency up to
        the context window) or 'causal'; ``encoder_only`` the context encoder's estimate alone
        (exact mode: equal to ``lift(..., encoder_only=True)``).
        """
        from ..core.pipeline import StreamingLifter
        intr, _ = resolve_intrinsics(image_size, intrinsics)
        if not isinstance(format, str) or format not in FORMATS:
            raise InputError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
        seed = self.seed if seed is None else validate.seed(seed)
        validate.choice(mode, "mode", ("exact", "causal"))
        encoder_only = validate.flag(encoder_only, "encoder_only")
        model_fps = float(self.lifter.model.cfg.fps)
        if fps is not None and not (isinstance(fps, (int, float)) and abs(float(fps) - model_fps) <= 1e-6 * model_fps):
            raise InputError(f"a stream is not resampled: push frames at the model's {model_fps:g} Hz "
                             f"(got fps={fps!r}); lift() resamples whole clips")
        try:
            inner = StreamingLifter(self.lifter, intr, seed=seed, mode=mode, encoder_only=encoder_only)
        except ValueError as e:
            raise InputError(str(e)) from None
        return PoseStream(inner, format)


class PoseStream:
    """One frame of pixels in, finished 3D poses out, in millimetres (the units of :meth:`StarPoseLifter.lift`).

    Wraps :class:`engine.core.pipeline.StreamingLifter` (``.inner``, which works in metres). Each pushed
    frame is converted from ``format`` to Human3.6M-17; a joint with non-finite or absurd
    coordinates (further than ~500 image widths away) is missing: it takes its last valid position
    with confidence 0 (the mean of the frame's valid joints when it was never seen), so no
    non-finite value reaches the model. A frame with no valid joint before any valid frame raises
    :class:`InputError`; later, it repeats the last valid frame with confidence 0.
    """

    def __init__(self, inner, format: str = "h36m"):
        self.inner = inner
        self.format = format
        self.last: np.ndarray | None = None       # (J, 2) last valid position per joint
        self.seen: np.ndarray | None = None       # (J,) bool

    def push(self, keypoints) -> np.ndarray:
        """keypoints (J, 2|3) pixels in ``format`` -> (n, 17, 3) mm (n may be 0)."""
        frame = self._clean(keypoints)
        return (self.inner.push(frame) * 1000.0).astype(np.float32)

    def flush(self) -> np.ndarray:
        """The frames still waiting for their context window (exact mode), (n, 17, 3) mm."""
        return (self.inner.flush() * 1000.0).astype(np.float32)

    def _clean(self, keypoints) -> np.ndarray:
        arr = validate.numbers_array(keypoints, "a stream frame").astype(np.float64)
        if arr.ndim != 2:
            raise InputError(f"a stream frame must be (J, 2|3), got shape {arr.shape}")
        arr = arr.copy()
        with np.errstate(invalid="ignore"):
            broken = ~np.isfinite(arr[:, :2]).all(-1) | (np.abs(arr[:, :2]) > 1e15).any(-1)
        arr[broken, :2] = np.nan                                               # missing, not an error
        if broken.all():                                                       # nothing to convert
            kp = np.full((self.inner.lifter.model.num_joints, 3), np.nan)
        else:
            kp = to_h36m(arr[None], self.format, "stream frame")[0]            # (17, 3)
        intr = self.inner.intrinsics
        with np.errstate(invalid="ignore", over="ignore"):
            xy_n = normalize_screen(kp[:, :2], float(intr.width), float(intr.height))
            ok = np.isfinite(kp[:, :2]).all(-1) & (np.abs(xy_n) <= MAX_NORMALIZED).all(-1)
        conf = np.where(np.isfinite(kp[:, 2]), np.clip(kp[:, 2], 0.0, 1.0), 0.0)
        if self.last is None:
            self.last = np.zeros((kp.shape[0], 2))
            self.seen = np.zeros(kp.shape[0], bool)
        if not ok.any() and not self.seen.any():
            raise InputError("the first stream frames have no valid joint (all NaN, inf or far outside the image)")
        fill = np.where(self.seen[:, None], self.last, kp[ok, :2].mean(0) if ok.any() else self.last[self.seen].mean(0))
        xy = np.where(ok[:, None], kp[:, :2], fill)
        conf = np.where(ok, conf, 0.0)
        self.last = np.where(ok[:, None], kp[:, :2], self.last)
        self.seen |= ok
        return np.concatenate([xy, conf[:, None]], -1).astype(np.float32)
