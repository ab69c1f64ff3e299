// 3x3, stride 1, padding 1 convolutions in fp32 by Winograd's minimal filtering F(4x4, 3x3) (Lavin and Gray,
// "Fast Algorithms for Convolutional Neural Networks", 2016): each 4x4 output tile takes 36 multiplications per
// input/output channel pair instead of 144. The input's 6x6 tiles and the weights are transformed, the 36 tile
// positions become 36 independent matrix products (MKL's sgemm, one thread per range of tile blocks), and the
// products are transformed back.
// The same three steps give the input gradient (the transposed, flipped weights) and the weight gradient (the
// gradient's tiles take the filter's place). Activations are channels-last, so every transform is a vector loop
// over contiguous channels.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "fused_common.h"

namespace sg2_wino {
namespace {

constexpr int64_t CB = 16;  // channels per vector block
#define SG2_INLINE_LAMBDA __attribute__((always_inline))

// Transforms along one axis of a tile, on CB channels at once (CBN: that many, a compile-time count; 0: cb_rt).
// `s` and `d` are the strides (in floats) between the tile's rows of channels in the source and destination.

// B^T d: a 6-point input column (six rows of channels) to its 6 transform points.
template <int64_t CBN>
SG2_INLINE void bt6p(const float* const* x, float* y, int64_t d, int64_t cb_rt) {
  const int64_t cb = CBN ? CBN : cb_rt;
  const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3], *x4 = x[4], *x5 = x[5];
#pragma omp simd
  for (int64_t c = 0; c < cb; ++c) {
    float d0 = x0[c], d1 = x1[c], d2 = x2[c], d3 = x3[c], d4 = x4[c], d5 = x5[c];
    y[c] = 4.f * d0 - 5.f * d2 + d4;
    y[d + c] = -4.f * (d1 + d2) + d3 + d4;
    y[2 * d + c] = 4.f * (d1 - d2) - d3 + d4;
    y[3 * d + c] = 2.f * (d3 - d1) - d2 + d4;
    y[4 * d + c] = 2.f * (d1 - d3) - d2 + d4;
    y[5 * d + c] = 4.f * d1 - 5.f * d3 + d5;
  }
}

// bt6p on rows `s` floats apart.
template <int64_t CBN>
SG2_INLINE void bt6(const float* x, int64_t s, float* y, int64_t d, int64_t cb) {
  const float* rows[6] = {x, x + s, x + 2 * s, x + 3 * s, x + 4 * s, x + 5 * s};
  bt6p<CBN>(rows, y, d, cb);
}

// A^T m: 6 transform points to the 4 outputs of a column.
template <int64_t CBN>
SG2_INLINE void at6(const float* x, int64_t s, float* y, int64_t d, int64_t cb_rt) {
  const int64_t cb = CBN ? CBN : cb_rt;
#pragma omp simd
  for (int64_t c = 0; c < cb; ++c) {
    float m0 = x[c], m1 = x[s + c], m2 = x[2 * s + c], m3 = x[3 * s + c], m4 = x[4 * s + c], m5 = x[5 * s + c];
    float p12 = m1 + m2, n12 = m1 - m2, p34 = m3 + m4, n34 = m3 - m4;
    y[c] = m0 + p12 + p34;
    y[d + c] = n12 + 2.f * n34;
    y[2 * d + c] = p12 + 4.f * p34;
    y[3 * d + c] = n12 + 8.f * n34 + m5;
  }
}

// A g: a 4-point gradient column (four rows of channels) to the 6 transform points (the weight gradient's "filter"
// side).
template <int64_t CBN>
SG2_INLINE void a4p(const float* const* x, float* y, int64_t d, int64_t cb_rt) {
  const int64_t cb = CBN ? CBN : cb_rt;
  const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];
#pragma omp simd
  for (int64_t c = 0; c < cb; ++c) {
    float g0 = x0[c], g1 = x1[c], g2 = x2[c], g3 = x3[c];
    float p02 = g0 + g2, p13 = g1 + g3, q02 = g0 + 4.f * g2, q13 = 2.f * g1 + 8.f * g3;
    y[c] = g0;
    y[d + c] = p02 + p13;
    y[2 * d + c] = p02 - p13;
    y[3 * d + c] = q02 + q13;
    y[4 * d + c] = q02 - q13;
    y[5 * d + c] = g3;
  }
}

