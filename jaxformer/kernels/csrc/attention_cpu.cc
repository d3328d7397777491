// Multi-head attention forward pass for XLA:CPU, called through the XLA FFI by
// jaxformer/kernels/cpu.py (the Python side builds this file on first use).
//
//   o[b, t, h] = sum_s softmax_s(scale * q[b, t, h] . k[b, s, h]) v[b, s, h], over unmasked s
//
// q: (B, T, H, D), k and v: (B, S, H, D), key_mask: (B, S) bool (true = attend), all row-major;
// o: (B, T, H, D). A query whose keys are all masked gets zeros. One task per (b, h): its
// unmasked keys are packed once (K transposed, V row-major), then query rows are processed four
// at a time: scores for all keys, a softmax over them, and the weighted sum of values, all in
// cache. No (T, S) matrix leaves the cache, nothing is transposed in memory by XLA, and padded
// keys cost nothing. Tasks run on XLA's intra-op thread pool.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

typedef float vf __attribute__((vector_size(64)));  // 16 floats (two AVX2 or one AVX-512 register)
typedef int32_t vi __attribute__((vector_size(64)));
constexpr int64_t kW = 16;    // floats per vector
constexpr int64_t kRows = 4;  // query rows per micro-kernel
constexpr int64_t kCols = 4;  // key vectors per score micro-kernel step (64 keys)
constexpr int64_t kMaxHeadDim = 128;  // cpu_kernels.MAX_HEAD_DIM: the value sum's registers

inline vf Splat(float x) { return vf{} + x; }
inline vf Load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void Store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline int64_t RoundUp(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// e^x, Cephes' single-precision polynomial (about 1 ulp), for x <= 0; x below -87 gives ~e^-87.
inline vf Exp(vf x) {
  x = x < -87.0f ? Splat(-87.0f) : x;
  vf t = x * 1.44269504088896341f + 0.5f;
  vf n = __builtin_convertvector(__builtin_convertvector(t, vi), vf);  // toward zero
  n = n > t ? n - 1.0f : n;                                            // floor
  vf r = x - n * 0.693359375f + n * 2.12194440e-4f;                    // x - n ln 2
  vf p = Splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  vi bits = (__builtin_convertvector(n, vi) + 127) << 23;  // 2^n
  vf two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

struct Problem {
  const float *q, *k, *v;
  const bool* mask;
  float* o;
  int64_t B, T, S, H, D;
  float scale;
};

// Per-thread buffers, grown as needed.
struct Scratch {
  std::vector<int64_t> keys;
  std::vector<float> kt, vp, scores, qrows;
};

// acc[r] = sum_j a[r * lda + j] * b[j * ldb : j * ldb + NV * 16] over j < K, for four rows r:
// the score block (a = scaled q rows, b = K^T) and the value sum (a = weights, b = V) alike.
template <int NV>
inline void FourRowsTimesPanel(const float* a, int64_t lda, const float* b, int64_t ldb,
                               int64_t K, vf (&acc)[kRows][NV]) {
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < NV; ++c) acc[r][c] = vf{};
  for (int64_t j = 0; j < K; ++j) {
    vf bv[NV];
    for (int c = 0; c < NV; ++c) bv[c] = Load(b + j * ldb + c * kW);
    for (int r = 0; r < kRows; ++r) {
      vf ab = Splat(a[r * lda + j]);
      for (int c = 0; c < NV; ++c) acc[r][c] += ab * bv[c];
    }
  }
}

// out[r, d0 : d0 + NV * 16] = sum_j p[r, j] vp[j, d0 : ...] over the n packed keys.
template <int NV>
inline void ValueBlock(const float* p, int64_t np, const float* vp, int64_t dp, int64_t n,
                       int64_t d0, vf (*out)[kMaxHeadDim / kW]) {
  vf acc[kRows][NV];
  FourRowsTimesPanel<NV>(p, np, vp + d0, dp, n, acc);
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < NV; ++c) out[r][d0 / kW + c] = acc[r][c];
}

