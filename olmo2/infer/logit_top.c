/* For each row of fp32 logits x[B, N]: the k largest values, best first, with their indices
 * (among equal values the lower index first, so the first is the index torch.argmax gives),
 * and, when asked, the row's log-sum-exp summed in fp64. Loaded by olmo2/infer/logit_top.py,
 * built with -O3 -march=native.
 *
 * What a decoding step does with its logits: greedy tokens, and the OpenAI API's log-probs
 * (the token's and the top-k alternatives'). torch does this in three passes over the logits
 * (topk, then logsumexp's max and exp-sum), each slower than memory; here the row is read
 * once for the top k (16 values are compared with the k-th best at a time, and only a block
 * holding a larger value is looked at one by one) and once more, from cache, for the sum.
 *
 * exp is a degree-7 polynomial after range reduction to |r| <= ln2/2 (truncation error
 * ~5e-9, below fp32 rounding), on x - max <= 0, clamped at -87 where exp underflows fp32.
 * Plain C with GCC vector extensions, OpenMP over rows; linked without an OpenMP library, as
 * skinny_mm.c is.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define V 16
#define PARALLEL_MIN (1 << 18)
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef double vd __attribute__((vector_size(128)));

static inline vf load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }

static inline int any(vi m) {
    uint64_t u[8];
    memcpy(u, &m, sizeof u);
    return ((u[0] | u[1]) | (u[2] | u[3]) | (u[4] | u[5]) | (u[6] | u[7])) != 0;
}

/* (x, i) into the best-first list of n <= k entries; equal values keep the earlier index
 * ahead. Returns the new length. */
static inline int64_t insert(float *val, int64_t *idx, int64_t n, int64_t k, float x, int64_t i) {
    int64_t j = n < k ? n++ : k - 1;
    while (j > 0 && val[j - 1] < x) {
        val[j] = val[j - 1];
        idx[j] = idx[j - 1];
        j--;
    }
    val[j] = x;
    idx[j] = i;
    return n;
}

static void top_row(const float *x, int64_t N, int64_t k, float *val, int64_t *idx) {
    int64_t n = 0, i = 0;
    for (; i < k; i++) n = insert(val, idx, n, k, x[i], i);
    for (; i + 4 * V <= N; i += 4 * V) {
        float t = val[k - 1];
        vf a = load(x + i), b = load(x + i + V), c = load(x + i + 2 * V), d = load(x + i + 3 * V);
        if (!any((a > t) | (b > t) | (c > t) | (d > t))) continue;
        for (int64_t j = i; j < i + 4 * V; j++)
            if (x[j] > val[k - 1]) insert(val, idx, k, k, x[j], j);
    }
    for (; i < N; i++)
        if (x[i] > val[k - 1]) insert(val, idx, k, k, x[i], i);
}

static inline vf vexp(vf x) { /* x <= 0 */
    const vf lo = (vf){0} - 87.0f, magic = (vf){0} + 12582912.0f; /* 1.5 * 2^23 */
    vi small = x < lo;
    vf y;
    vi xi, li;
    memcpy(&xi, &x, sizeof xi);
    memcpy(&li, &lo, sizeof li);
    xi = (xi & ~small) | (li & small);
    memcpy(&x, &xi, sizeof x);
    vf t = x * 1.44269504088896341f + magic; /* round(x / ln2) in the low mantissa bits */
    vf n = t - magic;
    vf r = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
    vf p = (vf){0} + 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    vi ti, pi;
    memcpy(&ti, &t, sizeof ti);
    memcpy(&pi, &p, sizeof pi);
    pi += (ti - 0x4B400000) << 23; /* times 2^n */
    memcpy(&y, &pi, sizeof y);
    return y;
}

static double lse_row(const float *x, int64_t N, float max) {
    if (isinf(max) && max < 0) return -INFINITY;
    vd acc = {0};
    int64_t i = 0;
    for (; i + V <= N; i += V) acc += __builtin_convertvector(vexp(load(x + i) - max), vd);
    double s = 0;
    for (int l = 0; l < V; l++) s += acc[l];
    for (; i < N; i++) s += exp((double)x[i] - max);
    return max + log(s);
}

/* x[B, N] contiguous, 1 <= k <= N: val[B, k], idx[B, k]; lse[B] unless lse is NULL. */
void olmo2_logit_top(const float *x, int64_t B, int64_t N, int64_t k, float *val, int64_t *idx,
                     double *lse) {
#pragma omp parallel for schedule(static) if (B * N >= PARALLEL_MIN)
    for (int64_t b = 0; b < B; b++) {
        top_row(x + b * N, N, k, val + b * k, idx + b * k);
        if (lse) lse[b] = lse_row(x + b * N, N, val[b * k]);
    }
}
