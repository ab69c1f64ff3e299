// A fused CPU epilogue for fp32 layers: y = clamp(act(x * scale[n,c] + noise[n,pixel] + bias[c]) * gain, +-clamp),
// as an autograd function. The layers compute exactly this chain of element-wise passes (the modulated
// convolution's demodulation and noise, then bias_act); here it is one pass forward and one backward, keeping only
// `x` (which the pre-activation is recomputed from) instead of three whole activations.
//
// The forward repeats the chain's float operations in the same order (this file is compiled with
// -ffp-contract=off), so it gives the chain's values bit for bit. The backward sums the small gradients (scale,
// noise, bias) in another order than ATen's reductions. When the backward itself is differentiated (R1 and path
// length regularisation: create_graph), fused_grad.cpp makes it a differentiable op.
//
// x: [N, C] or [N, C, H, W] in dense channels-last memory (so the channels of a pixel are contiguous); scale: [N, C]
// or undefined; noise: anything broadcasting to [N, 1, H, W] or undefined; bias: [C] or undefined.
#include "fused_common.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <vector>

namespace sg2_fused {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Operands of a run of pixels: x, y / gy, gx are [pixels, C]; s and b are [C] (or null), noise one value per pixel.
// x (and gx) are bfloat16 when the convolution before ran in bf16, else float.
struct Run {
  const void* x;
  const float* s;
  const float* noise;
  const float* b;
  int64_t pixels, C;
};

// The flags are template arguments so that each combination compiles to a branch-free vector loop over channels.
template <bool S, bool NZ, bool B, bool LRELU, bool GAIN, bool CLAMP, bool BF>
SG2_INLINE void forward_run(const Run& r, float* __restrict y, Spec p) {
  // Local restrict copies: read through `r` inside the loop, the pointers would be reloaded after every store
  // (which might alias them) and the loop would stay scalar.
  const void* __restrict x = r.x;
  const float* __restrict s = r.s;
  const float* __restrict b = r.b;
  const int64_t C = r.C;
  for (int64_t i = 0; i < r.pixels; ++i) {
    int64_t base = i * C;
    float* __restrict yo = y + base;
    float nz = NZ ? r.noise[i] : 0.f;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      float v = load<BF>(x, base + c);
      if (S) v = v * s[c];
      if (NZ) v = v + nz;
      if (B) v = v + b[c];
      if (LRELU) v = v > 0.f ? v : 0.2f * v;
      if (GAIN) v = v * p.gain;
      if (CLAMP) v = std::min(std::max(v, -p.clamp), p.clamp);  // NaN passes through, as ATen's clamp
      yo[c] = v;
    }
  }
}

// Gradients of a run: gx (written), and accumulated per channel: gs (x * g), gb (g); gn (written) is the sum over
// channels (the noise gradient). Every pointer is valid (the caller passes scratch for what it does not need):
// conditional stores would keep the loop from vectorising.
template <bool S, bool NZ, bool B, bool LRELU, bool GAIN, bool CLAMP, bool BF>
SG2_INLINE void backward_run(const Run& r, const float* __restrict gy, void* __restrict gx, float* __restrict gs,
                             float* __restrict gb, float* __restrict gn, Spec p) {
  const void* __restrict x = r.x;
  const float* __restrict s = r.s;
  const float* __restrict b = r.b;
  const int64_t C = r.C;
  for (int64_t i = 0; i < r.pixels; ++i) {
    int64_t base = i * C;
    const float* __restrict gyi = gy + base;
    float nz = NZ ? r.noise[i] : 0.f;
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < C; ++c) {
      float v = load<BF>(x, base + c);
      float z = S ? v * s[c] : v;
      if (NZ) z = z + nz;
      if (B) z = z + b[c];
      float g = gyi[c];
      if (CLAMP) {
        float y0 = LRELU ? (z > 0.f ? z : 0.2f * z) : z;
        if (GAIN) y0 = y0 * p.gain;
        g = (y0 >= -p.clamp && y0 <= p.clamp) ? g : 0.f;
      }
      if (GAIN) g = g * p.gain;
      if (LRELU) g = z > 0.f ? g : 0.2f * g;
      gb[c] += g;
      gs[c] += g * v;
      sum += g;
      store<BF>(gx, base + c, S ? g * s[c] : g);
    }
    gn[i] = sum;
  }
}

