"""engine.core.pipeline: context windows, batched == one-by-one, streaming == offline, causal
streaming, fixed noise, seeds, and one-frame videos (tiny preset: F = 9 frames, L = 4)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.core.input_norm import from_view, person_view, to_view

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import TINY, J, default_intrinsics, make_model, video_keypoints  # noqa: E402,F401

from engine.core.camera import Intrinsics, normalize_screen  # noqa: E402
from engine.core.pipeline import Lifter, StreamingLifter, VideoInput, plan_windows, window_slice  # noqa: E402
from engine.core.skeleton import H36M17  # noqa: E402

F = TINY.context.frames
LENGTHS = (1, 7, 23)
TOL = 1e-5   # metres
INTRS = {1: Intrinsics.default_for(1000, 800), 7: Intrinsics(1100.0, 1120.0, 630.0, 350.0, 1280, 720),
         23: Intrinsics.default_for(1000, 800)}


@pytest.fixture(scope="module")
def model():
    return make_model(0)


@pytest.fixture(scope="module")
def lifter(model):
    return Lifter(model)


@pytest.fixture(scope="module")
def raw():
    """Pixel keypoints per length; the 7-frame clip carries a confidence channel."""
    out = {}
    for t in LENGTHS:
        kp = video_keypoints(t, seed=t, intr=INTRS[t])
        if t == 7:
            conf = np.random.default_rng(7).uniform(0.2, 1.0, size=(t, J, 1)).astype(np.float32)
            kp = np.concatenate([kp, conf], -1)
        out[t] = kp
    return out


@pytest.fixture(scope="module")
def videos(raw):
    return [VideoInput.from_pixels(raw[t], INTRS[t]) for t in LENGTHS]


@pytest.fixture(scope="module")
def batched(lifter, videos):
    return lifter.lift(videos, seed=3)


def _close(a, b, what):
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL, err_msg=what)


# ----------------------------------------------------------------------------------------------
# windows

@pytest.mark.parametrize("frames, expected", [
    (0, []),
    (1, [(0, 0, 1)]),
    (5, [(0, 0, 5)]),                                             # T < F: one padded window
    (F, [(0, 0, F)]),                                             # T = F
    (2 * F, [(0, 0, F), (F, F, 2 * F)]),
    (2 * F + 3, [(0, 0, F), (F, F, 2 * F), (F + 3, 2 * F, 2 * F + 3)]),   # tail from [T - F, T)
])
def test_plan_windows(frames, expected):
    plans = plan_windows(frames, F)
    assert plans == expected
    covered = [f for _, first, stop in plans for f in range(first, stop)]
    assert covered == list(range(frames)), "every frame lifted exactly once, in order"
    for start, first, stop in plans:
        assert start <= first < stop <= start + F


def test_window_slice_pads_with_last_frame():
    x = torch.arange(5.0)[:, None]
    w = window_slice(x, 0, F)
    assert w.shape == (F, 1)
    assert w[:5, 0].tolist() == [0, 1, 2, 3, 4] and (w[5:, 0] == 4).all()
    assert window_slice(torch.arange(20.0), 9, F).tolist() == list(range(9, 18))


def test_video_input_from_pixels(raw):
    v = VideoInput.from_pixels(raw[7], INTRS[7])
    assert v.frames == 7 and v.kp2d.shape == (7, J, 2) and v.conf.shape == (7, J)
    assert torch.equal(v.conf, torch.from_numpy(raw[7][..., 2]))
    i = INTRS[7]
    np.testing.assert_allclose(v.kp2d.numpy(), normalize_screen(raw[7][..., :2], i.width, i.height), atol=1e-6)
    np.testing.assert_allclose(v.intr.numpy(), i.normalized())
    v2 = VideoInput.from_pixels(raw[23], INTRS[23])
    assert (v2.conf == 1).all()


# ----------------------------------------------------------------------------------------------
# offline lifting

def test_lift_outputs(batched):
    for t, r in zip(LENGTHS, batched):
        assert r.poses.shape == (t, J, 3) and r.poses.dtype == np.float32
        assert r.spread.shape == (t, J) and r.initial.shape == (t, J, 3)
        assert np.isfinite(r.poses).all() and np.isfinite(r.spread).all()
        assert (r.spread >= 0).all() and r.spread.max() > 0
        np.testing.assert_array_equal(r.poses[:, H36M17.root], 0)
        np.testing.assert_allclose(r.initial[:, H36M17.root], 0, atol=1e-6)


def test_batched_equals_one_by_one(lifter, videos, batched):
    for v, r in zip(videos, batched):
        single = lifter.lift([v], seed=3)[0]
        _close(r.poses, single.poses, f"poses of the {v.frames}-frame video")
        _close(r.spread, single.spread, f"spread of the {v.frames}-frame video")
        _close(r.initial, single.initial, f"initial of the {v.frames}-frame video")


def test_batch_order_does_not_matter(lifter, videos, batched):
    rev = lifter.lift(videos[::-1], seed=3)[::-1]
    for a, b in zip(batched, rev):
        _close(a.poses, b.poses, "result depends on the order of the batch")


def test_empty_batch(lifter):
    assert lifter.lift([]) == []


def test_one_frame_video(lifter, videos, batched):
    r = lifter.lift([videos[0]], seed=0)[0]
    assert r.poses.shape == (1, J, 3) and np.isfinite(r.poses).all()


def test_seeds_and_fixed_noise(model, lifter, videos, batched):
    n = TINY.diffusion.hypotheses
    # the noise the portable stream draws: N GMM samples per frame, keyed by (seed, frame)
    noise = [torch.stack([torch.from_numpy(lifter.noise_source.draw(3, t, n)) for t in range(v.frames)])
             for v in videos]
    assert noise[2].shape == (23, n, 3 * J)
    fixed = lifter.lift(videos, seed=3, noise=noise)
    for a, b in zip(fixed, batched):
        np.testing.assert_array_equal(a.poses, b.poses, err_msg="given noise == drawn noise must reproduce")
    # the seed is not used when the noise is given
    other = lifter.lift(videos, seed=99, noise=noise)
    for a, b in zip(fixed, other):
        np.testing.assert_array_equal(a.poses, b.poses)
    # same seed: identical; different seed: different
    again = lifter.lift(videos, seed=3)
    diff = lifter.lift(videos, seed=4)
    for a, b, c in zip(batched, again, diff):
        np.testing.assert_array_equal(a.poses, b.poses)
        assert np.abs(a.poses - c.poses).max() > 1e-4
    # different noise: different result
    other_noise = [x + 0.5 for x in noise]
    shifted = lifter.lift(videos, seed=3, noise=other_noise)
    assert np.abs(shifted[2].poses - batched[2].poses).max() > 1e-4


def test_config_override_and_progress(model, videos):
    cfg = model.cfg.with_overrides(diffusion={"hypotheses": 1, "sample_steps": 2},
                                   guidance={"enabled": False})
    done = []
    res = Lifter(model, cfg=cfg).lift(videos, seed=0, progress=done.append)
    assert sum(done) == sum(LENGTHS) and len(done) == max(LENGTHS)
    assert done[0] == len(LENGTHS) and done[-1] == 1        # active videos per step
    for r in res:
        np.testing.assert_allclose(r.spread, 0, atol=1e-7)  # one hypothesis: no spread
    assert model.cfg.diffusion.hypotheses == TINY.diffusion.hypotheses


def test_reproj_aggregation_runs(model, videos):
    cfg = model.cfg.with_overrides(diffusion={"aggregation": "reproj"})
    res = Lifter(model, cfg=cfg).lift(videos[1:2], seed=0)
    assert np.isfinite(res[0].poses).all()


# ----------------------------------------------------------------------------------------------
# streaming

@pytest.mark.parametrize("t", [7, 23, 2 * F])
def test_streaming_exact_equals_offline(lifter, raw, t):
    kp = raw[t] if t in raw else video_keypoints(t, seed=t, intr=INTRS[23])
    intr = INTRS.get(t, INTRS[23])
    offline = lifter.lift([VideoInput.from_pixels(kp, intr)], seed=3)[0].poses
    s = StreamingLifter(lifter, intr, seed=3, mode="exact")
    outs, counts = [], []
    for frame in kp:
        o = s.push(frame)
        assert o.dtype == np.float32 and o.shape[1:] == (J, 3)
        counts.append(len(o))
        outs.append(o)
    tail = s.flush()
    outs.append(tail)
    expected_counts = [F if (i + 1) % F == 0 else 0 for i in range(t)]
    assert counts == expected_counts, "exact mode emits a whole window when it is complete"
    assert len(tail) == t - F * (t // F)
    streamed = np.concatenate(outs)
    assert streamed.shape == (t, J, 3)
    _close(streamed, offline, f"streaming ({t} frames) != offline")
    assert len(s.flush()) == 0, "a second flush has nothing left"


def test_streaming_causal(lifter, raw):
    kp = raw[23][:12]
    intr = INTRS[23]
    s = StreamingLifter(lifter, intr, seed=3, mode="causal")
    s2 = StreamingLifter(lifter, intr, seed=3, mode="causal")
    outs = []
    for frame in kp:
        o = s.push(frame)
        assert o.shape == (1, J, 3) and np.isfinite(o).all(), "causal mode: one pose per push"
        np.testing.assert_array_equal(o, s2.push(frame))
        outs.append(o[0])
    assert s.flush().shape == (0, J, 3)
    offline = lifter.lift([VideoInput.from_pixels(kp, intr)], seed=3)[0].poses
    assert np.abs(np.stack(outs) - offline).max() > 1e-6, "causal windows differ from the offline ones"


def test_streaming_rejects_bad_input(lifter):
    with pytest.raises(ValueError, match="mode"):
        StreamingLifter(lifter, default_intrinsics(), mode="lazy")
    s = StreamingLifter(lifter, default_intrinsics())
    with pytest.raises(ValueError, match="joints"):
        s.push(np.zeros((J + 1, 2), np.float32))


def test_video_noise_reuses_the_first_draw(model, videos):
    """noise='video': every frame starts from the video's first GMM draw (draw index 0)."""
    n = TINY.diffusion.hypotheses
    cfg = model.cfg.with_overrides(diffusion={"noise": "video"})
    got = Lifter(model, cfg=cfg).lift(videos, seed=3)
    first = torch.from_numpy(Lifter(model).noise_source.draw(3, 0, n))
    noise = [first[None].expand(v.frames, -1, -1) for v in videos]
    want = Lifter(model, cfg=cfg).lift(videos, seed=3, noise=noise)
    per_frame = Lifter(model).lift(videos, seed=3)
    for a, b, c in zip(got, want, per_frame):
        np.testing.assert_array_equal(a.poses, b.poses)
        np.testing.assert_array_equal(a.poses[:1], c.poses[:1])   # the first draw is the same
    assert np.abs(got[2].poses - per_frame[2].poses).max() > 1e-4


