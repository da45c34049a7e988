#pragma once
// CPU-side helpers shared by the ops' CPU kernels.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace mixdiff::ops {

// Splits [0, N) into one contiguous chunk per thread and runs fn(chunk, begin, end) in parallel.
// Reductions keep one accumulator per chunk and combine them in chunk order, so results depend on the
// thread count but not on scheduling.
template <class Fn>
int64_t parallel_chunks(int64_t N, Fn&& fn) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (N + 1023) / 1024));
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) fn(c, N * c / chunks, N * (c + 1) / chunks);
  });
  return chunks;
}

// Runs fn(b, e) over [0, N) in pieces of at least min_piece elements (about 16 per thread) that the
// threads take as they come free. For row-independent work whose result does not depend on the split
// (the noise ops: counter-based draws). One fixed chunk per thread makes a call wait for its slowest
// thread, and a virtual CPU that the host takes away for a while is common on shared machines.
template <class Fn>
void parallel_pieces(int64_t N, int64_t min_piece, Fn&& fn) {
  if (N <= 0) return;
  const int64_t threads = at::get_num_threads();
  const int64_t piece = std::max<int64_t>(std::max<int64_t>(min_piece, 1), (N + 16 * threads - 1) / (16 * threads));
  const int64_t pieces = (N + piece - 1) / piece;
  std::atomic<int64_t> next{0};
  // Inside another parallel region at::parallel_for runs this once on the calling thread: it then
  // takes every piece itself.
  at::parallel_for(0, std::min(threads, pieces), 1, [&](int64_t, int64_t) {
    for (int64_t p = next.fetch_add(1, std::memory_order_relaxed); p < pieces;
         p = next.fetch_add(1, std::memory_order_relaxed))
      fn(p * piece, std::min(N, (p + 1) * piece));
  });
}

// A large fresh output is written once, right after allocation, and its first-touch page faults (4 KiB
// each, zero-filled by the kernel) can cost more than computing the values: asking for transparent huge
// pages, where the kernel grants them on request, makes 512 times fewer faults. Only whole 2 MiB pages
// inside the buffer are advised; nothing changes where THP is off.
inline void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr()), bytes = t.nbytes();
  if (bytes < 4 * kHuge) return;
  const uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1), hi = (begin + bytes) & ~(kHuge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advice only: errors ignored
#endif
}

}  // namespace mixdiff::ops
