// y = x W^T for a few rows of x (a decode step's batch) and a row-major fp32 W (out, in): each weight row is read
// once for every row of x, four weight rows at a time, across ATen's threads. Built by runtime/cpu_gemv.py with
// -march=native, so the widest vectors the CPU has are used (AVX-512, else AVX2 with FMA, else plain loops).
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <immintrin.h>

namespace {

constexpr int64_t kRows = 4;     // weight rows per block
constexpr int64_t kMaxBatch = 4; // rows of x handled here; more go to the general GEMM

#if defined(__AVX512F__)
constexpr int64_t kWidth = 16;
using Vec = __m512;
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float sum(Vec v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int64_t kWidth = 8;
using Vec = __m256;
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
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
inline float sum(Vec v) { return v; }
#endif

// rows [first, first + rows) of W against the batch rows of x: y[b, o]
template <int64_t Batch>
void block(const float* w, const float* x, float* y, int64_t in, int64_t out, int64_t first, int64_t rows) {
  Vec acc[kRows][Batch];
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < Batch; ++b) acc[r][b] = zero();
  const int64_t vectorized = in - in % kWidth;
  for (int64_t i = 0; i < vectorized; i += kWidth) {
    Vec xs[Batch];
    for (int64_t b = 0; b < Batch; ++b) xs[b] = load(x + b * in + i);
    for (int64_t r = 0; r < rows; ++r) {
      const Vec wv = load(w + (first + r) * in + i);
      for (int64_t b = 0; b < Batch; ++b) acc[r][b] = fma(wv, xs[b], acc[r][b]);
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < Batch; ++b) {
      float total = sum(acc[r][b]);
      for (int64_t i = vectorized; i < in; ++i) total += w[(first + r) * in + i] * x[b * in + i];
      y[b * out + first + r] = total;
    }
}

template <int64_t Batch>
void product(const float* w, const float* x, float* y, int64_t in, int64_t out) {
  const int64_t blocks = (out + kRows - 1) / kRows;
  at::parallel_for(0, blocks, 16, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t first = k * kRows;
      block<Batch>(w, x, y, in, out, first, std::min(kRows, out - first));
    }
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
