// The autoregressive loop of engine/core/pipeline.py (Lifter.lift) and engine/core/sampler.py on ORT.
// Structure of one lift() call: validate -> sort videos by length (stable, longest first, so the
// active videos at frame t are a prefix) -> per frame: context windows (one batched call for the
// videos that enter a new window), condition graph (n active videos), noise, S DDIM steps (one
// denoiser call on n * N rows per step, STPG in C++), aggregation, spread, history push.
// All buffers are allocated once per call, sized for the whole batch; ORT writes its outputs
// straight into them (pre-bound output tensors), so the frame loop does not allocate.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <sstream>

#include "geometry.hpp"
#include "ort_env.hpp"
#include "starpose/rng.hpp"
#include "spec.hpp"
#include "starpose/runner.hpp"

namespace starpose {
namespace {

// ---------------------------------------------------------------------------------------------
// ORT sessions

struct Graph {
  std::string name;
  std::unique_ptr<Ort::Session> session;
  std::vector<std::string> inputs, outputs;
  std::vector<const char*> input_ptrs, output_ptrs;
  std::vector<std::vector<int64_t>> input_shapes;

  int input_index(const std::string& n) const {
    for (size_t i = 0; i < inputs.size(); ++i)
      if (inputs[i] == n) return static_cast<int>(i);
    return -1;
  }