// a4p on rows `s` floats apart.
template <int64_t CBN>
SG2_INLINE void a4(const float* x, int64_t s, float* y, int64_t d, int64_t cb) {
  const float* rows[4] = {x, x + s, x + 2 * s, x + 3 * s};
  a4p<CBN>(rows, y, d, cb);
}

struct Grid {
  int64_t N, H, W, TH, TW, T;
};

Grid grid(const at::Tensor& x) {
  int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  int64_t TH = (H + 3) / 4, TW = (W + 3) / 4;
  return {N, H, W, TH, TW, N * TH * TW};
}

// Tiles per block: a block's transformed inputs and products stay in the core's cache. At 128 channels, 32x32,
// batch 32, the forward took 15.7 ms with 32, 13.3 with 64 and 13.6 with 128.
constexpr int64_t TB = 64;

// Floats between a block's 36 transform planes of `ch` channels: TB * ch, plus a cache line so that the planes
// (a multiple of 4 KiB apart otherwise) do not all fall into the same L1 set.
inline int64_t plane(int64_t ch) { return TB * ch + 16; }

// ---- BLAS: MKL's sgemm, looked up at run time (libtorch exports it where it has MKL; without it the direct
// convolution runs), each call single-threaded inside the tile loop's parallel region.
using SgemmFn = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                         const int*, const float*, const int*, const float*, float*, const int*);
using SetThreadsFn = int (*)(int);

void* lookup(const char* name) { return dlsym(RTLD_DEFAULT, name); }

struct Blas {
  SgemmFn sgemm = reinterpret_cast<SgemmFn>(lookup("sgemm_"));
  SetThreadsFn set_threads = reinterpret_cast<SetThreadsFn>(lookup("MKL_Set_Num_Threads_Local"));
  bool complete() const { return sgemm && set_threads; }
};

const Blas& blas() {
  static const Blas b;
  return b;
}

// Row-major C[M, N] = A B + beta C, or A^T B with `ta` (A stored [K, M]).
void gemm(int M, int N, int K, const float* A, int lda, bool ta, const float* B, int ldb, float* C, int ldc,
          float beta) {
  const float one = 1.f;
  // Column-major, this is C^T = B^T A^T.
  blas().sgemm("N", ta ? "T" : "N", &N, &M, &K, &one, B, &ldb, A, &lda, &beta, C, &ldc);
}

// Per-thread scratch that grows as needed and lives with the thread (no page faults per call).
float* scratch(int slot, size_t floats) {
  thread_local std::vector<float> bufs[2];
  auto& b = bufs[slot];
  if (b.size() < floats) b.resize(floats);
  return b.data();
}

// MKL runs one thread per caller inside the region (restored on exit).
struct OneBlasThread {
  int before = blas().set_threads(1);
  ~OneBlasThread() { blas().set_threads(before); }
};

SG2_INLINE void copy(const float* src, float* dst, int64_t n) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) dst[c] = src[c];
}

SG2_INLINE void zero(float* dst, int64_t n) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) dst[c] = 0.f;
}

// Runs f(width, c0, cb) on the full channel blocks with width = integral_constant<CB>, then on the last partial one
// with width 0 and cb its size, so the loops over a full block have a constant trip count.
template <typename F>
SG2_INLINE void channel_blocks(int64_t C, F&& f) {
  int64_t c0 = 0;
  for (; c0 + CB <= C; c0 += CB) f(std::integral_constant<int64_t, CB>{}, c0, CB);
  if (c0 < C) f(std::integral_constant<int64_t, 0>{}, c0, C - c0);
}

