#pragma once
// CUDA launcher of reverse_step (raw pointers, no torch): compiled by nvcc, called by the torch glue.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "mixdiff/sampling.h"

namespace mixdiff::cuda {

// Row i in [0, n) exactly as the CPU op (sampling.h, normal.h), k = labels[i]:
//   prev[i, d] = reverse_element(c, mu_kd, x[i, d], (A_k eps_hat[i])_d, (A_k z[i])_d, &x0[i, d]),
// where the z term is 0 when c.cz == 0; otherwise z[i] is `noise`'s row when draw_noise is false, else the
// row's normals of stream `noise_stream` (step_stream(kStreamReverseNoise, step)), row offset + i, in
// normal.h's planar layout (row_normals). x0 is written only when not null.
// x, eps_hat, noise, prev, x0 [n, D]; labels int64 [n] in [0, K); means [K, D]; factor in gaussian.h layout
// ([K] sigma, [K, D] sigma_d, [K, D, D] row-major lower-triangular L; unused for identity, may be null);
// noise null unless it is used; z_work [n, D] scratch, needed (else null) when cov is full, draw_noise and
// c.cz != 0. All contiguous on the current device, outputs not aliasing inputs. n = 0 or D = 0 launches
// nothing.
template <class T>
cudaError_t reverse_step_launch(CovType cov, const StepCoefficients<T>& c, const T* x, const T* eps_hat,
                                const int64_t* labels, const T* means, const T* factor, const T* noise,
                                bool draw_noise, int64_t n, int64_t D, uint64_t seed, uint64_t offset,
                                uint32_t noise_stream, T* prev, T* x0, T* z_work, cudaStream_t stream);

}  // namespace mixdiff::cuda
