// engine._ortrunner: pybind11 binding of starpose::Runner (private; use export.cpp_backend).
// Each function validates its Python arguments, copies them into C++ buffers (so another thread
// cannot change them mid-lift), releases the GIL and dispatches to the runner; results come back
// as numpy arrays that own the runner's buffers (no copy). starpose::InputError -> ValueError,
// starpose::Error -> engine._ortrunner.RunnerError (a RuntimeError); nothing a caller passes can
// crash the process.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "starpose/rng.hpp"
#include "starpose/runner.hpp"

namespace py = pybind11;
using starpose::InputError;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// (kp2d (T, J, 2), conf (T, J), intr (4,)) with shapes checked against J
struct PyVideo {
  std::vector<float> kp2d, conf, noise;
  std::array<float, 4> intr{};
  int frames = 0;
};

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) s += std::to_string(a.shape(d)) + (d + 1 < a.ndim() ? ", " : "");
  return s + (a.ndim() == 1 ? ",)" : ")");
}

FloatArray as_float_array(const py::handle& obj, const std::string& what) {
  FloatArray a = FloatArray::ensure(obj);   // converts lists and other dtypes; null when impossible
  if (!a) throw InputError(what + " must be convertible to a float32 array");
  return a;
}

// A float32 numpy array of `shape` that takes over `data` (freed when the array is).
py::array_t<float> owning_array(std::vector<float>&& data, std::vector<py::ssize_t> shape) {
  auto* owned = new std::vector<float>(std::move(data));
  py::capsule owner(owned, [](void* p) { delete static_cast<std::vector<float>*>(p); });
  return py::array_t<float>(shape, owned->data(), owner);
}

PyVideo convert_video(const py::handle& item, size_t index, int J) {
  const std::string who = "video " + std::to_string(index) + ": ";
  if (!py::isinstance<py::tuple>(item) && !py::isinstance<py::list>(item))
    throw InputError(who + "expected a tuple (kp2d (T, J, 2), conf (T, J), intr (4,))");
  py::sequence seq = py::reinterpret_borrow<py::sequence>(item);
  if (py::len(seq) != 3) throw InputError(who + "expected a tuple (kp2d (T, J, 2), conf (T, J), intr (4,))");
  FloatArray kp = as_float_array(seq[0], who + "kp2d");
  FloatArray conf = as_float_array(seq[1], who + "conf");
  FloatArray intr = as_float_array(seq[2], who + "intr");
  if (kp.ndim() != 3 || kp.shape(2) != 2)
    throw InputError(who + "kp2d must have shape (T, J, 2), got " + shape_str(kp));
  if (kp.shape(1) != J)
    throw InputError(who + "kp2d has " + std::to_string(kp.shape(1)) + " joints, the model expects " +
                     std::to_string(J));
  if (kp.shape(0) < 1) throw InputError(who + "kp2d has no frames");
  if (conf.ndim() != 2 || conf.shape(0) != kp.shape(0) || conf.shape(1) != J)
    throw InputError(who + "conf must have shape (" + std::to_string(kp.shape(0)) + ", " + std::to_string(J) +
                     "), got " + shape_str(conf));
  if (intr.ndim() != 1 || intr.shape(0) != 4)
    throw InputError(who + "intr must have shape (4,) [fx, fy, cx, cy] (normalised), got " + shape_str(intr));
  PyVideo v;
  v.frames = static_cast<int>(kp.shape(0));
  v.kp2d.assign(kp.data(), kp.data() + kp.size());
  v.conf.assign(conf.data(), conf.data() + conf.size());
  for (int i = 0; i < 4; ++i) v.intr[i] = intr.data()[i];
  return v;
}

starpose::LiftSettings convert_settings(const py::object& obj, const starpose::LiftSettings& defaults) {
  starpose::LiftSettings s = defaults;
  if (obj.is_none()) return s;
  if (!py::isinstance<py::dict>(obj)) throw InputError("settings must be a dict or None");
  for (auto kv : py::reinterpret_borrow<py::dict>(obj)) {
    const std::string key = py::str(kv.first);
    py::handle v = kv.second;
    try {
      if (key == "hypotheses") {
        s.hypotheses = v.cast<int>();
      } else if (key == "ddim_pairs") {
        s.ddim_pairs = v.cast<std::vector<std::pair<int, int>>>();
      } else if (key == "aggregation") {
        s.aggregation = v.cast<std::string>();
      } else if (key == "noise") {
        s.noise = v.cast<std::string>();
      } else if (key == "person_view") {
        s.person_view = v.cast<bool>();
      } else if (key == "guidance") {
        for (auto g : v.cast<py::dict>()) {
          const std::string gk = py::str(g.first);
          py::handle gv = g.second;
          if (gk == "enabled") s.guidance.enabled = gv.cast<bool>();
          else if (gk == "weights") s.guidance.weights = gv.cast<std::vector<float>>();
          else if (gk == "rho") s.guidance.rho = gv.cast<float>();
          else if (gk == "max_step") s.guidance.max_step = gv.cast<float>();
          else if (gk == "mode") {
            if (gv.cast<std::string>() != "x0")
              throw InputError("the C++ runner supports guidance mode 'x0' only, got '" + gv.cast<std::string>() +
                               "' (mode 'full' runs on the torch backend)");
          } else {
            throw InputError("unknown guidance setting '" + gk + "'");
          }
        }
      } else {
        throw InputError("unknown setting '" + key +
                         "'; known: hypotheses, ddim_pairs, aggregation, noise, person_view, guidance");
      }
    } catch (const py::cast_error&) {
      throw InputError("setting '" + key + "' has the wrong type");
    }
  }
  return s;
}