def test_video_noise_streaming_equals_offline(model, raw):
    cfg = model.cfg.with_overrides(diffusion={"noise": "video"})
    lifter = Lifter(model, cfg=cfg)
    off = lifter.lift([VideoInput.from_pixels(raw[23], INTRS[23])], seed=5)[0].poses
    stream = StreamingLifter(lifter, INTRS[23], seed=5)
    out = np.concatenate([stream.push(f) for f in raw[23]] + [stream.flush()])
    _close(out, off, "streaming with noise='video'")


# ----------------------------------------------------------------------------------------------
# encoder only

def _context_reference(model, v):
    """Per window, eager model.context on that window alone -> (T, J, 3) init3d (in the person
    view when the model lifts there, turned back to the camera)."""
    out = np.zeros((v.frames, J, 3), np.float32)
    rot = person_view(v.kp2d, v.conf, v.intr)
    kp = to_view(v.kp2d, rot, v.intr) if model.cfg.input_view == "person" else v.kp2d
    with torch.no_grad():
        for start, first, stop in plan_windows(v.frames, F):
            _, init3d = model.context(window_slice(kp, start, F)[None])
            out[first:stop] = init3d[0, first - start:stop - start].numpy()
    return from_view(out, rot) if model.cfg.input_view == "person" else out


