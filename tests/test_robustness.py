"""Malformed inputs thrown at the API and the CLI (hypothesis): each one gets a clear InputError /
exit status 2 with one 'error:' line and no output file, or a valid finite result; never a
traceback, never NaN from finite input, never a partial file."""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from engine.core.checkpoint import save_checkpoint  # noqa: E402
from engine.core.config import StarPoseConfig  # noqa: E402
from engine.core.errors import InputError  # noqa: E402
from engine.core.model import StarPose  # noqa: E402
from engine.front.api import StarPoseLifter  # noqa: E402
from engine.front.cli import main  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

_DIR = Path(tempfile.mkdtemp(prefix="starpose_robust_"))
torch.manual_seed(0)
CKPT = save_checkpoint(StarPose(StarPoseConfig.from_name("tiny")), _DIR / "tiny.safetensors")


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    shutil.rmtree(_DIR, ignore_errors=True)


@pytest.fixture(scope="module")
def lifter():
    return StarPoseLifter(CKPT)


_floats = st.one_of(
    st.floats(0, 1000, width=32),
    st.floats(-1e6, 1e6, width=32),
    st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0, -1.0, 3e38, 1e-30]),
)


@st.composite
def keypoint_arrays(draw):
    """Mostly plausible (T, J, C) arrays with a twist: odd shapes, dtypes, NaN, inf, huge values."""
    kind = draw(st.sampled_from(["good", "good", "shape", "dtype", "values", "missing"]))
    t = draw(st.integers(1, 8))
    j = 17
    c = draw(st.sampled_from([2, 3]))
    if kind == "shape":
        shape = draw(st.sampled_from([(t, 16, 2), (t, 17, 4), (t, 17), (0, 17, 2), (t, 17, 1), (t, 2, 17),
                                      (17, 2), (1,), (), (2, t, 17, 2), (t, 0, 2)]))
        return np.zeros(shape, np.float32) + 500
    base = np.random.default_rng(draw(st.integers(0, 1000))).uniform(100, 900, size=(t, j, c))
    if c == 3:
        base[..., 2] = draw(st.floats(0, 1))
    if kind == "dtype":
        dt = draw(st.sampled_from([np.int32, np.int64, np.float16, np.bool_, np.complex64, np.uint8]))
        return base.astype(dt)
    if kind == "values":
        vals = draw(hnp.arrays(np.float64, (t, j, c), elements=_floats))
        mask = draw(hnp.arrays(np.bool_, (t, j, c)))
        return np.where(mask, vals, base)
    if kind == "missing":
        mask = draw(hnp.arrays(np.bool_, (t, j)))
        base[mask, :2] = np.nan
        return base
    return base


def _assert_valid(out: dict, frames: int) -> None:
    assert out["poses_3d"].shape == (frames, 17, 3)
    for k in ("poses_3d", "poses_3d_std", "root_trajectory", "keypoints_2d"):
        assert np.isfinite(out[k]).all(), k


@SETTINGS
@given(arr=keypoint_arrays(), fps=st.one_of(st.none(), st.sampled_from([0.0, -5.0, 24.0, 50.0, 1e9])),
       thr=st.one_of(st.none(), st.sampled_from([0.0, 0.5, 1.0, 2.0])),
       fmt=st.sampled_from(["h36m", "h36m", "coco"]),
       size=st.sampled_from([(1000, 1000), (1, 1), (640, 480)]))
def test_api_never_crashes(lifter, arr, fps, thr, fmt, size):
    try:
        out = lifter.lift(arr, image_size=size, fps=fps, conf_threshold=thr, format=fmt)
    except InputError as e:
        msg = str(e)
        assert msg and "\n" not in msg
        event("api: InputError")
        return
    event("api: lifted")
    _assert_valid(out, arr.shape[0])


def _one_error_line(err: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error:"), err


@SETTINGS
@given(arr=keypoint_arrays(), extra=st.sampled_from([[], ["--fps", "30"], ["--conf-threshold", "0.5"],
                                                     ["--format", "coco"], ["--export", "csv,bvh"],
                                                     ["--fps", "-1"], ["--person", "3"], ["--all-people"]]),
       container=st.sampled_from(["npy", "npz", "npz_nokey", "json"]))
def test_cli_never_crashes(capsys, arr, extra, container):
    work = Path(tempfile.mkdtemp(dir=_DIR))
    if container == "npy":
        inp = work / "k.npy"
        np.save(inp, arr, allow_pickle=False)
    elif container == "npz":
        inp = work / "k.npz"
        np.savez(inp, keypoints=arr, image_size=np.array([1000, 1000]))
    elif container == "npz_nokey":
        inp = work / "k.npz"
        np.savez(inp, points=arr)
    else:
        inp = work / "k.json"
        if np.ndim(arr) == 3 and not np.iscomplexobj(arr):
            frames = [{"frame_id": i, "instances": [{"keypoints": np.asarray(f, np.float64)[..., :2].tolist()}]}
                      for i, f in enumerate(arr)]
        else:
            frames = np.real(arr).tolist()
        inp.write_text(json.dumps(frames))
    out = work / "o.npz"
    rc = main(["--input", str(inp), "--output", str(out), "--checkpoint", str(CKPT), "--quiet",
               "--image-size", "1000", "1000", *extra])
    captured = capsys.readouterr()
    left = sorted(p.name for p in work.iterdir() if p != inp)
    event(f"cli: exit {rc}")
    if rc == 2:
        _one_error_line(captured.err)
        assert left == [], left
        return
    assert rc == 0, captured.err
    produced = [p for p in work.iterdir() if p.suffix == ".npz" and p != inp]
    assert produced and not [p for p in left if p.startswith(".")]            # no temporaries
    for p in produced:
        with np.load(p) as z:
            out_arrays = {k: z[k] for k in z.files}
            assert "meta" in out_arrays
        _assert_valid(out_arrays, out_arrays["poses_3d"].shape[0])


@pytest.mark.parametrize("argv_tail, msg", [
    (["--fps", "nan"], "fps must"),
    (["--conf-threshold", "-0.1"], "conf_threshold must"),
    (["--person", "0", "--all-people"], "exclude"),
    (["--normalized"], None),
    (["--export", "json,xml"], "--export"),
    (["--intrinsics", "1e308", "1e308", "500", "500"], "implausible"),
    (["--intrinsics", "1e308", "1e308", "1e308", "1e308"], "implausible"),
])
def test_cli_flag_errors(tmp_path, capsys, argv_tail, msg):
    np.save(tmp_path / "k.npy", np.full((3, 17, 2), 500.0))
    args = ["--input", str(tmp_path / "k.npy"), "--checkpoint", str(CKPT), "--quiet"]
    if argv_tail != ["--normalized"]:
        args += ["--image-size", "1000", "1000"]
    rc = main(args + argv_tail)
    err = capsys.readouterr().err
    assert rc == 2
    _one_error_line(err)
    if msg:
        assert msg in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.npy"]