// The K x K patch of image n (channels-last, C channels) with its corner at (y0, x0): pointers to its pixels where
// they lie in the image, to a zero block where it leaves the image, and per pixel whether a channel offset applies.
template <int64_t K>
SG2_INLINE void patch(const float* x, const Grid& g, int64_t C, int64_t n, int64_t y0, int64_t x0, const float** px,
                      int64_t* step) {
  alignas(64) static const float zeros[CB] = {};
  for (int64_t i = 0; i < K; ++i) {
    int64_t yy = y0 + i;
    for (int64_t j = 0; j < K; ++j) {
      int64_t xx = x0 + j;
      bool in = yy >= 0 && yy < g.H && xx >= 0 && xx < g.W;
      px[i * K + j] = in ? x + ((n * g.H + yy) * g.W + xx) * C : zeros;
      step[i * K + j] = in;
    }
  }
}

// Tiles [t0, t0 + nb) to the 36 transform planes (rows nb.. zero), the patch's columns by `column`, then its rows
// by `row`, both of the forms above (K points in, 6 out). Inputs: the 6x6 patch at (4 ty - 1, 4 tx - 1) of x, B^T d
// B. Output gradients: the 4x4 tile at (4 ty, 4 tx), A g A^T.
template <int64_t K, typename Column, typename Row>
SG2_INLINE void tiles_to_planes(const float* x, float* v, const Grid& g, int64_t C, int64_t t0, int64_t nb,
                                int64_t offset, Column column, Row row) {
  alignas(64) float tmp[6 * K * CB];
  const float* px[K * K];
  int64_t step[K * K];
  for (int64_t b = 0; b < nb; ++b) {
    int64_t t = t0 + b, n = t / (g.TH * g.TW), ty = (t / g.TW) % g.TH, tx = t % g.TW;
    patch<K>(x, g, C, n, 4 * ty + offset, 4 * tx + offset, px, step);
    channel_blocks(C, [&](auto width, int64_t c0, int64_t cb_rt) SG2_INLINE_LAMBDA {
      constexpr int64_t N_ = decltype(width)::value;
      const int64_t cb = N_ ? N_ : cb_rt;
      for (int64_t j = 0; j < K; ++j) {  // columns: tmp[6][K]
        const float* col[K];
        for (int64_t i = 0; i < K; ++i) col[i] = px[i * K + j] + step[i * K + j] * c0;
        column(width, col, tmp + j * CB, K * CB, cb);
      }
      for (int64_t i = 0; i < 6; ++i) row(width, tmp + i * K * CB, CB, v + i * 6 * plane(C) + b * C + c0, plane(C), cb);
    });
  }
  for (int64_t k = 0; k < 36 && nb < TB; ++k) zero(v + k * plane(C) + nb * C, (TB - nb) * C);
}

// Tiles [t0, t0 + nb) of channels-last x to V[36, TB, C]: V[i * 6 + j, t] = (B^T d_t B)[i, j] for the 6x6 patch
// d_t (rows 4 ty - 1 .. 4 ty + 4, zero outside the image).
SG2_CLONES void input_tiles(const float* x, float* v, const Grid& g, int64_t C, int64_t t0, int64_t nb) {
  tiles_to_planes<6>(
      x, v, g, C, t0, nb, -1,
      [](auto w, const float* const* c, float* y, int64_t d, int64_t cb)
          SG2_INLINE_LAMBDA { bt6p<decltype(w)::value>(c, y, d, cb); },
      [](auto w, const float* r, int64_t s, float* y, int64_t d, int64_t cb)
          SG2_INLINE_LAMBDA { bt6<decltype(w)::value>(r, s, y, d, cb); });
}

// The output gradient's tiles to Gt[36, TB, O]: (A g_t A^T) for the 4x4 tile g_t (zero outside the image).
SG2_CLONES void grad_tiles(const float* gy, float* v, const Grid& g, int64_t O, int64_t t0, int64_t nb) {
  tiles_to_planes<4>(
      gy, v, g, O, t0, nb, 0,
      [](auto w, const float* const* c, float* y, int64_t d, int64_t cb)
          SG2_INLINE_LAMBDA { a4p<decltype(w)::value>(c, y, d, cb); },
      [](auto w, const float* r, int64_t s, float* y, int64_t d, int64_t cb)
          SG2_INLINE_LAMBDA { a4<decltype(w)::value>(r, s, y, d, cb); });
}

