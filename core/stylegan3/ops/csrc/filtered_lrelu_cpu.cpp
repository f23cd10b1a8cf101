// Fused filtered leaky ReLU for CPU (float32, channels_last; 1-D up filter, 1-D or 2-D down filter).
//
// One pass over the input per output: bias -> polyphase upsample along x -> polyphase upsample along y
// -> leaky ReLU * gain -> clamp -> strided downsample along x -> strided downsample along y (or one
// strided 2-D pass for the R config's radial filter). Nothing at the upsampled rate ever leaves the
// cache: rows stream through two small ring buffers.
//
// Vectorised over channels: channels_last keeps `LANES` neighbouring channels of a pixel contiguous,
// so every filter tap is one scalar-times-vector FMA and the polyphase index arithmetic is done once
// per sample, not once per channel. Work items are (batch, channel block, band of output rows).
//
// Semantics per axis (NVIDIA's reference, in correlation form; the Python side flips / scales taps):
//   t[n]   = sum_k gu[k] * z[n + k - pad_lo],  z = x zero-stuffed by `up`  (n in [0, tmp_len))
//   out[m] = sum_k gd[k] * act(t)[down * m + k]                            (m in [0, out_len))

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// Index plan of one axis: which input samples and which sub-filter make each upsampled sample.
struct AxisPlan {
  int64_t in_len = 0, out_len = 0, tmp_len = 0;  // tmp_len: upsampled samples the down pass reads
  int64_t pad_lo = 0, padded_len = 0;            // zero samples before the input; padded input length
  std::vector<int64_t> first;                     // per tmp sample: first padded-input index it reads
  std::vector<int64_t> phase;                     // per tmp sample: which sub-filter (its first tap)
  std::vector<std::vector<float>> sub;            // sub-filter per phase: gu[kstart], gu[kstart+up], ...
  std::vector<float> down_taps;
  int64_t down = 1;
  int64_t max_sub_len = 0;

  AxisPlan(int64_t in_len_, int64_t up, int64_t down_, int64_t pad, int64_t out_len_,
           const std::vector<float>& gu, const std::vector<float>& gd)
      : in_len(in_len_), out_len(out_len_), down_taps(gd), down(down_) {
    const int64_t tu = static_cast<int64_t>(gu.size());
    tmp_len = down * (out_len - 1) + static_cast<int64_t>(gd.size());
    sub.resize(up);
    for (int64_t k0 = 0; k0 < up; ++k0) {
      for (int64_t k = k0; k < tu; k += up) sub[k0].push_back(gu[k]);
      max_sub_len = std::max<int64_t>(max_sub_len, static_cast<int64_t>(sub[k0].size()));
    }
    first.resize(tmp_len);
    phase.resize(tmp_len);
    int64_t lo = 0, hi = in_len;  // range of input indices touched, before padding
    for (int64_t n = 0; n < tmp_len; ++n) {
      const int64_t j0 = n - pad;                      // position in the zero-stuffed signal
      const int64_t k0 = ((-j0) % up + up) % up;       // first tap that lands on a real sample
      const int64_t i0 = (j0 + k0) / up;               // exact: j0 + k0 is a multiple of up
      first[n] = i0;
      phase[n] = k0;
      const int64_t taps = static_cast<int64_t>(sub[k0].size());
      if (taps > 0) {
        lo = std::min(lo, i0);
        hi = std::max(hi, i0 + taps);
      }
    }
    pad_lo = -lo;
    padded_len = hi - lo;
    for (auto& f : first) f += pad_lo;
  }
};

struct Params {
  int64_t batch, channels, in_h, in_w;
  float slope, gain, clamp;  // clamp < 0: none
  const AxisPlan* px;
  const AxisPlan* py;
  const float* x;     // [B, H, W, C]
  const float* bias;  // [C]
  float* out;         // [B, out_h, out_w, C]
  std::vector<float> down_2d;  // row-major [taps_y, taps_x] 2-D down filter, or empty (separable)
};

