#include "spec.hpp"

#include <fstream>
#include <sstream>

#include "json.hpp"

namespace starpose {

Spec load_spec(const std::string& dir) {
  const std::string path = dir + "/runner.json";
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + path + " (not a StarPose export: run python -m export.onnx)");
  std::stringstream ss;
  ss << f.rdbuf();
  Spec s;
  try {
    json::Value j = json::parse(ss.str());
    if (!j.has("format") || j.at("format").as_string() != "starpose-runner-v2")
      throw Error("format is not starpose-runner-v2 (re-export with python -m export.onnx)");
    s.preset = j.at("preset").as_string();
    s.joints = j.at("joints").as_int();
    s.context_frames = j.at("context_frames").as_int();
    s.history = j.at("history").as_int();
    s.context_dim = j.at("context_dim").as_int();
    s.cond_dim = j.at("cond_dim").as_int();
    s.train_steps = j.at("train_steps").as_int();
    s.hpim = j.at("hpim").as_bool();
    s.alphas_bar = j.at("alphas_bar").as_floats();

    const auto& g = j.at("gmm");
    s.gmm_weights = g.at("weights").as_floats();
    s.gmm_components = static_cast<int>(s.gmm_weights.size());
    for (size_t m = 0; m < g.at("means").size(); ++m) {
      auto row = g.at("means").at(m).as_floats();
      auto var = g.at("variances").at(m).as_floats();
      s.gmm_means.insert(s.gmm_means.end(), row.begin(), row.end());
      s.gmm_variances.insert(s.gmm_variances.end(), var.begin(), var.end());
    }
    s.gmm_mean = g.at("mean").as_floats();
    s.gmm_scale = static_cast<float>(g.at("scale").as_number());

    LiftSettings& d = s.defaults;
    d.hypotheses = j.at("hypotheses").as_int();
    for (size_t i = 0; i < j.at("ddim_pairs").size(); ++i) {
      auto p = j.at("ddim_pairs").at(i).as_ints();
      if (p.size() != 2) throw Error("ddim_pairs entries must be [k, k_next]");
      d.ddim_pairs.emplace_back(p[0], p[1]);
    }
    d.aggregation = j.at("aggregation").as_string();
    if (j.has("noise")) d.noise = j.at("noise").as_string();
    d.person_view = j.has("input_view") && j.at("input_view").as_string() == "person";
    const auto& gd = j.at("guidance");
    d.guidance.enabled = gd.at("enabled").as_bool();
    const auto& energies = gd.at("energies");
    for (size_t i = 0; i < energies.size(); ++i) {
      const std::string name = energies.at(i).at("name").as_string();
      EnergySlots& sl = s.energy_slots;
      int* slot = name == "reprojection" ? &sl.reprojection : name == "symmetry" ? &sl.symmetry
                  : name == "bone_variance" ? &sl.bone_variance : name == "temporal" ? &sl.temporal : nullptr;
      if (slot == nullptr)
        throw Error("guidance energy '" + name + "' has no C++ implementation in this runner "
                    "(csrc/src/geometry.cpp); rebuild it with one");
      if (*slot >= 0) throw Error("guidance energy '" + name + "' is listed twice");
      *slot = static_cast<int>(i);
      s.energies.push_back(name);
      d.guidance.weights.push_back(static_cast<float>(energies.at(i).at("weight").as_number()));
    }
    d.guidance.rho = static_cast<float>(gd.at("rho").as_number());
    d.guidance.max_step = static_cast<float>(gd.at("max_step").as_number());
    s.guidance_mode = gd.at("mode").as_string();

    const auto& sk = j.at("skeleton");
    s.skeleton.joints = s.joints;
    s.skeleton.root = j.at("root").as_int();
    for (size_t q = 0; q < sk.at("bones").size(); ++q) {
      auto b = sk.at("bones").at(q).as_ints();
      if (b.size() != 2) throw Error("skeleton bones must be [parent, child]");
      s.skeleton.bones.emplace_back(b[0], b[1]);
    }
    for (size_t p = 0; p < sk.at("symmetric_pairs").size(); ++p) {
      auto b = sk.at("symmetric_pairs").at(p).as_ints();
      if (b.size() != 2) throw Error("symmetric_pairs entries must be [left bone, right bone]");
      s.skeleton.symmetric_pairs.emplace_back(b[0], b[1]);
    }
    s.skeleton.joint_weights = sk.at("joint_weights").as_floats();

    const auto& c = j.at("constants");
    s.constants.eps_pix = c.at("eps_pix").as_number();
    s.constants.eps_len = c.at("eps_len").as_number();
    s.constants.min_depth = c.at("min_depth").as_number();
    s.constants.solve_eps = c.at("solve_eps").as_number();
    if (c.has("default_focal_ratio") && c.at("default_focal_ratio").as_number() != kDefaultFocalRatio)
      throw Error("constants.default_focal_ratio " + std::to_string(c.at("default_focal_ratio").as_number()) +
                  " differs from this build's " + std::to_string(kDefaultFocalRatio) + " (rebuild the runner)");
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }

  // consistency checks: a damaged or hand-edited file fails here, not in the middle of a run
  const int J = s.joints, D3 = 3 * s.joints, M = s.gmm_components;
  auto bad = [&](const std::string& what) { throw Error(path + ": " + what); };
  if (J <= 0 || s.context_frames <= 0 || s.history <= 0 || s.train_steps <= 0) bad("non-positive sizes");
  if (static_cast<int>(s.alphas_bar.size()) != s.train_steps + 1) bad("alphas_bar must have train_steps + 1 values");
  if (M <= 0 || static_cast<int>(s.gmm_means.size()) != M * D3 || static_cast<int>(s.gmm_variances.size()) != M * D3 ||
      static_cast<int>(s.gmm_mean.size()) != D3)
    bad("GMM sizes do not match 3J = " + std::to_string(D3));
  if (!(s.gmm_scale > 0.f)) bad("GMM scale must be positive");
  for (float v : s.gmm_variances)
    if (!(v > 0.f)) bad("GMM variances must be positive");
  if (static_cast<int>(s.skeleton.joint_weights.size()) != J) bad("joint_weights must have J values");
  if (s.skeleton.root < 0 || s.skeleton.root >= J) bad("root index out of range");
  for (const auto& b : s.skeleton.bones)
    if (b.first < 0 || b.first >= J || b.second < 0 || b.second >= J) bad("bone joint index out of range");
  const int Q = static_cast<int>(s.skeleton.bones.size());
  for (const auto& p : s.skeleton.symmetric_pairs)
    if (p.first < 0 || p.first >= Q || p.second < 0 || p.second >= Q) bad("symmetric pair bone index out of range");
  return s;
}

}  // namespace starpose
