// lift_npy: 2D pixel keypoints (.npy, (T, J, 2) or (T, J, 3) with confidence) -> 3D poses
// (.npy, (T, J, 3) millimetres, root-relative, camera axes x right, y down, z forward).
//
//   lift_npy --model EXPORT_DIR --input kp.npy --output poses.npy --width W --height H
//            [--fx F --fy F --cx C --cy C] [--seed S] [--threads N] [--ort-lib PATH]
//
// EXPORT_DIR is written by `python -m export.onnx`. Without --fx/--fy/--cx/--cy the camera is
// the Human3.6M-like default for the image size (f = 1.145 max(W, H), centred principal point).
// ONNX Runtime is loaded from --ort-lib, $STARPOSE_ORT_LIBRARY or the loader path.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>

#include "starpose/npy.hpp"
#include "starpose/runner.hpp"

namespace {

int usage(const char* msg) {
  std::cerr << "error: " << msg << "\n"
            << "usage: lift_npy --model EXPORT_DIR --input kp.npy --output poses.npy --width W --height H\n"
            << "                [--fx F --fy F --cx C --cy C] [--seed S] [--threads N] [--ort-lib PATH]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0 || i + 1 >= argc) return usage(("bad argument " + k).c_str());
    a[k.substr(2)] = argv[++i];
  }
  for (const char* req : {"model", "input", "output", "width", "height"})
    if (!a.count(req)) return usage((std::string("missing --") + req).c_str());
  try {
    const std::string version = starpose::load_onnxruntime(a.count("ort-lib") ? a["ort-lib"] : "");
    starpose::RunnerOptions opts;
    if (a.count("threads")) opts.intra_op_threads = std::stoi(a["threads"]);
    starpose::Runner runner(a["model"], opts);

    starpose::npy::Array kp = starpose::npy::load(a["input"]);
    if (kp.shape.size() != 3 || (kp.shape[2] != 2 && kp.shape[2] != 3))
      throw starpose::InputError(a["input"] + ": expected shape (T, J, 2) or (T, J, 3)");
    if (kp.shape[1] != runner.joints())
      throw starpose::InputError(a["input"] + " has " + std::to_string(kp.shape[1]) + " joints, the model expects " +
                                 std::to_string(runner.joints()));
    const int T = static_cast<int>(kp.shape[0]), J = runner.joints();

    starpose::Camera cam = starpose::Camera::default_for(std::stoi(a["width"]), std::stoi(a["height"]));
    if (a.count("fx")) cam.fx = std::stod(a["fx"]);
    if (a.count("fy")) cam.fy = std::stod(a["fy"]);
    if (a.count("cx")) cam.cx = std::stod(a["cx"]);
    if (a.count("cy")) cam.cy = std::stod(a["cy"]);
    std::vector<float> kp2d(static_cast<size_t>(T) * J * 2), conf(static_cast<size_t>(T) * J);
    starpose::camera_normalize(kp.data.data(), T, J, static_cast<int>(kp.shape[2]), cam, kp2d.data(), conf.data());

    starpose::VideoView video;
    video.kp2d = kp2d.data();
    video.conf = conf.data();
    video.frames = T;
    video.intr = cam.normalized();
    starpose::LiftSettings settings = runner.defaults();
    if (a.count("seed")) settings.seed = std::stoull(a["seed"]);

    const auto t0 = std::chrono::steady_clock::now();
    std::vector<starpose::LiftOutput> out = runner.lift({video}, settings);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::vector<float> mm(out[0].poses.size());
    for (size_t i = 0; i < mm.size(); ++i) mm[i] = out[0].poses[i] * 1000.f;
    starpose::npy::save(a["output"], {T, J, 3}, mm.data());
    std::printf("lifted %d frames x %d joints with preset '%s' in %.3f s (%.1f frames/s, ONNX Runtime %s, %s) -> %s\n",
                T, J, runner.preset().c_str(), secs, T / secs, version.c_str(), runner.providers()[0].c_str(),
                a["output"].c_str());
    return 0;
  } catch (const starpose::InputError& e) {
    std::cerr << "input error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
