#ifndef KITH_LMDB_SHIM_H
#define KITH_LMDB_SHIM_H
#include <lmdb.h>
#endif
