// The small fp32 operations of a one-token decode step around the matrix-vector products, each in one pass:
// RMSNorm (with the residual add before it), the attention of one query (rotary, cache write, softmax over the
// cache) and silu(gate) * up. At batch 1 each of them is a few microseconds of arithmetic that ATen spreads over
// 5 to 30 operator calls (a dispatch, an allocation, a loop each); here it is one call. Built by
// runtime/cpu_kernels.py with -march=native, like gemv.cpp; runtime/decoder.py uses it for CPU fp32 steps only.
//
// Every sum has a fixed order (kLanes partial sums by index, then a fixed tree), whatever the addresses or the
// thread: a head's output depends only on that head's inputs, so a TP rank holding a slice of the heads gets
// each head's bits the whole model gets.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace {

// kLanes floats as one value: GCC's vector extension compiles it to the widest vectors -march=native gives (one
// AVX-512 register, two AVX2 ones). Every element, a block's tail included (zero-filled), goes through the same
// vector code: an element's bits never depend on where it sits (a TP rank's slice starts elsewhere).
constexpr int64_t kLanes = 16;
using Floats = float __attribute__((vector_size(kLanes * sizeof(float))));
using Ints = int32_t __attribute__((vector_size(kLanes * sizeof(int32_t))));
constexpr int64_t kGrainWork = 1 << 15;  // multiply-adds a thread takes at least: a dispatch costs microseconds
constexpr int64_t kMaxHeadDim = 9 * kLanes - 1;  // a head's sums held in registers: up to 8 whole vectors and a tail

Floats load(const float* p) {
  Floats v;
  std::memcpy(&v, p, sizeof v);  // a fixed size: one vector load
  return v;
}

// the first n (< kLanes) floats at p, the other lanes 0
Floats load_part(const float* p, int64_t n) {
  Floats v = {};
  for (int64_t l = 0; l < n; ++l) v[l] = p[l];
  return v;
}

void store(float* p, Floats v, int64_t n = kLanes) {
  if (n >= kLanes) std::memcpy(p, &v, sizeof v);
  else for (int64_t l = 0; l < n; ++l) p[l] = v[l];
}

Floats load(const float* p, int64_t n) { return n >= kLanes ? load(p) : load_part(p, n); }

// f(block, i) for each block of n floats from i = 0, the last one zero-filled
template <class F>
inline void blocks(const float* p, int64_t n, F f) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) f(load(p + i), i);
  if (i < n) f(load_part(p + i, n - i), i);
}

// the lanes added in a fixed tree (halves, quarters, ...)
float total(Floats v) {
  static_assert(kLanes == 16);
  v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 0, 0, 0, 0, 0, 0, 0);
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  return v[0] + v[1];
}

inline float dot(const float* a, const float* b, int64_t n) {
  Floats acc = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) acc += load(a + i) * load(b + i);
  if (i < n) acc += load_part(a + i, n - i) * load_part(b + i, n - i);
  return total(acc);
}

// e^x within 2 ulp for x in [-87, 88] (clamped there): Cephes' expf, in plain arithmetic on vectors (libm's expf
// is a call per element)
Floats exp(Floats x) {
  constexpr float kRound = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer, held in the low mantissa bits
  x = x < -87.f ? -87.f : x;
  x = x > 88.f ? 88.f : x;
  const Floats shifted = x * 1.44269504088896341f + kRound;
  const Floats n = shifted - kRound;  // x / ln 2, rounded
  x = x - n * 0.693359375f - n * -2.12194440e-4f;  // x - n ln 2, ln 2 in two parts
  Floats y = x * 1.9875691500e-4f + 1.3981999507e-3f;
  for (const float c : {8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f}) y = y * x + c;
  const Ints two_to_n = ((reinterpret_cast<const Ints&>(shifted) - std::bit_cast<int32_t>(kRound)) + 127) << 23;
  return (y * x * x + x + 1.f) * reinterpret_cast<const Floats&>(two_to_n);
}

// HF's LlamaRMSNorm in fp32: weight * (x * rsqrt(mean(x^2) + eps))
void normalize(const float* x, const float* weight, float eps, float* out, int64_t n) {
  const float scale = 1.f / std::sqrt(dot(x, x, n) / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * scale);
}

// HF's rotate_half convention: x * cos + cat(-x2, x1) * sin, the halves x1, x2 of the head
void rotate(const float* x, const float* cos, const float* sin, float* out, int64_t dim) {
  const int64_t half = dim / 2;
  for (int64_t i = 0; i < half; ++i) out[i] = x[i] * cos[i] + -x[i + half] * sin[i];
  for (int64_t i = half; i < dim; ++i) out[i] = x[i] * cos[i] + x[i - half] * sin[i];
}

