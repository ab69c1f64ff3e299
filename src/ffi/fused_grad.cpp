// The fused epilogue's and modulation's backward passes as differentiable ops, for create_graph: R1 and
// path-length regularisation differentiate a gradient. Forward: the first-order pass of fused.cpp. Backward: each
// first-order map is linear in the incoming gradient gy, with a mask that is piecewise constant in the
// pre-activation z (leaky ReLU's slope, the clamp's pass band, the gain), so its derivative is one more pass:
//
//   epilogue, g = mask(gy):  d gy = mask(ggx * s + ggs * x + ggn + ggb),  d x = ggs * g,   d s = sum_pixels(ggx * g)
//   modulation:              d gy = ggx * s + ggs * x,                     d x = ggs * gy,  d s = sum_pixels(ggx * gy)
//
// (gg*: the gradients arriving for gx, gs, the per-pixel noise gradient and the per-sample bias gradient), and
// nothing for noise and bias: the mask's derivative is zero almost everywhere, as autograd takes it for the unfused
// chain. Differentiated a third time, the same formulas are built from ATen ops.
#include "fused_common.h"

#include <ATen/Parallel.h>

#include <vector>

namespace sg2_fused {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The mask of the first-order pass applied to t, in that pass's order of operations (a gain of 1 multiplies
// exactly).
template <bool LRELU, bool CLAMP>
SG2_INLINE float mask(float t, float z, float gain, float clamp) {
  if (CLAMP) {
    float y0 = LRELU ? (z > 0.f ? z : 0.2f * z) : z;
    y0 = y0 * gain;
    t = (y0 >= -clamp && y0 <= clamp) ? t : 0.f;
  }
  t = t * gain;
  if (LRELU) t = z > 0.f ? t : 0.2f * t;
  return t;
}

// One row of pixels of one sample. Per channel: s, b, ggs, ggb (neutral values when absent); per pixel: noise,
// ggn. ds accumulates per channel. Absent full-size operands (ggx, dx) are null and their flag false.
struct DoubleRun {
  const float *x, *s, *b, *noise, *gy, *ggx, *ggs, *ggb, *ggn;
  float *dgy, *dx, *ds;
  int64_t pixels, C;
};

template <bool GGX, bool DX, bool LRELU, bool CLAMP>
SG2_INLINE void epilogue_double_run(const DoubleRun& r, float gain, float clamp) {
  const float* __restrict x = r.x;
  const float* __restrict s = r.s;
  const float* __restrict b = r.b;
  const float* __restrict gy = r.gy;
  const float* __restrict ggx = r.ggx;
  const float* __restrict ggs = r.ggs;
  const float* __restrict ggb = r.ggb;
  float* __restrict dgy = r.dgy;
  float* __restrict dx = r.dx;
  float* __restrict ds = r.ds;
  const int64_t C = r.C;
  for (int64_t i = 0; i < r.pixels; ++i) {
    const int64_t base = i * C;
    const float nz = r.noise[i], gn = r.ggn[i];
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      float v = x[base + c];
      float z = v * s[c];
      z = z + nz;
      z = z + b[c];
      float g = mask<LRELU, CLAMP>(gy[base + c], z, gain, clamp);
      float h = ggs[c] * v + gn + ggb[c];
      if (GGX) h = h + ggx[base + c] * s[c];
      dgy[base + c] = mask<LRELU, CLAMP>(h, z, gain, clamp);
      if (DX) dx[base + c] = ggs[c] * g;
      if (GGX) ds[c] += ggx[base + c] * g;
    }
  }
}

template <bool GGX, bool DX, bool LRELU, bool CLAMP>
SG2_INLINE void epilogue_double_tagged(const DoubleRun& r, float gain, float clamp, Flags<GGX, DX, LRELU, CLAMP>) {
  epilogue_double_run<GGX, DX, LRELU, CLAMP>(r, gain, clamp);
}

SG2_CLONES void epilogue_double_pixels(const DoubleRun& r, Spec p) {
  bool flags[4] = {r.ggx != nullptr, r.dx != nullptr, p.lrelu, p.has_clamp};
  dispatch<4>([&](auto tag) __attribute__((always_inline)) { epilogue_double_tagged(r, p.gain, p.clamp, tag); },
              flags, Flags<>{});
}

