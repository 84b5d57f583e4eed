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

#endif