// out = sum over the positions j the mask allows of w[j] * values[j], times `norm`; the sums of a head's
// dimensions (Blocks vectors of them) stay in registers
template <int64_t Whole>
void weigh_values(const float* w, const bool* seen, const float* values, int64_t capacity, int64_t dim, float norm,
                  float* out) {
  Floats sums[Whole] = {}, rest = {};
  const int64_t tail = dim - Whole * kLanes;
  for (int64_t j = 0; j < capacity; ++j) {
    if (!seen[j]) continue;
    const float* row = values + j * dim;
    for (int64_t i = 0; i < Whole; ++i) sums[i] += w[j] * load(row + i * kLanes);
    if (tail) rest += w[j] * load_part(row + Whole * kLanes, tail);
  }
  for (int64_t i = 0; i < Whole; ++i) store(out + i * kLanes, sums[i] * norm);
  store(out + Whole * kLanes, rest * norm, tail);
}

void weigh_values(const float* w, const bool* seen, const float* values, int64_t capacity, int64_t dim, float norm,
                  float* out) {
  switch (dim / kLanes) {
    case 0: return weigh_values<0>(w, seen, values, capacity, dim, norm, out);
    case 1: return weigh_values<1>(w, seen, values, capacity, dim, norm, out);
    case 2: return weigh_values<2>(w, seen, values, capacity, dim, norm, out);
    case 3: return weigh_values<3>(w, seen, values, capacity, dim, norm, out);
    case 4: return weigh_values<4>(w, seen, values, capacity, dim, norm, out);
    case 5: return weigh_values<5>(w, seen, values, capacity, dim, norm, out);
    case 6: return weigh_values<6>(w, seen, values, capacity, dim, norm, out);
    case 7: return weigh_values<7>(w, seen, values, capacity, dim, norm, out);
    case 8: return weigh_values<8>(w, seen, values, capacity, dim, norm, out);
    default: TORCH_CHECK(false, "decode_ops: head dim over ", kMaxHeadDim);
  }
}

void check_rows(const torch::Tensor& x, const torch::Tensor& weight) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && weight.dtype() == torch::kFloat32, "decode_ops: fp32 only");
  TORCH_CHECK(x.is_contiguous() && weight.is_contiguous() && x.size(-1) == weight.numel(), "decode_ops: bad norm");
}

}  // namespace

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  check_rows(x, weight);
  auto out = torch::empty_like(x);
  const int64_t n = weight.numel(), rows = x.numel() / n;
  for (int64_t r = 0; r < rows; ++r)
    normalize(x.data_ptr<float>() + r * n, weight.data_ptr<float>(), eps, out.data_ptr<float>() + r * n, n);
  return out;
}

// (x + h, rms_norm(x + h)): the residual add and the next norm in one pass
std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(
    const torch::Tensor& x, const torch::Tensor& h, const torch::Tensor& weight, double eps) {
  check_rows(x, weight);
  TORCH_CHECK(h.is_contiguous() && h.sizes() == x.sizes() && h.dtype() == x.dtype(), "decode_ops: bad residual");
  auto sum = torch::empty_like(x), out = torch::empty_like(x);
  const int64_t n = weight.numel(), rows = x.numel() / n;
  const float *a = x.data_ptr<float>(), *b = h.data_ptr<float>();
  float* s = sum.data_ptr<float>();
  for (int64_t i = 0; i < rows * n; ++i) s[i] = a[i] + b[i];
  for (int64_t r = 0; r < rows; ++r)
    normalize(s + r * n, weight.data_ptr<float>(), eps, out.data_ptr<float>() + r * n, n);
  return {sum, out};
}

