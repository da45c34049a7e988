// assign_nearest: CUDA dispatch (torch glue, host compiler). Kernels in assign_nearest_cuda.cu.
#include "common.h"
#include "assign_nearest/assign_nearest.h"
#include "assign_nearest/assign_nearest_cuda.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace mixdiff::ops {

namespace {

std::tuple<at::Tensor, at::Tensor> assign_nearest_cuda(const at::Tensor& x_in, const at::Tensor& centres_in) {
  auto [labels, sqdist] = assign_nearest_checked(x_in, centres_in);
  const int64_t N = x_in.size(0), D = x_in.size(1), K = centres_in.size(0);
  if (N == 0) return {labels, sqdist};
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto dtype = compute_dtype(x_in);
  const at::Tensor x = prepared(x_in, dtype), centres = prepared(centres_in, dtype);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dtype, "assign_nearest_cuda", [&] {
    C10_CUDA_CHECK(cuda::assign_nearest_launch<scalar_t>(x.data_ptr<scalar_t>(), centres.data_ptr<scalar_t>(), N, K,
                                                         D, labels.data_ptr<int64_t>(), sqdist.data_ptr<scalar_t>(),
                                                         stream));
  });
  return {labels, sqdist};
}

}  // namespace

TORCH_LIBRARY_IMPL(mixdiff, CUDA, m) { m.impl("assign_nearest", &assign_nearest_cuda); }

}  // namespace mixdiff::ops