template <bool S, bool NZ, bool B, bool LRELU, bool GAIN, bool CLAMP, bool BF>
SG2_INLINE void forward_tagged(const Run& r, float* y, Spec p, Flags<S, NZ, B, LRELU, GAIN, CLAMP, BF>) {
  forward_run<S, NZ, B, LRELU, GAIN, CLAMP, BF>(r, y, p);
}

template <bool S, bool NZ, bool B, bool LRELU, bool GAIN, bool CLAMP, bool BF>
SG2_INLINE void backward_tagged(const Run& r, const float* gy, void* gx, float* gs, float* gb, float* gn, Spec p,
                                Flags<S, NZ, B, LRELU, GAIN, CLAMP, BF>) {
  backward_run<S, NZ, B, LRELU, GAIN, CLAMP, BF>(r, gy, gx, gs, gb, gn, p);
}

// The instantiation's flags, in the order of the template parameters.
struct RunFlags {
  bool f[7];
  RunFlags(const Run& r, bool bf16, Spec p)
      : f{r.s != nullptr, r.noise != nullptr, r.b != nullptr, p.lrelu, p.gain != 1.f, p.has_clamp, bf16} {}
};

SG2_CLONES void forward_pixels(const Run& r, bool bf16, float* y, Spec p) {
  RunFlags flags(r, bf16, p);
  dispatch<7>([&](auto tag) __attribute__((always_inline)) { forward_tagged(r, y, p, tag); }, flags.f, Flags<>{});
}

SG2_CLONES void backward_pixels(const Run& r, bool bf16, const float* gy, void* gx, float* gs, float* gb, float* gn,
                                Spec p) {
  RunFlags flags(r, bf16, p);
  dispatch<7>([&](auto tag) __attribute__((always_inline)) { backward_tagged(r, gy, gx, gs, gb, gn, p, tag); }, flags.f, Flags<>{});
}

at::Tensor forward_kernel(const at::Tensor& x, const at::Tensor& s, const at::Tensor& noise, const at::Tensor& b,
                          Spec p) {
  auto g = geometry(x);
  auto y = like_x(x, at::kFloat);
  auto nv = noise_view(noise, g);
  const void* xp = x.data_ptr();
  bool bf = is_bf16(x);
  const float* sp = ptr_or_null(s);
  const float* bp = ptr_or_null(b);
  float* yp = y.data_ptr<float>();
  // Rows of W pixels are the unit of work.
  int64_t per_n = g.P / g.W;
  at::parallel_for(0, g.N * per_n, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t n = r / per_n, pix = (r % per_n) * g.W, off = (n * g.P + pix) * g.C;
      Run run{at_elem(x, xp, off), sp ? sp + n * g.C : nullptr, nv.ptr ? nv.ptr + n * nv.stride + pix : nullptr, bp,
              g.W, g.C};
      forward_pixels(run, bf, yp + off, p);
    }
  });
  return y;
}

// The backward as differentiable ATen ops (for create_graph on bf16 activations).
variable_list backward_composite(const at::Tensor& x, const at::Tensor& s, const at::Tensor& noise,
                                 const at::Tensor& b, const at::Tensor& gy, Spec p) {
  at::Tensor z = s.defined() ? x * per_channel(s, x) : x;
  if (noise.defined()) z = z + noise;
  if (b.defined()) z = z + per_channel(b, x);
  at::Tensor g = mask_composite(gy, z.detach(), p);
  at::Tensor gx = s.defined() ? g * per_channel(s, x) : g;
  at::Tensor gs = s.defined() ? sum_pixels(g * x) : at::Tensor();
  at::Tensor gn = noise.defined() ? g.sum(1, true).sum_to_size(noise.sizes()) : at::Tensor();
  std::vector<int64_t> all_but_c = {0};
  for (int64_t i = 2; i < x.dim(); ++i) all_but_c.push_back(i);
  at::Tensor gb = b.defined() ? g.sum(all_but_c) : at::Tensor();
  return {gx, gs, gn, gb};
}

}  // namespace

