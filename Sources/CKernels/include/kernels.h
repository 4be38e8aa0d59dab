// Small SIMD kernels Kith needs and no system library offers: inner products of integer weights
// with 8-bit codes. Chosen at run time by the CPU's features (AVX-512 with VNNI, AVX2, else portable C).
#ifndef KITH_KERNELS_H
#define KITH_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/// out[i] = Σ_j w[j] · codes[i · stride + j] for i < n, in exact integer arithmetic: |w[j]| must
/// be at most 16,383 and d at most 65,536 (so that no sum leaves 32 bits).
void kith_dot_u8_i16_many(const int16_t *w, const uint8_t *codes, size_t stride, size_t n, size_t d, int32_t *out);

/// kith_dot_u8_i16_many with one kernel, for tests: level 0 portable C, 1 AVX2, 2 AVX-512 with
/// VNNI. Returns -1 (and writes nothing) where this CPU cannot run it, else 0.
int kith_dot_u8_i16_many_level(int level, const int16_t *w, const uint8_t *codes, size_t stride, size_t n, size_t d, int32_t *out);

/// out[i] = Σ_j q[j] · h_j for the d IEEE half-precision values h (little-endian) of code i,
/// which starts at codes + i · stride (bytes).
void kith_dot_f16_many(const float *q, const uint8_t *codes, size_t stride, size_t n, size_t d, float *out);

#endif
