#ifndef KITH_CBLAS_SHIM_H
#define KITH_CBLAS_SHIM_H
#include <cblas.h>

/* LAPACK's symmetric eigensolver (divide and conquer), as OpenBLAS exports it: Debian ships no
   LAPACK header with libopenblas-dev, so the Fortran symbol is declared here, every argument by
   reference. */
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
             double *work, const int *lwork, int *iwork, const int *liwork, int *info);
#endif
