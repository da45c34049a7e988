// assign_nearest: the mixDDPM dispatcher. labels[n] = argmin_k ||x_n - c_k||^2 (ties -> lowest k),
// sqdist[n] = that minimum, computed from differences (not ||x||^2 - 2 x.c + ||c||^2, which cancels
// for points close to a centre).
#include <type_traits>

#include "common.h"
#include "assign_nearest/assign_nearest.h"

namespace mixdiff::ops {

namespace {

template <class T>
MIXDIFF_INLINE void nearest_range_impl(const T* x, int64_t D, const cpu::ComponentTable<T>& tab, int64_t begin,
                                       int64_t end, int64_t* labels, T* sqdist) {
  std::vector<T> scratch(static_cast<size_t>(cpu::kBlockRows * tab.Kp));
  int64_t n = begin;
#if MIXDIFF_AVX512_KERNELS
  if constexpr (std::is_same_v<T, float>) {
    if (cpu::use_avx512())
      while (n + 16 <= end && cpu::nearest16_avx512(x + n * D, D, tab, labels + n, sqdist + n)) n += 16;
  }
#endif
  for (; n + cpu::kBlockRows <= end; n += cpu::kBlockRows)
    cpu::nearest_rows<T, cpu::kBlockRows>(x + n * D, D, tab, scratch.data(), labels + n, sqdist + n);
  for (; n < end; ++n) cpu::nearest_rows<T, 1>(x + n * D, D, tab, scratch.data(), labels + n, sqdist + n);
}

}  // namespace

MIXDIFF_CPU_CLONES void nearest_range(const float* x, int64_t D, const cpu::ComponentTable<float>& tab,
                                      int64_t begin, int64_t end, int64_t* labels, float* sqdist) {
  nearest_range_impl(x, D, tab, begin, end, labels, sqdist);
}
MIXDIFF_CPU_CLONES void nearest_range(const double* x, int64_t D, const cpu::ComponentTable<double>& tab,
                                      int64_t begin, int64_t end, int64_t* labels, double* sqdist) {
  nearest_range_impl(x, D, tab, begin, end, labels, sqdist);
}

std::tuple<at::Tensor, at::Tensor> assign_nearest_checked(const at::Tensor& x, const at::Tensor& centres) {
  check_data_and_means(x, centres, "centres");
  const auto dtype = compute_dtype(x);
  return {at::empty({x.size(0)}, x.options().dtype(at::kLong)), at::empty({x.size(0)}, x.options().dtype(dtype))};
}

namespace {

std::tuple<at::Tensor, at::Tensor> assign_nearest_cpu(const at::Tensor& x_in, const at::Tensor& centres_in) {
  auto [labels, sqdist] = assign_nearest_checked(x_in, centres_in);
  const auto dtype = compute_dtype(x_in);
  const at::Tensor x = prepared(x_in, dtype), centres = prepared(centres_in, dtype);
  AT_DISPATCH_FLOATING_TYPES(dtype, "assign_nearest_cpu", [&] {
    const int64_t N = x.size(0), D = x.size(1), K = centres.size(0);
    cpu::ComponentTable<scalar_t> tab;
    tab.build(CovType::Identity, centres.data_ptr<scalar_t>(), nullptr, nullptr, K, D);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    int64_t* lp = labels.data_ptr<int64_t>();
    scalar_t* dp = sqdist.data_ptr<scalar_t>();
    at::parallel_for(0, N, 256, [&](int64_t b, int64_t e) { nearest_range(xp, D, tab, b, e, lp, dp); });
  });
  return {labels, sqdist};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mixdiff, m) {
  m.def("assign_nearest(Tensor x, Tensor centres) -> (Tensor labels, Tensor sqdist)");
}

TORCH_LIBRARY_IMPL(mixdiff, CPU, m) { m.impl("assign_nearest", &assign_nearest_cpu); }

}  // namespace mixdiff::ops
