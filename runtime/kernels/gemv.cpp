// y = x W^T for a few rows of x (a decode step's batch) and a row-major fp32 W (out, in), across ATen's threads.
// Built by runtime/cpu_kernels.py with -march=native, so the widest vectors the CPU has are used (AVX-512, else AVX2
// with FMA, else plain loops).
//
// Each weight row is read whole, then the next: W streams through in memory order, which the hardware prefetcher
// follows at full speed (interleaving four rows made four short streams, each ending at a page, and read 20% slower
// on one thread, 60% on two). A software prefetch 8 KB ahead of the stream reads it 4-7% faster on one thread, on
// 2 MB pages (runtime/huge_pages.py) and on 4 KB ones alike (2 and 4 KB ahead gain less, 16 and 32 KB less again;
// two rows streamed at once gained 3%). Four accumulators per row hide the FMA latency. A
// row's sum depends only on its own weights and x, never on the thread or the neighbours it lands with, so a TP
// slice or a fused projection gives each row the bits the whole layer gives it.
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <immintrin.h>

namespace {

constexpr int64_t kMaxBatch = 4;   // rows of x handled here; more go to the general GEMM
constexpr int64_t kChains = 4;     // independent accumulators per (weight row, x row)
constexpr int64_t kGrainRows = 64; // fewest weight rows a thread takes: a dispatch costs microseconds
constexpr int64_t kPrefetchBytes = 8192;  // how far ahead of the weight stream its lines are asked for

#if defined(__AVX512F__)
constexpr int64_t kWidth = 16;
using Vec = __m512;
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline float sum(Vec v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int64_t kWidth = 8;
using Vec = __m256;
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline float sum(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(_mm_hadd_ps(s, s));
}
#else
constexpr int64_t kWidth = 1;
using Vec = float;
inline Vec zero() { return 0.f; }
inline Vec load(const float* p) { return *p; }
inline Vec fma(Vec a, Vec b, Vec c) { return a * b + c; }
inline Vec add(Vec a, Vec b) { return a + b; }
inline float sum(Vec v) { return v; }
#endif

// weight row `row` (`in` floats) against the batch rows of x: y[b, o]
template <int64_t Batch>
void dot(const float* row, const float* x, float* y, int64_t in, int64_t out, int64_t o) {
  Vec acc[kChains][Batch];
  for (int64_t c = 0; c < kChains; ++c)
    for (int64_t b = 0; b < Batch; ++b) acc[c][b] = zero();
  constexpr int64_t kStep = kChains * kWidth;
  const int64_t chained = in - in % kStep, vectorized = in - in % kWidth;
  for (int64_t i = 0; i < chained; i += kStep) {
    // the lines this step reads, 8 KB on: past a row's end that is the next rows' (W is contiguous), past W's end a
    // prefetch is only a hint (it never faults)
    const char* ahead = reinterpret_cast<const char*>(row + i) + kPrefetchBytes;
    for (int64_t line = 0; line < kStep * int64_t(sizeof(float)); line += 64) __builtin_prefetch(ahead + line);
#pragma GCC unroll 4  // unrolled, the accumulators stay in registers (not spilled to the stack at every step)
    for (int64_t c = 0; c < kChains; ++c) {
      const Vec w = load(row + i + c * kWidth);
      for (int64_t b = 0; b < Batch; ++b) acc[c][b] = fma(w, load(x + b * in + i + c * kWidth), acc[c][b]);
    }
  }
  for (int64_t i = chained; i < vectorized; i += kWidth) {
    const Vec w = load(row + i);
    for (int64_t b = 0; b < Batch; ++b) acc[0][b] = fma(w, load(x + b * in + i), acc[0][b]);
  }
  for (int64_t b = 0; b < Batch; ++b) {
    float total = sum(add(add(acc[0][b], acc[1][b]), add(acc[2][b], acc[3][b])));
    for (int64_t i = vectorized; i < in; ++i) total += row[i] * x[b * in + i];
    y[b * out + o] = total;
  }
}

template <int64_t Batch>
void product(const float* w, const float* x, float* y, int64_t in, int64_t out) {
  at::parallel_for(0, out, kGrainRows, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) dot<Batch>(w + o * in, x, y, in, out, o);
  });
}

}  // namespace

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight) {
  TORCH_CHECK(weight.dtype() == torch::kFloat32 && x.dtype() == torch::kFloat32, "gemv: fp32 only");
  TORCH_CHECK(weight.is_contiguous() && x.dim() == 2 && x.size(1) == weight.size(1), "gemv: bad shapes");
  const int64_t batch = x.size(0), in = weight.size(1), out = weight.size(0);
  TORCH_CHECK(batch >= 1 && batch <= kMaxBatch, "gemv: batch of 1 to ", kMaxBatch);
  const auto xs = x.contiguous();
  auto y = torch::empty({batch, out}, x.options());
  const float* w = weight.data_ptr<float>();
  const float* v = xs.data_ptr<float>();
  float* r = y.data_ptr<float>();
  switch (batch) {
    case 1: product<1>(w, v, r, in, out); break;
    case 2: product<2>(w, v, r, in, out); break;
    case 3: product<3>(w, v, r, in, out); break;
    default: product<4>(w, v, r, in, out); break;
  }
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linear", &linear, "x W^T for 1 to 4 rows of x, fp32, W row-major");
  m.attr("max_batch") = kMaxBatch;
  m.attr("vector_width") = kWidth;
}
