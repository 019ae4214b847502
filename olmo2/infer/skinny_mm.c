/* y[B, N] = x[B, K] · w[N, K]ᵀ for a few fp32 rows of x and fp32 or bf16 weights, with fp32
 * products and sums: the linear layers of one decoding step. Loaded by
 * olmo2/infer/skinny.py, built by olmo2/infer/native.py.
 *
 * A decoding step reads every weight once and does ~2·B flops per weight, so it runs at
 * memory speed. BLAS routines lose that speed here: GEMV takes a dot-product path and GEMM
 * packs w into panels first (another copy, read again), which for B ≤ 8 reaches 5-12 GB/s on
 * a core that streams 21 GB/s. This kernel reads each weight once: for one row of x as a
 * single linear stream, for more rows R rows of w at a time against BB rows of x (R·BB
 * vector accumulators); both prefetch ahead.
 *
 * Plain C with GCC vector extensions (AVX-512, AVX2 or NEON, whichever -march gives); OpenMP
 * over blocks of w's rows. Linked without an OpenMP library: GOMP_* resolve to the runtime
 * torch has loaded, so torch.set_num_threads() governs this code too and no second thread
 * pool competes with torch's.
 */
#include <stdint.h>
#include <string.h>

#define V 16
/* Software prefetch into L2 (found by sweeping on the machine of bench/RESULTS.md: without
 * it the core stalls on memory between bursts of FMAs, 8-15 GB/s instead of 13-21): the
 * single-row kernel 4 KB ahead in its stream, the blocked kernels 4 row blocks ahead. */
#define AHEAD 1024
#define AHEAD_BLOCKS 4
/* Below this many weights one thread does it: waking a sleeping OpenMP worker costs 20-40 us,
 * and libgomp puts them to sleep at once when it manages more threads than cores (on 2
 * cores: a second thread that calls torch, such as the `olmo2 serve` engine's). */
#define PARALLEL_MIN (1 << 18)
typedef float vf __attribute__((vector_size(64)));
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf4 __attribute__((vector_size(16)));
typedef uint16_t vh __attribute__((vector_size(32)));
typedef uint32_t vu __attribute__((vector_size(64)));
typedef uint16_t bf16;

static inline vf load_f32(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }

static inline vf load_tail_f32(const float *p, int64_t n) {
    vf v = {0};
    memcpy(&v, p, (size_t)n * sizeof(float));
    return v;
}

static inline vf widen(vh h) { /* bf16 is the top half of an fp32: exact */
    vu u = __builtin_convertvector(h, vu) << 16;
    vf f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline vf load_bf16(const bf16 *p) { vh h; memcpy(&h, p, sizeof h); return widen(h); }

static inline vf load_tail_bf16(const bf16 *p, int64_t n) {
    vh h = {0};
    memcpy(&h, p, (size_t)n * sizeof(bf16));
    return widen(h);
}

#define load(p) _Generic((p), const float *: load_f32, const bf16 *: load_bf16)(p)
#define load_tail(p, n) \
    _Generic((p), const float *: load_tail_f32, const bf16 *: load_tail_bf16)(p, n)

static inline float hsum(vf v) { /* a tree: 16 -> 8 -> 4 -> 1 */
    vf8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
            __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    vf4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}

/* R rows of w (from w, stride K) against BB rows of x (stride K) into y (row stride ldy) */
#define KERNEL(R, BB, WT)                                                                   \
    static void k_##R##_##BB##_##WT(const float *x, const WT *w, int64_t K, float *y,      \
                                    int64_t ldy) {                                         \
        vf acc[R][BB];                                                                      \
        vf wv[R];                                                                           \
        for (int r = 0; r < R; r++)                                                         \
            for (int b = 0; b < BB; b++) acc[r][b] = (vf){0};                               \
        int64_t k = 0;                                                                      \
        for (; k + V <= K; k += V) {                                                        \
            for (int r = 0; r < R; r++) {                                                   \
                wv[r] = load(w + r * K + k);                                                \
                __builtin_prefetch(w + (r + AHEAD_BLOCKS * R) * K + k, 0, 2);               \
            }                                                                               \
            for (int b = 0; b < BB; b++) {                                                  \
                vf xv = load(x + b * K + k);                                                \
                for (int r = 0; r < R; r++) acc[r][b] += wv[r] * xv;                        \
            }                                                                               \
        }                                                                                   \
        if (k < K) {                                                                        \
            for (int r = 0; r < R; r++) wv[r] = load_tail(w + r * K + k, K - k);            \
            for (int b = 0; b < BB; b++) {                                                  \
                vf xv = load_tail(x + b * K + k, K - k);                                    \
                for (int r = 0; r < R; r++) acc[r][b] += wv[r] * xv;                        \
            }                                                                               \
        }                                                                                   \
        for (int b = 0; b < BB; b++)                                                        \
            for (int r = 0; r < R; r++) y[b * ldy + r] = hsum(acc[r][b]);                   \
    }

