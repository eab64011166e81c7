// ONNX Runtime access for the runner: the C++ API without link-time dependency
// (ORT_API_MANUAL_INIT; the API table comes from dlopen in load_onnxruntime) and one Env per process.
#pragma once

#ifndef ORT_API_MANUAL_INIT
#define ORT_API_MANUAL_INIT
#endif
#include <onnxruntime_cxx_api.h>

namespace starpose {

// The process-wide Env (created on first use, intentionally never destroyed: sessions held by
// Python objects may outlive C++ static destruction). Throws Error if ORT is not loaded.
Ort::Env& ort_env();

}  // namespace starpose
