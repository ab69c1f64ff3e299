// Shared by the fused CPU kernels (fused.cpp: forward and backward; fused_grad.cpp: the backward as a
// differentiable op for create_graph, and its own backward): operand layout, bfloat16 conversions, and the
// entry points each file offers the other.
#pragma once
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace sg2_fused {

struct Spec {
  bool lrelu;
  float gain;
  bool has_clamp;
  float clamp;
};

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// x86-64-v4 (AVX-512 F, BW, DQ, VL), not just avx512f: bfloat16 loads and stores are 16-bit integer vectors,
// which AVX-512F alone lacks.
#define SG2_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define SG2_CLONES
#endif
#define SG2_INLINE __attribute__((always_inline)) inline

// bfloat16 as ATen stores it (the upper half of a float), rounded to nearest even as ATen rounds.
SG2_INLINE float from_bf16(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Branch-free so that the loops around it vectorise.
SG2_INLINE uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t rounded = (u + (((u >> 16) & 1) + 0x7FFF)) >> 16;
  return static_cast<uint16_t>(f != f ? 0x7FC0u : rounded);
}

// Element i of a float (BF = false) or bfloat16 (BF = true) array.
template <bool BF>
SG2_INLINE float load(const void* p, int64_t i) {
  if constexpr (BF) {
    return from_bf16(static_cast<const uint16_t*>(p)[i]);
  } else {
    return static_cast<const float*>(p)[i];
  }
}

template <bool BF>
SG2_INLINE void store(void* p, int64_t i, float v) {
  if constexpr (BF) {
    static_cast<uint16_t*>(p)[i] = to_bf16(v);
  } else {
    static_cast<float*>(p)[i] = v;
  }
}

// Geometry shared by both passes: N samples of P pixels of C channels.
struct Geometry {
  int64_t N, C, P, W;
};

inline Geometry geometry(const at::Tensor& x) {
  if (x.dim() == 2) return {x.size(0), x.size(1), 1, 1};
  return {x.size(0), x.size(1), x.size(2) * x.size(3), x.size(3)};
}

inline bool dense(const at::Tensor& x) {
  return x.dim() == 2 ? x.is_contiguous() : x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline at::Tensor like_x(const at::Tensor& x, at::ScalarType kind) {
  auto opts = x.options().dtype(kind);
  return x.dim() == 2 ? at::empty_like(x, opts) : at::empty_like(x, opts, at::MemoryFormat::ChannelsLast);
}

inline bool is_bf16(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16; }

// `base` advanced by `i` elements of `t`'s kind.
inline const void* at_elem(const at::Tensor& t, const void* base, int64_t i) {
  return static_cast<const char*>(base) + i * t.element_size();
}

// The noise as [N or 1, P] floats (row stride 0 when shared by the batch).
struct NoiseView {
  at::Tensor t;
  const float* ptr;
  int64_t stride;
};

inline NoiseView noise_view(const at::Tensor& noise, const Geometry& g) {
  if (!noise.defined()) return {noise, nullptr, 0};
  auto t = noise.reshape({-1, g.P}).contiguous();
  TORCH_CHECK(t.size(0) == 1 || t.size(0) == g.N, "fused bias_act: noise does not broadcast to the batch");
  return {t, t.data_ptr<float>(), t.size(0) == 1 ? 0 : g.P};
}

inline const float* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

// Runtime flags -> template arguments: `f` is called with Flags<flags[0], ..., flags[N - 1]>, so that each
// combination compiles to its own branch-free loop.
template <bool... Fl>
struct Flags {};

template <int N, typename F, bool... Done>
SG2_INLINE void dispatch(F&& f, const bool* flags, Flags<Done...>) {
  if constexpr (sizeof...(Done) == N) {
    f(Flags<Done...>{});
  } else if (flags[0]) {
    dispatch<N>(f, flags + 1, Flags<Done..., true>{});
  } else {
    dispatch<N>(f, flags + 1, Flags<Done..., false>{});
  }
}

// ---- Pieces of the ATen-op (composite) forms.

// [C] or [N, C] shaped to broadcast over x.
inline at::Tensor per_channel(const at::Tensor& t, const at::Tensor& x) {
  std::vector<int64_t> shape(x.dim(), 1);
  if (t.dim() == 2) shape[0] = t.size(0);
  shape[1] = t.size(-1);
  return t.reshape(shape);
}

// An operand passed as an empty tensor (the autograd functions' "absent"), or never set, as an undefined tensor.
inline at::Tensor present(const at::Tensor& t) { return t.defined() && t.numel() > 0 ? t : at::Tensor(); }

// t summed over its pixels (dims 2 and up; t itself when it has none).
inline at::Tensor sum_pixels(const at::Tensor& t) {
  std::vector<int64_t> d;
  for (int64_t i = 2; i < t.dim(); ++i) d.push_back(i);
  return d.empty() ? t : t.sum(d);
}

// The shape of x's per-pixel noise gradient: [N, 1, H, W], or [N, 1] for [N, C] inputs.
inline std::vector<int64_t> noise_grad_shape(const at::Tensor& x) {
  if (x.dim() == 4) return {x.size(0), 1, x.size(2), x.size(3)};
  return {x.size(0), 1};
}

// The epilogue's backward mask applied to t (pre-activation z): clamp pass band, gain, leaky ReLU's slope.
inline at::Tensor mask_composite(const at::Tensor& t, const at::Tensor& z, Spec p) {
  at::Tensor g = t;
  if (p.has_clamp) {
    at::Tensor y0 = p.lrelu ? at::where(z > 0, z, z * 0.2) : z;
    y0 = y0 * p.gain;
    g = at::where(y0.ge(-p.clamp).logical_and(y0.le(p.clamp)), g, at::zeros({}, g.options()));
  }
  g = g * p.gain;
  return p.lrelu ? at::where(z > 0, g, g * 0.2) : g;
}

// An exception's message into a C caller's buffer.
inline void copy_message(const char* msg, char* err, size_t len) {
  if (err == nullptr || len == 0) return;
  std::strncpy(err, msg, len - 1);
  err[len - 1] = '\0';
}

// The epilogue's first-order gradients before their reductions: gx (x's kind), gs [N, C] (x * g summed over pixels),
// gn [N, P] (g summed over channels, the noise gradient per pixel), gb [N, C] (g summed over pixels). A tensor is
// computed only when its flag is set (gn always).
struct RawGrads {
  at::Tensor gx, gs, gn, gb;
};
RawGrads bias_act_backward_raw(const at::Tensor& x, const at::Tensor& s, const at::Tensor& noise, const at::Tensor& b,
                               const at::Tensor& gy, Spec p, bool need_s, bool need_b);

// The modulation's gradients gx = gy * s and gs = sum over pixels of gy * x (gs only when `need_s`).
std::pair<at::Tensor, at::Tensor> modulate_backward_raw(const at::Tensor& x, const at::Tensor& s, const at::Tensor& gy,
                                                        bool need_s);

// The same gradients as differentiable ops (create_graph: R1 and path-length regularisation), each a fused pass
// whose own backward is a fused pass too. `need` says which of (x, s, noise, b) are wanted.
torch::autograd::variable_list bias_act_backward_graph(const at::Tensor& x, const at::Tensor& s,
                                                       const at::Tensor& noise, const at::Tensor& b,
                                                       const at::Tensor& gy, Spec p, const bool need[4]);
torch::autograd::variable_list modulate_backward_graph(const at::Tensor& x, const at::Tensor& s, const at::Tensor& gy);

}  // namespace sg2_fused