py::dict settings_dict(const starpose::LiftSettings& s) {
  py::dict g;
  g["enabled"] = s.guidance.enabled;
  g["weights"] = s.guidance.weights;
  g["rho"] = s.guidance.rho;
  g["max_step"] = s.guidance.max_step;
  py::dict d;
  d["hypotheses"] = s.hypotheses;
  d["ddim_pairs"] = s.ddim_pairs;
  d["aggregation"] = s.aggregation;
  d["noise"] = s.noise;
  d["person_view"] = s.person_view;
  d["guidance"] = g;
  return d;
}

py::object lift(const starpose::Runner& runner, const py::sequence& videos, uint64_t seed, const py::object& noise,
                const py::object& settings, const py::object& progress, bool profile) {
  const int J = runner.joints();
  starpose::LiftSettings st = convert_settings(settings, runner.defaults());
  st.seed = seed;
  std::vector<PyVideo> vids;
  vids.reserve(py::len(videos));
  for (size_t i = 0; i < py::len(videos); ++i) vids.push_back(convert_video(videos[i], i, J));
  if (!noise.is_none()) {
    if (!py::isinstance<py::sequence>(noise) || py::len(noise) != vids.size())
      throw InputError("noise must be a list with one (T, N, 3J) array per video (" + std::to_string(vids.size()) + ")");
    py::sequence ns = py::reinterpret_borrow<py::sequence>(noise);
    for (size_t i = 0; i < vids.size(); ++i) {
      FloatArray a = as_float_array(ns[i], "noise " + std::to_string(i));
      if (a.ndim() != 3 || a.shape(0) != vids[i].frames || a.shape(2) != 3 * J)
        throw InputError("noise " + std::to_string(i) + " must have shape (" + std::to_string(vids[i].frames) +
                         ", N, " + std::to_string(3 * J) + "), got " + shape_str(a));
      if (i == 0 && (settings.is_none() || !py::reinterpret_borrow<py::dict>(settings).contains("hypotheses")))
        st.hypotheses = static_cast<int>(a.shape(1));
      if (a.shape(1) != st.hypotheses)
        throw InputError("noise " + std::to_string(i) + " has " + std::to_string(a.shape(1)) +
                         " hypotheses, the settings say " + std::to_string(st.hypotheses));
      vids[i].noise.assign(a.data(), a.data() + a.size());
    }
  }
  std::vector<starpose::VideoView> views(vids.size());
  for (size_t i = 0; i < vids.size(); ++i) {
    views[i].kp2d = vids[i].kp2d.data();
    views[i].conf = vids[i].conf.data();
    views[i].frames = vids[i].frames;
    views[i].intr = vids[i].intr;
    views[i].noise = vids[i].noise.empty() ? nullptr : vids[i].noise.data();
  }
  std::function<void(int)> cb;
  if (!progress.is_none()) {
    if (!PyCallable_Check(progress.ptr())) throw InputError("progress must be callable or None");
    cb = [&progress](int n) {
      py::gil_scoped_acquire gil;
      progress(n);
    };
  }
  std::vector<starpose::LiftOutput> out;
  starpose::LiftStats stats;
  {
    py::gil_scoped_release release;
    out = runner.lift(views, st, cb, profile ? &stats : nullptr);
  }
  py::list results;
  for (auto& o : out) {   // numpy arrays that own the runner's result buffers (no copy)
    const py::ssize_t T = o.frames, Jn = static_cast<py::ssize_t>(J);
    results.append(py::make_tuple(owning_array(std::move(o.poses), {T, Jn, py::ssize_t(3)}),
                                  owning_array(std::move(o.spread), {T, Jn}),
                                  owning_array(std::move(o.initial), {T, Jn, py::ssize_t(3)})));
  }
  if (!profile) return std::move(results);
  py::dict d;
  d["context_s"] = stats.context;
  d["condition_s"] = stats.condition;
  d["denoiser_s"] = stats.denoiser;
  d["guidance_s"] = stats.guidance;
  d["other_s"] = stats.other;
  d["total_s"] = stats.total;
  d["frames"] = stats.frames;
  d["denoiser_calls"] = stats.denoiser_calls;
  return py::make_tuple(results, d);
}

