#pragma once
// CPU-side helpers shared by the ops' CPU kernels.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

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

}  // namespace mixdiff::ops
