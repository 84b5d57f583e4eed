/* What mlc generates per model (tables.c) and the runtime (runtime.c) reads. Not part of the API. */
#ifndef MLC_INTERNAL_H
#define MLC_INTERNAL_H

#include "mlc_model.h"

typedef struct mlc_model_tables {
    size_t num_inputs, num_outputs;
    const mlc_tensor_info *inputs, *outputs;
    size_t num_params;
    const uint64_t *param_offsets;            /* into the weights' data section */
    const char *params_header_prefix;         /* the weights header up to its free-form "meta" */
    size_t params_header_prefix_len;
    uint64_t params_data_nbytes;
    const unsigned char *params_blob;         /* the embedded weights container, or NULL: external */
    uint64_t params_blob_size;
    const char *params_file;                  /* the external weights file's name, next to the library */
    const char *metadata;                     /* JSON */
    const char *version;                      /* mlc version */
    uint64_t workspace_bytes;
    uint64_t profile_calls;                   /* kernel calls a profiling build records; 0: not one */
} mlc_model_tables;

extern const mlc_model_tables mlc__tables;

/* The model's code (LLVM object): runs every kernel over one workspace. */
void mlc_entry(void **inputs, void **outputs, void **params, char *workspace);

/* A profiling build's records (mlc compile --profile): start and end of every kernel call
 * of the last run, CLOCK_MONOTONIC nanoseconds. Absent (NULL) in a normal build. */
extern int64_t mlc_profile[] __attribute__((weak));

/* ------------------------------------------------------------------ a cuda library's tables (runtime_cuda.c) */

enum { MLC_SLOT_INPUT = 0, MLC_SLOT_OUTPUT = 1, MLC_SLOT_PARAM = 2, MLC_SLOT_WORKSPACE = 3 };

/* Where a kernel argument is: the index-th input, output or weight, or the byte offset
 * index into the workspace arena (the plan's Slot). */
typedef struct mlc_cuda_slot {
    uint32_t space;
    uint64_t index;
} mlc_cuda_slot;

typedef struct mlc_cuda_launch {
    uint32_t kernel;                          /* into mlc_cuda_tables.kernels */
    uint32_t grid[3], block[3];
    uint32_t dynamic_shared_bytes;
    uint32_t num_args;
    const mlc_cuda_slot *args;
} mlc_cuda_launch;

typedef struct mlc_cuda_tables {
    const char *arch;                         /* "sm_90" */
    const unsigned char *cubin;               /* the module assembled for arch, or NULL */
    uint64_t cubin_size;
    const char *ptx;                          /* the module as PTX (NUL-terminated): JIT-compiled by the driver */
    size_t num_kernels;
    const char *const *kernels;               /* entry names */
    const uint32_t *max_dynamic_shared;       /* per kernel: the largest dynamic shared memory of its launches */
    size_t num_launches;
    const mlc_cuda_launch *launches;          /* the whole program, in order */
} mlc_cuda_tables;

extern const mlc_cuda_tables mlc__cuda_tables;

/* ------------------------------------------------------------------ shared by every runtime (runtime_common.c) */

/* Record a message for mlc_last_error() and return status. */
mlc_status mlc__fail(mlc_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The checks at the start of mlc_model_create: out, flags, the library's own SHA-256. */
mlc_status mlc__begin_create(unsigned flags, mlc_model **out);

/* The weights container, checked against the tables: data is its data section. */
typedef struct mlc_weights {
    const unsigned char *data;
    void *mapping;                            /* the mapped external file, or NULL: embedded */
    size_t mapping_size;
} mlc_weights;
mlc_status mlc__open_weights(const char *params_path, mlc_weights *w);
void mlc__close_weights(mlc_weights *w);

/* The backend's run (runtime.c, runtime_cuda.c), after mlc_model_run checked the arguments. */
mlc_status mlc__run(mlc_model *m, void **inputs, void **outputs);

#endif