RawGrads bias_act_backward_raw(const at::Tensor& x, const at::Tensor& s, const at::Tensor& noise, const at::Tensor& b,
                               const at::Tensor& gy_in, Spec p, bool need_s, bool need_b) {
  auto g = geometry(x);
  auto gy = x.dim() == 2 ? gy_in.contiguous() : gy_in.contiguous(at::MemoryFormat::ChannelsLast);
  auto nv = noise_view(noise, g);
  auto opts = x.options().dtype(at::kFloat);
  // The gradient comes back in x's kind (bf16 feeds the bf16 convolution's backward directly).
  at::Tensor gx = like_x(x, x.scalar_type());
  at::Tensor gs = need_s ? at::empty({g.N, g.C}, opts) : at::Tensor();
  at::Tensor gb_n = need_b ? at::empty({g.N, g.C}, opts) : at::Tensor();
  at::Tensor gn = at::empty({g.N, g.P}, opts);
  const void* xp = x.data_ptr();
  bool bf = is_bf16(x);
  const float* sp = ptr_or_null(s);
  const float* bp = ptr_or_null(b);
  const float* gyp = gy.data_ptr<float>();
  void* gxp = gx.data_ptr();
  float* gnp = gn.data_ptr<float>();
  at::parallel_for(0, g.N, 1, [&](int64_t n0, int64_t n1) {
    // Per row of pixels in float, per sample in double: sums over large images stay accurate.
    std::vector<float> row_s(g.C), row_b(g.C);
    std::vector<double> acc_s(g.C), acc_b(g.C);
    for (int64_t n = n0; n < n1; ++n) {
      std::fill(acc_s.begin(), acc_s.end(), 0.0);
      std::fill(acc_b.begin(), acc_b.end(), 0.0);
      for (int64_t r = 0; r < g.P / g.W; ++r) {
        std::fill(row_s.begin(), row_s.end(), 0.f);
        std::fill(row_b.begin(), row_b.end(), 0.f);
        int64_t pix = r * g.W, off = (n * g.P + pix) * g.C;
        Run run{at_elem(x, xp, off), sp ? sp + n * g.C : nullptr, nv.ptr ? nv.ptr + n * nv.stride + pix : nullptr,
                bp, g.W, g.C};
        void* gxo = const_cast<void*>(at_elem(x, gxp, off));
        backward_pixels(run, bf, gyp + off, gxo, row_s.data(), row_b.data(), gnp + n * g.P + pix, p);
        for (int64_t c = 0; c < g.C; ++c) {
          acc_s[c] += row_s[c];
          acc_b[c] += row_b[c];
        }
      }
      for (int64_t c = 0; c < g.C; ++c) {
        if (need_s) gs.data_ptr<float>()[n * g.C + c] = static_cast<float>(acc_s[c]);
        if (need_b) gb_n.data_ptr<float>()[n * g.C + c] = static_cast<float>(acc_b[c]);
      }
    }
  });
  return {gx, gs, gn, gb_n};
}

namespace {

variable_list backward_kernel(const at::Tensor& x, const at::Tensor& s, const at::Tensor& noise,
                              const at::Tensor& b, const at::Tensor& gy, Spec p, bool need_x, bool need_s,
                              bool need_n, bool need_b) {
  auto r = bias_act_backward_raw(x, s, noise, b, gy, p, need_s, need_b);
  at::Tensor gb = need_b ? r.gb.to(at::kDouble).sum(0).to(at::kFloat) : at::Tensor();
  at::Tensor gnoise;
  if (need_n) gnoise = r.gn.reshape(noise_grad_shape(x)).sum_to_size(noise.sizes());
  return {need_x ? r.gx : at::Tensor(), r.gs, gnoise, gb};
}

struct FusedBiasAct : public torch::autograd::Function<FusedBiasAct> {
  // Autograd functions take defined tensors only: an absent operand comes as an empty tensor.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& s_in,
                            const at::Tensor& noise_in, const at::Tensor& b_in, bool lrelu, double gain, double clamp) {
    auto present = [](const at::Tensor& t) { return t.numel() > 0 ? t : at::Tensor(); };
    at::Tensor s = present(s_in), noise = present(noise_in), b = present(b_in);
    Spec p{lrelu, static_cast<float>(gain), clamp >= 0, static_cast<float>(clamp)};
    ctx->save_for_backward({x, s, noise, b});
    ctx->saved_data["lrelu"] = lrelu;
    ctx->saved_data["gain"] = gain;
    ctx->saved_data["clamp"] = clamp;
    return forward_kernel(x, s, noise, b, p);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &s = saved[1], &noise = saved[2], &b = saved[3];
    double clamp = ctx->saved_data["clamp"].toDouble();
    Spec p{ctx->saved_data["lrelu"].toBool(), static_cast<float>(ctx->saved_data["gain"].toDouble()), clamp >= 0,
           static_cast<float>(clamp)};
    variable_list g;
    if (at::GradMode::is_enabled() && is_bf16(x)) {
      g = backward_composite(x, s, noise, b, grads[0], p);
    } else if (at::GradMode::is_enabled()) {
      bool need[4] = {ctx->needs_input_grad(0), s.defined() && ctx->needs_input_grad(1),
                      noise.defined() && ctx->needs_input_grad(2), b.defined() && ctx->needs_input_grad(3)};
      g = bias_act_backward_graph(x, s, noise, b, grads[0], p, need);
    } else {
      g = backward_kernel(x, s, noise, b, grads[0], p, ctx->needs_input_grad(0),
                          s.defined() && ctx->needs_input_grad(1), noise.defined() && ctx->needs_input_grad(2),
                          b.defined() && ctx->needs_input_grad(3));
    }
    return {g[0], g[1], g[2], g[3], at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// The unfused modulation: y = x * s[n, c], written in bfloat16 when the convolution it feeds runs in bf16 (one
// pass instead of a product and a cast). Backward: gx = g * s and gs = sum over pixels of g * x, in one pass.
template <bool BF>
SG2_INLINE void modulate_run(const float* __restrict x, const float* __restrict s, void* __restrict y, int64_t pixels, int64_t C) {
  for (int64_t i = 0; i < pixels; ++i) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) store<BF>(y, i * C + c, x[i * C + c] * s[c]);
  }
}

template <bool BF>
SG2_INLINE void modulate_back_run(const float* __restrict x, const float* __restrict s, const void* __restrict gy,
                                  float* __restrict gx, float* __restrict gs,
                                  int64_t pixels, int64_t C) {
  for (int64_t i = 0; i < pixels; ++i) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      float g = load<BF>(gy, i * C + c);
      gs[c] += g * x[i * C + c];
      gx[i * C + c] = g * s[c];
    }
  }
}

