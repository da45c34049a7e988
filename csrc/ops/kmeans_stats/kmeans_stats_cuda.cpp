// kmeans_stats: CUDA dispatch (torch glue, host compiler). Kernel in kmeans_stats_cuda.cu.
#include "common.h"
#include "kmeans_stats/kmeans_stats.h"
#include "kmeans_stats/kmeans_stats_cuda.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace mixdiff::ops {

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_stats_cuda(const at::Tensor& x,
                                                                                         const at::Tensor& centres) {
  // counts comes back zero-filled (integer atomics); sum_x and inertia are overwritten.
  auto [labels, sqdist, counts, sum_x, inertia] = kmeans_stats_checked(x, centres);
  const int64_t N = x.size(0), D = x.size(1), K = centres.size(0);
  if (N == 0) return {labels, sqdist, counts, sum_x, inertia};
  const c10::cuda::CUDAGuard guard(x.device());
  const auto dtype = compute_dtype(x);
  const at::Tensor xc = prepared(x, dtype), cc = prepared(centres, dtype);
  int64_t ws_size = 0;
  C10_CUDA_CHECK(cuda::kmeans_stats_workspace(N, K, D, &ws_size));
  const at::Tensor ws = at::empty({ws_size}, x.options().dtype(at::kDouble));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dtype, "kmeans_stats_cuda", [&] {
    C10_CUDA_CHECK(cuda::kmeans_stats_launch<scalar_t>(
        xc.data_ptr<scalar_t>(), cc.data_ptr<scalar_t>(), N, K, D, labels.data_ptr<int64_t>(),
        sqdist.data_ptr<scalar_t>(), counts.data_ptr<int64_t>(), sum_x.data_ptr<double>(), inertia.data_ptr<double>(),
        ws.data_ptr<double>(), ws_size, stream));
  });
  return {labels, sqdist, counts, sum_x, inertia};
}

}  // namespace

TORCH_LIBRARY_IMPL(mixdiff, CUDA, m) { m.impl("kmeans_stats", &kmeans_stats_cuda); }

}  // namespace mixdiff::ops