// The widest float vector this build's target has. A channel block is one such vector (or half of
// one for a small remainder), never wider: a vector-extension type wider than the hardware is split by
// GCC into pieces that live on the stack, which made the whole kernel ~10x slower on AVX2-only CPUs
// (measured by building this file with -mno-avx512f: 645 ms vs 66 ms per StyleGAN3-T 128 px frame).
#if defined(__AVX512F__)
constexpr int kNativeLanes = 16;
#elif defined(__AVX__)
constexpr int kNativeLanes = 8;
#else
constexpr int kNativeLanes = 4;  // SSE2, NEON
#endif

// A pixel's LANES channels as one SIMD value (GCC/Clang vector extension). Held in registers, unlike
// a float[LANES] accumulator, which GCC keeps on the stack and round-trips through memory on every tap.
template <int LANES>
struct Vec {
  typedef float type __attribute__((vector_size(LANES * sizeof(float)), aligned(sizeof(float))));
};

template <int LANES>
inline typename Vec<LANES>::type load(const float* p) {
  return *reinterpret_cast<const typename Vec<LANES>::type*>(p);
}

template <int LANES>
inline void store(float* p, typename Vec<LANES>::type v) {
  *reinterpret_cast<typename Vec<LANES>::type*>(p) = v;
}

template <int LANES>
inline typename Vec<LANES>::type activate(typename Vec<LANES>::type v, float slope, float gain, float clamp) {
  using V = typename Vec<LANES>::type;
  const V zero = V{};
  v = (v < zero ? v * slope : v) * gain;
  if (clamp >= 0.f) {
    const V hi = zero + clamp, lo = zero - clamp;
    v = v > hi ? hi : v;
    v = v < lo ? lo : v;
  }
  return v;
}

// Outputs are computed NB at a time: NB independent FMA chains hide the FMA latency (one accumulator
// would wait ~4 cycles per tap). Blocks of 8, then 4, 2 and 1 for the tail.
template <int LANES, int NB, class Emit>
inline int64_t fir_along_blocks(const float* src, int64_t stride, const float* h, int64_t taps, int64_t j,
                                int64_t count, Emit& emit) {
  using V = typename Vec<LANES>::type;
  for (; j + NB <= count; j += NB) {
    V a[NB];
#pragma GCC unroll 8
    for (int i = 0; i < NB; ++i) a[i] = V{};
    for (int64_t k = 0; k < taps; ++k) {
      const float* s = src + (j * stride + k) * LANES;
      const float hk = h[k];
#pragma GCC unroll 8
      for (int i = 0; i < NB; ++i) a[i] += hk * load<LANES>(s + i * stride * LANES);
    }
#pragma GCC unroll 8
    for (int i = 0; i < NB; ++i) emit(j + i, a[i]);
  }
  return j;
}

// Strided 1-D FIR along a row of pixel vectors; `emit(j, value)` takes each result:
//   out(j) = sum_k h[k] * src[(j * stride + k) * LANES],  j in [0, count)
template <int LANES, class Emit>
inline void fir_along(const float* src, int64_t stride, const float* h, int64_t taps, int64_t count, Emit emit) {
  int64_t j = fir_along_blocks<LANES, 8>(src, stride, h, taps, 0, count, emit);
  j = fir_along_blocks<LANES, 4>(src, stride, h, taps, j, count, emit);
  j = fir_along_blocks<LANES, 2>(src, stride, h, taps, j, count, emit);
  fir_along_blocks<LANES, 1>(src, stride, h, taps, j, count, emit);
}

template <int LANES, int NB, class Emit>
inline int64_t fir_across_blocks(const float* const* rows, const float* h, int64_t taps, int64_t j, int64_t count,
                                 Emit& emit) {
  using V = typename Vec<LANES>::type;
  for (; j + NB <= count; j += NB) {
    V a[NB];
#pragma GCC unroll 8
    for (int i = 0; i < NB; ++i) a[i] = V{};
    for (int64_t k = 0; k < taps; ++k) {
      const float* s = rows[k] + j * LANES;
      const float hk = h[k];
#pragma GCC unroll 8
      for (int i = 0; i < NB; ++i) a[i] += hk * load<LANES>(s + i * LANES);
    }
#pragma GCC unroll 8
    for (int i = 0; i < NB; ++i) emit(j + i, a[i]);
  }
  return j;
}

