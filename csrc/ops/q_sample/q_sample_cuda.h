#pragma once
// CUDA launcher of q_sample (raw pointers, no torch): compiled by nvcc, called by the torch glue.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "mixdiff/gaussian.h"

namespace mixdiff::cuda {

// Row i in [0, n) exactly as the CPU op (sampling.h, normal.h): k = labels[i] when labels is given, else
// the nearest mean (Euclidean, ties -> lowest k, an all-NaN row -> 0, with the CPU's distances);
// labels_out[i] = k; eps[i, :] = noise[i, :] when noise is given, else the row's normals of stream
// kStreamForwardNoise, row offset + i, in normal.h's planar layout (row_normals);
// x_t[i, :] = forward_element(mu_k, x0[i, :], signal[i], noise_scale[i], A_k eps[i, :]).
// x0, noise, x_t, eps [n, D]; labels, labels_out int64 [n] (labels in [0, K)); signal, noise_scale [n];
// means [K, D]; factor in gaussian.h layout ([K] sigma, [K, D] sigma_d, [K, D, D] row-major lower-triangular
// L; unused for identity, may be null); labels and noise may be null; all contiguous on the current
// device, outputs not aliasing inputs. K >= 1; n = 0 launches nothing.
template <class T>
cudaError_t q_sample_launch(CovType cov, const T* x0, const int64_t* labels, const T* signal, const T* noise_scale,
                            const T* means, const T* factor, const T* noise, int64_t n, int64_t K, int64_t D,
                            uint64_t seed, uint64_t offset, T* x_t, T* eps, int64_t* labels_out,
                            cudaStream_t stream);

}  // namespace mixdiff::cuda
