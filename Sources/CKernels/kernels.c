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

#if defined(__x86_64__)
// 32 codes widened to 16 bits per instruction, multiplied in pairs and added into 32-bit lanes
// by one VNNI instruction; the tail is read with masks.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
static int32_t dot_u8_i16_avx512(const int16_t *w, const uint8_t *code, size_t d) {
    __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512(), a2 = _mm512_setzero_si512(), a3 = _mm512_setzero_si512();
    size_t j = 0;
    for (; j + 128 <= d; j += 128) {
        a0 = _mm512_dpwssd_epi32(a0, _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(code + j))), _mm512_loadu_si512(w + j));
        a1 = _mm512_dpwssd_epi32(a1, _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(code + j + 32))), _mm512_loadu_si512(w + j + 32));
        a2 = _mm512_dpwssd_epi32(a2, _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(code + j + 64))), _mm512_loadu_si512(w + j + 64));
        a3 = _mm512_dpwssd_epi32(a3, _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(code + j + 96))), _mm512_loadu_si512(w + j + 96));
    }
    for (; j < d; j += 32) {
        __mmask32 m = d - j >= 32 ? 0xFFFFFFFFu : (__mmask32)((1u << (d - j)) - 1);
        __m512i c = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m, code + j));
        a0 = _mm512_dpwssd_epi32(a0, c, _mm512_maskz_loadu_epi16(m, w + j));
    }
    return _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)));
}
#endif

#if defined(__x86_64__)
// Eight halves converted per instruction (F16C), then multiplied and added.
__attribute__((target("avx2,fma,f16c")))
static float dot_f16_avx2(const float *q, const uint8_t *code, size_t d) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 16 <= d; j += 16) {
        __m256 h0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(code + 2 * j)));
        __m256 h1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(code + 2 * j + 16)));
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), h0, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j + 8), h1, a1);
    }
    __m256 s = _mm256_add_ps(a0, a1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    float total = _mm_cvtss_f32(h);
    for (; j < d; j++) {
        uint16_t bits = (uint16_t)(code[2 * j] | (code[2 * j + 1] << 8));
        total += q[j] * _cvtsh_ss(bits);
    }
    return total;
}
#endif

// IEEE half to float, for machines without F16C.
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF, bits;
    if (exponent == 0x1F) {
        bits = sign | 0x7F800000 | (mantissa << 13);
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else {  // subnormal: normalise
        exponent = 113;
        while (!(mantissa & 0x400)) { mantissa <<= 1; exponent--; }
        bits = sign | (exponent << 23) | ((mantissa & 0x3FF) << 13);
    }
    float f;
    __builtin_memcpy(&f, &bits, sizeof f);
    return f;
}

static float dot_f16_portable(const float *q, const uint8_t *code, size_t d) {
    float total = 0;
    for (size_t j = 0; j < d; j++) total += q[j] * half_to_float((uint16_t)(code[2 * j] | (code[2 * j + 1] << 8)));
    return total;
}

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
typedef float (*dot_f16_fn)(const float *, const uint8_t *, size_t);

/// The kernels this CPU runs, chosen once.
struct kernels {
    dot_u8_i16_fn dot_u8_i16;
    dot_f16_fn dot_f16;
};

/// The integer kernel of `level` (0 portable C, 1 AVX2, 2 AVX-512 with VNNI), NULL where this
/// CPU cannot run it.
static dot_u8_i16_fn dot_u8_i16_at(int level) {
    if (level == 0) return dot_u8_i16_portable;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (level == 1 && __builtin_cpu_supports("avx2")) return dot_u8_i16_avx2;
    if (level == 2 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")) {
        return dot_u8_i16_avx512;
    }
#endif
    return NULL;
}

static struct kernels choose(void) {
    struct kernels k = {dot_u8_i16_portable, dot_f16_portable};
    for (int level = 2; level > 0; level--) {
        if (dot_u8_i16_at(level)) { k.dot_u8_i16 = dot_u8_i16_at(level); break; }
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) k.dot_f16 = dot_f16_avx2;
#endif
    return k;
}

static struct kernels chosen(void) {
    static struct kernels k;
    static int once = 0;
    // Threads racing on the first calls all compute the same choice; the flag is published
    // after the pointers (release), and read before them (acquire).
    if (__atomic_load_n(&once, __ATOMIC_ACQUIRE)) {
        struct kernels known = {__atomic_load_n(&k.dot_u8_i16, __ATOMIC_RELAXED), __atomic_load_n(&k.dot_f16, __ATOMIC_RELAXED)};
        return known;
    }
    struct kernels found = choose();
    __atomic_store_n(&k.dot_u8_i16, found.dot_u8_i16, __ATOMIC_RELAXED);
    __atomic_store_n(&k.dot_f16, found.dot_f16, __ATOMIC_RELAXED);
    __atomic_store_n(&once, 1, __ATOMIC_RELEASE);
    return found;
}

void kith_dot_f16_many(const float *q, const uint8_t *codes, size_t stride, size_t n, size_t d, float *out) {
    dot_f16_fn dot = chosen().dot_f16;
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n) {
            for (size_t b = 0; b < 2 * d; b += 64) __builtin_prefetch(codes + (i + 1) * stride + b, 0, 0);
        }
        out[i] = dot(q, codes + i * stride, d);
    }
}

static void dot_u8_i16_many(dot_u8_i16_fn dot, const int16_t *w, const uint8_t *codes, size_t stride, size_t n, size_t d, int32_t *out) {
    for (size_t i = 0; i < n; i++) {
        // The next code's cache lines are asked for while this one is scored: codes sit in the
        // memory map, where the hardware prefetcher stops at every page boundary.
        if (i + 1 < n) {
            for (size_t b = 0; b < d; b += 64) __builtin_prefetch(codes + (i + 1) * stride + b, 0, 0);
        }
        out[i] = dot(w, codes + i * stride, d);
    }
}

void kith_dot_u8_i16_many(const int16_t *w, const uint8_t *codes, size_t stride, size_t n, size_t d, int32_t *out) {
    dot_u8_i16_many(chosen().dot_u8_i16, w, codes, stride, n, d, out);
}

int kith_dot_u8_i16_many_level(int level, const int16_t *w, const uint8_t *codes, size_t stride, size_t n, size_t d, int32_t *out) {
    dot_u8_i16_fn dot = dot_u8_i16_at(level);
    if (!dot) return -1;
    dot_u8_i16_many(dot, w, codes, stride, n, d, out);
    return 0;
}
