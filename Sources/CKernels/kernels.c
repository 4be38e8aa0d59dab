#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

// 16 codes widened to 16 bits per shuffle, multiplied and added in pairs into 32-bit lanes.
__attribute__((target("avx2")))
static int32_t dot_u8_i16_avx2(const int16_t *w, const uint8_t *code, size_t d) {
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
    size_t j = 0;
    for (; j + 32 <= d; j += 32) {
        __m256i c0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(code + j)));
        __m256i c1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(code + j + 16)));
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(c0, _mm256_loadu_si256((const __m256i *)(w + j))));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(c1, _mm256_loadu_si256((const __m256i *)(w + j + 16))));
    }
    __m256i s = _mm256_add_epi32(a0, a1);
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1));
    int32_t total = _mm_cvtsi128_si32(h);
    for (; j < d; j++) total += (int32_t)w[j] * (int32_t)code[j];
    return total;
}
#endif

static int32_t dot_u8_i16_portable(const int16_t *w, const uint8_t *code, size_t d) {
    int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t j = 0;
    for (; j + 4 <= d; j += 4) {
        s0 += (int32_t)w[j] * (int32_t)code[j];
        s1 += (int32_t)w[j + 1] * (int32_t)code[j + 1];
        s2 += (int32_t)w[j + 2] * (int32_t)code[j + 2];
        s3 += (int32_t)w[j + 3] * (int32_t)code[j + 3];
    }
    for (; j < d; j++) s0 += (int32_t)w[j] * (int32_t)code[j];
    return (s0 + s1) + (s2 + s3);
}

typedef int32_t (*dot_u8_i16_fn)(const int16_t *, const uint8_t *, size_t);

// Threads racing on the first call all store the same pointer; relaxed atomics make that defined.
static dot_u8_i16_fn chosen_dot(void) {
    static dot_u8_i16_fn chosen = 0;
    dot_u8_i16_fn found = __atomic_load_n(&chosen, __ATOMIC_RELAXED);
    if (!found) {
#if defined(__x86_64__)
        __builtin_cpu_init();
        found = __builtin_cpu_supports("avx2") ? dot_u8_i16_avx2 : dot_u8_i16_portable;
#else
        found = dot_u8_i16_portable;
#endif
        __atomic_store_n(&chosen, found, __ATOMIC_RELAXED);
    }
    return found;
}

void kith_dot_u8_i16_many(const int16_t *w, const uint8_t *codes, size_t stride, size_t n, size_t d, int32_t *out) {
    dot_u8_i16_fn dot = chosen_dot();
    for (size_t i = 0; i < n; i++) {
        // The next code's cache lines are asked for while this one is scored: codes sit in the
        // memory map, where the hardware prefetcher stops at every page boundary.
        if (i + 1 < n) {
            for (size_t b = 0; b < d; b += 64) __builtin_prefetch(codes + (i + 1) * stride + b, 0, 0);
        }
        out[i] = dot(w, codes + i * stride, d);
    }
}
