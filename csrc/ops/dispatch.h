#pragma once
// The device half of every op's torch glue, written once: the device check, guard, empty check, current
// stream, dtype dispatch and the launcher's error check. Each op's *_cuda.cpp builds its kernel's
// parameter struct (<Op>Params<T>, a raw-pointer struct in <op>_cuda.h) inside device::launch.
//
// Two backends compile the same glue and the same .cu sources:
//  - CUDA (MIXDIFF_WITH_CUDA): registered for the CUDA key of the `mixdiff` ops;
//  - the emulated CUDA execution model (MIXDIFF_CUDA_EMU, csrc/emu/): the .cu sources compiled for the
//    host, "device" memory is host memory, registered for the CPU key of the test-only namespace
//    `mixdiff_emu` (same schemas). See docs/architecture.md.
#include "common.h"

#if defined(MIXDIFF_CUDA_EMU)
#include <cuda_runtime_api.h>  // csrc/emu's runtime
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace mixdiff::ops::device {

#if defined(MIXDIFF_CUDA_EMU)
#define MIXDIFF_DEVICE_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(mixdiff_emu, CPU, m)
inline bool on_device(const at::Tensor& t) { return t.is_cpu(); }
struct Guard {
  explicit Guard(const at::Device&) {}
};
inline cudaStream_t current_stream() { return nullptr; }
inline void check(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "mixdiff: ", op, " (emulated CUDA): ", cudaGetErrorString(err));
}
#else
#define MIXDIFF_DEVICE_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(mixdiff, CUDA, m)
inline bool on_device(const at::Tensor& t) { return t.is_cuda(); }
using Guard = c10::cuda::CUDAGuard;
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream(); }
inline void check(cudaError_t err, const char* op) { C10_CUDA_CHECK(err); }
#endif

// A tensor's data as the kernel's raw pointer; null when the tensor is undefined (optional arguments).
template <class T>
T* ptr(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// The op reached the device key through one of its tensors; `on` (the argument the checks tie the others
// to) must be on the device.
inline void check_on_device(const char* op, const at::Tensor& on, const char* name) {
  TORCH_CHECK(on_device(on), "mixdiff: ", op, " on CUDA needs ", name, " on a CUDA device, got ", on.device());
}

// Runs launcher.template operator()<T>(stream) -> cudaError_t for the compute type T of `dtype`, on the
// device of `on`, and throws with the op's name on an error. Launches nothing when rows == 0.
template <class Launcher>
void launch(const char* op, const at::Tensor& on, at::ScalarType dtype, int64_t rows, Launcher&& launcher) {
  if (rows == 0) return;
  const Guard guard(on.device());
  const cudaStream_t stream = current_stream();
  // A switch rather than AT_DISPATCH_FLOATING_TYPES, whose name must be a constant expression.
  switch (dtype) {
    case at::kFloat: check(launcher.template operator()<float>(stream), op); break;
    case at::kDouble: check(launcher.template operator()<double>(stream), op); break;
    default: TORCH_CHECK(false, "mixdiff: ", op, " has no kernel for dtype ", dtype);
  }
}

}  // namespace mixdiff::ops::device
