// assign_nearest: the mixDDPM dispatcher. labels[n] = argmin_k ||x_n - c_k||^2 (ties -> lowest k),
// sqdist[n] = that minimum, computed from differences (not ||x||^2 - 2 x.c + ||c||^2, which cancels
// for points close to a centre).
#include "common.h"
#include "assign_nearest/assign_nearest.h"
#include "mixdiff/cpu_tiles.h"

namespace mixdiff::ops {

namespace {

template <class T, int P>
MIXDIFF_INLINE void nearest_tile(const T* x, int64_t D, const cpu::ComponentTable<T>& tab, T* scratch,
                                 int64_t* labels, T* sqdist) {
  cpu::sq_dist_rows<T, P, false>(x, D, tab, scratch, tab.Kp);
  for (int p = 0; p < P; ++p) {
    T* row = scratch + p * tab.Kp;
    cpu::pad_row(row, tab.K, tab.Kp, infinity<T>());
    T best;
    const int64_t k = cpu::row_best_index<T, true>(row, tab.Kp, &best);
    // A NaN row compares with nothing: report NaN with label 0 rather than an invalid index.
    labels[p] = k < 0 ? 0 : k;
    sqdist[p] = k < 0 ? T(NAN) : best;
  }
}

template <class T>
MIXDIFF_INLINE void nearest_range_impl(const T* x, int64_t D, const cpu::ComponentTable<T>& tab, int64_t begin,
                                       int64_t end, int64_t* labels, T* sqdist) {
  std::vector<T> scratch(static_cast<size_t>(cpu::kBlockRows * tab.Kp));
  int64_t n = begin;
  for (; n + cpu::kBlockRows <= end; n += cpu::kBlockRows)
    nearest_tile<T, cpu::kBlockRows>(x + n * D, D, tab, scratch.data(), labels + n, sqdist + n);
  for (; n < end; ++n) nearest_tile<T, 1>(x + n * D, D, tab, scratch.data(), labels + n, sqdist + n);
}

MIXDIFF_CPU_CLONES void nearest_range(const float* x, int64_t D, const cpu::ComponentTable<float>& tab,
                                      int64_t begin, int64_t end, int64_t* labels, float* sqdist) {
  nearest_range_impl(x, D, tab, begin, end, labels, sqdist);
}
MIXDIFF_CPU_CLONES void nearest_range(const double* x, int64_t D, const cpu::ComponentTable<double>& tab,
                                      int64_t begin, int64_t end, int64_t* labels, double* sqdist) {
  nearest_range_impl(x, D, tab, begin, end, labels, sqdist);
}

}  // namespace

void assign_nearest_cpu_into(const at::Tensor& x, const at::Tensor& centres, at::Tensor& labels, at::Tensor& sqdist) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "assign_nearest_cpu", [&] {
    const int64_t N = x.size(0), D = x.size(1), K = centres.size(0);
    cpu::ComponentTable<scalar_t> tab;
    tab.build(CovType::Identity, centres.data_ptr<scalar_t>(), nullptr, nullptr, K, D);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    int64_t* lp = labels.data_ptr<int64_t>();
    scalar_t* dp = sqdist.data_ptr<scalar_t>();
    at::parallel_for(0, N, 256, [&](int64_t b, int64_t e) { nearest_range(xp, D, tab, b, e, lp, dp); });
  });
}

std::tuple<at::Tensor, at::Tensor> assign_nearest_checked(const at::Tensor& x, const at::Tensor& centres) {
  check_data_and_means(x, centres, "centres");
  const auto dtype = compute_dtype(x);
  return {at::empty({x.size(0)}, x.options().dtype(at::kLong)), at::empty({x.size(0)}, x.options().dtype(dtype))};
}

namespace {

std::tuple<at::Tensor, at::Tensor> assign_nearest_cpu(const at::Tensor& x, const at::Tensor& centres) {
  auto [labels, sqdist] = assign_nearest_checked(x, centres);
  if (x.size(0) == 0) return {labels, sqdist};
  const auto dtype = compute_dtype(x);
  assign_nearest_cpu_into(prepared(x, dtype), prepared(centres, dtype), labels, sqdist);
  return {labels, sqdist};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mixdiff, m) {
  m.def("assign_nearest(Tensor x, Tensor centres) -> (Tensor labels, Tensor sqdist)");
}

TORCH_LIBRARY_IMPL(mixdiff, CPU, m) { m.impl("assign_nearest", &assign_nearest_cpu); }

}  // namespace mixdiff::ops