SG2_CLONES void modulate_pixels(bool bf, const float* x, const float* s, void* y, int64_t pixels, int64_t C) {
  if (bf) {
    modulate_run<true>(x, s, y, pixels, C);
  } else {
    modulate_run<false>(x, s, y, pixels, C);
  }
}

SG2_CLONES void modulate_back_pixels(bool bf, const float* x, const float* s, const void* gy, float* gx, float* gs,
                                     int64_t pixels, int64_t C) {
  if (bf) {
    modulate_back_run<true>(x, s, gy, gx, gs, pixels, C);
  } else {
    modulate_back_run<false>(x, s, gy, gx, gs, pixels, C);
  }
}

}  // namespace

std::pair<at::Tensor, at::Tensor> modulate_backward_raw(const at::Tensor& x, const at::Tensor& s, const at::Tensor& gy_in,
                                                        bool need_s) {
  auto g = geometry(x);
  auto gy = x.dim() == 2 ? gy_in.contiguous() : gy_in.contiguous(at::MemoryFormat::ChannelsLast);
  bool bf = is_bf16(gy);
  TORCH_CHECK(bf || gy.scalar_type() == at::kFloat, "modulate: unexpected gradient kind");
  at::Tensor gx = like_x(x, at::kFloat);  // written even when not needed: no conditional stores in the loop
  at::Tensor gs = need_s ? at::empty({g.N, g.C}, x.options()) : at::Tensor();
  const float* xp = x.data_ptr<float>();
  const float* sp = s.data_ptr<float>();
  const void* gyp = gy.data_ptr();
  at::parallel_for(0, g.N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<float> row(g.C);
    std::vector<double> acc(g.C);
    for (int64_t n = n0; n < n1; ++n) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t r = 0; r < g.P / g.W; ++r) {
        std::fill(row.begin(), row.end(), 0.f);
        int64_t off = (n * g.P + r * g.W) * g.C;
        modulate_back_pixels(bf, xp + off, sp + n * g.C, at_elem(gy, gyp, off), gx.data_ptr<float>() + off,
                             row.data(), g.W, g.C);
        for (int64_t c = 0; c < g.C; ++c) acc[c] += row[c];
      }
      if (need_s)
        for (int64_t c = 0; c < g.C; ++c) gs.data_ptr<float>()[n * g.C + c] = static_cast<float>(acc[c]);
    }
  });
  return {gx, gs};
}