  void run(const Ort::Value* in, Ort::Value* out) const {
    try {
      session->Run(Ort::RunOptions{nullptr}, input_ptrs.data(), in, inputs.size(), output_ptrs.data(), out,
                   outputs.size());
    } catch (const Ort::Exception& e) {
      throw Error(name + ".onnx failed to run: " + e.what());
    }
  }
};

Graph open_graph(const std::string& dir, const std::string& name, const Ort::SessionOptions& so,
                 const std::vector<std::string>& known_inputs, const std::vector<std::string>& want_outputs) {
  Graph g;
  g.name = name;
  const std::string path = dir + "/" + name + ".onnx";
  try {
    g.session = std::make_unique<Ort::Session>(ort_env(), path.c_str(), so);
  } catch (const Ort::Exception& e) {
    throw Error("cannot load " + path + ": " + e.what());
  }
  Ort::AllocatorWithDefaultOptions alloc;
  for (size_t i = 0; i < g.session->GetInputCount(); ++i) {
    std::string n = g.session->GetInputNameAllocated(i, alloc).get();
    if (std::find(known_inputs.begin(), known_inputs.end(), n) == known_inputs.end())
      throw Error(path + " has an unexpected input '" + n + "' (not a StarPose " + name + " graph?)");
    g.input_shapes.push_back(g.session->GetInputTypeInfo(i).GetTensorTypeAndShapeInfo().GetShape());
    g.inputs.push_back(std::move(n));
  }
  for (size_t i = 0; i < g.session->GetOutputCount(); ++i)
    g.outputs.emplace_back(g.session->GetOutputNameAllocated(i, alloc).get());
  if (g.outputs != want_outputs) {
    std::string got;
    for (const auto& o : g.outputs) got += o + " ";
    throw Error(path + " has outputs [ " + got + "], expected the StarPose " + name + " outputs");
  }
  for (const auto& s : g.inputs) g.input_ptrs.push_back(s.c_str());
  for (const auto& s : g.outputs) g.output_ptrs.push_back(s.c_str());
  return g;
}

// static dims of a graph input must match the spec (dynamic dims are -1 or symbolic)
void check_dims(const Graph& g, const std::string& input, const std::vector<int64_t>& want) {
  int i = g.input_index(input);
  if (i < 0) return;
  const auto& got = g.input_shapes[i];
  bool ok = got.size() == want.size();
  for (size_t d = 0; ok && d < got.size(); ++d) ok = got[d] < 0 || want[d] < 0 || got[d] == want[d];
  if (!ok) {
    std::ostringstream m;
    m << g.name << ".onnx input '" << input << "' has shape (";
    for (auto d : got) m << d << ",";
    m << ") but runner.json implies (";
    for (auto d : want) m << d << ",";
    m << "): the graphs and runner.json come from different exports";
    throw Error(m.str());
  }
}

Ort::Value tensor(const Ort::MemoryInfo& mem, float* data, std::initializer_list<int64_t> shape) {
  size_t n = 1;
  for (auto d : shape) n *= static_cast<size_t>(d);
  return Ort::Value::CreateTensor<float>(mem, data, n, shape.begin(), shape.size());
}

Ort::Value tensor(const Ort::MemoryInfo& mem, int64_t* data, std::initializer_list<int64_t> shape) {
  size_t n = 1;
  for (auto d : shape) n *= static_cast<size_t>(d);
  return Ort::Value::CreateTensor<int64_t>(mem, data, n, shape.begin(), shape.size());
}

struct WindowPlan {
  int start, first, stop;   // window [start, start + F) lifts frames [first, stop)
};

// engine.core.pipeline.plan_windows
std::vector<WindowPlan> plan_windows(int frames, int window) {
  std::vector<WindowPlan> plans;
  int s = 0;
  while (s + window <= frames) {
    plans.push_back({s, s, s + window});
    s += window;
  }
  if (s < frames) plans.push_back({std::max(0, frames - window), s, frames});
  return plans;
}

bool finite(const float* p, size_t n, size_t* bad) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) {
      *bad = i;
      return false;
    }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Runner::Impl {
  std::string dir;
  Spec spec;
  Ort::MemoryInfo mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  Graph context, condition, denoiser;
  std::vector<std::string> providers;
  int cond_f2d = -1, cond_kp = -1, cond_h2 = -1, cond_h3 = -1, cond_mask = -1;
  int den_pose = -1, den_cond = -1, den_k = -1;
};

Runner::Runner(const std::string& export_dir, const RunnerOptions& options) : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  I.dir = export_dir;
  I.spec = load_spec(export_dir);
  if (options.intra_op_threads < 1)
    throw InputError("intra_op_threads must be >= 1, got " + std::to_string(options.intra_op_threads));
  Ort::SessionOptions so;
  so.SetIntraOpNumThreads(options.intra_op_threads);
  so.SetInterOpNumThreads(1);
  so.SetExecutionMode(ExecutionMode::ORT_SEQUENTIAL);
  so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
  so.AddConfigEntry("session.intra_op.allow_spinning", options.allow_spinning ? "1" : "0");
  I.providers = {"CPUExecutionProvider"};
  if (options.use_cuda) {
    OrtCUDAProviderOptionsV2* cuda = nullptr;
    try {
      Ort::ThrowOnError(Ort::GetApi().CreateCUDAProviderOptions(&cuda));
      so.AppendExecutionProvider_CUDA_V2(*cuda);
      I.providers.insert(I.providers.begin(), "CUDAExecutionProvider");
    } catch (const Ort::Exception&) {
      // CPU-only ORT build or no CUDA libraries: stay on CPU (providers() says so)
    }
    if (cuda) Ort::GetApi().ReleaseCUDAProviderOptions(cuda);
  }
  I.context = open_graph(export_dir, "context", so, {"kp"}, {"f2d", "init3d"});
  I.condition = open_graph(export_dir, "condition", so, {"f2d", "kp2d", "hist2d", "hist3d", "mask"}, {"cond"});
  I.denoiser = open_graph(export_dir, "denoiser", so, {"pose_k", "cond", "k"}, {"eps"});
  const Spec& s = I.spec;
  const int64_t J = s.joints, F = s.context_frames, L = s.history, C = s.context_dim, D = s.cond_dim;
  check_dims(I.context, "kp", {-1, F, J, 2});
  check_dims(I.condition, "f2d", {-1, J, C});
  check_dims(I.condition, "kp2d", {-1, J, 2});
  check_dims(I.condition, "hist2d", {-1, L, J, 2});
  check_dims(I.condition, "hist3d", {-1, L, J, 3});
  check_dims(I.condition, "mask", {-1, L});
  check_dims(I.denoiser, "pose_k", {-1, J, 3});
  check_dims(I.denoiser, "cond", {-1, J, D});
  check_dims(I.denoiser, "k", {-1});
  I.cond_f2d = I.condition.input_index("f2d");
  I.cond_kp = I.condition.input_index("kp2d");
  I.cond_h2 = I.condition.input_index("hist2d");
  I.cond_h3 = I.condition.input_index("hist3d");
  I.cond_mask = I.condition.input_index("mask");
  I.den_pose = I.denoiser.input_index("pose_k");
  I.den_cond = I.denoiser.input_index("cond");
  I.den_k = I.denoiser.input_index("k");
  if (I.context.inputs.size() != 1 || I.den_pose < 0 || I.den_cond < 0 || I.den_k < 0)
    throw Error(export_dir + ": context/denoiser graphs lack required inputs");
}

