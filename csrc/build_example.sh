#!/usr/bin/env bash
# Configure, build and install the C++ runner (CMake package starpose::runner), build the
# lift_npy example against the *installed* package (checks find_package), export a tiny
# random-weight model, and lift a generated .npy with it. Called by .ci/run; ~1 min on 2 cores.
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3) must have the project's
# dependencies (torch, onnx, onnxscript, onnxruntime); BUILD_DIR (default: build/csrc-ci).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
BUILD="${BUILD_DIR:-build/csrc-ci}"
PREFIX="$BUILD/prefix"
GEN=()
if command -v ninja >/dev/null 2>&1; then GEN=(-G Ninja); fi
JOBS="${JOBS:-2}"

echo "== configure + build + install the library (csrc/CMakeLists.txt)"
cmake -S csrc -B "$BUILD/lib" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DSTARPOSE_BUILD_EXAMPLES=OFF \
      -DCMAKE_INSTALL_PREFIX="$PWD/$PREFIX" >/dev/null
cmake --build "$BUILD/lib" --parallel "$JOBS"
cmake --install "$BUILD/lib" >/dev/null

echo "== build the example against the installed package (find_package(starpose))"
cmake -S csrc/examples -B "$BUILD/example" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
      -Dstarpose_DIR="$PWD/$PREFIX/lib/cmake/starpose" >/dev/null
cmake --build "$BUILD/example" --parallel "$JOBS"

echo "== export a tiny random-weight model and make an input"
ORT_LIB="$("$PYTHON" - <<'PY'
import glob, importlib.util, os
spec = importlib.util.find_spec("onnxruntime")
libs = [l for d in spec.submodule_search_locations for l in sorted(glob.glob(os.path.join(d, "capi", "libonnxruntime.so*")))]
print(libs[-1])
PY
)"
"$PYTHON" -m export.onnx --preset tiny --out "$BUILD/model" --no-verify >/dev/null 2>"$BUILD/export.log" \
    || { cat "$BUILD/export.log"; exit 1; }
"$PYTHON" - "$BUILD/kp.npy" <<'PY'
import sys
import numpy as np
from export.golden import make_videos
kps, cams = make_videos(17)
np.save(sys.argv[1], np.concatenate([kps[0], kps[0][::-1]], 0))   # (22, 17, 3) pixels + confidence
PY

echo "== run the example"
"$BUILD/example/lift_npy" --model "$BUILD/model" --input "$BUILD/kp.npy" --output "$BUILD/poses.npy" \
    --width 1000 --height 1000 --fx 1145 --fy 1145 --cx 500 --cy 500 --ort-lib "$ORT_LIB"
"$PYTHON" - "$BUILD/kp.npy" "$BUILD/poses.npy" "$BUILD/model" <<'PY'
import sys
import numpy as np
kp, poses = np.load(sys.argv[1]), np.load(sys.argv[2])
assert poses.shape == (kp.shape[0], kp.shape[1], 3), poses.shape
assert poses.dtype == np.float32 and np.isfinite(poses).all(), "non-finite poses"
assert np.abs(poses[:, 0]).max() == 0.0, "root joint must be the origin"
msg = f"ok: poses {poses.shape} mm, |p| max {np.abs(poses).max():.1f} mm"
try:   # same input through the Python binding: checks the example's pixel normalisation
    from engine import cpp_backend
    from engine.core.camera import Intrinsics
    from engine.core.pipeline import VideoInput
    if cpp_backend.available():
        cpp_backend.load_onnxruntime()
        v = VideoInput.from_pixels(kp, Intrinsics(1145.0, 1145.0, 500.0, 500.0, 1000, 1000))
        runner = cpp_backend.Runner(sys.argv[3])
        ref = runner.lift([(v.kp2d.numpy(), v.conf.numpy(), v.intr.numpy())], seed=0)[0][0] * 1000
        diff = float(np.abs(ref - poses).max())
        assert diff < 1e-2, f"example and Python binding differ by {diff} mm"
        msg += f"; matches the Python binding (max diff {diff:.1e} mm)"
except ImportError:
    pass
print(msg)
PY
