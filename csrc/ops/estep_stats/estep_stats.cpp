// estep_stats: the fused EM E-step. For responsibilities g_nk of the current mixture it returns
//   nk = sum_n g_nk, sum_x = sum_n g_nk (x_n - s_k), sum_xx = sum_n g_nk (x_n - s_k)^2 (diag) or
//   sum_n g_nk (x_n - s_k)(x_n - s_k)^T (full), and sum_n log p(x_n),
// around a shift s (the previous means), so the M-step's variance E[(x-s)^2] - E[x-s]^2 does not
// cancel in float32. Responsibilities live only in a per-thread tile. Outputs are float64.
#include "common.h"
#include "common_cpu.h"
#include "estep_stats/estep_stats.h"
#include "mixdiff/cpu_tiles.h"

namespace mixdiff::ops {

namespace {

cpu::Moments parse_moments(const std::string& s) {
  if (s == "none") return cpu::Moments::None;
  if (s == "diag") return cpu::Moments::Diag;
  if (s == "full") return cpu::Moments::Full;
  TORCH_CHECK(false, "mixdiff: moments must be 'none', 'diag' or 'full', got '", s, "'");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> estep_stats_checked(
    const at::Tensor& x, const at::Tensor& means, const at::Tensor& cov_factor, const at::Tensor& log_weights,
    const std::string& covariance_type, const at::Tensor& shift, const std::string& moments) {
  const CovType cov = parse_cov_type(covariance_type);
  check_mixture(x, means, cov_factor, log_weights, cov);
  check_floating(shift, "shift");
  TORCH_CHECK(shift.sizes() == means.sizes(), "mixdiff: shift must have the shape of means ", means.sizes(),
              ", got ", shift.sizes());
  TORCH_CHECK(shift.device() == x.device(), "mixdiff: shift must be on ", x.device());
  const cpu::Moments m = parse_moments(moments);
  const int64_t K = means.size(0), D = means.size(1);
  const auto opts = x.options().dtype(at::kDouble);
  at::Tensor sum_xx = m == cpu::Moments::Full ? at::zeros({K, D, D}, opts)
                      : m == cpu::Moments::Diag ? at::zeros({K, D}, opts)
                                                : at::zeros({0}, opts);
  return {at::zeros({K}, opts), at::zeros({K, D}, opts), sum_xx, at::zeros({}, opts)};
}

namespace {

template <class T, int P>
MIXDIFF_INLINE void estep_tile(const T* x, int64_t D, const cpu::ComponentTable<T>& tab, const T* shift, T* scratch,
                               T* work, T* z, cpu::SuffStats<T>& acc) {
  cpu::score_rows<T, P>(x, D, tab, scratch, tab.Kp, work);
  for (int p = 0; p < P; ++p) {
    T* row = scratch + p * tab.Kp;
    cpu::pad_row(row, tab.K, tab.Kp, -infinity<T>());
    int64_t map;
    const T ll = cpu::row_logsumexp(row, tab.K, tab.Kp, &map);
    acc.total += static_cast<double>(ll);
    cpu::exp_shifted_inplace(row, tab.Kp, ll);
    for (int64_t k = 0; k < tab.K; ++k)
      if (row[k] != T(0)) acc.add(x + p * D, shift + k * D, k, row[k], z);
    acc.end_row();
  }
}

template <class T>
MIXDIFF_INLINE void estep_range_impl(const T* x, int64_t D, const cpu::ComponentTable<T>& tab, const T* shift,
                                     int64_t begin, int64_t end, cpu::SuffStats<T>& acc) {
  constexpr int P = cpu::kBlockRows;
  std::vector<T> scratch(static_cast<size_t>(P * tab.Kp)), work(static_cast<size_t>(P * D)), z(D);
  int64_t n = begin;
  for (; n + P <= end; n += P)
    estep_tile<T, P>(x + n * D, D, tab, shift, scratch.data(), work.data(), z.data(), acc);
  for (; n < end; ++n) estep_tile<T, 1>(x + n * D, D, tab, shift, scratch.data(), work.data(), z.data(), acc);
  acc.flush();
}

MIXDIFF_CPU_CLONES void estep_range(const float* x, int64_t D, const cpu::ComponentTable<float>& tab,
                                    const float* shift, int64_t begin, int64_t end, cpu::SuffStats<float>& acc) {
  estep_range_impl(x, D, tab, shift, begin, end, acc);
}
MIXDIFF_CPU_CLONES void estep_range(const double* x, int64_t D, const cpu::ComponentTable<double>& tab,
                                    const double* shift, int64_t begin, int64_t end, cpu::SuffStats<double>& acc) {
  estep_range_impl(x, D, tab, shift, begin, end, acc);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> estep_stats_cpu(
    const at::Tensor& x, const at::Tensor& means, const at::Tensor& cov_factor, const at::Tensor& log_weights,
    const std::string& covariance_type, const at::Tensor& shift, const std::string& moments) {
  auto [nk, sum_x, sum_xx, ll] =
      estep_stats_checked(x, means, cov_factor, log_weights, covariance_type, shift, moments);
  const CovType cov = parse_cov_type(covariance_type);
  const auto dtype = compute_dtype(x);
  const auto [xc, mc, lw, fc] = prepare_mixture(x, means, cov_factor, log_weights, cov);
  const at::Tensor sc = prepared(shift, dtype);
  const cpu::Moments mom = parse_moments(moments);
  AT_DISPATCH_FLOATING_TYPES(dtype, "estep_stats_cpu", [&] {
    const int64_t N = xc.size(0), D = xc.size(1), K = mc.size(0);
    cpu::ComponentTable<scalar_t> tab;
    const int64_t bad = tab.build(cov, mc.data_ptr<scalar_t>(), fc.data_ptr<scalar_t>(), lw.data_ptr<scalar_t>(), K, D);
    TORCH_CHECK(bad < 0, "mixdiff: cov_factor of component ", bad, " has a non-positive diagonal");
    std::vector<cpu::SuffStats<scalar_t>> partial(static_cast<size_t>(at::get_num_threads()));
    const int64_t chunks = parallel_chunks(N, [&](int64_t c, int64_t b, int64_t e) {
      partial[c].init(K, D, mom);
      estep_range(xc.data_ptr<scalar_t>(), D, tab, sc.data_ptr<scalar_t>(), b, e, partial[c]);
    });
    for (int64_t c = 1; c < chunks; ++c) partial[0].merge(partial[c]);
    std::memcpy(nk.data_ptr<double>(), partial[0].nk.data(), sizeof(double) * K);
    std::memcpy(sum_x.data_ptr<double>(), partial[0].s1.data(), sizeof(double) * K * D);
    if (!partial[0].s2.empty()) std::memcpy(sum_xx.data_ptr<double>(), partial[0].s2.data(), sizeof(double) * partial[0].s2.size());
    ll.fill_(partial[0].total);
  });
  return {nk, sum_x, sum_xx, ll};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mixdiff, m) {
  m.def(
      "estep_stats(Tensor x, Tensor means, Tensor cov_factor, Tensor log_weights, str covariance_type, "
      "Tensor shift, str moments) -> (Tensor nk, Tensor sum_x, Tensor sum_xx, Tensor log_lik_sum)");
}

TORCH_LIBRARY_IMPL(mixdiff, CPU, m) { m.impl("estep_stats", &estep_stats_cpu); }

}  // namespace mixdiff::ops