Runner::~Runner() = default;
Runner::Runner(Runner&&) noexcept = default;
Runner& Runner::operator=(Runner&&) noexcept = default;

int Runner::joints() const { return impl_->spec.joints; }
int Runner::context_frames() const { return impl_->spec.context_frames; }
int Runner::history() const { return impl_->spec.history; }
int Runner::train_steps() const { return impl_->spec.train_steps; }
const std::string& Runner::preset() const { return impl_->spec.preset; }
const std::string& Runner::export_dir() const { return impl_->dir; }
const LiftSettings& Runner::defaults() const { return impl_->spec.defaults; }
const std::vector<std::string>& Runner::energies() const { return impl_->spec.energies; }
const std::vector<std::string>& Runner::providers() const { return impl_->providers; }

namespace {

void validate(const std::vector<VideoView>& videos, const LiftSettings& st, const Spec& spec) {
  const int J = spec.joints, K = spec.train_steps;
  if (st.hypotheses < 1) throw InputError("hypotheses must be >= 1, got " + std::to_string(st.hypotheses));
  if (st.ddim_pairs.empty()) throw InputError("ddim_pairs is empty");
  for (const auto& p : st.ddim_pairs)
    if (!(0 <= p.second && p.second < p.first && p.first <= K))
      throw InputError("ddim pair (" + std::to_string(p.first) + ", " + std::to_string(p.second) +
                       ") must satisfy 0 <= k_next < k <= K = " + std::to_string(K));
  if (st.aggregation != "mean" && st.aggregation != "reproj")
    throw InputError("aggregation must be 'mean' or 'reproj', got '" + st.aggregation + "'");
  if (st.noise != "frame" && st.noise != "video")
    throw InputError("noise must be 'frame' or 'video', got '" + st.noise + "'");
  const GuidanceSettings& g = st.guidance;
  if (g.weights.size() != spec.energies.size())
    throw InputError("guidance weights: expected " + std::to_string(spec.energies.size()) +
                     " (one per energy of Runner::energies()), got " + std::to_string(g.weights.size()));
  std::vector<float> vals(g.weights);
  vals.push_back(g.rho);
  vals.push_back(g.max_step);
  for (float v : vals)
    if (!std::isfinite(v) || v < 0.f) throw InputError("guidance weights, rho and max_step must be finite and >= 0");
  for (size_t b = 0; b < videos.size(); ++b) {
    const VideoView& v = videos[b];
    const std::string who = "video " + std::to_string(b) + ": ";
    if (v.frames < 1) throw InputError(who + "needs at least 1 frame, got " + std::to_string(v.frames));
    if (!v.kp2d || !v.conf) throw InputError(who + "kp2d and conf must not be null");
    for (int i = 0; i < 4; ++i)
      if (!std::isfinite(v.intr[i])) throw InputError(who + "intrinsics contain NaN or inf");
    if (!(v.intr[0] > 0.f && v.intr[1] > 0.f)) throw InputError(who + "focal lengths must be positive");
    size_t bad = 0;
    if (!finite(v.kp2d, static_cast<size_t>(v.frames) * J * 2, &bad))
      throw InputError(who + "2D keypoints contain NaN or inf (frame " + std::to_string(bad / (2 * J)) + ", joint " +
                       std::to_string(bad / 2 % J) + "); drop or interpolate missing detections first");
    if (!finite(v.conf, static_cast<size_t>(v.frames) * J, &bad))
      throw InputError(who + "confidences contain NaN or inf (frame " + std::to_string(bad / J) + ")");
    if (v.noise && !finite(v.noise, static_cast<size_t>(v.frames) * st.hypotheses * 3 * J, &bad))
      throw InputError(who + "noise contains NaN or inf");
  }
}

}  // namespace

namespace {

// Phase timer of one lift() call: lap(&LiftStats::x) adds the time since the previous lap to x.
class PhaseTimer {
 public:
  using Clock = std::chrono::steady_clock;
  void lap(double LiftStats::*phase) {
    const auto now = Clock::now();
    stats.*phase += std::chrono::duration<double>(now - mark_).count();
    mark_ = now;
  }
  void restart() { mark_ = Clock::now(); }
  void finish() { stats.total = std::chrono::duration<double>(Clock::now() - start_).count(); }
  LiftStats stats;

