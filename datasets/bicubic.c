/* The two loops of datasets/bicubic.py's fast resize, in C: one pass of image.scale's bicubic
 * interpolation over whole lines of samples, and the tiled transposed copy that puts the resized axis
 * outermost. bicubic.py computes the taps, checks every size and stride, and holds the readable
 * reference; tests/test_bicubic.py holds this code to it bit for bit.
 *
 * Built with -ffp-contract=off: every float32 operation below must round on its own, as the Lua's C
 * does; a fused multiply-add would change the last bit. */
#include <stdint.h>
#ifdef __SSE__
#include <xmmintrin.h>
#endif

/* x86-64 Linux: an AVX2 copy beside the baseline one, picked when the library loads (8 floats per
 * instruction instead of 4; AVX2 has no FMA, and the flag above forbids it anyway) */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define WITH_AVX2_COPY __attribute__((target_clones("avx2", "default")))
#else
#define WITH_AVX2_COPY
#endif

/* out row d (d < k) of each of the batch planes is the Catmull-Rom interpolation, at fraction frac[d],
 * of the src rows p0..p3 = rows[d], rows[k + d], rows[2k + d], rows[3k + d]. The first head rows
 * extrapolate p0 as 2*p1 - p2; the rows from tail on extrapolate p3 as 2*p2 - p1. A row is line
 * contiguous floats; plane b of src starts at src + b * src_plane, of out at out + b * out_plane. */
WITH_AVX2_COPY
void gunn_cubic_pass(const float *src, int64_t batch, int64_t src_plane, int64_t line,
                     const int64_t *rows, const float *frac, int64_t k, int64_t head, int64_t tail,
                     float *out, int64_t out_plane)
{
    for (int64_t b = 0; b < batch; b++) {
        const float *plane = src + b * src_plane;
        for (int64_t d = 0; d < k; d++) {
            const float *q0 = plane + rows[d] * line, *q1 = plane + rows[k + d] * line;
            const float *q2 = plane + rows[2 * k + d] * line, *q3 = plane + rows[3 * k + d] * line;
            const float x = frac[d];
            const double half = 0.5 * (double)x;
            const int extrapolate0 = d < head, extrapolate3 = d >= tail;
            float *dst = out + b * out_plane + d * line;
            for (int64_t c = 0; c < line; c++) {
                const float p1 = q1[c], p2 = q2[c];
                const float p0 = extrapolate0 ? 2.0f * p1 - p2 : q0[c];
                const float p3 = extrapolate3 ? 2.0f * p2 - p1 : q3[c];
                const float a1 = p2 - p0;
                const float a2 = 2.0f * p0 - 5.0f * p1 + 4.0f * p2 - p3;
                const float a3 = 3.0f * (p1 - p2) + p3 - p0;
                const float inner = a1 + x * (a2 + x * a3);
                /* the last step in double, rounded once to float */
                dst[c] = (float)((double)p1 + half * (double)inner);
            }
        }
    }
}

/* dst[j * dst_stride + i] = src[i * si + j * sj] for i < ni, j < nj: a transposed copy, in tiles small
 * enough that both sides stay in the L1 cache; within a tile, in 4x4 blocks of SSE registers where the
 * source rows are contiguous (the compilers' own vectorisation of the plain loop is slower than no
 * vectorisation at all, and at -O3 they do vectorise it). */
void gunn_transpose(const float *src, int64_t ni, int64_t nj, int64_t si, int64_t sj, float *dst,
                    int64_t dst_stride)
{
    enum { TILE = 16 };
    for (int64_t i0 = 0; i0 < ni; i0 += TILE) {
        const int64_t i1 = i0 + TILE < ni ? i0 + TILE : ni;
        for (int64_t j0 = 0; j0 < nj; j0 += TILE) {
            const int64_t j1 = j0 + TILE < nj ? j0 + TILE : nj;
            int64_t i = i0;
#ifdef __SSE__
            for (; sj == 1 && i + 4 <= i1; i += 4) {
                int64_t j = j0;
                for (; j + 4 <= j1; j += 4) {
                    const float *in = src + i * si + j;
                    __m128 r0 = _mm_loadu_ps(in), r1 = _mm_loadu_ps(in + si);
                    __m128 r2 = _mm_loadu_ps(in + 2 * si), r3 = _mm_loadu_ps(in + 3 * si);
                    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
                    float *out = dst + j * dst_stride + i;
                    _mm_storeu_ps(out, r0);
                    _mm_storeu_ps(out + dst_stride, r1);
                    _mm_storeu_ps(out + 2 * dst_stride, r2);
                    _mm_storeu_ps(out + 3 * dst_stride, r3);
                }
                for (; j < j1; j++)
                    for (int64_t k = i; k < i + 4; k++)
                        dst[j * dst_stride + k] = src[k * si + j];
            }
#endif
            for (; i < i1; i++)
                for (int64_t j = j0; j < j1; j++)
                    dst[j * dst_stride + i] = src[i * si + j * sj];
        }
    }
}