// 1-D FIR across rows (the y axis), pixel by pixel:
//   out(j) = sum_k h[k] * rows[k][j * LANES],  j in [0, count)
template <int LANES, class Emit>
inline void fir_across(const float* const* rows, const float* h, int64_t taps, int64_t count, Emit emit) {
  int64_t j = fir_across_blocks<LANES, 8>(rows, h, taps, 0, count, emit);
  j = fir_across_blocks<LANES, 4>(rows, h, taps, j, count, emit);
  j = fir_across_blocks<LANES, 2>(rows, h, taps, j, count, emit);
  fir_across_blocks<LANES, 1>(rows, h, taps, j, count, emit);
}

// One work item: channels [c0, c0 + LANES) of sample b, output rows [my0, my1).
template <int LANES>
void run_item(const Params& p, int64_t b, int64_t c0, int64_t my0, int64_t my1) {
  using V = typename Vec<LANES>::type;
  const AxisPlan& ax = *p.px;
  const AxisPlan& ay = *p.py;
  const bool down_2d = !p.down_2d.empty();
  const int64_t nc = std::min<int64_t>(LANES, p.channels - c0);
  const int64_t xw = ax.padded_len, tw = ax.tmp_len, ow = ax.out_len;
  const int64_t dw = down_2d ? tw : ow;  // ring rows: activated rows (2-D filter) or x-downsampled rows
  const int64_t ring_u = ay.max_sub_len + 1;
  const int64_t down_taps_y = static_cast<int64_t>(ay.down_taps.size());
  const int64_t ring_d = down_taps_y + 1;

  std::vector<float> xrow(xw * LANES, 0.f);       // one padded input row (+ bias), zero margins
  std::vector<float> uring(ring_u * tw * LANES);  // rows upsampled along x, keyed by padded input row
  std::vector<int64_t> uslot(ring_u, -1);
  std::vector<float> trow(tw * LANES);            // one fully upsampled, activated row
  std::vector<float> dring(ring_d * dw * LANES);  // rows for the y-down pass, keyed by tmp row
  std::vector<int64_t> dslot(ring_d, -1);
  alignas(64) float bias[LANES] = {0.f};
  for (int64_t l = 0; l < nc; ++l) bias[l] = p.bias[c0 + l];
  const float slope = p.slope, gain = p.gain, clamp = p.clamp;

  // Padded input row iy, upsampled along x, into its ring slot.
  auto make_u = [&](int64_t iy) -> const float* {
    const int64_t slot = iy % ring_u;
    float* u = uring.data() + slot * tw * LANES;
    if (uslot[slot] == iy) return u;
    uslot[slot] = iy;
    const int64_t y = iy - ay.pad_lo;
    if (y < 0 || y >= p.in_h) {  // zero padding: bias is not applied there (as in the reference)
      std::memset(u, 0, sizeof(float) * tw * LANES);
      return u;
    }
    const float* src = p.x + ((b * p.in_h + y) * p.in_w) * p.channels + c0;
    float* dst = xrow.data() + ax.pad_lo * LANES;
    if (nc == LANES) {
      const V bv = load<LANES>(bias);
      for (int64_t ix = 0; ix < p.in_w; ++ix) store<LANES>(dst + ix * LANES, load<LANES>(src + ix * p.channels) + bv);
    } else {
      for (int64_t ix = 0; ix < p.in_w; ++ix, src += p.channels, dst += LANES)
        for (int64_t l = 0; l < nc; ++l) dst[l] = src[l] + bias[l];
    }
    // Polyphase: samples n = r, r + up, ... share a sub-filter and read consecutive input pixels.
    const int64_t up = static_cast<int64_t>(ax.sub.size());
    for (int64_t r = 0; r < std::min(up, tw); ++r) {
      const std::vector<float>& h = ax.sub[ax.phase[r]];
      const int64_t count = (tw - r + up - 1) / up;
      float* out = u + r * LANES;
      fir_along<LANES>(xrow.data() + ax.first[r] * LANES, 1, h.data(), static_cast<int64_t>(h.size()), count,
                       [&](int64_t j, V v) { store<LANES>(out + j * up * LANES, v); });
    }
    return u;
  };

  // Tmp row n: upsample along y and activate; then downsample along x (separable down filter).
  auto make_d = [&](int64_t n) -> const float* {
    const int64_t slot = n % ring_d;
    float* d = dring.data() + slot * dw * LANES;
    if (dslot[slot] == n) return d;
    dslot[slot] = n;
    const std::vector<float>& h = ay.sub[ay.phase[n]];
    const float* rows[64];
    const int64_t taps = std::min<int64_t>(static_cast<int64_t>(h.size()), 64);
    for (int64_t k = 0; k < taps; ++k) rows[k] = make_u(ay.first[n] + k);
    float* t = down_2d ? d : trow.data();
    fir_across<LANES>(rows, h.data(), taps, tw,
                      [&](int64_t j, V v) { store<LANES>(t + j * LANES, activate<LANES>(v, slope, gain, clamp)); });
    if (!down_2d) {
      const std::vector<float>& g = ax.down_taps;
      fir_along<LANES>(trow.data(), ax.down, g.data(), static_cast<int64_t>(g.size()), ow,
                       [&](int64_t j, V v) { store<LANES>(d + j * LANES, v); });
    }
    return d;
  };

  auto emit_out = [&](float* dst, int64_t mx, V v) {
    float* o = dst + mx * p.channels;
    if (nc == LANES) {
      store<LANES>(o, v);
    } else {
      for (int64_t l = 0; l < nc; ++l) o[l] = v[l];
    }
  };
  const int64_t down_taps_x = static_cast<int64_t>(ax.down_taps.size());
  const float* rows[64];
  std::vector<float> orow(down_2d ? ow * LANES : 0);
  for (int64_t my = my0; my < my1; ++my) {
    for (int64_t k = 0; k < down_taps_y; ++k) rows[k] = make_d(ay.down * my + k);
    float* dst = p.out + ((b * ay.out_len + my) * ow) * p.channels + c0;
    if (!down_2d) {
      fir_across<LANES>(rows, ay.down_taps.data(), down_taps_y, ow, [&](int64_t mx, V v) { emit_out(dst, mx, v); });
      continue;
    }
    // 2-D (radial) down filter, evaluated only at the kept samples: one strided row FIR per filter row.
    std::fill(orow.begin(), orow.end(), 0.f);
    for (int64_t ky = 0; ky < down_taps_y; ++ky) {
      fir_along<LANES>(rows[ky], ax.down, p.down_2d.data() + ky * down_taps_x, down_taps_x, ow,
                       [&](int64_t mx, V v) { store<LANES>(orow.data() + mx * LANES, load<LANES>(orow.data() + mx * LANES) + v); });
    }
    for (int64_t mx = 0; mx < ow; ++mx) emit_out(dst, mx, load<LANES>(orow.data() + mx * LANES));
  }
}