// M[36, TB, O] of tiles [t0, t0 + nb) to the channels-last output: y_t = A^T m_t A, cropped to the image.
SG2_CLONES void output_tiles(const float* m, float* y, const Grid& g, int64_t O, int64_t t0, int64_t nb) {
  alignas(64) float tmp[24 * CB], out[16 * CB];
  for (int64_t b = 0; b < nb; ++b) {
    int64_t t = t0 + b, n = t / (g.TH * g.TW), ty = (t / g.TW) % g.TH, tx = t % g.TW;
    bool inside = 4 * ty + 4 <= g.H && 4 * tx + 4 <= g.W;
    float* corner = y + ((n * g.H + 4 * ty) * g.W + 4 * tx) * O;
    channel_blocks(O, [&](auto width, int64_t c0, int64_t cb_rt) SG2_INLINE_LAMBDA {
      constexpr int64_t N_ = decltype(width)::value;
      const int64_t cb = N_ ? N_ : cb_rt;
      for (int64_t j = 0; j < 6; ++j) {  // columns: tmp[4][6]
        at6<N_>(m + j * plane(O) + b * O + c0, 6 * plane(O), tmp + j * CB, 6 * CB, cb);
      }
      if (inside) {
        for (int64_t i = 0; i < 4; ++i) at6<N_>(tmp + i * 6 * CB, CB, corner + i * g.W * O + c0, O, cb);
        return;
      }
      for (int64_t i = 0; i < 4; ++i) at6<N_>(tmp + i * 6 * CB, CB, out + i * 4 * CB, CB, cb);  // [4][4]
      for (int64_t i = 0; i < 4 && 4 * ty + i < g.H; ++i) {
        for (int64_t j = 0; j < 4 && 4 * tx + j < g.W; ++j) {
          copy(out + (i * 4 + j) * CB, corner + (i * g.W + j) * O + c0, cb);
        }
      }
    });
  }
}

at::Tensor channels_last(const at::Tensor& x) { return x.contiguous(at::MemoryFormat::ChannelsLast); }

// GG[i * 6 + j, a * 3 + b] = G[i, a] G[j, b]: the filter transform G w G^T as one matrix on the 9 taps (its
// entries computed in double, then rounded once). Never freed: no destructor runs after libtorch's at exit.
const at::Tensor& gg() {
  static const at::Tensor* m = new at::Tensor([] {
    const double G[6][3] = {{1. / 4, 0, 0},           {-1. / 6, -1. / 6, -1. / 6}, {-1. / 6, 1. / 6, -1. / 6},
                            {1. / 24, 1. / 12, 1. / 6}, {1. / 24, -1. / 12, 1. / 6},  {0, 0, 1}};
    auto t = at::empty({36, 9}, at::kDouble);
    double* p = t.data_ptr<double>();
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 6; ++j)
        for (int a = 0; a < 3; ++a)
          for (int b = 0; b < 3; ++b) p[(i * 6 + j) * 9 + a * 3 + b] = G[i][a] * G[j][b];
    return t.to(at::kFloat);
  }());
  return *m;
}

// U[36, C, O] = G w[o, c] G^T for weights [O, C, 3, 3]; `transposed` takes the input gradient's weights instead
// (w[o, c] flipped, with C and O exchanged): U[36, O, C].
at::Tensor weight_transform(const at::Tensor& w, bool transposed) {
  auto taps = transposed ? w.flip({2, 3}).permute({2, 3, 0, 1}) : w.permute({2, 3, 1, 0});  // [3, 3, rows, cols]
  int64_t rows = taps.size(2), cols = taps.size(3);
  return at::mm(gg(), taps.reshape({9, rows * cols})).reshape({36, rows, cols});
}

// Splits the tiles into blocks of TB, each thread taking a contiguous range of blocks.
template <typename F>
void over_blocks(const Grid& g, F&& f) {
  int64_t blocks = (g.T + TB - 1) / TB;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    OneBlasThread one;
    f(b0, b1);
  });
}

