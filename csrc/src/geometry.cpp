#include "geometry.hpp"

#include <algorithm>
#include <cmath>

namespace starpose {

void solve_root_translation(const float* rel, const float* kp, const float* intr, const float* w, int joints,
                            double eps, double out[3]) {
  const double fx = intr[0], fy = intr[1], cx = intr[2], cy = intr[3];
  double sw = 0, su = 0, sv = 0, suu = 0, b0 = 0, b1 = 0, b2 = 0;
  for (int j = 0; j < joints; ++j) {
    const double u = (kp[2 * j] - cx) / fx, v = (kp[2 * j + 1] - cy) / fy, wj = w ? w[j] : 1.0;
    const double px = rel[3 * j], py = rel[3 * j + 1], pz = rel[3 * j + 2];
    const double rx = u * pz - px, ry = v * pz - py;
    sw += wj;
    su += wj * u;
    sv += wj * v;
    suu += wj * (u * u + v * v);
    b0 += wj * rx;
    b1 += wj * ry;
    b2 -= wj * (u * rx + v * ry);
  }
  // A = [[sw, 0, -su], [0, sw, -sv], [-su, -sv, suu]] + eps I, solved like engine.core.camera.solve3x3
  const double a00 = sw + eps, a01 = 0, a02 = -su;
  const double a10 = 0, a11 = sw + eps, a12 = -sv;
  const double a20 = -su, a21 = -sv, a22 = suu + eps;
  const double c00 = a11 * a22 - a12 * a21, c01 = a12 * a20 - a10 * a22, c02 = a10 * a21 - a11 * a20;
  const double inv = 1.0 / (a00 * c00 + a01 * c01 + a02 * c02);
  out[0] = (c00 * b0 + (a02 * a21 - a01 * a22) * b1 + (a01 * a12 - a02 * a11) * b2) * inv;
  out[1] = (c01 * b0 + (a00 * a22 - a02 * a20) * b1 + (a02 * a10 - a00 * a12) * b2) * inv;
  out[2] = (c02 * b0 + (a01 * a20 - a00 * a21) * b1 + (a00 * a11 - a01 * a10) * b2) * inv;
}

void person_view(const float* kp, const float* conf, int frames, int joints, const float* intr,
                 std::vector<float>& turned, std::vector<float>& rot) {
  turned.assign(static_cast<size_t>(frames) * joints * 2, 0.f);
  rot.assign(static_cast<size_t>(frames) * 9, 0.f);
  const double fx = intr[0], fy = intr[1], cx = intr[2], cy = intr[3];
  for (int t = 0; t < frames; ++t) {
    const float* k = kp + static_cast<size_t>(t) * joints * 2;
    const float* c = conf + static_cast<size_t>(t) * joints;
    double wsum = 0, mx = 0, my = 0;
    for (int j = 0; j < joints; ++j) wsum += std::max(0.f, c[j]);
    for (int j = 0; j < joints; ++j) {
      const double w = wsum > 0 ? std::max(0.f, c[j]) : 1.0;
      mx += w * k[2 * j];
      my += w * k[2 * j + 1];
    }
    const double wn = wsum > 0 ? wsum : joints;
    double d[3] = {(mx / wn - cx) / fx, (my / wn - cy) / fy, 1.0};
    const double n = std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
    for (double& x : d) x /= n;
    // minimal rotation taking d to +z: R = I + [v]x + [v]x^2 / (1 + c), v = d x z, c = d . z
    const double v0 = d[1], v1 = -d[0], v2 = 0.0, cz = d[2];
    const double vx[9] = {0, -v2, v1, v2, 0, -v0, -v1, v0, 0};
    double r[9];
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b) {
        double sq = 0;
        for (int m = 0; m < 3; ++m) sq += vx[3 * a + m] * vx[3 * m + b];
        r[3 * a + b] = (a == b ? 1.0 : 0.0) + vx[3 * a + b] + sq / (1.0 + cz);
      }
    for (int e = 0; e < 9; ++e) rot[static_cast<size_t>(t) * 9 + e] = static_cast<float>(r[e]);
    float* out = turned.data() + static_cast<size_t>(t) * joints * 2;
    for (int j = 0; j < joints; ++j) {
      const double ray[3] = {(k[2 * j] - cx) / fx, (k[2 * j + 1] - cy) / fy, 1.0};
      double q[3];
      for (int a = 0; a < 3; ++a) q[a] = r[3 * a] * ray[0] + r[3 * a + 1] * ray[1] + r[3 * a + 2] * ray[2];
      const double z = std::max(q[2], 1e-3);
      out[2 * j] = static_cast<float>(q[0] / z * fx + cx);
      out[2 * j + 1] = static_cast<float>(q[1] / z * fy + cy);
    }
  }
}