// One query per row: q (batch, 1, heads, dim), k and v (batch, 1, kv heads, dim), each head's dims contiguous
// (views of a fused projection's output are fine); cos, sin (batch, 1, dim) as the rotary embedding returns them;
// the layer's cache keys, values (batch, kv heads, capacity, dim); mask (batch, 1, 1, capacity), bool. Rotates q
// and k, writes k and v at position `at`, and attends query head h over KV head h / groups at the positions the
// mask allows (softmax in fp32). Returns (batch, 1, heads * dim), ready for the output projection.
torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& cos,
                     const torch::Tensor& sin, torch::Tensor& keys, torch::Tensor& values, int64_t at,
                     const torch::Tensor& mask, double scale) {
  for (const torch::Tensor* t : std::initializer_list<const torch::Tensor*>{&q, &k, &v, &cos, &sin, &keys, &values})
    TORCH_CHECK(t->dtype() == torch::kFloat32 && t->stride(-1) == 1, "decode_ops: fp32, last dim contiguous");
  TORCH_CHECK(keys.is_contiguous() && values.is_contiguous() && keys.sizes() == values.sizes(), "decode_ops: cache");
  TORCH_CHECK(mask.dtype() == torch::kBool && mask.stride(-1) == 1 && q.dim() == 4 && q.size(1) == 1, "decode_ops: one query, bool mask");
  const int64_t batch = q.size(0), heads = q.size(2), dim = q.size(3);
  const int64_t kv_heads = keys.size(1), capacity = keys.size(2), groups = heads / kv_heads;
  TORCH_CHECK(heads == groups * kv_heads && k.size(2) == kv_heads && keys.size(3) == dim && cos.size(-1) == dim,
              "decode_ops: heads or dims disagree");
  TORCH_CHECK(at >= 0 && at < capacity && mask.size(-1) == capacity, "decode_ops: position outside the cache");
  auto out = torch::empty({batch, 1, heads * dim}, q.options());
  const float *qs = q.data_ptr<float>(), *ks = k.data_ptr<float>(), *vs = v.data_ptr<float>();
  const float *cs = cos.data_ptr<float>(), *ss = sin.data_ptr<float>();
  float *key_cache = keys.data_ptr<float>(), *value_cache = values.data_ptr<float>(), *o = out.data_ptr<float>();
  const bool* allowed = mask.data_ptr<bool>();
  const float scaling = static_cast<float>(scale);
  const int64_t task_work = (groups + 1) * capacity * dim * 2;  // multiply-adds of one (row, KV head)
  at::parallel_for(0, batch * kv_heads, std::max<int64_t>(1, kGrainWork / task_work), [&](int64_t begin, int64_t end) {
    std::vector<float> queries(groups * dim), weights(groups * capacity), totals(groups);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / kv_heads, kvh = task % kv_heads;
      const float *c = cs + b * cos.stride(0), *s = ss + b * sin.stride(0);
      const bool* seen = allowed + b * mask.stride(0);
      float* cached_keys = key_cache + task * capacity * dim;
      float* cached_values = value_cache + task * capacity * dim;
      rotate(ks + b * k.stride(0) + kvh * k.stride(2), c, s, cached_keys + at * dim, dim);
      std::copy_n(vs + b * v.stride(0) + kvh * v.stride(2), dim, cached_values + at * dim);
      for (int64_t g = 0; g < groups; ++g)
        rotate(qs + b * q.stride(0) + (kvh * groups + g) * q.stride(2), c, s, queries.data() + g * dim, dim);
      // the scores of the group's queries, each key read once; the positions the mask hides weigh 0
      for (int64_t j = 0; j < capacity; ++j)
        for (int64_t g = 0; g < groups; ++g)
          weights[g * capacity + j] = seen[j] ? dot(queries.data() + g * dim, cached_keys + j * dim, dim) * scaling
                                              : -std::numeric_limits<float>::infinity();
      for (int64_t g = 0; g < groups; ++g) {
        float* w = weights.data() + g * capacity;
        const float top = *std::max_element(w, w + capacity);
        blocks(w, capacity, [&](Floats block, int64_t j) { store(w + j, exp(block - top), capacity - j); });
        for (int64_t j = 0; j < capacity; ++j) w[j] = seen[j] ? w[j] : 0.f;
        Floats sum = {};
        blocks(w, capacity, [&](Floats block, int64_t) { sum += block; });
        totals[g] = total(sum);
      }
      for (int64_t g = 0; g < groups; ++g)
        weigh_values(weights.data() + g * capacity, seen, cached_values, capacity, dim, 1.f / totals[g],
                     o + (b * heads + kvh * groups + g) * dim);
    }
  });
  return out;
}

// silu(gate) * up for gate, up (rows, 1, width) with contiguous rows (the halves of a fused product are fine)
torch::Tensor silu_mul(const torch::Tensor& gate, const torch::Tensor& up) {
  TORCH_CHECK(gate.dtype() == torch::kFloat32 && up.dtype() == torch::kFloat32 && gate.sizes() == up.sizes(),
              "decode_ops: fp32 gate and up of one shape");
  TORCH_CHECK(gate.stride(-1) == 1 && up.stride(-1) == 1 && gate.dim() == 3 && gate.size(1) == 1, "decode_ops: rows");
  auto out = torch::empty(gate.sizes(), gate.options());
  const int64_t rows = gate.size(0), width = gate.size(2);
  for (int64_t r = 0; r < rows; ++r) {
    const float *g = gate.data_ptr<float>() + r * gate.stride(0), *u = up.data_ptr<float>() + r * up.stride(0);
    float* y = out.data_ptr<float>() + r * width;
    for (int64_t i = 0; i < width; i += kLanes) {
      const Floats x = load(g + i, width - i);
      store(y + i, x / (1.f + exp(-x)) * load(u + i, width - i), width - i);
    }
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rms_norm", &rms_norm, "HF's RMSNorm of contiguous fp32 rows");
  m.def("add_rms_norm", &add_rms_norm, "(x + h, rms_norm(x + h))");
  m.def("attend", &attend, "one query's rotary, cache write and attention over the cache");
  m.def("silu_mul", &silu_mul, "silu(gate) * up");
  m.attr("max_head_dim") = kMaxHeadDim;
}