template <bool GGX, bool GGS>
SG2_INLINE void modulate_double_run(const DoubleRun& r) {
  const float* __restrict x = r.x;
  const float* __restrict s = r.s;
  const float* __restrict gy = r.gy;
  const float* __restrict ggx = r.ggx;
  const float* __restrict ggs = r.ggs;
  float* __restrict dgy = r.dgy;
  float* __restrict dx = r.dx;
  float* __restrict ds = r.ds;
  const int64_t C = r.C;
  for (int64_t i = 0; i < r.pixels; ++i) {
    const int64_t base = i * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      float h = GGX ? ggx[base + c] * s[c] : 0.f;
      if (GGS) h = GGX ? h + ggs[c] * x[base + c] : ggs[c] * x[base + c];
      dgy[base + c] = h;
      if (GGS) dx[base + c] = ggs[c] * gy[base + c];
      if (GGX) ds[c] += ggx[base + c] * gy[base + c];
    }
  }
}

// At least one of ggx and ggs is present.
SG2_CLONES void modulate_double_pixels(const DoubleRun& r, bool ggx, bool ggs) {
  if (ggx && ggs) {
    modulate_double_run<true, true>(r);
  } else if (ggx) {
    modulate_double_run<true, false>(r);
  } else {
    modulate_double_run<false, true>(r);
  }
}

at::Tensor dense_float(const at::Tensor& t, const at::Tensor& x) {
  auto f = t.to(at::kFloat);
  return x.dim() == 2 ? f.contiguous() : f.contiguous(at::MemoryFormat::ChannelsLast);
}

// A per-sample [N, K] operand as (pointer, row stride): `fill` repeated (stride 0) when absent.
struct Rows {
  at::Tensor t;
  const float* ptr;
  int64_t stride;
};

Rows rows(const at::Tensor& t, int64_t K, float fill, const at::TensorOptions& opts) {
  if (!t.defined()) {
    auto f = at::full({K}, fill, opts);
    return {f, f.data_ptr<float>(), 0};
  }
  auto c = t.to(at::kFloat).reshape({-1, K}).contiguous();
  return {c, c.data_ptr<float>(), c.size(0) == 1 ? 0 : K};
}

// Runs `row(run, n)` over every row of pixels with the per-sample pointers set, accumulating ds per sample in
// double (as the first-order pass does), and returns ds [N, C] when `want_ds`.
template <typename Row>
at::Tensor over_rows(const Geometry& g, DoubleRun proto, bool want_ds, const at::TensorOptions& opts,
                     const Rows& s, const Rows& b, const Rows& noise, const Rows& ggs, const Rows& ggb,
                     const Rows& ggn, Row row) {
  at::Tensor ds = want_ds ? at::empty({g.N, g.C}, opts) : at::Tensor();
  at::parallel_for(0, g.N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<float> acc_row(g.C);
    std::vector<double> acc(g.C);
    for (int64_t n = n0; n < n1; ++n) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t r = 0; r < g.P / g.W; ++r) {
        std::fill(acc_row.begin(), acc_row.end(), 0.f);
        const int64_t pix = r * g.W, off = (n * g.P + pix) * g.C;
        DoubleRun run = proto;
        auto at_off = [&](const float* p) { return p ? p + off : nullptr; };
        auto at_off_mut = [&](float* p) { return p ? p + off : nullptr; };
        run.x = proto.x + off;
        run.gy = proto.gy + off;
        run.ggx = at_off(proto.ggx);
        run.dgy = proto.dgy + off;
        run.dx = at_off_mut(proto.dx);
        run.s = s.ptr + n * s.stride;
        run.b = b.ptr + n * b.stride;
        run.ggs = ggs.ptr + n * ggs.stride;
        run.ggb = ggb.ptr + n * ggb.stride;
        run.noise = noise.ptr + n * noise.stride + pix;
        run.ggn = ggn.ptr + n * ggn.stride + pix;
        run.ds = acc_row.data();
        run.pixels = g.W;
        run.C = g.C;
        row(run);
        for (int64_t c = 0; c < g.C; ++c) acc[c] += acc_row[c];
      }
      if (want_ds)
        for (int64_t c = 0; c < g.C; ++c) ds.data_ptr<float>()[n * g.C + c] = static_cast<float>(acc[c]);
    }
  });
  return ds;
}

