// kmeans_stats: one fused Lloyd step. Each point goes to its nearest centre (ties -> lowest index) and
// the op returns the labels, squared distances, per-cluster counts, per-cluster sums of (x - c_k) (the
// shift is the current centre, so the new centre c_k + sum_x_k / count_k does not cancel) and the
// inertia sum_n ||x_n - c_{label n}||^2. No [N, K] buffer.
#include "common.h"
#include "common_cpu.h"
#include "kmeans_stats/kmeans_stats.h"
#include "mixdiff/cpu_tiles.h"

namespace mixdiff::ops {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_stats_checked(const at::Tensor& x,
                                                                                            const at::Tensor& centres) {
  check_data_and_means(x, centres, "centres");
  const int64_t N = x.size(0), K = centres.size(0), D = centres.size(1);
  const auto f64 = x.options().dtype(at::kDouble);
  return {at::empty({N}, x.options().dtype(at::kLong)), at::empty({N}, x.options().dtype(compute_dtype(x))),
          at::zeros({K}, x.options().dtype(at::kLong)), at::zeros({K, D}, f64), at::zeros({}, f64)};
}

namespace {

// Nearest centres of R rows, then their hard statistics (a plain function, not a lambda, so that it is
// inlined into each instruction-set clone of kmeans_range).
template <class T, int R>
MIXDIFF_INLINE void kmeans_tile(const T* x, int64_t D, const cpu::ComponentTable<T>& tab, const T* centres,
                                T* scratch, T* z, int64_t* labels, T* sqdist, cpu::SuffStats<T>& acc) {
  cpu::nearest_rows<T, R>(x, D, tab, scratch, labels, sqdist);
  for (int p = 0; p < R; ++p) {
    acc.add(x + p * D, centres + labels[p] * D, labels[p], T(1), z);
    acc.total += static_cast<double>(sqdist[p]);
    acc.end_row();
  }
}

template <class T>
MIXDIFF_INLINE void kmeans_range_impl(const T* x, int64_t D, const cpu::ComponentTable<T>& tab, const T* centres,
                                      int64_t begin, int64_t end, int64_t* labels, T* sqdist,
                                      cpu::SuffStats<T>& acc) {
  constexpr int P = cpu::kBlockRows;
  std::vector<T> scratch(static_cast<size_t>(P * tab.Kp)), z(D);
  int64_t n = begin;
  for (; n + P <= end; n += P)
    kmeans_tile<T, P>(x + n * D, D, tab, centres, scratch.data(), z.data(), labels + n, sqdist + n, acc);
  for (; n < end; ++n)
    kmeans_tile<T, 1>(x + n * D, D, tab, centres, scratch.data(), z.data(), labels + n, sqdist + n, acc);
  acc.flush();
}

MIXDIFF_CPU_CLONES void kmeans_range(const float* x, int64_t D, const cpu::ComponentTable<float>& tab,
                                     const float* centres, int64_t begin, int64_t end, int64_t* labels,
                                     float* sqdist, cpu::SuffStats<float>& acc) {
  kmeans_range_impl(x, D, tab, centres, begin, end, labels, sqdist, acc);
}
MIXDIFF_CPU_CLONES void kmeans_range(const double* x, int64_t D, const cpu::ComponentTable<double>& tab,
                                     const double* centres, int64_t begin, int64_t end, int64_t* labels,
                                     double* sqdist, cpu::SuffStats<double>& acc) {
  kmeans_range_impl(x, D, tab, centres, begin, end, labels, sqdist, acc);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_stats_cpu(const at::Tensor& x,
                                                                                        const at::Tensor& centres) {
  auto [labels, sqdist, counts, sum_x, inertia] = kmeans_stats_checked(x, centres);
  const auto dtype = compute_dtype(x);
  const at::Tensor xc = prepared(x, dtype), cc = prepared(centres, dtype);
  AT_DISPATCH_FLOATING_TYPES(dtype, "kmeans_stats_cpu", [&] {
    const int64_t N = xc.size(0), D = xc.size(1), K = cc.size(0);
    cpu::ComponentTable<scalar_t> tab;
    tab.build(CovType::Identity, cc.data_ptr<scalar_t>(), nullptr, nullptr, K, D);
    std::vector<cpu::SuffStats<scalar_t>> partial(static_cast<size_t>(at::get_num_threads()));
    const int64_t chunks = parallel_chunks(N, [&](int64_t c, int64_t b, int64_t e) {
      partial[c].init(K, D, cpu::Moments::None);
      kmeans_range(xc.data_ptr<scalar_t>(), D, tab, cc.data_ptr<scalar_t>(), b, e, labels.data_ptr<int64_t>(),
                   sqdist.data_ptr<scalar_t>(), partial[c]);
    });
    for (int64_t c = 1; c < chunks; ++c) partial[0].merge(partial[c]);
    int64_t* cp = counts.data_ptr<int64_t>();
    for (int64_t k = 0; k < K; ++k) cp[k] = static_cast<int64_t>(partial[0].nk[k]);
    std::memcpy(sum_x.data_ptr<double>(), partial[0].s1.data(), sizeof(double) * K * D);
    inertia.fill_(partial[0].total);
  });
  return {labels, sqdist, counts, sum_x, inertia};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mixdiff, m) {
  m.def(
      "kmeans_stats(Tensor x, Tensor centres) -> (Tensor labels, Tensor sqdist, Tensor counts, Tensor sum_x, "
      "Tensor inertia)");
}

TORCH_LIBRARY_IMPL(mixdiff, CPU, m) { m.impl("kmeans_stats", &kmeans_stats_cpu); }

}  // namespace mixdiff::ops
