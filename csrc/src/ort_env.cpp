#include "ort_env.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "starpose/runner.hpp"

namespace starpose {
namespace {

std::mutex g_mutex;
std::string g_path;      // library that was loaded
std::string g_version;   // its version string
bool g_loaded = false;

}  // namespace

std::string load_onnxruntime(const std::string& library_path) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_loaded) {
    if (!library_path.empty() && library_path != g_path)
      throw Error("ONNX Runtime is already loaded from " + g_path + "; cannot switch to " + library_path +
                  " in the same process");
    return g_version;
  }
  std::vector<std::string> candidates;
  if (!library_path.empty()) {
    candidates.push_back(library_path);
  } else {
    if (const char* env = std::getenv("STARPOSE_ORT_LIBRARY")) candidates.emplace_back(env);
    candidates.emplace_back("libonnxruntime.so.1");
    candidates.emplace_back("libonnxruntime.so");
  }
  std::string errors;
  for (const auto& path : candidates) {
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char* e = dlerror();
      errors += "\n  " + path + ": " + (e ? e : "dlopen failed");
      continue;
    }
    using GetApiBase = const OrtApiBase* (*)();
    auto get = reinterpret_cast<GetApiBase>(dlsym(handle, "OrtGetApiBase"));
    if (!get) {
      errors += "\n  " + path + ": no symbol OrtGetApiBase (not ONNX Runtime)";
      continue;
    }
    const OrtApiBase* base = get();
    const OrtApi* api = base->GetApi(ORT_API_VERSION);
    if (!api) {
      errors += "\n  " + path + ": ONNX Runtime " + base->GetVersionString() + " is older than API version " +
                std::to_string(ORT_API_VERSION) + " (need >= 1.21)";
      continue;
    }
    Ort::InitApi(api);
    g_path = path;
    g_version = base->GetVersionString();
    g_loaded = true;
    return g_version;   // the handle stays open for the life of the process
  }
  throw Error("cannot load ONNX Runtime; tried:" + errors +
              "\nset STARPOSE_ORT_LIBRARY to onnxruntime/capi/libonnxruntime.so.<version> of the onnxruntime wheel");
}

bool onnxruntime_loaded() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_loaded;
}

Ort::Env& ort_env() {
  if (!onnxruntime_loaded()) throw Error("ONNX Runtime is not loaded: call starpose::load_onnxruntime() first");
  static Ort::Env* env = new Ort::Env(ORT_LOGGING_LEVEL_WARNING, "starpose");
  return *env;
}

}  // namespace starpose