namespace {

struct Modulate : public torch::autograd::Function<Modulate> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& s, bool bf16) {
    ctx->save_for_backward({x, s});
    auto g = geometry(x);
    auto y = like_x(x, bf16 ? at::kBFloat16 : at::kFloat);
    const float* xp = x.data_ptr<float>();
    const float* sp = s.data_ptr<float>();
    void* yp = y.data_ptr();
    int64_t per_n = g.P / g.W;
    at::parallel_for(0, g.N * per_n, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        int64_t n = r / per_n, off = (n * g.P + (r % per_n) * g.W) * g.C;
        modulate_pixels(bf16, xp + off, sp + n * g.C, const_cast<void*>(at_elem(y, yp, off)), g.W, g.C);
      }
    });
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &s = saved[1];
    if (at::GradMode::is_enabled() && is_bf16(grads[0])) {
      auto gy = grads[0].to(at::kFloat);
      return {gy * per_channel(s, x), sum_pixels(gy * x), at::Tensor()};
    }
    if (at::GradMode::is_enabled()) {
      auto g = modulate_backward_graph(x, s, grads[0]);
      return {g[0], g[1], at::Tensor()};
    }
    bool need_x = ctx->needs_input_grad(0), need_s = ctx->needs_input_grad(1);
    auto [gx, gs] = modulate_backward_raw(x, s, grads[0], need_s);
    return {need_x ? gx : at::Tensor(), gs, at::Tensor()};
  }
};


at::Tensor opt(at::Tensor* t, const at::Tensor& x) { return t ? *t : at::empty({0}, x.options()); }

}  // namespace

}  // namespace sg2_fused

using namespace sg2_fused;

extern "C" {

// 1 when the fused epilogue takes these operands (CPU fp32, dense layouts, matching shapes), else 0.
int sg2_fused_bias_act_applies(at::Tensor* x, at::Tensor* s, at::Tensor* noise, at::Tensor* b) {
  try {
    auto ok = [&](at::Tensor* t) { return !t || (t->device().is_cpu() && t->scalar_type() == at::kFloat); };
    bool x_ok = x->device().is_cpu() && (x->scalar_type() == at::kFloat || x->scalar_type() == at::kBFloat16);
    if (!x_ok || !ok(s) || !ok(noise) || !ok(b)) return 0;
    if ((x->dim() != 2 && x->dim() != 4) || !dense(*x) || x->numel() == 0) return 0;
    int64_t N = x->size(0), C = x->size(1);
    if (s && !(s->dim() == 2 && s->size(0) == N && s->size(1) == C && s->is_contiguous())) return 0;
    if (b && !(b->dim() == 1 && b->size(0) == C && b->is_contiguous())) return 0;
    if (noise) {
      if (x->dim() != 4 || noise->dim() > 4) return 0;
      auto ns = noise->sizes().vec();
      while (ns.size() < 4) ns.insert(ns.begin(), 1);
      if (ns[1] != 1 || ns[2] != x->size(2) || ns[3] != x->size(3) || (ns[0] != 1 && ns[0] != N)) return 0;
    }
    return 1;
  } catch (...) {
    return 0;
  }
}

// The fused epilogue (see above); `clamp` < 0: none. s, noise, b may be null.
int sg2_fused_bias_act(at::Tensor* x, at::Tensor* s, at::Tensor* noise, at::Tensor* b, int lrelu, double gain,
                       double clamp, at::Tensor** out, char* err, size_t len) {
  try {
    *out = new at::Tensor(FusedBiasAct::apply(*x, opt(s, *x), opt(noise, *x), opt(b, *x), lrelu != 0, gain, clamp));
    return 0;
  } catch (const std::exception& e) {
    copy_message(e.what(), err, len);
    return -1;
  }
}

// x * s[n, c] (see Modulate), in bf16 when `bf16`; 0 and no output when the operands do not fit (then the caller
// multiplies), -1 on error.
int sg2_modulate(at::Tensor* x, at::Tensor* s, int bf16, at::Tensor** out, char* err, size_t len) {
  try {
    bool fits = x->device().is_cpu() && x->scalar_type() == at::kFloat && (x->dim() == 2 || x->dim() == 4) &&
                dense(*x) && x->numel() > 0 && s->device().is_cpu() && s->scalar_type() == at::kFloat &&
                s->dim() == 2 && s->size(0) == x->size(0) && s->size(1) == x->size(1) && s->is_contiguous();
    if (!fits) return 0;
    *out = new at::Tensor(Modulate::apply(*x, *s, bf16 != 0));
    return 1;
  } catch (const std::exception& e) {
    copy_message(e.what(), err, len);
    return -1;
  }
}

}  // extern "C"
