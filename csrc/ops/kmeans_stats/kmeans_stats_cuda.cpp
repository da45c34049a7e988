// kmeans_stats: CUDA dispatch (torch glue, host compiler). Kernel in kmeans_stats_cuda.cu.
#include "dispatch.h"
#include "kmeans_stats/kmeans_stats.h"
#include "kmeans_stats/kmeans_stats_cuda.h"

namespace mixdiff::ops {

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_stats_cuda(const at::Tensor& x,
                                                                                         const at::Tensor& centres) {
  // counts comes back zero-filled (integer atomics); sum_x and inertia are overwritten.
  auto [labels, sqdist, counts, sum_x, inertia] = kmeans_stats_checked(x, centres);
  // Reached through the device key when any argument is on the device; the checks tie the others to x's.
  device::check_on_device("kmeans_stats", x, "x");
  const auto dtype = compute_dtype(x);
  device::launch("kmeans_stats", x, dtype, x.size(0), [&]<class T>(cudaStream_t stream) {
    cuda::KmeansStatsParams<T> p;
    p.N = x.size(0);
    p.K = centres.size(0);
    p.D = x.size(1);
    const at::Tensor xc = prepared(x, dtype), cc = prepared(centres, dtype);
    const cudaError_t err = cuda::kmeans_stats_workspace(p.N, p.K, p.D, &p.workspace_size);
    if (err != cudaSuccess) return err;
    const at::Tensor ws = at::empty({p.workspace_size}, x.options().dtype(at::kDouble));
    p.x = xc.data_ptr<T>();
    p.centres = cc.data_ptr<T>();
    p.labels = labels.data_ptr<int64_t>();
    p.sqdist = sqdist.data_ptr<T>();
    p.counts = counts.data_ptr<int64_t>();
    p.sum_x = sum_x.data_ptr<double>();
    p.inertia = inertia.data_ptr<double>();
    p.workspace = ws.data_ptr<double>();
    return cuda::kmeans_stats_launch<T>(p, stream);
  });
  return {labels, sqdist, counts, sum_x, inertia};
}

}  // namespace

MIXDIFF_DEVICE_LIBRARY_IMPL(m) { m.impl("kmeans_stats", &kmeans_stats_cuda); }

}  // namespace mixdiff::ops