 private:
  Clock::time_point start_ = Clock::now(), mark_ = start_;
};

// The state and buffers of one lift() call (engine.core.pipeline.Lifter.lift). Videos are sorted
// longest first, so the n videos active at frame t are rows [0, n) of every buffer; buffers are
// sized for all B videos once, and ORT reads from and writes into them directly.
class LiftJob {
 public:
  LiftJob(const Runner::Impl& impl, const std::vector<VideoView>& videos, const LiftSettings& st);
  std::vector<LiftOutput> run(const std::function<void(int)>& progress, LiftStats* stats);

 private:
  void context_windows(int t, int n);   // new context windows for the videos that need one
  void frame_inputs(int t, int n);      // f2d, init3d, kp2d, conf of frame t
  void condition(int n);                // cond (n, J, D)
  void initial_noise(int t, int n);     // x_K (n, N, J, 3) from given or drawn GMM samples
  void sample(int n);                   // S DDIM steps -> root-relative hypotheses in pose
  void finish_frame(int t, int n);      // aggregation, spread, outputs, history push

  const Runner::Impl& I;
  const Spec& spec;
  const LiftSettings& st;
  const int B, J, F, L, C, D, N, D3;
  const size_t JC, JD, J3;
  const bool use_guidance;
  PhaseTimer timer;

  std::vector<int> order;                      // sorted row -> caller's video index
  std::vector<const VideoView*> vid;           // sorted rows
  std::vector<LiftOutput> results;             // caller's order
  std::vector<std::vector<WindowPlan>> plans;
  std::vector<int> cursor, need;
  std::vector<float> ctx_in, ctx_f2d, ctx_init;         // (W, F, J, 2|C|3) context call
  std::vector<float> f2d_win, init_win;                 // (B, F, J, C|3) current window per video
  std::vector<float> f2d_t, init_t, kp_t, conf_t, intr; // (B, J, C|3|2), (B, J), (B, 4) frame t
  std::vector<float> hist2d, hist3d, mask;              // (B, L, J, 2|3), (B, L)
  std::vector<float> cond, cond_r;                      // (B, J, D), (B N, J, D)
  std::vector<float> x, pose, eps, x0, grad, samples;   // (B N, J, 3) / (B N, 3J)
  std::vector<int64_t> kbuf;                            // (B N,)
  std::vector<float> agg;                               // (J, 3)
  std::vector<StpgGrad> stpg;
  std::vector<double> cdf;                              // GMM component CDF
  std::vector<float> gmm_std;                           // (M, 3J)
  std::vector<float> video_samples;                     // (B, N, 3J) first draw per video (noise 'video')
  std::vector<char> drawn;                              // (B,) video_samples[b] holds a draw
  std::vector<Ort::Value> cond_in;
};

LiftJob::LiftJob(const Runner::Impl& impl, const std::vector<VideoView>& videos, const LiftSettings& settings)
    : I(impl), spec(impl.spec), st(settings), B(static_cast<int>(videos.size())), J(spec.joints),
      F(spec.context_frames), L(spec.history), C(spec.context_dim), D(spec.cond_dim), N(settings.hypotheses),
      D3(3 * spec.joints), JC(static_cast<size_t>(J) * C), JD(static_cast<size_t>(J) * D),
      J3(static_cast<size_t>(J) * 3), use_guidance(settings.guidance.enabled && settings.guidance.rho > 0.f) {
  order.resize(B);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return videos[a].frames > videos[b].frames; });
  vid.resize(B);
  results.resize(B);
  plans.resize(B);
  for (int b = 0; b < B; ++b) {
    vid[b] = &videos[order[b]];
    LiftOutput& out = results[order[b]];
    out.frames = vid[b]->frames;
    out.poses.assign(out.frames * J3, 0.f);
    out.spread.assign(static_cast<size_t>(out.frames) * J, 0.f);
    out.initial.assign(out.frames * J3, 0.f);
    plans[b] = plan_windows(vid[b]->frames, F);
  }
  cursor.assign(B, -1);
  need.reserve(B);
  const size_t R = static_cast<size_t>(B) * N;
  ctx_in.resize(B * static_cast<size_t>(F) * J * 2);
  ctx_f2d.resize(B * F * JC);
  ctx_init.resize(B * F * J3);
  f2d_win.resize(B * F * JC);
  init_win.resize(B * F * J3);
  f2d_t.resize(B * JC);
  init_t.resize(B * J3);
  kp_t.resize(static_cast<size_t>(B) * J * 2);
  conf_t.resize(static_cast<size_t>(B) * J);
  intr.resize(static_cast<size_t>(B) * 4);
  for (int b = 0; b < B; ++b) std::copy(vid[b]->intr.begin(), vid[b]->intr.end(), intr.begin() + 4 * b);
  hist2d.assign(static_cast<size_t>(B) * L * J * 2, 0.f);
  hist3d.assign(B * L * J3, 0.f);
  mask.assign(static_cast<size_t>(B) * L, 0.f);
  cond.resize(B * JD);
  cond_r.resize(R * JD);
  for (auto* v : {&x, &pose, &eps, &x0, &grad, &samples}) v->resize(R * J3);
  if (st.noise == "video") {
    video_samples.resize(R * J3);
    drawn.assign(B, 0);
  }
  kbuf.resize(R);
  agg.resize(J3);
  stpg.reserve(B);
  for (int b = 0; b < B; ++b) {
    stpg.emplace_back(spec.skeleton, spec.constants, spec.energy_slots, L);
  }
  const int M = spec.gmm_components;
  double total = 0.0, acc = 0.0;
  for (int m = 0; m < M; ++m) total += spec.gmm_weights[m];
  cdf.resize(M);
  for (int m = 0; m < M; ++m) cdf[m] = (acc += spec.gmm_weights[m] / total);
  gmm_std.resize(spec.gmm_variances.size());
  for (size_t i = 0; i < gmm_std.size(); ++i) gmm_std[i] = std::sqrt(spec.gmm_variances[i]);
  cond_in.reserve(I.condition.inputs.size());
}

