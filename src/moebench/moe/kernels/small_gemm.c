/* Batched fp32 GEMMs for experts with few rows (AVX-512 + FMA), moebench.
 *
 * MKL reaches ~55 % of this CPU's GEMM peak on the 32-row GEMMs of a Soft-MoE layer
 * (197 experts x 1 slot x 32 images) and ~75 % on ~400-row ones, against ~85 % on one
 * large GEMM. Two register-blocked micro-kernels written for these shapes:
 *
 *  - rows: Y[m, n] (+)= sum_k A[m, k] W[n, k]   (a linear layer's forward, W [N, K]) or,
 *    with tw, sum_k A[m, k] W[k, n]   (its input gradient gout W, W [K, N]).
 *    Vectorised over 32 rows of A (packed transposed, AT[k][0:32], zero-padded), 12
 *    columns n per tile: per k, two vector loads of AT and 12 broadcasts of W; each
 *    weight is read from memory once for all 32 rows, with a software prefetch: PF_COLS
 *    floats ahead along each of the 12 rows of W [N, K] (each tile restarts 12 streams,
 *    too short for the hardware prefetcher alone), PF_K rows ahead for W [K, N].
 *  - bcast: C[r, c] (+)= sum_j A[j*aj + r*ar] X[j, c]   (weight gradients gout^T x with
 *    j = rows). 8 rows r x 48 columns c per tile: per j, three vector loads of X and 8
 *    broadcasts of A. Fresh weight gradients (beta = 0, 64-byte aligned) are written with
 *    non-temporal stores: they are large and read again only by the optimiser. (fc2's
 *    input gradient ran ~20 % slower here than on rows with tw: 4 passes over each W
 *    panel; fc1's the same within noise.)
 *
 * Work (expert, row chunk / column tile) is split evenly over nt OpenMP threads: built
 * with -fopenmp against libgomp.so.1, the library torch itself loaded, so the kernels run
 * on torch's own thread pool (separate POSIX threads measured 1.2-2x slower in a layer:
 * they compete with torch's OpenMP workers spinning after each elementwise op).
 */
#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>

#define AI static inline __attribute__((always_inline))
#define NT_COLS 12   /* columns per rows_nt tile */
#define BC_ROWS 8    /* rows per bcast tile */
#define PF_COLS 256  /* rows_nt prefetch distance along k, floats */
#define PF_ROWS 8    /* bcast prefetch distance along j, rows of X */
#define PF_K 32      /* rows prefetch distance along k for W [K, N], rows of W */
#define MAX_THREADS 64

