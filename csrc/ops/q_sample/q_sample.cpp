// q_sample: forward noising centred on each row's mixture component, in one pass over x0:
//   x_t = mu_j + signal (x0 - mu_j) + noise_scale (A_j eps),
// with eps drawn from row offset + i of the forward-noise stream of `seed` (or given), and j given or
// assigned to the nearest mean in the same pass. Returns x_t, eps (the training target) and the labels.
#include "common.h"
#include "common_cpu.h"
#include "assign_nearest/assign_nearest.h"
#include "q_sample/q_sample.h"
#include "mixdiff/cpu_random.h"
#include "mixdiff/sampling.h"

namespace mixdiff::ops {

QSampleArgs q_sample_checked(const at::Tensor& x0, const std::optional<at::Tensor>& labels, const at::Tensor& signal,
                             const at::Tensor& noise_scale, const at::Tensor& means, const at::Tensor& cov_factor,
                             const std::string& covariance_type, const std::optional<at::Tensor>& noise,
                             int64_t offset) {
  QSampleArgs a;
  a.cov = parse_cov_type(covariance_type);
  TORCH_CHECK(offset >= 0, "mixdiff: offset must be >= 0, got ", offset);
  check_data_and_means(x0, means, "means");
  check_factor(x0, means, cov_factor, a.cov);
  check_factor_positive(cov_factor, a.cov);
  check_per_row(signal, x0, "signal");
  check_per_row(noise_scale, x0, "noise_scale");
  if (labels) check_labels(*labels, x0, means.size(0));
  if (noise) check_like_x(*noise, x0, "noise");
  const auto dtype = compute_dtype(x0);
  a.x0 = prepared(x0, dtype);
  a.signal = prepared(signal, dtype);
  a.noise_scale = prepared(noise_scale, dtype);
  a.means = prepared(means, dtype);
  a.factor = prepared_factor(cov_factor, a.cov, dtype, x0);
  if (labels) a.labels = labels->contiguous();
  if (noise) a.noise = prepared(*noise, dtype);
  a.x_t = at::empty(x0.sizes(), a.x0.options());
  a.eps = at::empty(x0.sizes(), a.x0.options());
  a.labels_out = at::empty({x0.size(0)}, a.x0.options().dtype(at::kLong));
  return a;
}

namespace {

template <class T>
struct QSampleRows {
  CovType cov;
  const T *x0, *signal, *noise_scale, *means, *factor, *noise;  // noise: null -> draw
  const int64_t* labels;                                      // null -> nearest mean
  const cpu::ComponentTable<T>* centres;                      // for the nearest-mean assignment
  int64_t D;
  uint64_t seed, offset;
  T *x_t, *eps;
  int64_t* labels_out;
};

// Rows [b, e) in blocks that stay in cache between the assignment, the noise draw and the combination.
// Mul: the Philox product of cpu::with_philox_mul, which compiles this for the machine.
template <class Mul, class T>
void q_sample_rows(const QSampleRows<T>& a, int64_t b, int64_t e) {
  using V = typename cpu::Vec<T>::type;
  constexpr int64_t kRowsPerBlock = 16;
  const int64_t D = a.D, fs = factor_size(a.cov, D);
  T sqdist[kRowsPerBlock];
  for (int64_t r0 = b; r0 < e; r0 += kRowsPerBlock) {
    const int64_t r1 = std::min(e, r0 + kRowsPerBlock);
    if (a.labels) {
      std::copy(a.labels + r0, a.labels + r1, a.labels_out + r0);
    } else {
      nearest_range(a.x0 + r0 * D, D, *a.centres, 0, r1 - r0, a.labels_out + r0, sqdist);
    }
    // short rows: the block's noise in one batched draw, combined from memory below
    const bool drawn = !a.noise && (a.cov == CovType::Full || cpu::short_rows<T>(D));
    if (drawn) cpu::rows_normals<T, Mul>(a.seed, kStreamForwardNoise, a.offset + static_cast<uint64_t>(r0), r1 - r0, D,
                                 a.eps + r0 * D);
    if (a.cov == CovType::Full) {
      for (int64_t i = r0; i < r1; ++i) {
        const int64_t k = a.labels_out[i];
        const T *mu = a.means + k * D, *x0 = a.x0 + i * D;
        T *eps = a.eps + i * D, *xt = a.x_t + i * D;
        if (a.noise) std::copy(a.noise + i * D, a.noise + (i + 1) * D, eps);
        std::copy(eps, eps + D, xt);
        lower_matvec_inplace(a.factor + k * fs, D, xt);
        for (int64_t d = 0; d < D; ++d) xt[d] = forward_element(mu[d], x0[d], a.signal[i], a.noise_scale[i], xt[d]);
      }
      continue;
    }
    // Separable: elements [e0, e0 + count) of row i's eps and x_t from the same registers.
    auto combine = [&](int64_t i, int64_t e0, int64_t count, const V& z) {
      const int64_t k = a.labels_out[i];
      cpu::store_partial(a.eps + i * D + e0, z, count);
      cpu::store_partial(a.x_t + i * D + e0,
                         forward_element(cpu::load_partial(a.means + k * D + e0, count),
                                         cpu::load_partial(a.x0 + i * D + e0, count), a.signal[i], a.noise_scale[i],
                                         cpu::scale_noise(a.cov, a.factor + k * fs, e0, count, z)),
                         count);
    };
    if (a.noise || drawn) {
      for (int64_t i = r0; i < r1; ++i) {
        const T* given = a.noise ? a.noise + i * D : a.eps + i * D;
        for (int64_t e0 = 0; e0 < D; e0 += cpu::kLanes<T>) {
          const int64_t count = std::min<int64_t>(cpu::kLanes<T>, D - e0);
          combine(i, e0, count, cpu::load_partial(given + e0, count));
        }
      }
    } else {
      cpu::each_row_normals<T, Mul>(a.seed, kStreamForwardNoise, a.offset + static_cast<uint64_t>(r0), r0, r1, D,
                                    combine);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> q_sample_cpu(
    const at::Tensor& x0, const std::optional<at::Tensor>& labels, const at::Tensor& signal,
    const at::Tensor& noise_scale, const at::Tensor& means, const at::Tensor& cov_factor,
    const std::string& covariance_type, const std::optional<at::Tensor>& noise, int64_t seed, int64_t offset) {
  const QSampleArgs a =
      q_sample_checked(x0, labels, signal, noise_scale, means, cov_factor, covariance_type, noise, offset);
  advise_huge_pages(a.x_t);
  advise_huge_pages(a.eps);
  AT_DISPATCH_FLOATING_TYPES(a.x_t.scalar_type(), "q_sample_cpu", [&] {
    const int64_t K = a.means.size(0), D = a.means.size(1);
    cpu::ComponentTable<scalar_t> centres;
    if (!a.labels.defined()) centres.build(CovType::Identity, a.means.data_ptr<scalar_t>(), nullptr, nullptr, K, D);
    const QSampleRows<scalar_t> rows{a.cov,
                                     a.x0.data_ptr<scalar_t>(),
                                     a.signal.data_ptr<scalar_t>(),
                                     a.noise_scale.data_ptr<scalar_t>(),
                                     a.means.data_ptr<scalar_t>(),
                                     a.factor.data_ptr<scalar_t>(),
                                     a.noise.defined() ? a.noise.data_ptr<scalar_t>() : nullptr,
                                     a.labels.defined() ? a.labels.data_ptr<int64_t>() : nullptr,
                                     &centres,
                                     D,
                                     static_cast<uint64_t>(seed),
                                     static_cast<uint64_t>(offset),
                                     a.x_t.data_ptr<scalar_t>(),
                                     a.eps.data_ptr<scalar_t>(),
                                     a.labels_out.data_ptr<int64_t>()};
    const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(D, 1));
    parallel_pieces(a.x_t.size(0), grain, [&](int64_t b, int64_t e) {
      cpu::with_philox_mul([&](auto mul) { q_sample_rows<decltype(mul)>(rows, b, e); });
    });
  });
  return {a.x_t, a.eps, a.labels_out};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mixdiff, m) {
  m.def(
      "q_sample(Tensor x0, Tensor? labels, Tensor signal, Tensor noise_scale, Tensor means, Tensor cov_factor, "
      "str covariance_type, Tensor? noise, int seed, int offset=0) -> (Tensor x_t, Tensor eps, Tensor labels)");
}

TORCH_LIBRARY_IMPL(mixdiff, CPU, m) { m.impl("q_sample", &q_sample_cpu); }

}  // namespace mixdiff::ops