void AttendOneHead(const Problem& p, int64_t b, int64_t h, Scratch& s) {
  const int64_t T = p.T, S = p.S, H = p.H, D = p.D;
  auto q_at = [&](int64_t t) { return p.q + ((b * T + t) * H + h) * D; };
  auto o_at = [&](int64_t t) { return p.o + ((b * T + t) * H + h) * D; };
  s.keys.clear();
  for (int64_t j = 0; j < S; ++j)
    if (p.mask[b * S + j]) s.keys.push_back(j);
  const int64_t n = static_cast<int64_t>(s.keys.size());
  if (n == 0) {  // nothing to attend: zeros, as the pure-JAX implementations give
    for (int64_t t = 0; t < T; ++t) std::memset(o_at(t), 0, D * sizeof(float));
    return;
  }
  const int64_t np = RoundUp(n, kCols * kW), dp = RoundUp(D, kW);
  s.kt.assign(D * np, 0.0f);  // (D, np): K transposed, unmasked keys only, zero padded
  s.vp.assign(n * dp, 0.0f);  // (n, dp): V rows of unmasked keys, zero padded
  const float* key_rows[kW];
  for (int64_t c0 = 0; c0 < n; c0 += kW) {  // 16 keys at a time: whole vectors of kt written
    const int64_t width = std::min(kW, n - c0);
    for (int64_t i = 0; i < width; ++i) {
      key_rows[i] = p.k + ((b * S + s.keys[c0 + i]) * H + h) * D;
      const float* vr = p.v + ((b * S + s.keys[c0 + i]) * H + h) * D;
      std::memcpy(s.vp.data() + (c0 + i) * dp, vr, D * sizeof(float));
    }
    for (int64_t d = 0; d < D; ++d) {
      float* dst = s.kt.data() + d * np + c0;
      for (int64_t i = 0; i < width; ++i) dst[i] = key_rows[i][d];
    }
  }
  s.scores.resize(kRows * np);
  s.qrows.resize(kRows * D);
  float* scores = s.scores.data();
  for (int64_t t0 = 0; t0 < T; t0 += kRows) {
    const int64_t rows = std::min(kRows, T - t0);  // real query rows in this block
    for (int64_t r = 0; r < kRows; ++r) {
      float* dst = s.qrows.data() + r * D;
      if (r >= rows) {
        std::memset(dst, 0, D * sizeof(float));
        continue;
      }
      const float* src = q_at(t0 + r);
      for (int64_t d = 0; d < D; ++d) dst[d] = src[d] * p.scale;
    }
    for (int64_t c0 = 0; c0 < np; c0 += kCols * kW) {  // scores[:, c0 : c0 + 64]
      vf acc[kRows][kCols];
      FourRowsTimesPanel<kCols>(s.qrows.data(), D, s.kt.data() + c0, np, D, acc);
      for (int r = 0; r < kRows; ++r)
        for (int c = 0; c < kCols; ++c) Store(scores + r * np + c0 + c * kW, acc[r][c]);
    }
    float inv_sum[kRows];
    for (int64_t r = 0; r < kRows; ++r) {  // softmax numerators in place, padding columns zeroed
      float* row = scores + r * np;
      const int64_t full = n / kW * kW;
      vf vmax = Splat(row[0]);
      for (int64_t j = 0; j < full; j += kW) {
        vf x = Load(row + j);
        vmax = x > vmax ? x : vmax;
      }
      float mx = row[0];
      for (int64_t i = 0; i < kW; ++i) mx = std::max(mx, vmax[i]);
      for (int64_t j = full; j < n; ++j) mx = std::max(mx, row[j]);
      vf total = {};
      for (int64_t j = 0; j < full; j += kW) {
        vf e = Exp(Load(row + j) - mx);
        Store(row + j, e);
        total += e;
      }
      float sum = 0.0f;
      if (full < n) {  // the last partial vector: exp, then zero what lies past key n - 1
        vf e = Exp(Load(row + full) - mx);
        for (int64_t i = 0; i < kW; ++i) {
          if (full + i >= n) e[i] = 0.0f;
          sum += e[i];
        }
        Store(row + full, e);
      }
      for (int64_t i = 0; i < kW; ++i) sum += total[i];
      inv_sum[r] = 1.0f / sum;  // sum >= 1: the max's own term is e^0
    }
    vf out[kRows][kMaxHeadDim / kW];
    for (int64_t d0 = 0; d0 < dp; d0 += 4 * kW) {
      switch (std::min<int64_t>(4, (dp - d0) / kW)) {
        case 4: ValueBlock<4>(scores, np, s.vp.data(), dp, n, d0, out); break;
        case 3: ValueBlock<3>(scores, np, s.vp.data(), dp, n, d0, out); break;
        case 2: ValueBlock<2>(scores, np, s.vp.data(), dp, n, d0, out); break;
        default: ValueBlock<1>(scores, np, s.vp.data(), dp, n, d0, out); break;
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      float* dst = o_at(t0 + r);
      const float* src = reinterpret_cast<const float*>(out[r]);
      for (int64_t d = 0; d < D; ++d) dst[d] = src[d] * inv_sum[r];
    }
  }
}

struct Work {
  Problem problem;
  int64_t tasks;
  std::atomic<int64_t> next{0}, done{0};
};

void RunTasks(Work& w) {
  Scratch scratch;
  int64_t finished = 0;
  for (int64_t i; (i = w.next.fetch_add(1)) < w.tasks;) {
    AttendOneHead(w.problem, i / w.problem.H, i % w.problem.H, scratch);
    ++finished;
  }
  w.done.fetch_add(finished);
}

ffi::Error AttentionForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                            ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> key_mask,
                            ffi::ResultBuffer<ffi::F32> o, float scale) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions(), md = key_mask.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || vd.size() != 4 || md.size() != 2)
    return ffi::Error::InvalidArgument("attention: q, k, v must be (B, T|S, H, D), mask (B, S)");
  const int64_t B = qd[0], T = qd[1], H = qd[2], D = qd[3], S = kd[1];
  if (kd[0] != B || kd[2] != H || kd[3] != D || vd[0] != B || vd[1] != S || vd[2] != H ||
      vd[3] != D || md[0] != B || md[1] != S)
    return ffi::Error::InvalidArgument("attention: q, k, v and mask shapes do not agree");
  if (D > kMaxHeadDim) return ffi::Error::InvalidArgument("attention: head_dim above 128");
  auto work = std::make_shared<Work>();
  work->problem = {q.typed_data(), k.typed_data(), v.typed_data(), key_mask.typed_data(),
                   o->typed_data(), B, T, S, H, D, scale};
  work->tasks = B * H;
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), work->tasks) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([work] { RunTasks(*work); });
  RunTasks(*work);  // the calling thread works too, so the call finishes even with no helper
  while (work->done.load() < work->tasks) std::this_thread::yield();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxformerAttentionForward, AttentionForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // q
                                  .Arg<ffi::Buffer<ffi::F32>>()   // k
                                  .Arg<ffi::Buffer<ffi::F32>>()   // v
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // key_mask
                                  .Ret<ffi::Buffer<ffi::F32>>()   // o
                                  .Attr<float>("scale"));
