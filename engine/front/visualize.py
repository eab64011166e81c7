"""Pictures of a 3D result: an animation (GIF / MP4) of the 3D skeleton beside the 2D input,
and a PNG contact sheet. Headless (matplotlib's Agg backend); matplotlib is an optional
dependency (``pip install starpose-engine[viz]``).

    python -m engine.visualize OUTPUT.npz [--input2d KP.npz] [--out anim.gif|anim.mp4] [--sheet sheet.png]

The 2D panel shows ``keypoints_2d`` of the output (the H36M pixels that were lifted) unless
``--input2d`` names another H36M-17 keypoint file (.npy/.npz, (T, 17, 2|3)); joints filled in for
missing detections (confidence 0) are drawn hollow. The 3D panel shows the root-relative pose
turned Y-up (camera y down -> up), on fixed axes over the clip, with the lowest joint of the
clip on the floor plane. GIFs use matplotlib's PillowWriter; MP4 needs ffmpeg on PATH (without it
the command stops with a one-line error and writes nothing). Long clips are subsampled to at most
``--max-frames`` frames (``--stride`` to choose), which keeps rendering time bounded.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.skeleton import H36M17
from .io import write_atomic

EXIT_BAD_INPUT = 2


def _mpl():
    try:
        import matplotlib
    except ImportError:
        raise InputError("matplotlib is needed for pictures: pip install matplotlib") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return matplotlib, plt


def load_result(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"result file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "poses_3d" not in z.files:
                raise InputError(f"{path}: no 'poses_3d' (is this an engine.run output?)")
            out = {k: z[k] for k in z.files}
    except InputError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{path}: cannot read ({e})") from None
    poses = np.asarray(out["poses_3d"], np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (H36M17.num_joints, 3) or poses.shape[0] == 0:
        raise InputError(f"{path}: poses_3d must be (T, 17, 3), got {poses.shape}")
    if not np.isfinite(poses).all():
        raise InputError(f"{path}: poses_3d holds non-finite values")
    out["poses_3d"] = poses
    try:
        out["meta"] = json.loads(str(out.get("meta", "{}")))
    except ValueError:
        out["meta"] = {}
    return out


def load_2d(path: Path, frames: int) -> np.ndarray:
    from .readers import read_input
    raw = read_input(path)
    if len(raw.people) != 1:
        raise InputError(f"{path}: --input2d must hold one person")
    kp = np.asarray(next(iter(raw.people.values())), np.float64)
    if kp.ndim != 3 or kp.shape[1] != H36M17.num_joints or kp.shape[2] not in (2, 3):
        raise InputError(f"{path}: --input2d must be H36M-17 keypoints (T, 17, 2|3), got {kp.shape}")
    if kp.shape[0] != frames:
        raise InputError(f"{path}: {kp.shape[0]} frames of 2D but {frames} frames of 3D")
    if kp.shape[2] == 2:
        kp = np.concatenate([kp, np.ones(kp.shape[:2] + (1,))], -1)
    return kp


def _yup(poses_mm: np.ndarray) -> np.ndarray:
    """Camera (x right, y down, z forward) -> plot (x right, y depth away, z up), floor at 0."""
    p = np.stack([poses_mm[..., 0], poses_mm[..., 2], -poses_mm[..., 1]], -1)
    return p - np.array([0.0, 0.0, p[..., 2].min()])


class _Figure:
    """One figure with an optional 2D panel and a 3D panel, updated frame by frame."""

    def __init__(self, plt, poses, kp2d, image_size, size_px=(720, 360), dpi=72):
        self.plt = plt
        self.p = _yup(poses)
        self.kp = kp2d
        n = 2 if kp2d is not None else 1
        self.fig = plt.figure(figsize=(size_px[0] * n / 2 / dpi, size_px[1] / dpi), dpi=dpi)
        self.bones = H36M17.bones
        left = set(H36M17.joints_left)
        self.colors = ["tab:blue" if c in left else "tab:red" if c in H36M17.joints_right else "0.3"
                       for _, c in self.bones]
        if kp2d is not None:
            self.ax2 = self.fig.add_subplot(1, 2, 1)
            w, h = image_size if image_size else (np.nanmax(kp2d[..., 0]) * 1.05, np.nanmax(kp2d[..., 1]) * 1.05)
            self.ax2.set_xlim(0, w)
            self.ax2.set_ylim(h, 0)
            self.ax2.set_aspect("equal")
            self.ax2.set_title("2D input", fontsize=9)
            self.ax2.tick_params(labelsize=6)
            self.lines2 = [self.ax2.plot([], [], color=c, lw=2)[0] for c in self.colors]
            self.dots2 = self.ax2.scatter([], [], s=8, c="k")
        self.ax3 = self.fig.add_subplot(1, n, n, projection="3d")
        c = self.p.reshape(-1, 3)
        mid = (c.max(0) + c.min(0)) / 2
        r = max(float((c.max(0) - c.min(0)).max()) / 2, 1.0)
        self.ax3.set_xlim(mid[0] - r, mid[0] + r)
        self.ax3.set_ylim(mid[1] - r, mid[1] + r)
        self.ax3.set_zlim(0, 2 * r)
        try:
            self.ax3.set_box_aspect((1, 1, 1))
        except AttributeError:          # matplotlib < 3.3
            pass
        self.ax3.view_init(elev=15, azim=-70)
        self.ax3.set_title("3D (mm, root-relative)", fontsize=9)
        self.ax3.tick_params(labelsize=6)
        gx = np.linspace(mid[0] - r, mid[0] + r, 2)
        gy = np.linspace(mid[1] - r, mid[1] + r, 2)
        xx, yy = np.meshgrid(gx, gy)
        self.ax3.plot_surface(xx, yy, np.zeros_like(xx), alpha=0.1, color="0.5")
        self.lines3 = [self.ax3.plot([], [], [], color=col, lw=2)[0] for col in self.colors]
        self.title = self.fig.suptitle("", fontsize=9)
        self.fig.tight_layout()

    def draw(self, t: int):
        p = self.p[t]
        for line, (a, b) in zip(self.lines3, self.bones):
            line.set_data_3d([p[a, 0], p[b, 0]], [p[a, 1], p[b, 1]], [p[a, 2], p[b, 2]])
        artists = list(self.lines3)
        if self.kp is not None:
            k = self.kp[t]
            for line, (a, b) in zip(self.lines2, self.bones):
                line.set_data([k[a, 0], k[b, 0]], [k[a, 1], k[b, 1]])
            self.dots2.set_offsets(k[:, :2])
            self.dots2.set_facecolors(["k" if c > 0 else "none" for c in k[:, 2]])
            self.dots2.set_edgecolors("k")
            artists += self.lines2 + [self.dots2]
        self.title.set_text(f"frame {t}")
        return artists + [self.title]


def frame_indices(frames: int, stride: int | None, max_frames: int) -> np.ndarray:
    if stride is None:
        stride = max(1, int(np.ceil(frames / max_frames)))
    return np.arange(0, frames, stride)[:max_frames]


def write_animation(result: dict, out: Path, kp2d=None, fps: float | None = None, stride: int | None = None,
                    max_frames: int = 300, dpi: int = 72) -> Path:
    """GIF (PillowWriter) or MP4 (ffmpeg) of the clip; written to a temporary name, then renamed."""
    _, plt = _mpl()
    from matplotlib import animation
    suffix = out.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise InputError(f"--out {out}: use a .gif or .mp4 name")
    if suffix == ".mp4" and shutil.which("ffmpeg") is None:
        raise InputError("MP4 needs ffmpeg on PATH (not found); install ffmpeg or write a .gif")
    poses = result["poses_3d"]
    idx = frame_indices(poses.shape[0], stride, max_frames)
    src_fps = fps or float(result["meta"].get("fps") or 50.0)
    step = int(idx[1] - idx[0]) if len(idx) > 1 else 1
    play_fps = max(1.0, min(src_fps / step, 50.0))
    fig = _Figure(plt, poses, kp2d, result["meta"].get("image_size"), dpi=dpi)
    writer = animation.PillowWriter(fps=play_fps) if suffix == ".gif" else animation.FFMpegWriter(fps=play_fps)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{suffix}")
    try:
        with writer.saving(fig.fig, str(tmp), dpi):
            for t in idx:
                fig.draw(int(t))
                writer.grab_frame()
        tmp.replace(out)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    finally:
        plt.close(fig.fig)
    return out


def write_sheet(result: dict, out: Path, kp2d=None, count: int = 8, cols: int = 4, dpi: int = 72) -> Path:
    """A PNG grid of ``count`` evenly spaced frames (3D skeletons, 2D inset when given)."""
    _, plt = _mpl()
    poses = result["poses_3d"]
    p = _yup(poses)
    idx = np.unique(np.linspace(0, poses.shape[0] - 1, min(count, poses.shape[0])).round().astype(int))
    cols = min(cols, len(idx))
    rows = int(np.ceil(len(idx) / cols))
    fig = plt.figure(figsize=(2.6 * cols, 2.6 * rows), dpi=dpi)
    c = p.reshape(-1, 3)
    mid = (c.max(0) + c.min(0)) / 2
    r = max(float((c.max(0) - c.min(0)).max()) / 2, 1.0)
    left = set(H36M17.joints_left)
    for i, t in enumerate(idx):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        for a, b in H36M17.bones:
            col = "tab:blue" if b in left else "tab:red" if b in H36M17.joints_right else "0.3"
            ax.plot([p[t, a, 0], p[t, b, 0]], [p[t, a, 1], p[t, b, 1]], [p[t, a, 2], p[t, b, 2]], color=col, lw=2)
        ax.set_xlim(mid[0] - r, mid[0] + r)
        ax.set_ylim(mid[1] - r, mid[1] + r)
        ax.set_zlim(0, 2 * r)
        ax.view_init(elev=15, azim=-70)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_zticks([])
        ax.set_title(f"frame {t}", fontsize=8)
        if kp2d is not None:
            ins = ax.inset_axes([0.0, 0.62, 0.32, 0.38])
            k = kp2d[t]
            for a, b in H36M17.bones:
                ins.plot([k[a, 0], k[b, 0]], [k[a, 1], k[b, 1]], color="0.2", lw=1)
            ins.invert_yaxis()
            ins.set_aspect("equal")
            ins.axis("off")
    fig.tight_layout()
    try:
        return write_atomic(out, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    from .cli import _Parser
    p = _Parser(prog="python -m engine.visualize",
                description="Animate a 3D result beside its 2D input (GIF/MP4) and draw a PNG contact sheet.",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("result", type=Path, help="an engine.run output .npz")
    p.add_argument("--input2d", type=Path, default=None,
                   help="H36M-17 2D keypoints (.npy/.npz) to show instead of the output's keypoints_2d")
    p.add_argument("--out", type=Path, default=None,
                   help="animation .gif or .mp4 (mp4 needs ffmpeg); without --out and --sheet: <result stem>.gif "
                        "beside the result")
    p.add_argument("--sheet", type=Path, default=None, help="contact sheet .png")
    p.add_argument("--fps", type=float, default=None, help="playback rate of the source (default: the output's)")
    p.add_argument("--stride", type=int, default=None, help="draw every n-th frame (default: to fit --max-frames)")
    p.add_argument("--max-frames", type=int, default=300, help="at most this many animation frames")
    p.add_argument("--dpi", type=int, default=72, help="resolution")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.out is None and args.sheet is None:
            args.out = args.result.with_name(args.result.stem + ".gif")
        for name in ("stride", "max_frames", "dpi"):
            v = getattr(args, name)
            if v is not None and v < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
        if args.fps is not None and not (np.isfinite(args.fps) and args.fps > 0):
            raise InputError(f"--fps must be positive, got {args.fps}")
        if args.out is not None and args.out.suffix.lower() not in (".gif", ".mp4"):
            raise InputError(f"--out {args.out}: use a .gif or .mp4 name")
        if args.out is not None and args.out.suffix.lower() == ".mp4" and shutil.which("ffmpeg") is None:
            raise InputError("MP4 needs ffmpeg on PATH (not found); install ffmpeg or write a .gif")
        result = load_result(args.result)
        frames = result["poses_3d"].shape[0]
        if args.input2d is not None:
            kp2d = load_2d(args.input2d, frames)
        else:
            kp2d = result.get("keypoints_2d")
            kp2d = None if kp2d is None or np.shape(kp2d)[:2] != (frames, 17) else np.asarray(kp2d, np.float64)
        if args.out is not None:
            write_animation(result, args.out, kp2d, args.fps, args.stride, args.max_frames, args.dpi)
            print(args.out)
        if args.sheet is not None:
            write_sheet(result, args.sheet, kp2d, dpi=args.dpi)
            print(args.sheet)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