// y = conv2d(x, w, padding 1), or with `transposed` the input gradient conv_transpose2d(x, w, padding 1).
at::Tensor conv_raw(const at::Tensor& x_in, const at::Tensor& w, bool transposed) {
  auto x = channels_last(x_in);
  Grid g = grid(x);
  int64_t C = x.size(1), O = transposed ? w.size(1) : w.size(0);
  auto u = weight_transform(w, transposed);
  auto y = at::empty({g.N, O, g.H, g.W}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const float *px = x.data_ptr<float>(), *pu = u.data_ptr<float>();
  float* py = y.data_ptr<float>();
  over_blocks(g, [&](int64_t b0, int64_t b1) {
    float* v = scratch(0, 36 * plane(C));
    float* m = scratch(1, 36 * plane(O));
    for (int64_t blk = b0; blk < b1; ++blk) {
      int64_t t0 = blk * TB, nb = std::min(TB, g.T - t0);
      input_tiles(px, v, g, C, t0, nb);
      for (int64_t k = 0; k < 36; ++k) gemm(TB, O, C, v + k * plane(C), C, false, pu + k * C * O, O, m + k * plane(O), O, 0.f);
      output_tiles(m, py, g, O, t0, nb);
    }
  });
  return y;
}

// The weight gradient of conv2d(x, w, padding 1) for the output gradient gy: [O, C, 3, 3].
at::Tensor weight_grad_raw(const at::Tensor& x_in, const at::Tensor& gy_in) {
  auto x = channels_last(x_in);
  auto gy = channels_last(gy_in);
  Grid g = grid(x);
  int64_t C = x.size(1), O = gy.size(1);
  int threads = at::get_num_threads();
  // One accumulator per thread, summed in a fixed order: the result does not depend on scheduling.
  auto acc = at::zeros({threads, 36, O, C}, x.options());
  const float *px = x.data_ptr<float>(), *pg = gy.data_ptr<float>();
  float* pacc = acc.data_ptr<float>();
  over_blocks(g, [&](int64_t b0, int64_t b1) {
    float* v = scratch(0, 36 * plane(C));
    float* gt = scratch(1, 36 * plane(O));
    float* mw = pacc + at::get_thread_num() * 36 * O * C;
    for (int64_t blk = b0; blk < b1; ++blk) {
      int64_t t0 = blk * TB, nb = std::min(TB, g.T - t0);
      input_tiles(px, v, g, C, t0, nb);
      grad_tiles(pg, gt, g, O, t0, nb);
      for (int64_t k = 0; k < 36; ++k) gemm(O, C, nb, gt + k * plane(O), O, true, v + k * plane(C), C, mw + k * O * C, C, 1.f);
    }
  });
  // G^T M G for every (o, c): the filter transform's transpose, [9, 36] x [36, O * C].
  auto mw = threads == 1 ? acc.reshape({36, O * C}) : acc.sum(0).reshape({36, O * C});
  return at::mm(gg().t(), mw).reshape({3, 3, O, C}).permute({2, 3, 0, 1}).contiguous();
}

// The weight gradient, by Winograd where the image has enough tiles to pay (16x16 and up), else ATen's.
at::Tensor weight_grad(const at::Tensor& x, const at::Tensor& gy, const at::Tensor& w) {
  if (x.size(2) * x.size(3) >= 256) return weight_grad_raw(x, gy);
  return std::get<1>(at::convolution_backward(gy, x, w, at::OptionalIntArrayRef(), {1, 1}, {1, 1}, {1, 1}, false,
                                              {0, 0}, 1, {false, true, false}));
}

at::Tensor sum_defined(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined()) return b;
  return b.defined() ? a + b : a;
}

