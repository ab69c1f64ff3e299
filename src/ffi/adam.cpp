// One Adam update over all of a network's parameters in one pass per tensor, for beta1 = 0 (StyleGAN2's setting):
// torch.optim.Adam's single-tensor rule, which sg2's optimizer otherwise runs as seven ATen ops per parameter.
// Each float operation is the one those ATen kernels perform, in their order (this file is compiled with
// -ffp-contract=off, and ATen's addcmul is a fused multiply-add), so the result is the same bit for bit:
//
//   m = g
//   v = fma(g, g * (1 - beta2), v * beta2)
//   p = p + (m * -step_size) / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//
// ATen's float sqrt is MKL's vector math (vmsSqrt, high-accuracy mode) where libtorch has MKL: it rounds about one
// value in 150 differently from a correctly rounded sqrt, so the same function is called here when libtorch exports
// it, and the correctly rounded one (what ATen then uses) otherwise.
#include "fused_common.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <cmath>
#include <cstring>
#include <exception>
#include <vector>

namespace {

struct Scalars {
  float beta2, one_minus_beta2, neg_step_size, bc2_sqrt, eps;
};

// MKL's vmsSqrt(n, a, r, mode) with LP64 integers, as ATen calls it; null without MKL.
using VmsSqrt = void (*)(int, const float*, float*, long long);
VmsSqrt mkl_sqrt() {
  static VmsSqrt f = reinterpret_cast<VmsSqrt>(dlsym(RTLD_DEFAULT, "vmsSqrt"));
  return f;
}
// VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE, ATen's mode.
constexpr long long kVmlMode = 0x2 | 0x140000 | 0x100;

SG2_CLONES void adam_moments(const float* __restrict g, float* __restrict m, float* __restrict v, int64_t n,
                             Scalars s) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    float gi = g[j];
    v[j] = std::fma(gi, gi * s.one_minus_beta2, v[j] * s.beta2);
    m[j] = gi;
  }
}

SG2_CLONES void correct_sqrt(const float* __restrict v, float* __restrict d, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) d[j] = std::sqrt(v[j]);
}

SG2_CLONES void adam_params(float* __restrict p, const float* __restrict m, const float* __restrict d, int64_t n,
                            Scalars s) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    float q = d[j] / s.bc2_sqrt;
    q = q + s.eps;
    p[j] = p[j] + (m[j] * s.neg_step_size) / q;
  }
}

void adam_run(float* p, const float* g, float* m, float* v, int64_t n, Scalars s, std::vector<float>& d) {
  adam_moments(g, m, v, n, s);
  d.resize(n);
  if (VmsSqrt f = mkl_sqrt()) {
    f(static_cast<int>(n), v, d.data(), kVmlMode);
  } else {
    correct_sqrt(v, d.data(), n);
  }
  adam_params(p, m, d.data(), n, s);
}

bool fits(const at::Tensor& t, int64_t numel) {
  return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() && t.numel() == numel;
}

}  // namespace

extern "C" {

// Updates every parameter i with a gradient (g[i] non-null) in place; returns 1, or 0 and changes nothing when an
// operand is not a dense CPU float tensor of its parameter's size (the caller then runs the ATen ops), -1 on error.
int sg2_adam_beta1_zero(at::Tensor** p, at::Tensor** g, at::Tensor** m, at::Tensor** v, int64_t n, double beta2,
                        double step_size, double bc2_sqrt, double eps, char* err, size_t len) {
  try {
    struct Chunk {
      float *p, *m, *v;
      const float* g;
      int64_t n;
    };
    std::vector<Chunk> chunks;
    // Pieces of at most 64K elements, so that one large parameter spreads over the threads.
    const int64_t piece = 1 << 16;
    for (int64_t i = 0; i < n; ++i) {
      if (g[i] == nullptr) continue;
      int64_t numel = p[i]->numel();
      if (!fits(*p[i], numel) || !fits(*g[i], numel) || !fits(*m[i], numel) || !fits(*v[i], numel)) return 0;
      float* pp = p[i]->data_ptr<float>();
      float* mp = m[i]->data_ptr<float>();
      float* vp = v[i]->data_ptr<float>();
      const float* gp = g[i]->data_ptr<float>();
      for (int64_t o = 0; o < numel; o += piece)
        chunks.push_back({pp + o, mp + o, vp + o, gp + o, std::min(piece, numel - o)});
    }
    // As an in-place ATen op would, so that autograd notices a saved tensor changed under it.
    for (int64_t i = 0; i < n; ++i) {
      if (g[i] == nullptr) continue;
      for (at::Tensor* t : {p[i], m[i], v[i]}) t->unsafeGetTensorImpl()->bump_version();
    }
    // The scalars as ATen converts a double Scalar for a float kernel.
    Scalars s{static_cast<float>(beta2), static_cast<float>(1.0 - beta2), static_cast<float>(-step_size),
              static_cast<float>(bc2_sqrt), static_cast<float>(eps)};
    at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t c0, int64_t c1) {
      std::vector<float> d;
      for (int64_t c = c0; c < c1; ++c)
        adam_run(chunks[c].p, chunks[c].g, chunks[c].m, chunks[c].v, chunks[c].n, s, d);
    });
    return 1;
  } catch (const std::exception& e) {
    sg2_fused::copy_message(e.what(), err, len);
    return -1;
  }
}

}  // extern "C"
