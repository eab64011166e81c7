// runner.json (export/spec.py runner_spec, format starpose-runner-v2) as a struct.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "starpose/runner.hpp"

namespace starpose {

struct SkeletonSpec {
  int joints = 0;
  int root = 0;
  std::vector<std::pair<int, int>> bones;            // (parent, child), Q bones
  std::vector<std::pair<int, int>> symmetric_pairs;  // (left bone index, right bone index), P pairs
  std::vector<float> joint_weights;                  // (J,) w_j of Eq. 15
};

struct GuidanceConstants {
  double eps_pix = 1e-4, eps_len = 1e-4, min_depth = 1e-3, solve_eps = 1e-6;
};

// Where each STPG energy this runner implements (csrc/src/geometry.cpp) sits in runner.json's
// guidance.energies, i.e. in GuidanceSettings::weights; -1: not listed (weight 0).
struct EnergySlots {
  int reprojection = -1, symmetry = -1, bone_variance = -1, temporal = -1;
};

struct Spec {
  std::string preset;
  int joints = 0, context_frames = 0, history = 0, context_dim = 0, cond_dim = 0;
  int train_steps = 0;
  bool hpim = true;
  std::vector<float> alphas_bar;                     // (K + 1,)
  int gmm_components = 0;
  std::vector<float> gmm_weights;                    // (M,)
  std::vector<float> gmm_means, gmm_variances;       // (M, 3J)
  std::vector<float> gmm_mean;                       // (3J,) mixture mean, float32 as torch computed it
  float gmm_scale = 0.f;
  LiftSettings defaults;
  std::string guidance_mode;
  SkeletonSpec skeleton;
  GuidanceConstants constants;
  std::vector<std::string> energies;   // guidance.energies names, in order
  EnergySlots energy_slots;
};

// Reads and checks dir/runner.json; throws Error with the file name and the problem.
Spec load_spec(const std::string& dir);

}  // namespace starpose
