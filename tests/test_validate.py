"""Bad arguments to the Python API (engine.front.api, engine.core.pipeline) raise InputError (a ValueError)
with one line naming the argument; non-finite frames never reach the model."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import make_model, video_keypoints  # noqa: E402

from engine.core.camera import Intrinsics  # noqa: E402
from engine.core.errors import InputError  # noqa: E402
from engine.core.pipeline import Lifter, StreamingLifter, VideoInput  # noqa: E402
from engine.front import validate  # noqa: E402
from engine.front.api import StarPoseLifter  # noqa: E402

W, H = 1000, 800
INTR = Intrinsics.default_for(W, H)


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def lifter(model):
    return StarPoseLifter(model=model)


@pytest.fixture(scope="module")
def kp():
    return video_keypoints(12, seed=1, intr=INTR).astype(np.float32)


def _one_line(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


@pytest.mark.parametrize("key,value,words", [
    ("seed", 1.5, ["seed", "integer"]), ("seed", "3", ["seed"]), ("seed", 2**70, ["seed", "2^63"]),
    ("seed", -1, ["seed"]), ("seed", True, ["seed"]),
    ("hypotheses", 1.5, ["hypotheses", "integer"]), ("hypotheses", "4", ["hypotheses"]),
    ("hypotheses", 0, ["hypotheses"]), ("steps", 2.5, ["steps"]),
    ("rho", "x", ["rho", "number"]), ("rho", float("nan"), ["rho", "finite"]), ("rho", -1.0, ["rho"]),
    ("aggregation", 3, ["aggregation"]), ("guidance", "yes", ["guidance", "True or False"]),
    ("guidance_mode", "both", ["mode"]),
])
def test_constructor_settings(model, key, value, words):
    with pytest.raises(InputError) as e:
        StarPoseLifter(model=model, **{key: value})
    _one_line(e, *words)


def test_unknown_keyword_is_a_type_error_as_in_python(model):
    with pytest.raises(TypeError, match="unknown overrides"):
        StarPoseLifter(model=model, temperature=1.0)


@pytest.mark.parametrize("device,words", [
    ("meta", ["only cpu and cuda"]), ("mps", ["only cpu and cuda"]), ("xpu", ["only cpu and cuda"]),
    ("foo", ["not a valid torch device"]), (3, ["device must be a string"]), (None, ["device must be"]),
])
def test_devices(model, device, words):
    with pytest.raises(InputError) as e:
        StarPoseLifter(model=model, device=device)
    _one_line(e, *words)
    assert next(model.parameters()).device.type == "cpu"            # the model was not moved


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(model):
    with pytest.raises(InputError) as e:
        StarPoseLifter(model=model, device="cuda")
    _one_line(e, "CUDA is not available")


def test_backend_names(model):
    for bad in ("nope", 5):
        with pytest.raises(InputError) as e:
            StarPoseLifter(model=model, backend=bad)
        _one_line(e, "backend must be one of", "torch")


@pytest.mark.parametrize("kwargs,words", [
    (dict(seed=1.5), ["seed"]), (dict(seed="3"), ["seed"]), (dict(seed=2**70), ["seed"]),
    (dict(fps=1 + 2j), ["fps", "number"]), (dict(fps="50"), ["fps"]), (dict(fps=float("inf")), ["fps"]),
    (dict(fps=0.5), ["fps"]), (dict(conf_threshold="0.3"), ["conf_threshold"]),
    (dict(conf_threshold=2.0), ["conf_threshold"]), (dict(progress=5), ["progress", "function"]),
    (dict(normalized="yes"), ["normalized"]), (dict(encoder_only="no"), ["encoder_only"]),
    (dict(estimate_focal=1), ["estimate_focal"]), (dict(format=5), ["format"]),
    (dict(image_size="1000x800"), ["image size"]), (dict(image_size=(float("nan"), 800)), ["image size"]),
])
def test_lift_arguments(lifter, kp, kwargs, words):
    args = dict(image_size=(W, H))
    args.update(kwargs)
    with pytest.raises(InputError) as e:
        lifter.lift(kp, **args)
    _one_line(e, *words)


@pytest.mark.parametrize("bad,words", [
    ([[[1.0, 2.0]] * 17, [[1.0, 2.0]] * 16], ["rectangular"]),
    (np.full((12, 17, 2), "a"), ["real numbers"]),
    ("keypoints.npy", ["string"]),
    (torch.zeros(12, 17, 2, dtype=torch.complex64), ["complex"]),
])
def test_keypoint_containers(lifter, bad, words):
    with pytest.raises(InputError) as e:
        lifter.lift(bad, image_size=(W, H))
    _one_line(e, *words)


def test_tensor_that_requires_grad_is_lifted_like_the_array(lifter, kp):
    a = lifter.lift(kp, image_size=(W, H), seed=2)
    b = lifter.lift(torch.tensor(kp, requires_grad=True), image_size=(W, H), seed=2)
    np.testing.assert_array_equal(a["poses_3d"], b["poses_3d"])


def test_stream_arguments(lifter):
    for kwargs, word in ((dict(seed=1.5), "seed"), (dict(mode="x"), "mode"), (dict(encoder_only="y"), "encoder_only"),
                         (dict(format=None), "format")):
        with pytest.raises(InputError) as e:
            lifter.stream(image_size=(W, H), **kwargs)
        _one_line(e, word)
    with pytest.raises(InputError):
        lifter.stream(image_size=(W, H)).push("abc")


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e30])
def test_pipeline_refuses_non_finite_and_absurd_frames(model, kp, value):
    bad = kp.copy()
    bad[5, 3, 0] = value
    with pytest.raises(InputError) as e:
        VideoInput.from_pixels(bad, INTR)
    _one_line(e, "frame 5, joint 3")
    stream = StreamingLifter(Lifter(model), INTR, mode="causal")
    for t in range(5):
        assert np.isfinite(stream.push(kp[t])).all()
    with pytest.raises(InputError):
        stream.push(bad[5])
    assert np.isfinite(stream.push(kp[6])).all()                    # the stream goes on


def test_validators_directly():
    assert validate.integer(np.int64(3), "n", 1, 5) == 3 and validate.seed(np.uint8(7)) == 7
    assert validate.real(np.float32(0.5), "x", 0, 1) == 0.5 and validate.flag(np.bool_(True), "f") is True
    for fn, arg in ((validate.integer, 3.0), (validate.real, True), (validate.flag, 0), (validate.real, None)):
        with pytest.raises(InputError):
            fn(arg, "arg")