/* One row of x: one row of w at a time with 4 accumulators, so w is read as one linear
 * stream (faster here than R rows in parallel, which are R streams). */
#define STREAM(WT)                                                                          \
    static void k_1_1_##WT(const float *x, const WT *w, int64_t K, float *y, int64_t ldy) { \
        (void)ldy;                                                                          \
        vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                          \
        int64_t k = 0;                                                                      \
        for (; k + 4 * V <= K; k += 4 * V) {                                                \
            for (int i = 0; i < 4; i++) __builtin_prefetch(w + k + AHEAD + i * V, 0, 2);    \
            a0 += load(w + k) * load(x + k);                                                \
            a1 += load(w + k + V) * load(x + k + V);                                        \
            a2 += load(w + k + 2 * V) * load(x + k + 2 * V);                                \
            a3 += load(w + k + 3 * V) * load(x + k + 3 * V);                                \
        }                                                                                   \
        for (; k + V <= K; k += V) a0 += load(w + k) * load(x + k);                         \
        if (k < K) a0 += load_tail(w + k, K - k) * load_tail(x + k, K - k);                 \
        y[0] = hsum((a0 + a1) + (a2 + a3));                                                 \
    }

/* More rows of x: R rows of w at a time, R chosen so that R·BB accumulators plus R weight
 * vectors fit 32 vector registers. */
#define ALL(WT)                                                                             \
    STREAM(WT)                                                                              \
    KERNEL(4, 2, WT) KERNEL(4, 3, WT) KERNEL(2, 4, WT) KERNEL(2, 5, WT) KERNEL(2, 6, WT)    \
    KERNEL(2, 7, WT) KERNEL(2, 8, WT) KERNEL(1, 2, WT) KERNEL(1, 3, WT) KERNEL(1, 4, WT)    \
    KERNEL(1, 5, WT) KERNEL(1, 6, WT) KERNEL(1, 7, WT) KERNEL(1, 8, WT)                     \
    static void (*const WIDE_##WT[9])(const float *, const WT *, int64_t, float *,          \
                                      int64_t) = {0,            k_1_1_##WT, k_4_2_##WT,    \
                                                  k_4_3_##WT,   k_2_4_##WT, k_2_5_##WT,    \
                                                  k_2_6_##WT,   k_2_7_##WT, k_2_8_##WT};   \
    static void (*const ONE_##WT[9])(const float *, const WT *, int64_t, float *,           \
                                     int64_t) = {0,           k_1_1_##WT, k_1_2_##WT,      \
                                                 k_1_3_##WT,  k_1_4_##WT, k_1_5_##WT,      \
                                                 k_1_6_##WT,  k_1_7_##WT, k_1_8_##WT};     \
    /* y[B, N] = x[B, K] · w[N, K]ᵀ, all contiguous. Blocks of 64 rows of w stay in L2     \
     * while each chunk of 8 rows of x passes over them. */                                 \
    void olmo2_skinny_mm_##WT(const float *x, int64_t B, int64_t K, const WT *w, int64_t N, \
                              float *y) {                                                   \
        const int64_t NB = 64;                                                              \
        _Pragma("omp parallel for schedule(static) if (N * K >= PARALLEL_MIN)")             \
        for (int64_t n0 = 0; n0 < N; n0 += NB) {                                            \
            int64_t n1 = n0 + NB < N ? n0 + NB : N;                                         \
            for (int64_t b0 = 0; b0 < B; b0 += 8) {                                         \
                int bb = B - b0 < 8 ? (int)(B - b0) : 8;                                    \
                const float *xb = x + b0 * K;                                               \
                float *yb = y + b0 * N;                                                     \
                int64_t n = n0;                                                             \
                for (; n + ROWS[bb] <= n1; n += ROWS[bb])                                   \
                    WIDE_##WT[bb](xb, w + n * K, K, yb + n, N);                             \
                for (; n < n1; n++) ONE_##WT[bb](xb, w + n * K, K, yb + n, N);              \
            }                                                                               \
        }                                                                                   \
    }

static const int ROWS[9] = {0, 1, 4, 4, 2, 2, 2, 2, 2}; /* rows of w per call of WIDE[bb] */

ALL(float)
ALL(bf16)
