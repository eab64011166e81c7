"""python -m engine.visualize: GIF animation, PNG contact sheet, clear errors (headless)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

pytest.importorskip("matplotlib")
from engine.core.skeleton import H36M17  # noqa: E402
from engine.front import visualize  # noqa: E402
from engine.front.io import npz_arrays, write_npz_atomic  # noqa: E402
from examples.make_example import walker  # noqa: E402


@pytest.fixture()
def result(tmp_path):
    w = walker(6)
    cam = np.stack([w[..., 0], -w[..., 1] + 1.0, -w[..., 2] + 5.5], -1)
    kp = cam[..., :2] / cam[..., 2:3] * 1145 + 500
    kp = np.concatenate([kp, np.ones(kp.shape[:2] + (1,))], -1)
    kp[2, 5, 2] = 0                                              # a filled joint (drawn hollow)
    rel = cam - cam[:, :1]
    arrays = npz_arrays({"poses_3d": (rel * 1000.0).astype(np.float32),
                         "poses_3d_std": np.zeros(cam.shape[:2], np.float32),
                         "joint_names": np.array(H36M17.joint_names), "keypoints_2d": kp.astype(np.float32),
                         "meta": {"fps": 25.0, "image_size": [1000, 1000]}})
    np.save(tmp_path / "kp.npy", kp[..., :2])
    return write_npz_atomic(tmp_path / "r_3d.npz", **arrays)


def test_gif_and_sheet(result, tmp_path, capsys):
    from PIL import Image
    gif, sheet = tmp_path / "a.gif", tmp_path / "s.png"
    rc = visualize.main([str(result), "--out", str(gif), "--sheet", str(sheet), "--dpi", "30",
                         "--input2d", str(tmp_path / "kp.npy")])
    assert rc == 0
    with Image.open(gif) as im:
        assert im.n_frames == 6
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.size[0] > 50
    assert capsys.readouterr().out.split() == [str(gif), str(sheet)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]       # no temporaries left


def test_default_gif_uses_keypoints_2d_and_stride(result, tmp_path):
    assert visualize.main([str(result), "--stride", "2", "--dpi", "30"]) == 0
    from PIL import Image
    with Image.open(tmp_path / "r_3d.gif") as im:
        assert im.n_frames == 3


def test_mp4_without_ffmpeg_is_a_clear_error(result, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(visualize.shutil, "which", lambda name: None)
    assert visualize.main([str(result), "--out", str(tmp_path / "a.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "ffmpeg" in err[0]
    assert not (tmp_path / "a.mp4").exists()


@pytest.mark.parametrize("case", ["missing", "not_result", "bad_ext", "frames_2d"])
def test_bad_inputs_exit_2(tmp_path, result, case, capsys):
    args = [str(result), "--out", str(tmp_path / "x.gif")]
    if case == "missing":
        args[0] = str(tmp_path / "nope.npz")
    elif case == "not_result":
        np.savez(tmp_path / "k.npz", keypoints=np.zeros((3, 17, 2)))
        args[0] = str(tmp_path / "k.npz")
    elif case == "bad_ext":
        args[2] = str(tmp_path / "x.avi")
    else:
        np.save(tmp_path / "short.npy", np.zeros((2, 17, 2)))
        args += ["--input2d", str(tmp_path / "short.npy")]
    assert visualize.main(args) == 2
    assert capsys.readouterr().err.startswith("error:")
    assert not (tmp_path / "x.gif").exists() and not (tmp_path / "x.avi").exists()