// The epilogue's double backward: (d x, d s, d gy), each only where wanted and nonzero.
variable_list epilogue_double(const at::Tensor& x, const at::Tensor& s, const at::Tensor& noise, const at::Tensor& b,
                              const at::Tensor& gy_in, Spec p, const at::Tensor& ggx_in, const at::Tensor& ggs_in,
                              const at::Tensor& ggn_in, const at::Tensor& ggb_in, bool need_x, bool need_s,
                              bool need_gy) {
  auto g = geometry(x);
  auto opts = x.options().dtype(at::kFloat);
  bool has_ggx = ggx_in.defined();
  bool want_dx = need_x && s.defined() && ggs_in.defined();
  bool want_ds = need_s && s.defined() && has_ggx;
  if (!want_dx && !want_ds && !need_gy) return {at::Tensor(), at::Tensor(), at::Tensor()};
  auto gy = dense_float(gy_in, x);
  auto ggx = has_ggx ? dense_float(ggx_in, x) : at::Tensor();
  auto dgy = like_x(x, at::kFloat);
  auto dx = want_dx ? like_x(x, at::kFloat) : at::Tensor();
  Rows rs = rows(s, g.C, 1.f, opts), rb = rows(b, g.C, 0.f, opts);
  Rows rn = rows(noise, g.P, 0.f, opts);
  Rows rggs = rows(s.defined() ? ggs_in : at::Tensor(), g.C, 0.f, opts);
  Rows rggb = rows(ggb_in, g.C, 0.f, opts), rggn = rows(ggn_in, g.P, 0.f, opts);
  DoubleRun proto{x.data_ptr<float>(), nullptr, nullptr, nullptr, gy.data_ptr<float>(),
                  has_ggx ? ggx.data_ptr<float>() : nullptr, nullptr, nullptr, nullptr,
                  dgy.data_ptr<float>(), want_dx ? dx.data_ptr<float>() : nullptr, nullptr, 0, 0};
  auto ds = over_rows(g, proto, want_ds, opts, rs, rb, rn, rggs, rggb, rggn,
                      [&](const DoubleRun& r) { epilogue_double_pixels(r, p); });
  return {dx, ds, need_gy ? dgy : at::Tensor()};
}

variable_list modulate_double(const at::Tensor& x, const at::Tensor& s, const at::Tensor& gy_in,
                              const at::Tensor& ggx_in, const at::Tensor& ggs_in, bool need_x, bool need_s,
                              bool need_gy) {
  bool has_ggx = ggx_in.defined(), has_ggs = ggs_in.defined();
  bool want_dx = need_x && has_ggs, want_ds = need_s && has_ggx;
  if (!(has_ggx || has_ggs) || !(want_dx || want_ds || need_gy)) return {at::Tensor(), at::Tensor(), at::Tensor()};
  auto g = geometry(x);
  auto opts = x.options().dtype(at::kFloat);
  auto gy = dense_float(gy_in, x);
  auto ggx = has_ggx ? dense_float(ggx_in, x) : at::Tensor();
  auto dgy = like_x(x, at::kFloat);
  auto dx = has_ggs ? like_x(x, at::kFloat) : at::Tensor();
  Rows rs = rows(s, g.C, 1.f, opts), zc = rows(at::Tensor(), g.C, 0.f, opts), zp = rows(at::Tensor(), g.P, 0.f, opts);
  Rows rggs = rows(ggs_in, g.C, 0.f, opts);
  DoubleRun proto{x.data_ptr<float>(), nullptr, nullptr, nullptr, gy.data_ptr<float>(),
                  has_ggx ? ggx.data_ptr<float>() : nullptr, nullptr, nullptr, nullptr,
                  dgy.data_ptr<float>(), has_ggs ? dx.data_ptr<float>() : nullptr, nullptr, 0, 0};
  auto ds = over_rows(g, proto, want_ds, opts, rs, zc, zp, rggs, zc, zp,
                      [&](const DoubleRun& r) { modulate_double_pixels(r, has_ggx, has_ggs); });
  return {want_dx ? dx : at::Tensor(), ds, need_gy ? dgy : at::Tensor()};
}

// ---- The same derivatives from ATen ops (third order).

variable_list epilogue_double_composite(const at::Tensor& x, const at::Tensor& s, const at::Tensor& noise,
                                        const at::Tensor& b, const at::Tensor& gy, Spec p, const at::Tensor& ggx,
                                        const at::Tensor& ggs, const at::Tensor& ggn, const at::Tensor& ggb) {
  at::Tensor z = (s.defined() ? x * per_channel(s, x) : x).detach();
  if (noise.defined()) z = z + noise.detach();
  if (b.defined()) z = z + per_channel(b, x).detach();
  at::Tensor h = at::zeros_like(x, x.options().dtype(at::kFloat));
  if (ggx.defined()) h = h + (s.defined() ? ggx * per_channel(s, x) : ggx);
  if (ggs.defined() && s.defined()) h = h + per_channel(ggs, x) * x;
  if (ggn.defined()) h = h + ggn.reshape(noise_grad_shape(x));
  if (ggb.defined()) h = h + per_channel(ggb, x);
  at::Tensor g = mask_composite(gy, z, p);
  at::Tensor dx = ggs.defined() && s.defined() ? per_channel(ggs, x) * g : at::Tensor();
  at::Tensor ds = ggx.defined() && s.defined() ? sum_pixels(ggx * g) : at::Tensor();
  return {dx, ds, mask_composite(h, z, p)};
}

