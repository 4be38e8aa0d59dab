#ifndef KITH_CBLAS_SHIM_H
#define KITH_CBLAS_SHIM_H
#include <cblas.h>
#endif