std::vector<LiftOutput> LiftJob::run(const std::function<void(int)>& progress, LiftStats* stats) {
  int n = B;
  for (int t = 0; t < vid[0]->frames; ++t) {
    while (n > 0 && vid[n - 1]->frames <= t) --n;
    context_windows(t, n);
    frame_inputs(t, n);
    condition(n);
    initial_noise(t, n);
    sample(n);
    finish_frame(t, n);
    timer.stats.frames += n;
    timer.lap(&LiftStats::other);
    if (progress) progress(n);
    timer.restart();   // time spent in the callback belongs to the caller
  }
  if (stats) {
    timer.finish();
    *stats = timer.stats;
  }
  return std::move(results);
}

void LiftJob::context_windows(int t, int n) {
  need.clear();
  for (int b = 0; b < n; ++b)
    if (cursor[b] < 0 || t >= plans[b][cursor[b]].stop) need.push_back(b);
  if (need.empty()) return;
  const int W = static_cast<int>(need.size());
  const size_t win_kp = static_cast<size_t>(F) * J * 2;
  for (int i = 0; i < W; ++i) {
    const int b = need[i];
    const int start = plans[b][++cursor[b]].start, T = vid[b]->frames;
    for (int f = 0; f < F; ++f) {   // engine.core.pipeline.window_slice: pad by repeating the last frame
      const int src = std::min(start + f, T - 1);
      std::memcpy(&ctx_in[i * win_kp + static_cast<size_t>(f) * J * 2], vid[b]->kp2d + static_cast<size_t>(src) * J * 2,
                  sizeof(float) * J * 2);
    }
  }
  timer.lap(&LiftStats::other);
  Ort::Value in = tensor(I.mem, ctx_in.data(), {W, F, J, 2});
  Ort::Value outs[2] = {tensor(I.mem, ctx_f2d.data(), {W, F, J, C}), tensor(I.mem, ctx_init.data(), {W, F, J, 3})};
  I.context.run(&in, outs);
  for (int i = 0; i < W; ++i) {
    const int b = need[i];
    std::memcpy(&f2d_win[b * F * JC], &ctx_f2d[i * F * JC], sizeof(float) * F * JC);
    std::memcpy(&init_win[b * F * J3], &ctx_init[i * F * J3], sizeof(float) * F * J3);
  }
  timer.lap(&LiftStats::context);
}

void LiftJob::frame_inputs(int t, int n) {
  for (int b = 0; b < n; ++b) {
    const size_t p = static_cast<size_t>(t - plans[b][cursor[b]].start);
    std::memcpy(&f2d_t[b * JC], &f2d_win[(b * F + p) * JC], sizeof(float) * JC);
    std::memcpy(&init_t[b * J3], &init_win[(b * F + p) * J3], sizeof(float) * J3);
    std::memcpy(&kp_t[b * J * 2], vid[b]->kp2d + static_cast<size_t>(t) * J * 2, sizeof(float) * J * 2);
    std::memcpy(&conf_t[b * J], vid[b]->conf + static_cast<size_t>(t) * J, sizeof(float) * J);
  }
  timer.lap(&LiftStats::other);
}