// The gradients (gx, gw) of conv2d(x, w, padding 1) for gy, as an op that can be differentiated again (R1 and
// path length differentiate them): gx = conv_transpose(gy, w) and gw = wgrad(x, gy) are bilinear, so their
// derivatives are the same three convolutions again. A gradient not asked for comes as an empty tensor.
struct WinogradConvGrad : public torch::autograd::Function<WinogradConvGrad> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gy,
                                                const at::Tensor& x, const at::Tensor& w, bool need_gx,
                                                bool need_gw) {
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({gy, x, w});
    auto empty = at::empty({0}, x.options());
    return {need_gx ? conv_raw(gy, w, true) : empty, need_gw ? weight_grad(x, gy, w) : empty};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &gy = saved[0], &x = saved[1], &w = saved[2];
    auto ggx = sg2_fused::present(grads[0]), ggw = sg2_fused::present(grads[1]);
    bool higher = at::GradMode::is_enabled();  // a third order: ATen's differentiable ops
    auto fwd = [&](const at::Tensor& a, const at::Tensor& k) {
      return higher ? at::conv2d(a, k, {}, 1, 1) : conv_raw(a, k, false);
    };
    at::Tensor d_gy, d_x, d_w;
    if (ctx->needs_input_grad(0)) {
      d_gy = sum_defined(ggx.defined() ? fwd(ggx, w) : at::Tensor(), ggw.defined() ? fwd(x, ggw) : at::Tensor());
    }
    if (ctx->needs_input_grad(1) && ggw.defined()) {
      d_x = higher ? at::conv_transpose2d(gy, ggw, {}, 1, 1) : conv_raw(gy, ggw, true);
    }
    if (ctx->needs_input_grad(2) && ggx.defined()) {
      d_w = higher ? std::get<1>(at::convolution_backward(gy, ggx, w, at::OptionalIntArrayRef(), {1, 1}, {1, 1},
                                                          {1, 1}, false, {0, 0}, 1, {false, true, false}))
                   : weight_grad(ggx, gy, w);
    }
    return {d_gy, d_x, d_w, at::Tensor(), at::Tensor()};
  }
};

struct WinogradConv : public torch::autograd::Function<WinogradConv> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w) {
    ctx->save_for_backward({x, w});
    return conv_raw(x, w, false);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1];
    const auto& gy = grads[0];
    bool gx_needed = ctx->needs_input_grad(0), gw_needed = ctx->needs_input_grad(1);
    if (at::GradMode::is_enabled()) {
      // Under create_graph: gradients that can be differentiated again.
      auto r = WinogradConvGrad::apply(gy, x, w, gx_needed, gw_needed);
      return {sg2_fused::present(r[0]), sg2_fused::present(r[1])};
    }
    return {gx_needed ? conv_raw(gy, w, true) : at::Tensor(), gw_needed ? weight_grad(x, gy, w) : at::Tensor()};
  }
};

}  // namespace

// Whether conv3x3 takes (x, w) and pays: fp32 on the CPU with a BLAS, 4-D x of at least 8x8 pixels (below,
// oneDNN's direct convolution was faster), a 3x3 weight whose input channels match.
bool supports(const at::Tensor& x, const at::Tensor& w) {
  return blas().complete() && x.device().is_cpu() && w.device().is_cpu() && x.scalar_type() == at::kFloat &&
         w.scalar_type() == at::kFloat && x.dim() == 4 && w.dim() == 4 && w.size(2) == 3 && w.size(3) == 3 &&
         w.size(1) == x.size(1) && x.size(2) * x.size(3) >= 64 && x.numel() > 0;
}

at::Tensor conv3x3(const at::Tensor& x, const at::Tensor& w) { return WinogradConv::apply(x, w); }

}  // namespace sg2_wino

extern "C" {

// conv2d(x, w, padding 1) by Winograd (an autograd op: first-order gradients by Winograd, higher orders by
// ATen); 0 and no output when the operands do not fit, -1 on error.
int sg2_wino_conv3x3(at::Tensor* x, at::Tensor* w, at::Tensor** out, char* err, size_t len) {
  try {
    if (!sg2_wino::supports(*x, *w)) return 0;
    *out = new at::Tensor(sg2_wino::conv3x3(*x, *w));
    return 1;
  } catch (const std::exception& e) {
    sg2_fused::copy_message(e.what(), err, len);
    return -1;
  }
}

}  // extern "C"