std::vector<float> to_vector(const at::Tensor& t) {
  TORCH_CHECK(t.dim() == 1 && t.scalar_type() == at::kFloat && t.is_contiguous(), "taps: 1-D float32");
  const float* d = t.data_ptr<float>();
  return std::vector<float>(d, d + t.numel());
}

// x: [B, C, H, W] float32 channels_last; taps are correlation taps with gains already applied.
// down_x may be 2-D ([taps_y, taps_x], a non-separable down filter); down_y is then ignored.
at::Tensor filtered_lrelu_cpu(const at::Tensor& x, const at::Tensor& bias, const at::Tensor& up_x,
                              const at::Tensor& up_y, const at::Tensor& down_x, const at::Tensor& down_y,
                              int64_t up, int64_t down, int64_t pad_x, int64_t pad_y, int64_t out_w,
                              int64_t out_h, double slope, double gain, double clamp) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4, "x: 4-D float32 CPU");
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), "x: channels_last");
  TORCH_CHECK(bias.numel() == x.size(1) && bias.is_contiguous() && bias.scalar_type() == at::kFloat, "bias: [C]");
  TORCH_CHECK(up >= 1 && down >= 1 && out_w >= 1 && out_h >= 1, "bad factors or sizes");
  const bool down_2d = down_x.dim() == 2;
  TORCH_CHECK(down_x.scalar_type() == at::kFloat && down_x.is_contiguous(), "down_x: float32, contiguous");
  const int64_t down_taps_y = down_2d ? down_x.size(0) : down_y.numel();
  const int64_t down_taps_x = down_2d ? down_x.size(1) : down_x.numel();
  TORCH_CHECK(down_taps_y <= 64 && up_y.numel() <= 64 * up, "filters longer than supported");
  const int64_t batch = x.size(0), channels = x.size(1), in_h = x.size(2), in_w = x.size(3);
  const std::vector<float> gd_x = down_2d ? std::vector<float>(down_taps_x, 0.f) : to_vector(down_x);
  const std::vector<float> gd_y = down_2d ? std::vector<float>(down_taps_y, 0.f) : to_vector(down_y);
  const AxisPlan px(in_w, up, down, pad_x, out_w, to_vector(up_x), gd_x);
  const AxisPlan py(in_h, up, down, pad_y, out_h, to_vector(up_y), gd_y);
  at::Tensor out = at::empty({batch, channels, out_h, out_w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));

  Params p{batch, channels, in_h, in_w, static_cast<float>(slope), static_cast<float>(gain),
           static_cast<float>(clamp), &px, &py, x.data_ptr<float>(), bias.data_ptr<float>(), out.data_ptr<float>(), {}};
  if (down_2d) p.down_2d.assign(down_x.data_ptr<float>(), down_x.data_ptr<float>() + down_x.numel());

  // Channel blocks of one native vector (16 lanes with AVX-512, 8 with AVX2); a remainder of half a
  // vector or less gets a half-width block, so 38 channels cost 40 lanes with AVX-512, not 48.
  struct Block { int64_t c0; int lanes; };
  std::vector<Block> blocks;
  for (int64_t c0 = 0; c0 < channels;) {
    const int lanes = channels - c0 > kNativeLanes / 2 ? kNativeLanes : kNativeLanes / 2;
    blocks.push_back({c0, lanes});
    c0 += lanes;
  }
  const int64_t nblocks = static_cast<int64_t>(blocks.size());
  // Enough items to keep every thread busy; each band re-derives a few rows at its top, so not too many.
  const int64_t want = 4 * static_cast<int64_t>(at::get_num_threads());
  int64_t bands = std::max<int64_t>(1, (want + batch * nblocks - 1) / (batch * nblocks));
  bands = std::min<int64_t>(bands, std::max<int64_t>(1, out_h / 16));
  const int64_t rows_per_band = (out_h + bands - 1) / bands;
  const int64_t items = batch * nblocks * bands;
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      const int64_t band = it % bands, blk = (it / bands) % nblocks, b = it / (bands * nblocks);
      const int64_t my0 = band * rows_per_band, my1 = std::min(out_h, my0 + rows_per_band);
      if (my0 >= my1) continue;
      if (blocks[blk].lanes == kNativeLanes) {
        run_item<kNativeLanes>(p, b, blocks[blk].c0, my0, my1);
      } else {
        run_item<kNativeLanes / 2>(p, b, blocks[blk].c0, my0, my1);
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(soundvj_ops, m) {
  m.def(
      "filtered_lrelu_cpu(Tensor x, Tensor bias, Tensor up_x, Tensor up_y, Tensor down_x, Tensor down_y, "
      "int up, int down, int pad_x, int pad_y, int out_w, int out_h, float slope, float gain, float clamp) -> Tensor",
      &filtered_lrelu_cpu);
}
