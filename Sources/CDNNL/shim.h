#ifndef KITH_CDNNL_SHIM_H
#define KITH_CDNNL_SHIM_H
#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

// Macros that do not import into Swift.
static inline void *kith_dnnl_memory_allocate(void) { return DNNL_MEMORY_ALLOCATE; }
static inline int kith_dnnl_arg_src(void) { return DNNL_ARG_SRC; }
static inline int kith_dnnl_arg_dst(void) { return DNNL_ARG_DST; }
static inline int kith_dnnl_arg_weights(void) { return DNNL_ARG_WEIGHTS; }
static inline int kith_dnnl_arg_bias(void) { return DNNL_ARG_BIAS; }
static inline int kith_dnnl_arg_from(void) { return DNNL_ARG_FROM; }
static inline int kith_dnnl_arg_to(void) { return DNNL_ARG_TO; }
static inline int kith_dnnl_arg_scratchpad(void) { return DNNL_ARG_SCRATCHPAD; }

/// Sets the OpenMP thread count of the calling thread's next parallel regions (oneDNN's CPU
/// runtime is OpenMP). Looked up in the already loaded OpenMP runtime, so that Kith need not
/// link it itself; returns 0 when there is none.
static inline int kith_omp_set_num_threads(int threads) {
    static void (*set)(int) = 0;
    if (!set) set = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (!set) return 0;
    set(threads);
    return 1;
}
#endif
