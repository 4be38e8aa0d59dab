#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2,fma")))
static float dot_u8_avx2(const float *w, const uint8_t *code, size_t d) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 32 <= d; j += 32) {
        __m128i c0 = _mm_loadl_epi64((const __m128i *)(code + j));
        __m128i c1 = _mm_loadl_epi64((const __m128i *)(code + j + 8));
        __m128i c2 = _mm_loadl_epi64((const __m128i *)(code + j + 16));
        __m128i c3 = _mm_loadl_epi64((const __m128i *)(code + j + 24));
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c0)), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j + 8), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c1)), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j + 16), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c2)), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j + 24), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c3)), a3);
    }
    for (; j + 8 <= d; j += 8) {
        __m128i c = _mm_loadl_epi64((const __m128i *)(code + j));
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c)), a0);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    float total = _mm_cvtss_f32(h);
    for (; j < d; j++) total += w[j] * (float)code[j];
    return total;
}
#endif

static float dot_u8_portable(const float *w, const uint8_t *code, size_t d) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t j = 0;
    for (; j + 4 <= d; j += 4) {
        s0 += w[j] * (float)code[j];
        s1 += w[j + 1] * (float)code[j + 1];
        s2 += w[j + 2] * (float)code[j + 2];
        s3 += w[j + 3] * (float)code[j + 3];
    }
    for (; j < d; j++) s0 += w[j] * (float)code[j];
    return (s0 + s1) + (s2 + s3);
}

typedef float (*dot_u8_fn)(const float *, const uint8_t *, size_t);

// Threads racing on the first call all store the same pointer; relaxed atomics make that defined.
static dot_u8_fn chosen_dot_u8(void) {
    static dot_u8_fn chosen = 0;
    dot_u8_fn found = __atomic_load_n(&chosen, __ATOMIC_RELAXED);
    if (!found) {
#if defined(__x86_64__)
        __builtin_cpu_init();
        found = (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? dot_u8_avx2 : dot_u8_portable;
#else
        found = dot_u8_portable;
#endif
        __atomic_store_n(&chosen, found, __ATOMIC_RELAXED);
    }
    return found;
}

float kith_dot_u8(const float *w, const uint8_t *code, size_t d) { return chosen_dot_u8()(w, code, d); }

void kith_dot_u8_many(const float *w, const uint8_t *codes, size_t stride, size_t n, size_t d, float *out) {
    dot_u8_fn dot = chosen_dot_u8();
    for (size_t i = 0; i < n; i++) out[i] = dot(w, codes + i * stride, d);
}
