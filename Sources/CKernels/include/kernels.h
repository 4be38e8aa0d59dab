// Small SIMD kernels Kith needs and no system library offers: inner products of a float query
// with 8-bit codes. Chosen at run time by the CPU's features (AVX2 + FMA, else portable C).
#ifndef KITH_KERNELS_H
#define KITH_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/// Σ_j w[j] · code[j] over `d` values.
float kith_dot_u8(const float *w, const uint8_t *code, size_t d);

/// out[i] = Σ_j w[j] · codes[i · stride + j] for i < n.
void kith_dot_u8_many(const float *w, const uint8_t *codes, size_t stride, size_t n, size_t d, float *out);

#endif
