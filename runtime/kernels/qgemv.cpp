// y = x W^T for a few rows of fp32 x (a decode step's batch) against a weight-only quantized W read as
// runtime/quantize.py's WeightOnlyLinear holds it: int8 codes (out, in), or int4 codes two to a byte (out, in / 2,
// the even column in the low nibble); one scale per group of `group` columns (out, in / group); a zero point per
// group (out, in / group) or none (0 for int8, 8 for int4); w = (q - zero) * scale.
//
// Integer dot products, as llama.cpp's CPU kernels take them, but with 16-bit activations where llama.cpp uses 8:
// each group of x is quantized once per call to int16 with its own scale (max |x| / 32767: a relative error
// of 1/65534 of the group's largest value, far below the weights' own), and a group's sum of (q - zero) x_q is
// taken exactly in int32 lanes (vpdpwssd with AVX512-VNNI / AVX-VNNI, else vpmaddwd and an add): one instruction
// per 32 (AVX-512) or 16 (AVX2) weights, where converting every code to a float took three. The zero point enters
// as each lane's sum of x_q times the zero, subtracted in integers. Then the group's lanes are converted once and
// added to the row's running vector times the group's two scales. A row's sum depends only on its own codes and x,
// never on the thread, block or tensor-parallel slice it lands in (groups, and so x's groups, never straddle a
// slice), so a TP run decodes the tokens of the single process. Groups the vectors do not fill (a size that is not
// a multiple of the vector's columns, or over 8192 columns, where the int32 lanes could overflow) take the same
// integer sums one column at a time. Built by runtime/cpu_kernels.py with -march=native.
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace {

constexpr int64_t kRows = 4;        // weight rows per block
constexpr int64_t kMaxBatch = 4;    // rows of x handled here; more go to the dequantized GEMM
constexpr int64_t kMaxGroup = 8192; // widest group summed in int32 lanes: |(q - zero) x_q| <= 255 * 32767 a column
constexpr float kLevels = 32767.f;  // x_q in [-32767, 32767]

#if defined(__AVX512F__) && defined(__AVX512BW__)
constexpr int64_t kLanes = 16;  // int32 lanes, each the sum of two 16-bit products
using Int = __m512i;
using Vec = __m512;
inline Int int_zero() { return _mm512_setzero_si512(); }
inline Int load_words(const int16_t* p) { return _mm512_loadu_si512(p); }
inline Int load_lanes(const int32_t* p) { return _mm512_loadu_si512(p); }
inline Int times(Int lanes, int32_t k) { return _mm512_mullo_epi32(lanes, _mm512_set1_epi32(k)); }
inline Int dot(Int acc, Int a, Int b) {
#if defined(__AVX512VNNI__)
  return _mm512_dpwssd_epi32(acc, a, b);
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
#endif
}
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec fma_lanes(float scale, Int lanes, Vec total) {
  return _mm512_fmadd_ps(_mm512_set1_ps(scale), _mm512_cvtepi32_ps(lanes), total);
}
inline float sum(Vec v) { return _mm512_reduce_add_ps(v); }
// 32 columns: int8 codes sign-extended to words; int4 codes' 16 bytes as their low nibbles (the even columns)
// then their high nibbles (the odd ones), the order x is laid out in (see `quantized_x`)
inline Int int8_words(const uint8_t* p) { return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline Int int4_words(const uint8_t* p) {  // the 16 bytes twice as words, shifted by 0 then 4, masked
  const __m512i twice = _mm512_cvtepu8_epi16(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  const __m512i shifts = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
  return _mm512_and_si512(_mm512_srlv_epi16(twice, shifts), _mm512_set1_epi16(15));
}
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int64_t kLanes = 8;
using Int = __m256i;
using Vec = __m256;
inline Int int_zero() { return _mm256_setzero_si256(); }
inline Int load_words(const int16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline Int load_lanes(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline Int times(Int lanes, int32_t k) { return _mm256_mullo_epi32(lanes, _mm256_set1_epi32(k)); }
inline Int dot(Int acc, Int a, Int b) {
#if defined(__AVXVNNI__)
  return _mm256_dpwssd_avx_epi32(acc, a, b);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec fma_lanes(float scale, Int lanes, Vec total) {
  return _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(lanes), total);
}
inline float sum(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(_mm_hadd_ps(s, s));
}
inline Int int8_words(const uint8_t* p) { return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline Int int4_words(const uint8_t* p) {
  const __m128i words = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return _mm256_set_m128i(_mm_srli_epi16(words, 4), _mm_and_si128(words, _mm_set1_epi16(15)));
}
#else
constexpr int64_t kLanes = 1;  // every group one column at a time (`columnwise_block`)
#endif

constexpr int64_t kStep = 2 * kLanes;  // columns per vector step

// How a code is read one at a time (the groups the vector steps do not take)
template <int Bits>
int32_t code_at(const uint8_t* row, int64_t column) {
  if constexpr (Bits == 8)
    return static_cast<int8_t>(row[column]);
  else
    return (row[column / 2] >> (column % 2 * 4)) & 15;
}

template <int Bits>
constexpr int64_t row_bytes(int64_t in) {
  return Bits == 8 ? in : in / 2;
}

bool vectorized(int64_t group) {
  return kLanes > 1 && group % kStep == 0 && group <= kMaxGroup;
}

// x quantized group by group, as the kernel reads it
struct QuantizedX {
  torch::Tensor words;      // int16 (batch, in); int4: each vector step's even columns, then its odd ones
  torch::Tensor scales;     // fp32 (batch, groups): max |x| / 32767 over the group
  torch::Tensor lane_sums;  // int32 (batch, groups, kLanes): each lane's sum of the group's x_q (vector steps only)
};

template <int Bits>
QuantizedX quantized_x(const torch::Tensor& x, int64_t group) {
  const int64_t batch = x.size(0), in = x.size(1), groups = in / group;
  QuantizedX q{torch::empty({batch, in}, x.options().dtype(torch::kInt16)),
               torch::empty({batch, groups}, x.options()),
               torch::zeros({batch, groups, kLanes}, x.options().dtype(torch::kInt32))};
  const float* from = x.data_ptr<float>();
  int16_t* words = q.words.data_ptr<int16_t>();
  float* scales = q.scales.data_ptr<float>();
  int32_t* lanes = q.lane_sums.data_ptr<int32_t>();
  const bool vector = vectorized(group);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t g = 0; g < groups; ++g) {
      const float* xs = from + b * in + g * group;
      float largest = 0.f;
      for (int64_t c = 0; c < group; ++c) largest = std::max(largest, std::fabs(xs[c]));
      scales[b * groups + g] = largest / kLevels;
      const float inverse = largest > 0.f ? kLevels / largest : 0.f;
      int16_t* to = words + b * in + g * group;
      int32_t* lane = lanes + (b * groups + g) * kLanes;
      for (int64_t c = 0; c < group; ++c) {
        const auto word = static_cast<int16_t>(std::nearbyint(xs[c] * inverse));
        int64_t at = c;  // where the kernel reads column c, and which lane meets it
        if (vector && Bits == 4) {
          const int64_t step = c - c % kStep, j = c % kStep;
          at = step + (j % 2) * kLanes + j / 2;
        }
        to[at] = word;
        if (vector) lane[at % kStep / 2] += word;
      }
    }
  return q;
}

struct Problem {
  const uint8_t* codes;
  const int16_t* x;           // (batch, in), as `quantized_x` lays it out
  const float* x_scale;       // (batch, groups)
  const int32_t* x_lanes;     // (batch, groups, kLanes)
  const float* scale;         // (out, groups)
  const float* zero;          // (out, groups), or null: every zero point is `symmetric_zero`
  int32_t symmetric_zero;
  float* y;                   // (batch, out)
  int64_t in, out, group, groups;
};

inline int32_t zero_point(const Problem& p, int64_t row, int64_t group) {
  return p.zero ? static_cast<int32_t>(p.zero[row * p.groups + group]) : p.symmetric_zero;
}

// One group of one weight row against one row of x, one column at a time: the same integers the lanes sum, in
// 64 bits (a group too wide for the lanes)
template <int Bits>
int64_t group_sum(const Problem& p, const uint8_t* codes, int64_t b, int64_t g, int32_t zero_point_) {
  int64_t total = 0;
  for (int64_t c = g * p.group; c < (g + 1) * p.group; ++c)
    total += static_cast<int64_t>(code_at<Bits>(codes, c) - zero_point_) * p.x[b * p.in + c];
  return total;
}

// rows [first, first + Rows) of W against the batch rows of x, groups through the vectors (Rows a constant: the
// accumulators stay in registers)
template <int Bits, int64_t Batch, int64_t Rows>
void vector_block(const Problem& p, int64_t first) {
#if defined(__AVX2__)
  const int64_t groups = p.groups, bytes = row_bytes<Bits>(p.in);
  const uint8_t* codes[Rows];
  const float* scales[Rows];
  for (int64_t r = 0; r < Rows; ++r) {
    codes[r] = p.codes + (first + r) * bytes;
    scales[r] = p.scale + (first + r) * groups;
  }
  Vec total[Rows][Batch];
  for (int64_t r = 0; r < Rows; ++r)
    for (int64_t b = 0; b < Batch; ++b) total[r][b] = zero();
  for (int64_t g = 0, start = 0; g < groups; ++g, start += p.group) {
    Int part[Rows][Batch];  // the group's sum of (q - zero) x_q: starts at -zero * (its x_q, lane by lane)
    for (int64_t r = 0; r < Rows; ++r) {
      const int32_t zero_point_ = zero_point(p, first + r, g);
      for (int64_t b = 0; b < Batch; ++b)
        part[r][b] = zero_point_ ? times(load_lanes(p.x_lanes + (b * groups + g) * kLanes), -zero_point_) : int_zero();
    }
    for (int64_t c = start; c < start + p.group; c += kStep) {
      Int xs[Batch];
      for (int64_t b = 0; b < Batch; ++b) xs[b] = load_words(p.x + b * p.in + c);
      for (int64_t r = 0; r < Rows; ++r) {
        __builtin_prefetch(codes[r] + row_bytes<Bits>(c) + Rows * bytes);  // this row in the next block
        const Int w = Bits == 8 ? int8_words(codes[r] + c) : int4_words(codes[r] + c / 2);
        for (int64_t b = 0; b < Batch; ++b) part[r][b] = dot(part[r][b], w, xs[b]);
      }
    }
    for (int64_t r = 0; r < Rows; ++r)
      for (int64_t b = 0; b < Batch; ++b)
        total[r][b] = fma_lanes(scales[r][g] * p.x_scale[b * groups + g], part[r][b], total[r][b]);
  }
  for (int64_t r = 0; r < Rows; ++r)
    for (int64_t b = 0; b < Batch; ++b) p.y[b * p.out + first + r] = sum(total[r][b]);
#endif
}

// the same rows, each group one column at a time
template <int Bits, int64_t Batch, int64_t Rows>
void columnwise_block(const Problem& p, int64_t first) {
  for (int64_t r = first; r < first + Rows; ++r) {
    const uint8_t* codes = p.codes + r * row_bytes<Bits>(p.in);
    for (int64_t b = 0; b < Batch; ++b) {
      float total = 0.f;
      for (int64_t g = 0; g < p.groups; ++g) {
        const auto integer = group_sum<Bits>(p, codes, b, g, zero_point(p, r, g));
        total = std::fma(p.scale[r * p.groups + g] * p.x_scale[b * p.groups + g], static_cast<float>(integer), total);
      }
      p.y[b * p.out + r] = total;
    }
  }
}

template <int Bits, int64_t Batch, int64_t Rows>
void block(const Problem& p, int64_t first) {
  if (vectorized(p.group))
    vector_block<Bits, Batch, Rows>(p, first);
  else
    columnwise_block<Bits, Batch, Rows>(p, first);
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
torch::Tensor quantized_linear(const torch::Tensor& x, const torch::Tensor& qweight, const torch::Tensor& scales,
                     const torch::Tensor& zeros, int64_t group) {
  const int64_t batch = x.size(0), in = x.size(1), out = qweight.size(0);
  const QuantizedX q = quantized_x<Bits>(x, group);
  auto y = torch::empty({batch, out}, x.options());
  const Problem p{static_cast<const uint8_t*>(qweight.data_ptr()),
                  q.words.data_ptr<int16_t>(),
                  q.scales.data_ptr<float>(),
                  q.lane_sums.data_ptr<int32_t>(),
                  scales.data_ptr<float>(),
                  zeros.defined() ? zeros.data_ptr<float>() : nullptr,
                  Bits == 4 ? 8 : 0,
                  y.data_ptr<float>(),
                  in,
                  out,
                  group,
                  in / group};
  switch (batch) {
    case 1: product<Bits, 1>(p); break;
    case 2: product<Bits, 2>(p); break;
    case 3: product<Bits, 3>(p); break;
    default: product<Bits, 4>(p); break;
  }
  return y;
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
  TORCH_CHECK(bits == 8 || group % 2 == 0, "qgemv: int4 groups of an even size");
  for (const auto* table : {&scale, zero.has_value() ? &*zero : &scale})
    TORCH_CHECK(table->dim() == 2 && table->size(0) == out && table->size(1) == groups, "qgemv: bad table shape");
  // as fp32 rows (no copy when the layer holds them so, as runtime.quantize_stage makes them)
  const auto scales = scale.to(torch::kFloat32).contiguous();
  const auto zeros = zero.has_value() ? zero->to(torch::kFloat32).contiguous() : torch::Tensor();
  const auto xs = x.contiguous();
  return bits == 8 ? quantized_linear<8>(xs, qweight, scales, zeros, group)
                   : quantized_linear<4>(xs, qweight, scales, zeros, group);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linear", &linear, "x W^T for 1 to 4 rows of fp32 x against int8 / int4 group-wise codes");
  m.attr("max_batch") = kMaxBatch;
  m.attr("vector_columns") = kStep;
}