void LiftJob::condition(int n) {
  cond_in.clear();
  for (int i = 0; i < static_cast<int>(I.condition.inputs.size()); ++i) {   // in the session's input order
    if (i == I.cond_f2d) cond_in.push_back(tensor(I.mem, f2d_t.data(), {n, J, C}));
    else if (i == I.cond_kp) cond_in.push_back(tensor(I.mem, kp_t.data(), {n, J, 2}));
    else if (i == I.cond_h2) cond_in.push_back(tensor(I.mem, hist2d.data(), {n, L, J, 2}));
    else if (i == I.cond_h3) cond_in.push_back(tensor(I.mem, hist3d.data(), {n, L, J, 3}));
    else cond_in.push_back(tensor(I.mem, mask.data(), {n, L}));
  }
  Ort::Value out = tensor(I.mem, cond.data(), {n, J, D});
  I.condition.run(cond_in.data(), &out);
  timer.lap(&LiftStats::condition);
}

void LiftJob::initial_noise(int t, int n) {
  for (int b = 0; b < n; ++b) {
    float* s = &samples[static_cast<size_t>(b) * N * D3];
    if (vid[b]->noise) {
      std::memcpy(s, vid[b]->noise + static_cast<size_t>(t) * N * D3, sizeof(float) * N * D3);
      continue;
    }
    float* keep = drawn.empty() ? nullptr : &video_samples[static_cast<size_t>(b) * N * D3];
    if (keep && drawn[b]) {   // noise 'video': the video's first draw, reused (engine.core.pipeline.Lifter._draw)
      std::memcpy(s, keep, sizeof(float) * N * D3);
      continue;
    }
    // engine.core.rng: the portable stream keyed by (seed, draw index); 'video' draws once, index 0
    gmm_draw(cdf, spec.gmm_means.data(), gmm_std.data(), D3, st.seed, keep ? 0 : static_cast<uint64_t>(t), N, s);
    if (keep) {
      std::memcpy(keep, s, sizeof(float) * N * D3);
      drawn[b] = 1;
    }
  }
  // engine.core.sampler.initial_noise: x_K = mu (1 - sqrt(a_K)) + sqrt(1 - a_K) (s - mu)
  const float aK = spec.alphas_bar.back(), c0 = 1.f - std::sqrt(aK), c1 = std::sqrt(1.f - aK);
  const float* mu = spec.gmm_mean.data();
  for (size_t i = 0; i < static_cast<size_t>(n) * N * D3; ++i) {
    const float m = mu[i % D3];
    x[i] = m * c0 + c1 * (samples[i] - m);
  }
  timer.lap(&LiftStats::other);
}

