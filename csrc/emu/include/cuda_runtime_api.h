#pragma once
// Emulated CUDA runtime API (host side): the subset the ops' launchers use, and nothing else, so that a
// launcher using anything more fails to compile. The emulated device is this process's CPU; its "device
// memory" is host memory (see csrc/emu/runtime.cpp and docs/architecture.md).
#include <cstddef>

#if !defined(MIXDIFF_CUDA_EMU)
#error "csrc/emu/include is the emulated CUDA runtime: only the MIXDIFF_CUDA_EMU build puts it on the include path"
#endif

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
};
using cudaError = cudaError_t;

struct CUstream_st;
using cudaStream_t = CUstream_st*;

enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
};

cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
// The first error since the last call (launch errors included), then cleared, as in CUDA.
cudaError_t cudaGetLastError();
// The message of the last launch error (which kernel, block, thread and access), else the code's name.
const char* cudaGetErrorString(cudaError_t error);

namespace mixdiff::emu {
cudaError_t set_func_attribute(const void* func, cudaFuncAttribute attr, int value);
}  // namespace mixdiff::emu

template <class Kernel>
cudaError_t cudaFuncSetAttribute(Kernel* func, cudaFuncAttribute attr, int value) {
  return ::mixdiff::emu::set_func_attribute(reinterpret_cast<const void*>(func), attr, value);
}