void from_view(float* poses, int frames, int joints, const std::vector<float>& rot) {
  for (int t = 0; t < frames; ++t) {
    const float* r = rot.data() + static_cast<size_t>(t) * 9;
    for (int j = 0; j < joints; ++j) {
      float* p = poses + (static_cast<size_t>(t) * joints + j) * 3;
      const double x = p[0], y = p[1], z = p[2];   // R^T p
      p[0] = static_cast<float>(r[0] * x + r[3] * y + r[6] * z);
      p[1] = static_cast<float>(r[1] * x + r[4] * y + r[7] * z);
      p[2] = static_cast<float>(r[2] * x + r[5] * y + r[8] * z);
    }
  }
}

StpgGrad::StpgGrad(const SkeletonSpec& skeleton, const GuidanceConstants& constants, const EnergySlots& slots,
                   int history)
    : sk_(skeleton), c_(constants), slots_(slots), L_(history), Q_(static_cast<int>(skeleton.bones.size())),
      win_(static_cast<size_t>(history) * Q_), mask_(history), prev_(3 * skeleton.joints), win_msum_(Q_),
      vec_(3 * Q_), len_(Q_), glen_(Q_), acc_(3 * skeleton.joints) {}

void StpgGrad::set_history(const float* hist3d, const float* mask) {
  const int J = sk_.joints;
  const double e2 = c_.eps_len * c_.eps_len;
  double msum = 0;
  std::fill(win_msum_.begin(), win_msum_.end(), 0.0);
  for (int l = 0; l < L_; ++l) {
    const float* h = hist3d + static_cast<size_t>(l) * J * 3;
    mask_[l] = mask[l];
    msum += mask[l];
    for (int q = 0; q < Q_; ++q) {
      const int p = sk_.bones[q].first, c = sk_.bones[q].second;
      const double dx = h[3 * c] - h[3 * p], dy = h[3 * c + 1] - h[3 * p + 1], dz = h[3 * c + 2] - h[3 * p + 2];
      const double len = std::sqrt(dx * dx + dy * dy + dz * dz + e2);
      win_[static_cast<size_t>(l) * Q_ + q] = len;
      win_msum_[q] += mask_[l] * len;
    }
  }
  cnt_ = msum + 1.0;
  prev_ok_ = mask[L_ - 1];
  const float* prev = hist3d + static_cast<size_t>(L_ - 1) * J * 3;
  for (int i = 0; i < 3 * J; ++i) prev_[i] = prev[i];
}