void LiftJob::sample(int n) {
  const int R = n * N;
  const size_t RJ3 = static_cast<size_t>(R) * J3;
  const float scale = spec.gmm_scale;
  const float* mu = spec.gmm_mean.data();
  const GuidanceSettings& gs = st.guidance;
  for (int r = 0; r < R; ++r) std::memcpy(&cond_r[r * JD], &cond[(r / N) * JD], sizeof(float) * JD);
  if (use_guidance)   // the energy's history window is step-invariant
    for (int b = 0; b < n; ++b) stpg[b].set_history(&hist3d[b * L * J3], &mask[static_cast<size_t>(b) * L]);
  // pose = init3d + scale * src, per row (engine.core.gmm: the diffusion runs in normalised residual space)
  auto to_pose = [&](const std::vector<float>& src) {
    for (int r = 0; r < R; ++r) {
      const float* in = &init_t[(r / N) * J3];
      for (size_t i = 0; i < J3; ++i) pose[r * J3 + i] = in[i] + scale * src[r * J3 + i];
    }
  };
  for (const auto& kk : st.ddim_pairs) {
    const double a_k = spec.alphas_bar[kk.first], a_next = spec.alphas_bar[kk.second];
    const float c_eps = static_cast<float>(std::sqrt(1.0 - a_k)), c_div = static_cast<float>(std::sqrt(a_k));
    const float n_x0 = static_cast<float>(std::sqrt(a_next)), n_eps = static_cast<float>(std::sqrt(1.0 - a_next));
    to_pose(x);
    std::fill(kbuf.begin(), kbuf.begin() + R, static_cast<int64_t>(kk.first));
    timer.lap(&LiftStats::other);
    {
      Ort::Value in[3] = {Ort::Value{nullptr}, Ort::Value{nullptr}, Ort::Value{nullptr}};
      in[I.den_pose] = tensor(I.mem, pose.data(), {R, J, 3});
      in[I.den_cond] = tensor(I.mem, cond_r.data(), {R, J, D});
      in[I.den_k] = tensor(I.mem, kbuf.data(), {R});
      Ort::Value out = tensor(I.mem, eps.data(), {R, J, 3});
      I.denoiser.run(in, &out);
      ++timer.stats.denoiser_calls;
    }
    timer.lap(&LiftStats::denoiser);
    for (size_t i = 0; i < RJ3; ++i) {
      const float m = mu[i % D3];
      x0[i] = m + (x[i] - m - c_eps * eps[i]) / c_div;   // Eq. 8
    }
    if (use_guidance) {   // x0 mode: dE/dh at h_0|k = init3d + scale * x_0|k
      to_pose(x0);
      for (int b = 0; b < n; ++b)
        stpg[b].grad(&pose[b * N * J3], N, &kp_t[b * J * 2], &conf_t[b * J], &intr[b * 4], gs, &grad[b * N * J3]);
      timer.lap(&LiftStats::guidance);
    }
    for (size_t i = 0; i < RJ3; ++i) {
      const float m = mu[i % D3];
      x[i] = m + n_x0 * (x0[i] - m) + n_eps * eps[i];   // Algorithm 1 line 5
    }
    if (use_guidance) {
      const float floor = std::max(gs.max_step, 1e-12f);            // max_step 0: no 0/0
      for (size_t p = 0; p < static_cast<size_t>(R) * J; ++p) {   // engine.core.sampler.guidance_step
        const float sx = gs.rho * grad[3 * p], sy = gs.rho * grad[3 * p + 1], sz = gs.rho * grad[3 * p + 2];
        const float f = gs.max_step / std::max(std::sqrt(sx * sx + sy * sy + sz * sz), floor);
        x[3 * p] -= sx * f / scale;
        x[3 * p + 1] -= sy * f / scale;
        x[3 * p + 2] -= sz * f / scale;
      }
    }
  }
  to_pose(x);   // hypotheses, made root-relative
  const int root = spec.skeleton.root;
  for (int r = 0; r < R; ++r) {
    float* h = &pose[r * J3];
    const float rx = h[3 * root], ry = h[3 * root + 1], rz = h[3 * root + 2];
    for (int j = 0; j < J; ++j) {
      h[3 * j] -= rx;
      h[3 * j + 1] -= ry;
      h[3 * j + 2] -= rz;
    }
  }
  timer.lap(&LiftStats::other);
}

void LiftJob::finish_frame(int t, int n) {
  for (int b = 0; b < n; ++b) {
    const float* hyps = &pose[b * N * J3];
    std::fill(agg.begin(), agg.end(), 0.f);
    for (int i = 0; i < N; ++i)
      for (size_t q = 0; q < J3; ++q) agg[q] += hyps[i * J3 + q];
    for (size_t q = 0; q < J3; ++q) agg[q] /= static_cast<float>(N);
    if (st.aggregation == "reproj") {   // engine.core.sampler.aggregate: per joint the hypothesis closest in 2D
      double T[3];
      const float* in4 = &intr[b * 4];
      const float* kp = &kp_t[b * J * 2];
      solve_root_translation(agg.data(), kp, in4, &conf_t[b * J], J, spec.constants.solve_eps, T);
      for (int j = 0; j < J; ++j) {
        int best = 0;
        double best_err = std::numeric_limits<double>::infinity();
        for (int i = 0; i < N; ++i) {   // first minimum wins, like torch.argmin
          const float* p = &hyps[i * J3 + 3 * j];
          const double z = std::max(static_cast<double>(p[2]) + T[2], spec.constants.min_depth);
          const double u = (p[0] + T[0]) / z * in4[0] + in4[2] - kp[2 * j];
          const double v = (p[1] + T[1]) / z * in4[1] + in4[3] - kp[2 * j + 1];
          if (u * u + v * v < best_err) {
            best_err = u * u + v * v;
            best = i;
          }
        }
        std::copy(hyps + best * J3 + 3 * j, hyps + best * J3 + 3 * j + 3, &agg[3 * j]);
      }
    }
    LiftOutput& out = results[order[b]];
    float* spread = &out.spread[static_cast<size_t>(t) * J];
    for (int j = 0; j < J; ++j) {   // RMS distance of the hypotheses to the aggregate
      float acc = 0.f;
      for (int i = 0; i < N; ++i) {
        const float* p = &hyps[i * J3 + 3 * j];
        const float dx = p[0] - agg[3 * j], dy = p[1] - agg[3 * j + 1], dz = p[2] - agg[3 * j + 2];
        acc += dx * dx + dy * dy + dz * dz;
      }
      spread[j] = std::sqrt(acc / static_cast<float>(N));
    }
    std::memcpy(&out.poses[t * J3], agg.data(), sizeof(float) * J3);
    std::memcpy(&out.initial[t * J3], &init_t[b * J3], sizeof(float) * J3);
    // history push (engine.core.pipeline._History.push): drop slot 0, frame t goes to slot L - 1
    float* h2 = &hist2d[static_cast<size_t>(b) * L * J * 2];
    float* h3 = &hist3d[b * L * J3];
    float* mk = &mask[static_cast<size_t>(b) * L];
    std::memmove(h2, h2 + J * 2, sizeof(float) * (L - 1) * J * 2);
    std::memcpy(h2 + static_cast<size_t>(L - 1) * J * 2, &kp_t[b * J * 2], sizeof(float) * J * 2);
    std::memmove(h3, h3 + J3, sizeof(float) * (L - 1) * J3);
    std::memcpy(h3 + (L - 1) * J3, agg.data(), sizeof(float) * J3);
    std::memmove(mk, mk + 1, sizeof(float) * (L - 1));
    mk[L - 1] = 1.f;
  }
}

}  // namespace

