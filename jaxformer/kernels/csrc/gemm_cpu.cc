// jaxformer's CPU GEMM: C = op(A) op(B) (+ bias), float32, row-major, through MKL's sgemm.
//
// Called through XLA's FFI by jaxformer/kernels/cpu.py, which links this file against MKL's
// sequential layer (libmkl_intel_lp64, libmkl_sequential, libmkl_core), so no MKL threading
// setting of the process is read or changed. The threads are XLA's: C is cut into one block of rows (or of columns,
// whichever dimension is longer) per intra-op thread, and each block is one sequential sgemm.
// The calling thread takes blocks too, so a call finishes even when every other thread is busy
// with a thunk that XLA runs at the same time (with MKL's own OpenMP threads, two concurrent GEMMs
// would put two thread teams on the same cores).
//
// op(A) is (m, k) and op(B) is (k, n): A is stored (m, k), or (k, m) with trans_a; B is stored
// (k, n), or (n, k) with trans_b. bias has n elements, or none. BLAS is column-major, so the row-
// major C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

extern "C" void sgemm_(const char* trans_a, const char* trans_b, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc);

namespace {

constexpr int64_t kMinBlock = 64;  // rows or columns: smaller blocks are not worth a thread

struct Gemm {
  const float *a, *b, *bias;  // bias: nullptr or n values
  float* c;
  int64_t m, n, k;
  bool trans_a, trans_b, split_columns;
  int64_t blocks;
  std::atomic<int64_t> next{0}, done{0};
};

// Block p of C: a range of rows (or of columns, with split_columns), all of the other dimension.
void RunBlock(const Gemm& g, int64_t p) {
  int64_t r0 = 0, r1 = g.m, c0 = 0, c1 = g.n;
  if (g.split_columns) {
    c0 = g.n * p / g.blocks, c1 = g.n * (p + 1) / g.blocks;
  } else {
    r0 = g.m * p / g.blocks, r1 = g.m * (p + 1) / g.blocks;
  }
  if (r1 <= r0 || c1 <= c0) return;
  float* c = g.c + r0 * g.n + c0;
  float beta = 0.0f;
  if (g.bias != nullptr) {  // C = bias, then C += op(A) op(B) (as PyTorch's addmm)
    for (int64_t r = r0; r < r1; ++r) std::copy(g.bias + c0, g.bias + c1, g.c + r * g.n + c0);
    beta = 1.0f;
  }
  // Column-major: C^T[c0:c1, r0:r1] = op(B)^T[c0:c1, :] op(A)^T[:, r0:r1].
  const int m = static_cast<int>(c1 - c0), n = static_cast<int>(r1 - r0);
  const int k = static_cast<int>(g.k), ldc = static_cast<int>(g.n);
  const char tb = g.trans_b ? 'T' : 'N', ta = g.trans_a ? 'T' : 'N';
  const float* b = g.trans_b ? g.b + c0 * g.k : g.b + c0;
  const int ldb = static_cast<int>(g.trans_b ? g.k : g.n);
  const float* a = g.trans_a ? g.a + r0 : g.a + r0 * g.k;
  const int lda = static_cast<int>(g.trans_a ? g.m : g.k);
  const float one = 1.0f;
  sgemm_(&tb, &ta, &m, &n, &k, &one, b, &ldb, a, &lda, &beta, c, &ldc);
}

void RunBlocks(Gemm& g) {
  int64_t finished = 0;
  for (int64_t p; (p = g.next.fetch_add(1)) < g.blocks;) {
    RunBlock(g, p);
    ++finished;
  }
  g.done.fetch_add(finished);
}

ffi::Error GemmImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                    ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> c, bool trans_a,
                    bool trans_b) {
  auto ad = a.dimensions(), bd = b.dimensions(), cd = c->dimensions();
  if (ad.size() != 2 || bd.size() != 2 || cd.size() != 2)
    return ffi::Error::InvalidArgument("gemm: a, b and the result must be matrices");
  auto g = std::make_shared<Gemm>();
  g->m = trans_a ? ad[1] : ad[0];
  g->k = trans_a ? ad[0] : ad[1];
  g->n = trans_b ? bd[0] : bd[1];
  if ((trans_b ? bd[1] : bd[0]) != g->k || cd[0] != g->m || cd[1] != g->n)
    return ffi::Error::InvalidArgument("gemm: the shapes of a, b and the result do not agree");
  if (bias.element_count() != 0 && bias.element_count() != g->n)
    return ffi::Error::InvalidArgument("gemm: bias must have n elements, or none");
  const int64_t int_max = 2147483647;  // BLAS dimensions and strides are int
  if (g->m > int_max || g->n > int_max || g->k > int_max)
    return ffi::Error::InvalidArgument("gemm: a dimension is above 2^31 - 1");
  if (g->m == 0 || g->n == 0) return ffi::Error::Success();
  if (g->k == 0) {
    for (int64_t r = 0; r < g->m; ++r)
      for (int64_t j = 0; j < g->n; ++j)
        c->typed_data()[r * g->n + j] = bias.element_count() ? bias.typed_data()[j] : 0.0f;
    return ffi::Error::Success();
  }
  g->a = a.typed_data();
  g->b = b.typed_data();
  g->bias = bias.element_count() ? bias.typed_data() : nullptr;
  g->c = c->typed_data();
  g->trans_a = trans_a;
  g->trans_b = trans_b;
  g->split_columns = g->n > g->m;
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t length = g->split_columns ? g->n : g->m;
  g->blocks = std::clamp<int64_t>(length / kMinBlock, 1, threads);
  for (int64_t i = 1; i < g->blocks; ++i) pool.Schedule([g] { RunBlocks(*g); });
  RunBlocks(*g);  // the calling thread works too
  while (g->done.load() < g->blocks) std::this_thread::yield();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxformerGemm, GemmImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // a
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b
                                  .Arg<ffi::Buffer<ffi::F32>>()  // bias: (n,) or (0,)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // c
                                  .Attr<bool>("trans_a")
                                  .Attr<bool>("trans_b"));