AI void nt_tile(const int R, const int TW, int K, const float *AT, const float *W, long ws,
                float *tmp) {
  __m512 a0[NT_COLS], a1[NT_COLS];
#pragma GCC unroll 16
  for (int r = 0; r < R; r++) { a0[r] = _mm512_setzero_ps(); a1[r] = _mm512_setzero_ps(); }
  for (int k = 0; k < K; k++) {
    __m512 x0 = _mm512_load_ps(AT + 32 * k), x1 = _mm512_load_ps(AT + 32 * k + 16);
    if (TW) {          /* the R floats W[k + PF_K, 0:R]: one or two cache lines */
      _mm_prefetch((const char *)(W + (k + PF_K) * ws), _MM_HINT_T0);
      _mm_prefetch((const char *)(W + (k + PF_K) * ws + R - 1), _MM_HINT_T0);
    } else {
      int pr = k & 15;   /* one prefetch per row of W per 16 k: one cache line each */
      if (pr < R) _mm_prefetch((const char *)(W + pr * ws + k + PF_COLS), _MM_HINT_T0);
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
      __m512 w = _mm512_set1_ps(TW ? W[k * ws + r] : W[r * ws + k]);
      a0[r] = _mm512_fmadd_ps(w, x0, a0[r]);
      a1[r] = _mm512_fmadd_ps(w, x1, a1[r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; r++) {
    _mm512_store_ps(tmp + 32 * r, a0[r]);
    _mm512_store_ps(tmp + 32 * r + 16, a1[r]);
  }
}

static void nt_cols(int R, int tw, int K, const float *AT, const float *W, long ws, float *tmp) {
  switch (R) {
#define T(n) case n: if (tw) nt_tile(n, 1, K, AT, W, ws, tmp); \
  else nt_tile(n, 0, K, AT, W, ws, tmp); break;
    T(1) T(2) T(3) T(4) T(5) T(6) T(7) T(8) T(9) T(10) T(11) T(12)
#undef T
  }
}

typedef struct {
  int E, M, K, N, beta, tw, t, nt;
  const float *A; long ae, as;
  const float *W; long we, ws;
  float *Y; long ye, ys;
  int failed;
} nt_args;

static void *nt_worker(void *p) {
  nt_args *a = (nt_args *)p;
  int chunks = (a->M + 31) / 32, tiles = (a->N + NT_COLS - 1) / NT_COLS;
  long total = (long)a->E * chunks * tiles;
  long lo = total * a->t / a->nt, hi = total * (a->t + 1) / a->nt, packed = -1;
  float tmp[32 * NT_COLS] __attribute__((aligned(64)));
  float *AT = aligned_alloc(64, sizeof(float) * 32 * (size_t)a->K);
  if (!AT) { a->failed = 1; return NULL; }
  for (long it = lo; it < hi; it++) {
    long unit = it / tiles;
    int e = (int)(unit / chunks), m0 = (int)(unit % chunks) * 32, n0 = (int)(it % tiles) * NT_COLS;
    int mm = a->M - m0 < 32 ? a->M - m0 : 32, R = a->N - n0 < NT_COLS ? a->N - n0 : NT_COLS;
    if (unit != packed) {  /* AT[k][m] = A[m0 + m, k], zero rows past M */
      const float *A = a->A + e * a->ae + (long)m0 * a->as;
      for (int k = 0; k < a->K; k++) {
        for (int m = 0; m < mm; m++) AT[32 * k + m] = A[m * a->as + k];
        for (int m = mm; m < 32; m++) AT[32 * k + m] = 0.f;
      }
      packed = unit;
    }
    nt_cols(R, a->tw, a->K, AT, a->W + e * a->we + (a->tw ? n0 : n0 * a->ws), a->ws, tmp);
    float *Y = a->Y + e * a->ye + (long)m0 * a->ys + n0;
    for (int m = 0; m < mm; m++) {
      float *y = Y + m * a->ys;
      if (a->beta) for (int r = 0; r < R; r++) y[r] += tmp[32 * r + m];
      else for (int r = 0; r < R; r++) y[r] = tmp[32 * r + m];
    }
  }
  free(AT);
  return NULL;
}

/* Y[e][m][n] (+)= sum_k A[e][m][k] * W[e][n][k], or with tw W[e][k][n] (unit stride along
 * the last index of each). 0 on success. */
int mb_rows(int E, int M, int K, int N, const float *A, long ae, long as, const float *W,
            long we, long ws, float *Y, long ye, long ys, int beta, int tw, int nt) {
  nt_args args[MAX_THREADS];
  int failed = 0, ran = 1;
  nt = nt < 1 ? 1 : (nt > MAX_THREADS ? MAX_THREADS : nt);
#pragma omp parallel num_threads(nt)
  {
    int t = omp_get_thread_num(), n = omp_get_num_threads();
    if (t == 0) ran = n;
    args[t] = (nt_args){E, M, K, N, beta, tw, t, n, A, ae, as, W, we, ws, Y, ye, ys, 0};
    nt_worker(&args[t]);
  }
  for (int t = 0; t < ran; t++) failed |= args[t].failed;
  return failed;
}

AI void bc_tile(const int R, const int NV, int J, const float *A, long aj, long ar,
                const float *X, long xs, float *C, long cs, int beta) {
  __m512 acc[BC_ROWS][3];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
  for (int j = 0; j < J; j++) {
    __m512 x[3];
    _mm_prefetch((const char *)(X + (j + PF_ROWS) * xs), _MM_HINT_T0);
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) x[v] = _mm512_loadu_ps(X + j * xs + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      __m512 g = _mm512_set1_ps(A[j * aj + r * ar]);
#pragma GCC unroll 3
      for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(g, x[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) {
      float *c = C + r * cs + 16 * v;
      if (beta) _mm512_storeu_ps(c, _mm512_add_ps(acc[r][v], _mm512_loadu_ps(c)));
      else if (((size_t)c & 63) == 0) _mm512_stream_ps(c, acc[r][v]);
      else _mm512_storeu_ps(c, acc[r][v]);
    }
}

static void bc_rows(int R, int NV, int J, const float *A, long aj, long ar, const float *X,
                    long xs, float *C, long cs, int beta) {
#define T(n) case n: if (NV == 3) bc_tile(n, 3, J, A, aj, ar, X, xs, C, cs, beta); \
  else if (NV == 2) bc_tile(n, 2, J, A, aj, ar, X, xs, C, cs, beta);      \
  else bc_tile(n, 1, J, A, aj, ar, X, xs, C, cs, beta); break;
  switch (R) { T(1) T(2) T(3) T(4) T(5) T(6) T(7) T(8) }
#undef T
}

typedef struct {
  int E, J, R, Cn, beta, t, nt;
  const float *A; long ae, aj, ar;
  const float *X; long xe, xs;
  float *C; long ce, cs;
} bc_args;

static void *bc_worker(void *p) {
  bc_args *a = (bc_args *)p;
  int rt = (a->R + BC_ROWS - 1) / BC_ROWS, ct = (a->Cn / 16 + 2) / 3;
  long total = (long)a->E * rt * ct;
  long lo = total * a->t / a->nt, hi = total * (a->t + 1) / a->nt;
  for (long it = lo; it < hi; it++) {  /* row tiles innermost: X's column panel stays cached */
    int e = (int)(it / (rt * ct)), rem = (int)(it % (rt * ct));
    int c0 = (rem / rt) * 48, r0 = (rem % rt) * BC_ROWS;
    int R = a->R - r0 < BC_ROWS ? a->R - r0 : BC_ROWS, nv = (a->Cn - c0) / 16;
    bc_rows(R, nv > 3 ? 3 : nv, a->J, a->A + e * a->ae + r0 * a->ar, a->aj, a->ar,
            a->X + e * a->xe + c0, a->xs, a->C + e * a->ce + (long)r0 * a->cs + c0, a->cs,
            a->beta);
  }
  _mm_sfence();   /* order the non-temporal stores before the caller reads C */
  return NULL;
}

/* C[e][r][c] (+)= sum_j A[e*ae + j*aj + r*ar] * X[e][j][c]; Cn a multiple of 16. A fresh C
 * (beta = 0) is written with non-temporal stores: weight gradients, not read again soon. */
int mb_bcast(int E, int J, int R, int Cn, const float *A, long ae, long aj, long ar,
             const float *X, long xe, long xs, float *C, long ce, long cs, int beta, int nt) {
  if (Cn % 16) return 2;
  nt = nt < 1 ? 1 : (nt > MAX_THREADS ? MAX_THREADS : nt);
#pragma omp parallel num_threads(nt)
  {
    bc_args args = {E, J, R, Cn, beta, omp_get_thread_num(), omp_get_num_threads(),
                    A, ae, aj, ar, X, xe, xs, C, ce, cs};
    bc_worker(&args);
  }
  return 0;
}
