// y = x W^T for a few rows of fp32 x (a decode step's batch) against a weight-only quantized W read as
// runtime/quantize.py's WeightOnlyLinear holds it: int8 codes (out, in), or int4 codes two to a byte (out, in / 2,
// the even column in the low nibble); one scale per group of `group` columns (out, in / group); a zero point per
// group (out, in / group) or none (0 for int8, 8 for int4); w = (q - zero) * scale.
//
// Per group and weight row, sum (q - zero) * x in fp32 vectors, then add the group's scale times that vector to
// the row's running vector: one multiply per group, not per weight. The zero point is not subtracted weight by
// weight: the group's vector starts at -zero * (the group's x summed lane by lane, taken once per call). Four weight rows per block, across ATen's threads. Each row's sum is
// taken the same way whatever block or tensor-parallel slice it lands in (groups never straddle a slice), so a
// TP run decodes the tokens of the single process. Built by runtime/cpu_linear.py with -march=native.
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <immintrin.h>

#include <cmath>

namespace {

constexpr int64_t kRows = 4;      // weight rows per block
constexpr int64_t kMaxBatch = 4;  // rows of x handled here; more go to the dequantized GEMM

#if defined(__AVX512F__)
constexpr int64_t kWidth = 16;
using Vec = __m512;
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
inline Vec broadcast(float s) { return _mm512_set1_ps(s); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float sum(Vec v) { return _mm512_reduce_add_ps(v); }
inline Vec int8s(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline void nibbles(const uint8_t* p, Vec& low, Vec& high) {
  const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  low = _mm512_cvtepi32_ps(_mm512_and_si512(bytes, _mm512_set1_epi32(15)));
  high = _mm512_cvtepi32_ps(_mm512_srli_epi32(bytes, 4));
}
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int64_t kWidth = 8;
using Vec = __m256;
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
inline Vec broadcast(float s) { return _mm256_set1_ps(s); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float sum(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(_mm_hadd_ps(s, s));
}
inline Vec int8s(const uint8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline void nibbles(const uint8_t* p, Vec& low, Vec& high) {
  const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  low = _mm256_cvtepi32_ps(_mm256_and_si256(bytes, _mm256_set1_epi32(15)));
  high = _mm256_cvtepi32_ps(_mm256_srli_epi32(bytes, 4));
}
#else
constexpr int64_t kWidth = 1;
using Vec = float;
inline Vec zero() { return 0.f; }
inline Vec load(const float* p) { return *p; }
inline Vec broadcast(float s) { return s; }
inline Vec fma(Vec a, Vec b, Vec c) { return a * b + c; }
inline float sum(Vec v) { return v; }
inline Vec int8s(const uint8_t* p) { return static_cast<int8_t>(*p); }
inline void nibbles(const uint8_t* p, Vec& low, Vec& high) {
  low = *p & 15;
  high = *p >> 4;
}
#endif

// How a row of codes is read: kStep columns at a time as kVectors vectors of floats, against x laid out to match.
// int4 reads kWidth bytes as their low nibbles (the step's even columns) and their high nibbles (its odd columns),
// so x is handed over with each step's even columns first, then its odd ones (see `interleaved`): no shuffles.
template <int Bits>
struct Codes;

template <>
struct Codes<8> {
  static constexpr int64_t kVectors = 1;
  static int64_t bytes(int64_t column) { return column; }
  static void read(const uint8_t* row, int64_t column, Vec* out) { out[0] = int8s(row + column); }
  static float at(const uint8_t* row, int64_t column) { return static_cast<int8_t>(row[column]); }
};

template <>
struct Codes<4> {
  static constexpr int64_t kVectors = 2;
  static int64_t bytes(int64_t column) { return column / 2; }
  static void read(const uint8_t* row, int64_t column, Vec* out) { nibbles(row + bytes(column), out[0], out[1]); }
  static float at(const uint8_t* row, int64_t column) { return (row[bytes(column)] >> (column % 2 * 4)) & 15; }
};

template <int Bits>
constexpr int64_t kStep = Codes<Bits>::kVectors * kWidth;

// The columns of each group that the vector loop reads; the rest of the group is summed one column at a time.
template <int Bits>
int64_t vectorized(int64_t group) {
  return group - group % kStep<Bits>;
}

struct Problem {
  const uint8_t* codes;
  int64_t row_bytes;
  const float* x;        // (batch, in), each group laid out as Codes<Bits> reads it
  const float* scale;    // (out, groups)
  const float* zero;     // (out, groups), or null: every zero point is `symmetric_zero`
  float symmetric_zero;
  const float* x_lanes;  // (batch, groups, kWidth): see `lane_sums`; null where every zero point is 0
  float* y;              // (batch, out)
  int64_t in, out, group, groups;
};

inline float zero_point(const Problem& p, int64_t row, int64_t group) {
  return p.zero ? p.zero[row * p.groups + group] : p.symmetric_zero;
}

// rows [first, first + Rows) of W against the batch rows of x (Rows a constant: the accumulators stay in registers)
template <int Bits, int64_t Batch, int64_t Rows>
void block(const Problem& p, int64_t first) {
  using C = Codes<Bits>;
  const int64_t group = p.group, groups = p.groups, in = p.in, vector_columns = vectorized<Bits>(group);
  const float* x = p.x;
  const int64_t ahead = Rows * p.row_bytes;  // the same row of the next block: a block's rows are short streams
  const uint8_t* codes[Rows];
  const float* scales[Rows];
  for (int64_t r = 0; r < Rows; ++r) {
    codes[r] = p.codes + (first + r) * p.row_bytes;
    scales[r] = p.scale + (first + r) * groups;
  }
  Vec total[Rows][Batch];
  for (int64_t r = 0; r < Rows; ++r)
    for (int64_t b = 0; b < Batch; ++b) total[r][b] = zero();
  for (int64_t g = 0, start = 0; g < groups; ++g, start += group) {
    Vec part[Rows][Batch];  // sum (q - zero) x over the group: starts at -zero * (the group's x, lane by lane)
    for (int64_t r = 0; r < Rows; ++r)
      for (int64_t b = 0; b < Batch; ++b)
        part[r][b] = p.x_lanes ? fma(broadcast(-zero_point(p, first + r, g)), load(p.x_lanes + (b * groups + g) * kWidth),
                                     zero())
                               : zero();
    for (int64_t c = start; c < start + vector_columns; c += kStep<Bits>) {
      Vec xs[Batch][C::kVectors];
      for (int64_t b = 0; b < Batch; ++b)
        for (int64_t v = 0; v < C::kVectors; ++v) xs[b][v] = load(x + b * in + c + v * kWidth);
      for (int64_t r = 0; r < Rows; ++r) {
        Vec w[C::kVectors];
        __builtin_prefetch(codes[r] + C::bytes(c) + ahead);
        C::read(codes[r], c, w);
        for (int64_t b = 0; b < Batch; ++b)
          for (int64_t v = 0; v < C::kVectors; ++v) part[r][b] = fma(w[v], xs[b][v], part[r][b]);
      }
    }
    for (int64_t r = 0; r < Rows; ++r) {
      const Vec scale = broadcast(scales[r][g]);
      for (int64_t b = 0; b < Batch; ++b) total[r][b] = fma(scale, part[r][b], total[r][b]);
    }
  }
  for (int64_t r = 0; r < Rows; ++r)
    for (int64_t b = 0; b < Batch; ++b) {
      float tails = 0.f;  // the groups' columns left over by the vector steps (none for the usual group sizes)
      for (int64_t g = 0, start = 0; vector_columns < group && g < groups; ++g, start += group) {
        const float zero_point_ = zero_point(p, first + r, g);
        float tail = 0.f;  // fused multiply-adds written out: the same arithmetic in every build of this file
        for (int64_t c = start + vector_columns; c < start + group; ++c)
          tail = std::fma(C::at(codes[r], c) - zero_point_, x[b * in + c], tail);
        tails = std::fma(scales[r][g], tail, tails);
      }
      p.y[b * p.out + first + r] = sum(total[r][b]) + tails;
    }
}

template <int Bits, int64_t Batch>
void product(const Problem& p) {
  const int64_t blocks = (p.out + kRows - 1) / kRows;
  at::parallel_for(0, blocks, 16, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t first = k * kRows;
      switch (std::min(kRows, p.out - first)) {
        case 1: block<Bits, Batch, 1>(p, first); break;
        case 2: block<Bits, Batch, 2>(p, first); break;
        case 3: block<Bits, Batch, 3>(p, first); break;
        default: block<Bits, Batch, kRows>(p, first); break;
      }
    }
  });
}

template <int Bits>
void product(const Problem& p, int64_t batch) {
  switch (batch) {
    case 1: product<Bits, 1>(p); break;
    case 2: product<Bits, 2>(p); break;
    case 3: product<Bits, 3>(p); break;
    default: product<Bits, 4>(p); break;
  }
}

// x (batch, in) with each group's vector steps laid out as Codes<4> reads them: the step's even columns, then
// its odd ones; the group's tail as it is.
torch::Tensor interleaved(const torch::Tensor& x, int64_t group) {
  auto laid = x.clone();
  const int64_t batch = x.size(0), in = x.size(1), half = kStep<4> / 2;
  const float* from = x.data_ptr<float>();
  float* to = laid.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t start = 0; start < in; start += group)
      for (int64_t c = start; c < start + vectorized<4>(group); c += kStep<4>)
        for (int64_t j = 0; j < half; ++j) {
          to[b * in + c + j] = from[b * in + c + 2 * j];
          to[b * in + c + half + j] = from[b * in + c + 2 * j + 1];
        }
  return laid;
}

// (batch, groups, kWidth): each group's x over its vector steps, summed lane by lane as the steps meet the codes
// (whatever slice the group lies in): the part of the group's sum of (q - zero) x that the zero point makes.
template <int Bits>
torch::Tensor lane_sums(const torch::Tensor& laid, int64_t group) {
  const int64_t batch = laid.size(0), in = laid.size(1), groups = in / group;
  auto lanes = torch::zeros({batch, groups, kWidth}, laid.options());
  const float* from = laid.data_ptr<float>();
  float* to = lanes.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t c = g * group; c < g * group + vectorized<Bits>(group); c += kStep<Bits>)
        for (int64_t v = 0; v < Codes<Bits>::kVectors; ++v)
          for (int64_t j = 0; j < kWidth; ++j) to[(b * groups + g) * kWidth + j] += from[b * in + c + v * kWidth + j];
  return lanes;
}

}  // namespace

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& qweight, const torch::Tensor& scale,
                     const c10::optional<torch::Tensor>& zero, int64_t bits, int64_t group) {
  TORCH_CHECK(bits == 8 || bits == 4, "qgemv: int8 or int4 codes");
  TORCH_CHECK(x.dtype() == torch::kFloat32 && x.dim() == 2, "qgemv: fp32 x of (batch, in)");
  TORCH_CHECK(qweight.is_contiguous() && qweight.dim() == 2 && qweight.element_size() == 1, "qgemv: byte codes");
  const int64_t batch = x.size(0), in = x.size(1), out = qweight.size(0), groups = in / std::max<int64_t>(group, 1);
  TORCH_CHECK(batch >= 1 && batch <= kMaxBatch, "qgemv: batch of 1 to ", kMaxBatch);
  TORCH_CHECK(qweight.size(1) * (bits == 4 ? 2 : 1) == in && group > 0 && in % group == 0, "qgemv: bad shapes");
  for (const auto* table : {&scale, zero.has_value() ? &*zero : &scale})
    TORCH_CHECK(table->dim() == 2 && table->size(0) == out && table->size(1) == groups, "qgemv: bad table shape");
  // as fp32 rows (no copy when the layer holds them so, as runtime.quantize_stage makes them)
  const auto scales = scale.to(torch::kFloat32).contiguous();
  const auto zeros = zero.has_value() ? zero->to(torch::kFloat32).contiguous() : torch::Tensor();
  const auto xs = x.contiguous();
  const auto laid = bits == 4 ? interleaved(xs, group) : xs;
  const float symmetric_zero = bits == 4 ? 8.f : 0.f;
  const auto lanes = !zero.has_value() && symmetric_zero == 0.f ? torch::Tensor()
                     : bits == 4                                ? lane_sums<4>(laid, group)
                                                                : lane_sums<8>(laid, group);
  auto y = torch::empty({batch, out}, x.options());
  const Problem p{static_cast<const uint8_t*>(qweight.data_ptr()),
                  qweight.size(1),
                  laid.data_ptr<float>(),
                  scales.data_ptr<float>(),
                  zeros.defined() ? zeros.data_ptr<float>() : nullptr,
                  symmetric_zero,
                  lanes.defined() ? lanes.data_ptr<float>() : nullptr,
                  y.data_ptr<float>(),
                  in,
                  out,
                  group,
                  groups};
  if (bits == 8)
    product<8>(p, batch);
  else
    product<4>(p, batch);
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linear", &linear, "x W^T for 1 to 4 rows of fp32 x against int8 / int4 group-wise codes");
  m.attr("max_batch") = kMaxBatch;
  m.attr("vector_width") = kWidth;
}
