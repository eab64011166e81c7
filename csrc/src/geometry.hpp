// Camera geometry and the closed-form STPG gradient (engine/core/camera.py, engine/core/guidance.py),
// per pose, in double precision internally (float32 in and out).
#pragma once

#include <vector>

#include "spec.hpp"

namespace starpose {

// engine.core.camera.solve_root_translation: root translation T (3,) of root-relative points rel
// (J, 3) seen at kp (J, 2) under intr [fx, fy, cx, cy], weights w (J,), by the 3x3 normal
// equations solved with the adjugate (eps added to the diagonal).
void solve_root_translation(const float* rel, const float* kp, const float* intr, const float* w, int joints,
                            double eps, double out[3]);

// engine.core.input_norm.person_view + to_view for one video: per frame the minimal rotation rot (9,
// row-major) that turns the camera to look along the ray through the confidence-weighted mean of
// the joints, and the 2D as that turned camera sees it (same intrinsics). kp (T, J, 2), conf (T, J),
// intr [fx, fy, cx, cy] -> turned (T, J, 2), rot (T, 9).
void person_view(const float* kp, const float* conf, int frames, int joints, const float* intr,
                 std::vector<float>& turned, std::vector<float>& rot);

// engine.core.input_norm.from_view: poses (T, J, 3) in the turned cameras -> the real camera, in place.
void from_view(float* poses, int frames, int joints, const std::vector<float>& rot);

// engine.core.guidance.stpg_grad for the hypotheses of one video at one frame.
class StpgGrad {
 public:
  StpgGrad(const SkeletonSpec& skeleton, const GuidanceConstants& constants, const EnergySlots& slots,
           int history);

  // The video's history window: hist3d (L, J, 3), mask (L,). Call once per frame, before grad().
  void set_history(const float* hist3d, const float* mask);

  // dE/dh for h (N, J, 3) metres -> out (N, J, 3); kp (J, 2), conf (J,), intr (4,).
  void grad(const float* h, int hypotheses, const float* kp, const float* conf, const float* intr,
            const GuidanceSettings& g, float* out);

 private:
  const SkeletonSpec& sk_;
  GuidanceConstants c_;
  EnergySlots slots_;
  int L_, Q_;
  std::vector<double> win_;      // (L, Q) bone lengths of the history frames
  std::vector<double> mask_;     // (L,)
  std::vector<double> prev_;     // (J, 3) frame t - 1
  std::vector<double> win_msum_; // (Q,) sum_l m_l win_lq
  double cnt_ = 1.0, prev_ok_ = 0.0;
  std::vector<double> vec_, len_, glen_;  // (Q, 3), (Q,), (Q,)
  std::vector<double> acc_;      // (J, 3)
};

}  // namespace starpose
