// assign_nearest: CUDA dispatch (torch glue, host compiler). Kernels in assign_nearest_cuda.cu.
#include "dispatch.h"
#include "assign_nearest/assign_nearest.h"
#include "assign_nearest/assign_nearest_cuda.h"

namespace mixdiff::ops {

namespace {

std::tuple<at::Tensor, at::Tensor> assign_nearest_cuda(const at::Tensor& x_in, const at::Tensor& centres_in) {
  auto [labels, sqdist] = assign_nearest_checked(x_in, centres_in);
  // Reached through the device key when any argument is on the device; the checks tie the others to x's.
  device::check_on_device("assign_nearest", x_in, "x");
  const auto dtype = compute_dtype(x_in);
  device::launch("assign_nearest", x_in, dtype, x_in.size(0), [&]<class T>(cudaStream_t stream) {
    const at::Tensor x = prepared(x_in, dtype), centres = prepared(centres_in, dtype);
    cuda::AssignNearestParams<T> p;
    p.x = x.data_ptr<T>();
    p.centres = centres.data_ptr<T>();
    p.N = x.size(0);
    p.K = centres.size(0);
    p.D = x.size(1);
    p.labels = labels.data_ptr<int64_t>();
    p.sqdist = sqdist.data_ptr<T>();
    return cuda::assign_nearest_launch<T>(p, stream);
  });
  return {labels, sqdist};
}

}  // namespace

MIXDIFF_DEVICE_LIBRARY_IMPL(m) { m.impl("assign_nearest", &assign_nearest_cuda); }

}  // namespace mixdiff::ops
