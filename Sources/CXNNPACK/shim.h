#ifndef KITH_CXNNPACK_SHIM_H
#define KITH_CXNNPACK_SHIM_H
#include <xnnpack.h>
#include <pthreadpool.h>

/// Bytes XNNPACK's kernels may read past the end of an input buffer.
static inline size_t kith_xnn_extra_bytes(void) { return XNN_EXTRA_BYTES; }
#endif