std::vector<LiftOutput> Runner::lift(const std::vector<VideoView>& videos, const LiftSettings& settings,
                                     const std::function<void(int)>& progress, LiftStats* stats) const {
  validate(videos, settings, impl_->spec);
  if (videos.empty()) return {};
  if (!settings.person_view) return LiftJob(*impl_, videos, settings).run(progress, stats);
  // engine.core.pipeline.Lifter._in_view: turn every frame's camera to the person, lift, turn back
  const int J = impl_->spec.joints;
  std::vector<std::vector<float>> turned(videos.size()), rots(videos.size());
  std::vector<VideoView> views = videos;
  for (size_t i = 0; i < videos.size(); ++i) {
    person_view(videos[i].kp2d, videos[i].conf, videos[i].frames, J, videos[i].intr.data(), turned[i], rots[i]);
    views[i].kp2d = turned[i].data();
  }
  std::vector<LiftOutput> out = LiftJob(*impl_, views, settings).run(progress, stats);
  for (size_t i = 0; i < out.size(); ++i) {
    from_view(out[i].poses.data(), out[i].frames, J, rots[i]);
    from_view(out[i].initial.data(), out[i].frames, J, rots[i]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

Camera Camera::default_for(int width, int height) {
  if (width <= 0 || height <= 0)
    throw InputError("image size must be positive, got " + std::to_string(width) + "x" + std::to_string(height));
  Camera c;
  c.fx = c.fy = kDefaultFocalRatio * std::max(width, height);
  c.cx = width / 2.0;
  c.cy = height / 2.0;
  c.width = width;
  c.height = height;
  return c;
}

std::array<float, 4> Camera::normalized() const {
  const double w = width, h = height;
  return {static_cast<float>(fx / w * 2), static_cast<float>(fy / w * 2), static_cast<float>(cx / w * 2 - 1),
          static_cast<float>(cy / w * 2 - h / w)};
}

void camera_normalize(const float* pixels, int frames, int joints, int channels, const Camera& camera, float* kp2d,
                      float* conf) {
  if (channels != 2 && channels != 3) throw InputError("keypoints need 2 or 3 channels, got " + std::to_string(channels));
  if (camera.width <= 0 || camera.height <= 0) throw InputError("camera image size must be positive");
  const float w = static_cast<float>(camera.width), off_y = static_cast<float>(camera.height) / w;
  for (size_t i = 0; i < static_cast<size_t>(frames) * joints; ++i) {
    const float* p = pixels + i * channels;
    kp2d[2 * i] = p[0] / w * 2.f - 1.f;   // engine.core.camera.normalize_screen
    kp2d[2 * i + 1] = p[1] / w * 2.f - off_y;
    conf[i] = channels == 3 ? std::min(1.f, std::max(0.f, p[2])) : 1.f;
  }
}

}  // namespace starpose