variable_list modulate_double_composite(const at::Tensor& x, const at::Tensor& s, const at::Tensor& gy,
                                        const at::Tensor& ggx, const at::Tensor& ggs) {
  at::Tensor dgy;
  if (ggx.defined()) dgy = ggx * per_channel(s, x);
  if (ggs.defined()) dgy = dgy.defined() ? dgy + per_channel(ggs, x) * x : per_channel(ggs, x) * x;
  at::Tensor dx = ggs.defined() ? per_channel(ggs, x) * gy : at::Tensor();
  at::Tensor ds = ggx.defined() ? sum_pixels(ggx * gy) : at::Tensor();
  return {dx, ds, dgy};
}

// ---- The autograd functions.

at::Tensor or_empty(const at::Tensor& t, const at::Tensor& x) { return t.defined() ? t : at::empty({0}, x.options()); }

// Outputs gx, gs [N, C], gn [N, P], gb [N, C] (see RawGrads); absent operands come as empty tensors.
struct EpilogueGrad : public torch::autograd::Function<EpilogueGrad> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& s_in,
                               const at::Tensor& noise_in, const at::Tensor& b_in, const at::Tensor& gy, bool lrelu,
                               double gain, double clamp) {
    ctx->set_materialize_grads(false);
    at::Tensor s = present(s_in), noise = present(noise_in), b = present(b_in);
    Spec p{lrelu, static_cast<float>(gain), clamp >= 0, static_cast<float>(clamp)};
    ctx->save_for_backward({x, s_in, noise_in, b_in, gy});
    ctx->saved_data["lrelu"] = lrelu;
    ctx->saved_data["gain"] = gain;
    ctx->saved_data["clamp"] = clamp;
    auto r = bias_act_backward_raw(x, s, noise, b, gy, p, true, true);
    return {r.gx, r.gs, r.gn, r.gb};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    at::Tensor s = present(saved[1]), noise = present(saved[2]), b = present(saved[3]);
    const auto& gy = saved[4];
    double clamp = ctx->saved_data["clamp"].toDouble();
    Spec p{ctx->saved_data["lrelu"].toBool(), static_cast<float>(ctx->saved_data["gain"].toDouble()), clamp >= 0,
           static_cast<float>(clamp)};
    const auto &ggx = grads[0], &ggs = grads[1], &ggn = grads[2], &ggb = grads[3];
    variable_list d;
    if (at::GradMode::is_enabled()) {
      d = epilogue_double_composite(x, s, noise, b, gy, p, ggx, ggs, ggn, ggb);
    } else {
      d = epilogue_double(x, s, noise, b, gy, p, ggx, ggs, ggn, ggb, ctx->needs_input_grad(0),
                          s.defined() && ctx->needs_input_grad(1), ctx->needs_input_grad(4));
    }
    at::Tensor none;
    return {d[0], s.defined() ? d[1] : none, none, none, d[2], none, none, none};
  }
};

// Outputs gx, gs [N, C].
struct ModulateGrad : public torch::autograd::Function<ModulateGrad> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& s, const at::Tensor& gy) {
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({x, s, gy});
    auto [gx, gs] = modulate_backward_raw(x, s, gy, true);
    return {gx, gs};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &s = saved[1], &gy = saved[2];
    variable_list d = at::GradMode::is_enabled()
                          ? modulate_double_composite(x, s, gy, grads[0], grads[1])
                          : modulate_double(x, s, gy, grads[0], grads[1], ctx->needs_input_grad(0),
                                            ctx->needs_input_grad(1), ctx->needs_input_grad(2));
    return {d[0], d[1], d[2]};
  }
};

}  // namespace

variable_list bias_act_backward_graph(const at::Tensor& x, const at::Tensor& s, const at::Tensor& noise,
                                      const at::Tensor& b, const at::Tensor& gy, Spec p, const bool need[4]) {
  auto out = EpilogueGrad::apply(x, or_empty(s, x), or_empty(noise, x), or_empty(b, x), gy, p.lrelu,
                                 static_cast<double>(p.gain), p.has_clamp ? static_cast<double>(p.clamp) : -1.0);
  at::Tensor gnoise, gb;
  if (need[2]) gnoise = out[2].reshape(noise_grad_shape(x)).sum_to_size(noise.sizes());
  if (need[3]) gb = out[3].to(at::kDouble).sum(0).to(at::kFloat);
  return {need[0] ? out[0] : at::Tensor(), need[1] ? out[1] : at::Tensor(), gnoise, gb};
}

variable_list modulate_backward_graph(const at::Tensor& x, const at::Tensor& s, const at::Tensor& gy) {
  return ModulateGrad::apply(x, s, gy);
}

}  // namespace sg2_fused
