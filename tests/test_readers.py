"""Input readers (engine.front.readers), person selection, folders/globs (engine.front.batch) and their CLI
wiring (engine.run: --format, --person, --all-people, several inputs)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.checkpoint import save_checkpoint  # noqa: E402
from engine.core.config import StarPoseConfig  # noqa: E402
from engine.core.errors import InputError  # noqa: E402
from engine.core.model import StarPose  # noqa: E402
from engine.front.batch import expand_inputs, output_path  # noqa: E402
from engine.front.cli import main  # noqa: E402
from engine.front.readers import read_input, select_people  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(StarPose(StarPoseConfig.from_name("tiny")),
                           tmp_path_factory.mktemp("ck") / "tiny.safetensors")


def _coco(t=5, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    return rng.uniform(200, 800, size=(t, 17, 2)) + shift


def _mmpose_frames(t=5, people=(0, 1), absent=None):
    """MMPose inferencer layout; person `absent` = (pid, frame) is left out of that frame."""
    frames = []
    for i in range(t):
        inst = []
        for pid in people:
            if absent == (pid, i):
                continue
            kp = _coco(t, seed=pid)[i]
            inst.append({"keypoints": kp.tolist(), "keypoint_scores": [0.9] * 17, "track_id": pid,
                         "bbox": [[0, 0, 10, 10]]})
        frames.append({"frame_id": i, "instances": inst})
    return frames


def _write_json(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


# -- readers -------------------------------------------------------------------------------------
def test_numpy_single_and_multi_person(tmp_path):
    np.save(tmp_path / "a.npy", _coco())
    raw = read_input(tmp_path / "a.npy")
    assert raw.kind == "npy" and list(raw.people) == [0] and raw.people[0].shape == (5, 17, 2)
    multi = np.stack([_coco(seed=0), _coco(seed=1)])
    np.savez(tmp_path / "m.npz", keypoints=multi, person_ids=np.array([7, 3]), image_size=np.array([1000, 900]),
             fps=np.array(25.0))
    raw = read_input(tmp_path / "m.npz")
    assert sorted(raw.people) == [3, 7] and raw.extras == {"image_size": (1000, 900), "fps": 25.0}
    np.testing.assert_array_equal(raw.people[3], multi[1])
    with pytest.raises(InputError, match="2 people"):
        select_people(raw, None, False, "m")
    assert [p for p, _ in select_people(raw, None, True, "m")] == [3, 7]
    with pytest.raises(InputError, match="no person with id 5"):
        select_people(raw, 5, False, "m")


def test_npz_gt_poses_3d(tmp_path):
    """gt_poses_3d: (T, 17, 3) for one person, (P, T, 17, 3) for 4-D keypoints keyed by person id;
    a wrong shape or non-finite values are an InputError; an 'intrinsics' key is not read."""
    gt = np.random.default_rng(0).normal(0, 300, (5, 17, 3)).astype(np.float32)
    np.savez(tmp_path / "a.npz", keypoints=_coco(), gt_poses_3d=gt, intrinsics=np.array([1000.0, 1000, 500, 450]))
    raw = read_input(tmp_path / "a.npz")
    assert set(raw.extras) == {"gt_poses_3d"} and list(raw.extras["gt_poses_3d"]) == [0]
    np.testing.assert_array_equal(raw.extras["gt_poses_3d"][0], gt)
    assert raw.extras["gt_poses_3d"][0].dtype == np.float64
    multi = np.stack([_coco(seed=0), _coco(seed=1)])
    np.savez(tmp_path / "m.npz", keypoints=multi, person_ids=np.array([7, 3]), gt_poses_3d=np.stack([gt, gt + 1]))
    got = read_input(tmp_path / "m.npz").extras["gt_poses_3d"]
    assert sorted(got) == [3, 7]
    np.testing.assert_array_equal(got[3], gt + 1)
    for bad, msg in ((gt[:4], "shape"), (gt[None], "shape"), (np.stack([gt, gt, gt]), "shape"),
                     (np.where(gt > 500, np.nan, gt), "non-finite")):
        np.savez(tmp_path / "b.npz", keypoints=multi if bad.ndim == 4 else _coco(), gt_poses_3d=bad)
        with pytest.raises(InputError, match=msg):
            read_input(tmp_path / "b.npz")


def test_mmpose_json_people_and_absent_frames(tmp_path):
    path = _write_json(tmp_path / "pred.json", _mmpose_frames(absent=(1, 2)))
    raw = read_input(path)
    assert raw.kind == "mmpose-json" and sorted(raw.people) == [0, 1]
    p1 = raw.people[1]
    assert p1.shape == (5, 17, 3) and np.isnan(p1[2, :, :2]).all()
    np.testing.assert_allclose(p1[0, :, :2], _coco(seed=1)[0])
    np.testing.assert_allclose(p1[0, :, 2], 0.9)


def test_mmpose_demo_layout_bare_instances_and_score_clipping(tmp_path):
    frames = _mmpose_frames(people=(0,))
    frames[0]["instances"][0]["keypoint_scores"] = [1.7] * 17            # SimCC-style score > 1
    raw = read_input(_write_json(tmp_path / "demo.json", {"meta_info": {"dataset_name": "coco"},
                                                          "instance_info": frames}))
    assert list(raw.people) == [0] and raw.people[0][0, 0, 2] == 1.0
    bare = [{"keypoints": _coco(1)[0].tolist(), "keypoint_scores": [0.5] * 17}]
    raw = read_input(_write_json(tmp_path / "img.json", bare))
    assert raw.people[0].shape == (1, 17, 3)


def test_alphapose_json(tmp_path):
    dets = []
    for i in (1, 0):                                                     # out of order on purpose
        flat = np.concatenate([_coco(2)[i], np.full((17, 1), 0.8)], -1).ravel().tolist()
        dets.append({"image_id": f"{i}.jpg", "keypoints": flat, "idx": 4})
    raw = read_input(_write_json(tmp_path / "alpha.json", dets))
    assert raw.kind == "alphapose-json" and list(raw.people) == [4]
    np.testing.assert_allclose(raw.people[4][:, :, :2], _coco(2))


def _openpose_folder(folder: Path, t=12, people=1) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(t):
        ppl = []
        for k in range(people):
            kp = np.concatenate([rng.uniform(300, 700, (25, 2)), np.full((25, 1), 0.7)], -1)
            if i == 3:
                kp[9] = 0                                                # undetected r_hip
            ppl.append({"person_id": [-1], "pose_keypoints_2d": kp.ravel().tolist()})
        (folder / f"clip_{i}_keypoints.json").write_text(json.dumps({"version": 1.3, "people": ppl}))
    return folder


def test_openpose_folder_natural_order(tmp_path):
    folder = _openpose_folder(tmp_path / "op")
    raw = read_input(folder)
    assert raw.kind == "openpose-folder" and raw.format_hint == "openpose25" and raw.frames == 12
    first = json.loads((folder / "clip_2_keypoints.json").read_text())["people"][0]["pose_keypoints_2d"]
    np.testing.assert_allclose(raw.people[0][2].ravel(), first)        # clip_2 before clip_10


@pytest.mark.parametrize("doc, msg", [
    ("{not json", "not valid JSON"),
    ([], "non-empty list"),
    ([{"frame_id": 0, "instances": [{"bbox": [1]}]}], "no 'keypoints'"),
    ([{"frame_id": 0, "instances": [{"keypoints": [[1, "a"]]}]}], "each keypoint"),
    ([{"frame_id": 0, "instances": [{"keypoints": [[1, 2]], "keypoint_scores": [1, 2]}]}], "keypoint_scores"),
    ({"people": []}, "one OpenPose frame"),
    ([{"frame_id": 0, "instances": []}], "no person"),
])
def test_bad_json_is_an_input_error(tmp_path, doc, msg):
    path = tmp_path / "bad.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(InputError, match=msg):
        read_input(path)


def test_unsupported_and_missing_inputs(tmp_path):
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(InputError, match="unsupported file type"):
        read_input(tmp_path / "x.txt")
    with pytest.raises(InputError, match="not found"):
        read_input(tmp_path / "nope.npy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="OpenPose"):
        read_input(tmp_path / "empty")


# -- batch ---------------------------------------------------------------------------------------
def test_expand_inputs_folder_glob_and_outputs_skipped(tmp_path):
    for name in ("b.npy", "a10.npy", "a2.npy", "a2_3d.npz", ".hidden.npy", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    _openpose_folder(tmp_path / "op", t=1)
    clips, batch = expand_inputs([tmp_path])
    assert batch and [c.name for c in clips] == ["a2.npy", "a10.npy", "b.npy", "op"]
    clips, batch = expand_inputs([str(tmp_path / "a*.npy")])
    assert batch and [c.name for c in clips] == ["a2.npy", "a10.npy"]
    clips, batch = expand_inputs([tmp_path / "b.npy"])
    assert not batch and clips == [tmp_path / "b.npy"]
    with pytest.raises(InputError, match="no inputs match"):
        expand_inputs([str(tmp_path / "zz*.npy")])
    assert output_path(tmp_path / "a.npy", 3, None, False).name == "a_p3_3d.npz"
    assert output_path(tmp_path / "a.npy", 3, tmp_path / "o.npz", False).name == "o_p3.npz"
    assert output_path(tmp_path / "a.npy", None, tmp_path / "out", True) == tmp_path / "out" / "a_3d.npz"


# -- CLI -----------------------------------------------------------------------------------------
def _cli(ckpt, *args):
    return main(["--checkpoint", str(ckpt), "--quiet", "--image-size", "1000", "1000", *map(str, args)])


def test_cli_mmpose_json_all_people_and_person(tmp_path, ckpt, capsys):
    path = _write_json(tmp_path / "pred.json", _mmpose_frames(t=4))
    assert _cli(ckpt, "--input", path) == 2                     # two people and no choice
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "--all-people" in err
    assert not list(tmp_path.glob("*.npz"))
    assert _cli(ckpt, "--input", path, "--all-people") == 0
    outs = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert outs == ["pred_p0_3d.npz", "pred_p1_3d.npz"]
    with np.load(tmp_path / "pred_p1_3d.npz") as z:
        meta = json.loads(str(z["meta"]))
        assert meta["format"] == "coco" and meta["person"] == 1 and z["poses_3d"].shape == (4, 17, 3)
    assert _cli(ckpt, "--input", path, "--person", "1", "--output", tmp_path / "one.npz") == 0
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "pred_p1_3d.npz") as b:
        np.testing.assert_array_equal(a["poses_3d"], b["poses_3d"])


def test_cli_openpose_folder(tmp_path, ckpt):
    folder = _openpose_folder(tmp_path / "op", t=4)
    assert _cli(ckpt, "--input", folder) == 0
    with np.load(tmp_path / "op_3d.npz") as z:
        assert json.loads(str(z["meta"]))["format"] == "openpose25"
        assert z["keypoints_2d"][3, 1, 2] == 0                 # the undetected r_hip was filled
        assert np.isfinite(z["poses_3d"]).all()


def test_cli_format_mismatch_is_one_error_line(tmp_path, ckpt, capsys):
    np.save(tmp_path / "c.npy", _coco())
    assert _cli(ckpt, "--input", tmp_path / "c.npy", "--format", "halpe26") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "26 joints" in err[0]
    assert not (tmp_path / "c_3d.npz").exists()


def test_cli_batch_folder_continues_after_a_bad_file(tmp_path, ckpt, capsys):
    np.save(tmp_path / "a.npy", _coco(4))
    np.save(tmp_path / "b.npy", np.zeros((4, 5, 2)))           # wrong joint count
    np.save(tmp_path / "c.npy", _coco(4, seed=2))
    out = tmp_path / "out"
    assert _cli(ckpt, "--input", tmp_path, "--output", out) == 2
    assert sorted(p.name for p in out.iterdir()) == ["a_3d.npz", "c_3d.npz"]
    assert capsys.readouterr().err.count("error:") == 1
    assert _cli(ckpt, "--input", str(tmp_path / "[ac].npy")) == 0       # glob, outputs beside inputs
    assert (tmp_path / "a_3d.npz").exists() and (tmp_path / "c_3d.npz").exists()
    assert _cli(ckpt, "--input", str(tmp_path / "*.npy")) == 2          # b again; *_3d.npz never re-read


def test_ctrl_c_keeps_finished_outputs(tmp_path, ckpt, monkeypatch, capsys):
    import engine.front.api
    for name in ("a", "b", "c"):
        np.save(tmp_path / f"{name}.npy", _coco(4))
    real = engine.front.api.StarPoseLifter.lift_clips
    calls = []

    def interrupt_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(engine.front.api.StarPoseLifter, "lift_clips", interrupt_second)
    assert _cli(ckpt, "--input", tmp_path, "--export", "csv") == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "a_3d.csv", "a_3d.npz", "b.npy", "c.npy"]
    assert "1 finished output(s) kept" in capsys.readouterr().err