// starpose::gmm_draw on a GMM given as weights (M,), means and variances (M, D): (n, D) float32
FloatArray gmm_draw(const py::handle& weights, const py::handle& means, const py::handle& variances,
                    uint64_t seed, uint64_t index, int n) {
  FloatArray w = as_float_array(weights, "weights"), mu = as_float_array(means, "means"),
             var = as_float_array(variances, "variances");
  if (w.ndim() != 1 || mu.ndim() != 2 || var.ndim() != 2 || mu.shape(0) != w.shape(0) ||
      var.shape(0) != w.shape(0) || var.shape(1) != mu.shape(1) || w.shape(0) < 1 || n < 0)
    throw InputError("gmm_draw needs weights (M,), means and variances (M, D) and n >= 0, got " + shape_str(w) +
                     ", " + shape_str(mu) + ", " + shape_str(var));
  const int M = static_cast<int>(w.shape(0)), D = static_cast<int>(mu.shape(1));
  std::vector<double> cdf(M);
  double total = 0.0, acc = 0.0;
  for (int m = 0; m < M; ++m) total += w.data()[m];
  for (int m = 0; m < M; ++m) cdf[m] = (acc += w.data()[m] / total);   // as the runner's LiftJob
  std::vector<float> stds(static_cast<size_t>(M) * D);
  for (size_t i = 0; i < stds.size(); ++i) stds[i] = std::sqrt(var.data()[i]);
  FloatArray out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(D)});
  starpose::gmm_draw(cdf, mu.data(), stds.data(), D, seed, index, n, out.mutable_data());
  return out;
}

}  // namespace

PYBIND11_MODULE(_ortrunner, m) {
  m.doc() = "StarPose C++ runner on ONNX Runtime (private: use export.cpp_backend)";
  py::register_exception<starpose::Error>(m, "RunnerError", PyExc_RuntimeError);

  m.def("load_onnxruntime", &starpose::load_onnxruntime, py::arg("library_path") = "",
        "dlopen ONNX Runtime's shared library once per process; returns its version.");
  m.def("gmm_draw", &gmm_draw, py::arg("weights"), py::arg("means"), py::arg("variances"), py::arg("seed"),
        py::arg("index"), py::arg("n"), "N GMM samples (n, D) of the portable noise stream (engine/core/rng.py).");
  m.def("onnxruntime_loaded", &starpose::onnxruntime_loaded, "Whether load_onnxruntime succeeded.");

  py::class_<starpose::Runner>(m, "Runner", "Sessions of one export directory; lift() is thread-safe.")
      .def(py::init([](const std::string& export_dir, int intra_op_threads, bool use_cuda, bool allow_spinning) {
             starpose::RunnerOptions o;
             o.intra_op_threads = intra_op_threads;
             o.use_cuda = use_cuda;
             o.allow_spinning = allow_spinning;
             py::gil_scoped_release release;
             return std::make_unique<starpose::Runner>(export_dir, o);
           }),
           py::arg("export_dir"), py::arg("intra_op_threads") = 1, py::arg("use_cuda") = false,
           py::arg("allow_spinning") = false, "Load export_dir (python -m export.onnx output).")
      .def("lift", &lift, py::arg("videos"), py::arg("seed") = 0, py::arg("noise") = py::none(),
           py::arg("settings") = py::none(), py::arg("progress") = py::none(), py::arg("profile") = false,
           "videos: list of (kp2d (T, J, 2), conf (T, J), intr (4,)) normalised; noise: optional list of "
           "(T, N, 3J); settings: dict overriding runner.json (hypotheses, ddim_pairs, aggregation, guidance); "
           "returns a list of (poses (T, J, 3), spread (T, J), initial (T, J, 3)), with profile=True a pair "
           "(that list, seconds per phase). Releases the GIL.")
      .def_property_readonly("joints", &starpose::Runner::joints)
      .def_property_readonly("context_frames", &starpose::Runner::context_frames)
      .def_property_readonly("history", &starpose::Runner::history)
      .def_property_readonly("train_steps", &starpose::Runner::train_steps)
      .def_property_readonly("preset", &starpose::Runner::preset)
      .def_property_readonly("export_dir", &starpose::Runner::export_dir)
      .def_property_readonly("providers", &starpose::Runner::providers)
      .def_property_readonly("energies", &starpose::Runner::energies)
      .def_property_readonly("defaults", [](const starpose::Runner& r) { return settings_dict(r.defaults()); });
}