void StpgGrad::grad(const float* h_all, int hypotheses, const float* kp, const float* conf, const float* intr,
                    const GuidanceSettings& g, float* out_all) {
  const int J = sk_.joints;
  const double fx = intr[0], fy = intr[1], cx = intr[2], cy = intr[3];
  const double ep2 = c_.eps_pix * c_.eps_pix, el2 = c_.eps_len * c_.eps_len, el = c_.eps_len;
  const double var_on = cnt_ >= 2.0 ? 1.0 : 0.0;
  auto weight = [&g](int slot) { return slot < 0 ? 0.0 : static_cast<double>(g.weights[slot]); };
  const double lambda_p = weight(slots_.reprojection), lambda_s = weight(slots_.symmetry);
  const double lambda_b = weight(slots_.bone_variance), lambda_d = weight(slots_.temporal);
  for (int n = 0; n < hypotheses; ++n) {
    const float* h = h_all + static_cast<size_t>(n) * J * 3;
    float* out = out_all + static_cast<size_t>(n) * J * 3;
    double T[3];
    solve_root_translation(h, kp, intr, conf, J, c_.solve_eps, T);
    // L_p: reprojection (T held fixed)
    for (int j = 0; j < J; ++j) {
      const double qx = h[3 * j] + T[0], qy = h[3 * j + 1] + T[1], zc = h[3 * j + 2] + T[2];
      const double front = zc > c_.min_depth ? 1.0 : 0.0;
      const double z = std::max(zc, c_.min_depth);
      const double ex = qx / z * fx + cx - kp[2 * j], ey = qy / z * fy + cy - kp[2 * j + 1];
      const double s = conf[j] / std::sqrt(ex * ex + ey * ey + ep2) * lambda_p;
      const double gx = s * ex * fx / z, gy = s * ey * fy / z;
      acc_[3 * j] = gx;
      acc_[3 * j + 1] = gy;
      acc_[3 * j + 2] = -(gx * qx + gy * qy) / z * front;
    }
    // bone vectors and lengths
    for (int q = 0; q < Q_; ++q) {
      const int p = sk_.bones[q].first, c = sk_.bones[q].second;
      double* v = &vec_[3 * q];
      v[0] = static_cast<double>(h[3 * c]) - h[3 * p];
      v[1] = static_cast<double>(h[3 * c + 1]) - h[3 * p + 1];
      v[2] = static_cast<double>(h[3 * c + 2]) - h[3 * p + 2];
      len_[q] = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2] + el2);
      glen_[q] = 0.0;
    }
    // L_s: symmetry
    for (const auto& pr : sk_.symmetric_pairs) {
      const double d = len_[pr.first] - len_[pr.second];
      const double s = lambda_s * d / std::sqrt(d * d + el * el);
      glen_[pr.first] += s;
      glen_[pr.second] -= s;
    }
    // L_b: bone-length variance over the history window and this hypothesis
    if (var_on > 0.0) {
      for (int q = 0; q < Q_; ++q) {
        const double mean = (win_msum_[q] + len_[q]) / cnt_;
        double s_win = 0.0;
        for (int l = 0; l < L_; ++l) {
          if (mask_[l] == 0.0) continue;
          const double d = win_[static_cast<size_t>(l) * Q_ + q] - mean;
          s_win += mask_[l] * d / std::sqrt(d * d + el * el);
        }
        const double dc = len_[q] - mean;
        const double s_cur = dc / std::sqrt(dc * dc + el * el);
        glen_[q] += lambda_b * (s_cur - (s_cur + s_win) / cnt_) / cnt_;
      }
    }
    // chain rule through the bone lengths
    for (int q = 0; q < Q_; ++q) {
      const int p = sk_.bones[q].first, c = sk_.bones[q].second;
      const double k = glen_[q] / len_[q];
      for (int a = 0; a < 3; ++a) {
        acc_[3 * c + a] += k * vec_[3 * q + a];
        acc_[3 * p + a] -= k * vec_[3 * q + a];
      }
    }
    // L_d: differential term against frame t - 1
    if (prev_ok_ != 0.0) {
      for (int j = 0; j < J; ++j) {
        const double w = lambda_d * 2.0 * sk_.joint_weights[j] * prev_ok_;
        for (int a = 0; a < 3; ++a) acc_[3 * j + a] += w * (h[3 * j + a] - prev_[3 * j + a]);
      }
    }
    for (int i = 0; i < 3 * J; ++i) out[i] = static_cast<float>(acc_[i]);
  }
}

}  // namespace starpose
