#pragma once
// Emulated CUDA device side: the qualifiers, built-in variables, vector types, barriers, warp shuffles
// and atomics that the ops' kernels use, and the launch that csrc/emu/rewrite.py puts in place of
// `kernel<<<grid, block, smem, stream>>>(args)`. Only what the kernels use exists: a kernel that uses
// anything else (another intrinsic, __ldg, cooperative groups, ...) does not compile here.
//
// A block's threads are fibers on one OS thread, run one at a time by runtime.cpp's scheduler between
// barriers, in the order the configuration asks for; every load and store of the kernels' translation
// units is reported to runtime.cpp (GCC's ThreadSanitizer instrumentation calls), which checks it
// against the live device buffers and the block's shared memory and may preempt the thread there.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda_runtime_api.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// __shared__ and <<<...>>> are rewritten by csrc/emu/rewrite.py; left as they are they do not compile.

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) double2 {
  double x, y;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }

namespace mixdiff::emu {

uint3 thread_idx();
uint3 block_idx();
dim3 block_dim();
dim3 grid_dim();
void sync_threads();
uint64_t shfl_down_bits(unsigned mask, uint64_t bits, unsigned delta, int width);
// This block's dynamic shared memory, and the storage of one `__shared__` declaration (keyed by the
// call site, so each declaration and template instance gets its own).
unsigned char* dynamic_shared();
void* static_shared(size_t bytes, size_t align);

unsigned atomic_add(unsigned* p, unsigned v);
int atomic_add(int* p, int v);
unsigned long long atomic_add(unsigned long long* p, unsigned long long v);
float atomic_add(float* p, float v);
double atomic_add(double* p, double v);

struct LaunchConfig {
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;
  LaunchConfig(dim3 g, dim3 b, size_t smem = 0, cudaStream_t s = nullptr)
      : grid(g), block(b), shared_bytes(smem), stream(s) {}
};

// Runs entry(ctx) once per thread of every block of the grid (errors go to cudaGetLastError).
void launch(const LaunchConfig& cfg, const void* kernel, const char* name, void (*entry)(void*), void* ctx);

template <class... P, class... A>
void launch_kernel(const LaunchConfig& cfg, const char* name, void (*kernel)(P...), A&&... args) {
  using Params = std::tuple<std::decay_t<P>...>;
  struct Ctx {
    void (*kernel)(P...);
    Params params;
  };
  Ctx ctx{kernel, Params(std::forward<A>(args)...)};
  launch(cfg, reinterpret_cast<const void*>(kernel), name, [](void* c) {
    Ctx* k = static_cast<Ctx*>(c);
    Params mine = k->params;  // each thread its own copy of the arguments, as on a GPU
    std::apply(k->kernel, mine);
  }, &ctx);
}

}  // namespace mixdiff::emu

#define threadIdx (::mixdiff::emu::thread_idx())
#define blockIdx (::mixdiff::emu::block_idx())
#define blockDim (::mixdiff::emu::block_dim())
#define gridDim (::mixdiff::emu::grid_dim())

inline void __syncthreads() { ::mixdiff::emu::sync_threads(); }

template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "__shfl_down_sync: 1 to 8 byte values");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = ::mixdiff::emu::shfl_down_bits(mask, bits, delta, width);
  std::memcpy(&var, &bits, sizeof(T));
  return var;
}

inline unsigned atomicAdd(unsigned* p, unsigned v) { return ::mixdiff::emu::atomic_add(p, v); }
inline int atomicAdd(int* p, int v) { return ::mixdiff::emu::atomic_add(p, v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return ::mixdiff::emu::atomic_add(p, v);
}
inline float atomicAdd(float* p, float v) { return ::mixdiff::emu::atomic_add(p, v); }
inline double atomicAdd(double* p, double v) { return ::mixdiff::emu::atomic_add(p, v); }