@pytest.mark.parametrize("window_batch", [32, 2])
def test_encoder_only_equals_model_context(model, lifter, videos, batched, window_batch):
    done = []
    res = lifter.lift_encoder_only(videos, progress=done.append, window_batch=window_batch)
    assert sum(done) == sum(LENGTHS)
    assert len(done) == -(-sum(len(plan_windows(t, F)) for t in LENGTHS) // window_batch)
    for v, r, full in zip(videos, res, batched):
        assert r.poses.shape == (v.frames, J, 3) and r.poses.dtype == np.float32
        assert r.spread.shape == (v.frames, J) and r.spread.dtype == np.float32 and not r.spread.any()
        np.testing.assert_array_equal(r.initial, r.poses)
        np.testing.assert_allclose(r.poses, _context_reference(model, v), rtol=0, atol=1e-6,
                                   err_msg=f"{v.frames}-frame video != model.context on its windows")
        np.testing.assert_allclose(r.poses, full.initial, rtol=0, atol=1e-6,
                                   err_msg="encoder only == the autoregressive path's initial")
        np.testing.assert_array_equal(r.poses[:, H36M17.root], 0)
    via_lift = lifter.lift(videos[::-1], seed=7, encoder_only=True)[::-1]    # order and seed do not matter
    for a, b in zip(res, via_lift):
        np.testing.assert_allclose(a.poses, b.poses, rtol=0, atol=1e-6)
    assert lifter.lift([], encoder_only=True) == []
    with pytest.raises(ValueError, match="noise"):
        lifter.lift(videos, noise=[torch.zeros(1)] * 3, encoder_only=True)


def test_encoder_only_uses_context_of_a_whole_loop_backend(model, videos):
    """A backend whose ``lift`` replaces the loop (the C++ runner) is still lifted through its ``context``."""
    from engine.core.torch_backend import TorchBackend

    class WholeLoop(TorchBackend):
        calls = 0

        def context(self, kp_windows):
            WholeLoop.calls += 1
            return super().context(kp_windows)

        def lift(self, *a, **k):
            raise AssertionError("encoder-only lifting must not run the backend's whole loop")

    res = Lifter(model, WholeLoop(model)).lift(videos, encoder_only=True)
    assert WholeLoop.calls == 1
    for v, r in zip(videos, res):
        np.testing.assert_allclose(r.poses, _context_reference(model, v), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["exact", "causal"])
def test_encoder_only_streaming(model, lifter, raw, mode):
    kp, intr = raw[23], INTRS[23]
    v = VideoInput.from_pixels(kp, intr)
    s = StreamingLifter(lifter, intr, mode=mode, encoder_only=True)
    got = np.concatenate([s.push(f) for f in kp] + [s.flush()])
    assert got.shape == (23, J, 3) and got.dtype == np.float32
    if mode == "exact":
        _close(got, lifter.lift_encoder_only([v])[0].poses, "exact encoder-only streaming != offline")
        return
    rot = person_view(v.kp2d, v.conf, v.intr)        # the model lifts in each frame's person view
    kp_view = to_view(v.kp2d, rot, v.intr)
    with torch.no_grad():           # causal: frame t from the window of the last F frames (front-padded)
        for t in (0, 4, 22):
            past = kp_view[max(0, t - F + 1):t + 1]
            win = torch.cat([past[:1].expand(F - len(past), J, 2), past])
            want = from_view(model.context(win[None])[1][0, -1:], rot[t:t + 1])[0]
            _close(got[t], want, f"causal encoder-only frame {t}")
