// ngmg: the NGMG loss of every row of pred and its gradient in one fused pass (mixdiff/ngmg.h holds the
// math; docs/method.md, "NGMG", the formulas). No [N, K] or [N, K, D] buffer exists.
#include "common.h"
#include "common_cpu.h"
#include "ngmg/ngmg.h"
#include "mixdiff/cpu_tiles.h"

#include <limits>
#include <vector>

namespace mixdiff::ops {

namespace {

NgmgKind parse_ngmg_kind(const std::string& s) {
  if (s == "potential") return NgmgKind::Potential;
  if (s == "log") return NgmgKind::Log;
  TORCH_CHECK(false, "mixdiff: kind must be 'potential' or 'log', got '", s, "'");
}

}  // namespace

NgmgArgs ngmg_checked(const at::Tensor& pred, const at::Tensor& modes, const at::Tensor& weights,
                      const at::Tensor& sigma, bool normalized, const std::string& kind) {
  NgmgArgs a;
  a.kind = parse_ngmg_kind(kind);
  a.normalized = normalized || a.kind == NgmgKind::Log;
  check_data_and_means(pred, modes, "modes", "pred");
  const int64_t N = pred.size(0), K = modes.size(0);
  check_floating(weights, "weights");
  a.row_weights = weights.dim() == 2;
  TORCH_CHECK((weights.dim() == 1 && weights.size(0) == K) || (a.row_weights && weights.size(0) == N &&
                                                                 weights.size(1) == K),
              "mixdiff: weights must have shape [", K, "] or [", N, ", ", K, "], got ", weights.sizes());
  TORCH_CHECK(weights.device() == pred.device(), "mixdiff: weights are on ", weights.device(), " but pred is on ",
              pred.device());
  check_floating(sigma, "sigma");
  TORCH_CHECK(sigma.numel() == 1 || (sigma.dim() == 1 && sigma.size(0) == K),
              "mixdiff: sigma must be a single value or have shape [", K, "], got ", sigma.sizes());
  TORCH_CHECK(sigma.device() == pred.device(), "mixdiff: sigma is on ", sigma.device(), " but pred is on ",
              pred.device());
  // Value checks: one small reduction each (a sync on CUDA). NaN fails every comparison, so it is rejected.
  const double inf = std::numeric_limits<double>::infinity();
  TORCH_CHECK((sigma.gt(0) & sigma.lt(inf)).all().item<bool>(), "mixdiff: sigma must be finite and positive");
  TORCH_CHECK(weights.numel() == 0 || (weights.ge(0) & weights.lt(inf)).all().item<bool>(),
              "mixdiff: weights must be finite and non-negative");
  // -log 0 would be +inf: the log kind needs some mass in every row.
  if (a.kind == NgmgKind::Log && weights.numel() > 0)
    TORCH_CHECK(weights.amax(-1).gt(0).all().item<bool>(),
                "mixdiff: weights must not be all zero in any row for kind='log' (the loss would be +inf)");
  const auto dtype = compute_dtype(pred);
  a.pred = prepared(pred, dtype);
  a.modes = prepared(modes, dtype);
  a.weights = prepared(weights, dtype);
  a.sigma = prepared(sigma.reshape({-1}).expand({K}), dtype);
  a.loss = at::empty({N}, a.pred.options());
  a.grad = at::empty({N, pred.size(1)}, a.pred.options());
  return a;
}

namespace {

constexpr int kCompChunk = 16;  // ngmg_row's components per register chunk

// P rows from pred (with their weights, when per row): their distances to every mode in one register tile
// (cpu_tiles.h, the same sums as ngmg_sq_dist), then ngmg_row on each. scratch: P * tab.Kp values.
template <class T, int P>
MIXDIFF_INLINE void ngmg_tile(NgmgKind kind, const NgmgMixture<T>& mix, const cpu::ComponentTable<T>& tab,
                              const T* pred, const T* row_weights, T* scratch, T* loss, T* grad) {
  const int64_t K = mix.K, D = mix.D;
  cpu::sq_dist_rows<T, P, false>(pred, D, tab, scratch, tab.Kp);
  for (int p = 0; p < P; ++p) {
    const T* sq = scratch + p * tab.Kp;
    loss[p] = ngmg_row<T, kCompChunk>(kind, mix, pred + p * D, row_weights ? row_weights + p * K : nullptr,
                                      [sq](int64_t k) { return sq[k]; }, grad + p * D);
  }
}

template <class T>
MIXDIFF_INLINE void ngmg_range_impl(NgmgKind kind, const NgmgMixture<T>& mix, const cpu::ComponentTable<T>& tab,
                                    const T* pred, const T* row_weights, int64_t begin, int64_t end, T* loss,
                                    T* grad) {
  constexpr int P = cpu::kBlockRows;
  const int64_t K = mix.K, D = mix.D;
  std::vector<T> scratch(static_cast<size_t>(P * tab.Kp));
  auto weights_at = [&](int64_t n) { return row_weights ? row_weights + n * K : nullptr; };
  int64_t n = begin;
  for (; n + P <= end; n += P)
    ngmg_tile<T, P>(kind, mix, tab, pred + n * D, weights_at(n), scratch.data(), loss + n, grad + n * D);
  for (; n < end; ++n)
    ngmg_tile<T, 1>(kind, mix, tab, pred + n * D, weights_at(n), scratch.data(), loss + n, grad + n * D);
}

MIXDIFF_CPU_CLONES void ngmg_range(NgmgKind kind, const NgmgMixture<float>& mix, const cpu::ComponentTable<float>& tab,
                                   const float* pred, const float* row_weights, int64_t begin, int64_t end,
                                   float* loss, float* grad) {
  ngmg_range_impl(kind, mix, tab, pred, row_weights, begin, end, loss, grad);
}
MIXDIFF_CPU_CLONES void ngmg_range(NgmgKind kind, const NgmgMixture<double>& mix,
                                   const cpu::ComponentTable<double>& tab, const double* pred,
                                   const double* row_weights, int64_t begin, int64_t end, double* loss,
                                   double* grad) {
  ngmg_range_impl(kind, mix, tab, pred, row_weights, begin, end, loss, grad);
}

std::tuple<at::Tensor, at::Tensor> ngmg_cpu(const at::Tensor& pred, const at::Tensor& modes, const at::Tensor& weights,
                                            const at::Tensor& sigma, bool normalized, const std::string& kind) {
  const NgmgArgs a = ngmg_checked(pred, modes, weights, sigma, normalized, kind);
  advise_huge_pages(a.grad);
  AT_DISPATCH_FLOATING_TYPES(a.grad.scalar_type(), "ngmg_cpu", [&] {
    const int64_t N = a.pred.size(0), D = a.pred.size(1), K = a.modes.size(0);
    const scalar_t* w = a.weights.data_ptr<scalar_t>();
    const scalar_t* s = a.sigma.data_ptr<scalar_t>();
    std::vector<scalar_t> offset(K), half_prec(K);
    for (int64_t k = 0; k < K; ++k)
      ngmg_component<scalar_t>(s[k], a.row_weights ? scalar_t(0) : std::log(w[k]), a.normalized, D, &offset[k],
                               &half_prec[k]);
    const NgmgMixture<scalar_t> mix{a.modes.data_ptr<scalar_t>(), offset.data(), half_prec.data(), K, D};
    cpu::ComponentTable<scalar_t> tab;
    tab.build(CovType::Identity, mix.modes, nullptr, nullptr, K, D);
    const scalar_t* pp = a.pred.data_ptr<scalar_t>();
    const scalar_t* rw = a.row_weights ? w : nullptr;
    scalar_t* lp = a.loss.data_ptr<scalar_t>();
    scalar_t* gp = a.grad.data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(K * D, 1));
    at::parallel_for(0, N, grain, [&](int64_t b, int64_t e) { ngmg_range(a.kind, mix, tab, pp, rw, b, e, lp, gp); });
  });
  return {a.loss, a.grad};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mixdiff, m) {
  m.def(
      "ngmg(Tensor pred, Tensor modes, Tensor weights, Tensor sigma, bool normalized, str kind) "
      "-> (Tensor loss, Tensor grad)");
}

TORCH_LIBRARY_IMPL(mixdiff, CPU, m) { m.impl("ngmg", &ngmg_cpu); }

}  // namespace mixdiff::ops
