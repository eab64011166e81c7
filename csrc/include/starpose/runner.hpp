// StarPose C++ runner: the whole autoregressive lifting loop of engine/core/pipeline.py (Lifter.lift)
// on ONNX Runtime's C++ API, with no Python in it.
//
// Inputs are the directory written by `python -m export.onnx` (context.onnx, condition.onnx,
// denoiser.onnx, runner.json; stpg_grad.onnx is not needed: the x0-mode STPG gradient of
// engine/core/guidance.py is computed here in closed form) and 2D keypoints in normalised screen units
// (camera_normalize() converts pixels). ONNX Runtime's shared library is loaded at run time with
// dlopen (load_onnxruntime), so nothing links against it and the header needs no ORT headers.
//
// Per video and frame, exactly as the Python pipeline: context windows of F frames planned like
// engine.core.pipeline.plan_windows/window_slice; the condition graph over the past L frames; N GMM
// noise samples (given by the caller, or drawn from the portable counter-based stream of
// engine/core/rng.py keyed by (seed, frame) per video, so a seed gives the same noise here, in every
// Python backend and on every platform up to libm rounding); initial noise per engine.core.sampler.initial_noise; S DDIM steps with the N
// hypotheses of all active videos in one denoiser call per step; STPG (x0 mode) with the
// max_step trust region; mean or reproj aggregation; spread; history push.
//
// Thread safety: a Runner is immutable after construction; lift() may run concurrently from
// several threads (each call has its own buffers; ORT sessions are thread-safe for Run).
// Limits: float32 CPU (CUDA provider optional), one skeleton per export, guidance mode x0 only.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace starpose {

// Model, export or runtime problem (missing files, ORT failure). Python: engine._ortrunner.RunnerError.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad caller input (shape, NaN, joint count, settings). Python: ValueError.
class InputError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// dlopen ONNX Runtime and bind its C API (ORT_API_VERSION of the bundled headers, 21). Call once
// per process before creating a Runner; later calls return the loaded version (a different path
// after a successful load throws). Empty path: $STARPOSE_ORT_LIBRARY, then libonnxruntime.so.1,
// then libonnxruntime.so on the loader path. Returns ORT's version string.
std::string load_onnxruntime(const std::string& library_path = "");
bool onnxruntime_loaded();

struct GuidanceSettings {
  bool enabled = true;
  std::vector<float> weights;   // energy weights in the order of Runner::energies() (runner.json's
                                // guidance.energies, engine/core/energies.py); defaults() fills them
  float rho = 0.002f;       // metres per unit gradient
  float max_step = 0.02f;   // per-joint trust region per step, metres
};

struct LiftSettings {
  int hypotheses = 0;                            // N
  std::vector<std::pair<int, int>> ddim_pairs;   // (k, k_next), K .. 0
  std::string aggregation = "mean";              // "mean" | "reproj"
  std::string noise = "frame";                   // "frame": fresh GMM draws per frame | "video": one draw reused
  GuidanceSettings guidance;
  uint64_t seed = 0;                             // noise seed (engine/core/rng.py: per video, keyed by (seed, frame))
  bool person_view = false;                      // lift in each frame's person-centred camera
                                                 // (engine/core/input_norm.py); default: runner.json's input_view
};

// One video, caller-owned memory, normalised screen units.
struct VideoView {
  const float* kp2d = nullptr;    // (T, J, 2)
  const float* conf = nullptr;    // (T, J) reprojection weights (confidences)
  int frames = 0;                 // T >= 1
  std::array<float, 4> intr{};    // normalised fx, fy, cx, cy
  const float* noise = nullptr;   // optional (T, N, 3J) GMM samples used instead of the RNG
};

struct LiftOutput {
  int frames = 0;
  std::vector<float> poses;    // (T, J, 3) metres, root-relative, camera axes
  std::vector<float> spread;   // (T, J) metres: RMS distance of the hypotheses to the aggregate
  std::vector<float> initial;  // (T, J, 3) metres: the context encoder's estimate
};

// Wall time per phase of one lift() call (seconds), for profiling.
struct LiftStats {
  double context = 0, condition = 0, denoiser = 0, guidance = 0, other = 0, total = 0;
  long frames = 0;            // frame steps summed over videos
  long denoiser_calls = 0;
};

struct RunnerOptions {
  int intra_op_threads = 1;    // ORT intra-op threads per session (1: run on the caller's thread)
  bool use_cuda = false;       // try the CUDA execution provider, fall back to CPU
  bool allow_spinning = false; // ORT thread-pool spinning (only matters with > 1 thread)
};

class Runner {
 public:
  // Loads export_dir/{runner.json, context.onnx, condition.onnx, denoiser.onnx}; throws Error.
  explicit Runner(const std::string& export_dir, const RunnerOptions& options = {});
  ~Runner();
  Runner(Runner&&) noexcept;
  Runner& operator=(Runner&&) noexcept;
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  int joints() const;           // J
  int context_frames() const;   // F
  int history() const;          // L
  const std::string& preset() const;
  const std::string& export_dir() const;
  const LiftSettings& defaults() const;          // from runner.json
  const std::vector<std::string>& energies() const;   // STPG energy names, the order of guidance.weights
  const std::vector<std::string>& providers() const;
  int train_steps() const;      // K

  // Lift several videos of any lengths in one batched autoregressive pass. Validates every input
  // first (throws InputError). progress(n) is called after every frame step with the number of
  // videos active in it (may throw; the exception propagates).
  std::vector<LiftOutput> lift(const std::vector<VideoView>& videos, const LiftSettings& settings,
                               const std::function<void(int)>& progress = {}, LiftStats* stats = nullptr) const;

  struct Impl;   // opaque (sessions, runner.json); defined in src/runner.cpp

 private:
  std::unique_ptr<Impl> impl_;
};

// Pinhole camera in pixels (engine/core/camera.py Intrinsics).
// Default focal length / longest image side (engine.core.camera.H36M_FOCAL_RATIO; runner.json's
// constants.default_focal_ratio must equal it, checked when a Runner loads an export).
constexpr double kDefaultFocalRatio = 1.145;

struct Camera {
  double fx = 0, fy = 0, cx = 0, cy = 0;
  int width = 0, height = 0;
  // fx = fy = kDefaultFocalRatio * max(W, H), principal point at the centre (Human3.6M-like).
  static Camera default_for(int width, int height);
  std::array<float, 4> normalized() const;   // [fx, fy, cx, cy] in normalised screen units
};

// Pixel keypoints (T, J, C) with C = 2 (xy) or 3 (xy + confidence, clamped to [0, 1]) ->
// kp2d (T, J, 2) normalised screen units and conf (T, J) (1 when C = 2).
void camera_normalize(const float* pixels, int frames, int joints, int channels, const Camera& camera,
                      float* kp2d, float* conf);

}  // namespace starpose
