/* The C API of a model compiled ahead of time by mlc (`mlc compile MODEL -o model.so`).
 *
 * Every exported model library has exactly these functions; the generated header
 * (model.h beside model.so) is this file plus the model's own constants at the end.
 *
 *     mlc_model *m;
 *     if (mlc_model_create(NULL, 0, &m) != MLC_OK) { puts(mlc_last_error()); return 1; }
 *     mlc_tensor in  = {x, sizeof x, MLC_FLOAT32, 2, x_shape};
 *     mlc_tensor out = {y, sizeof y, MLC_FLOAT32, 2, y_shape};
 *     if (mlc_model_run(m, &in, 1, &out, 1) != MLC_OK) puts(mlc_last_error());
 *     mlc_model_destroy(m);
 *
 * Rules of the ABI (version MLC_ABI_VERSION):
 * - Every function that can fail returns an mlc_status; MLC_OK is 0. After a failure,
 *   mlc_last_error() returns a message for the calling thread saying what was wrong.
 * - Buffers belong to the caller. Inputs are only read; outputs are written whole.
 *   Tensors are dense, row-major (C order), in the byte order of the target.
 * - A library for a cuda target (mlc compile --target cuda-sm90 -o model.so) takes
 *   CUDA DEVICE pointers for inputs and outputs, in the context that was current when
 *   the handle was created (else device 0's primary context); its handle holds the
 *   weights and the workspace in device memory, and a run launches the kernels on the
 *   default stream and returns when they are done. Runs on one handle take turns.
 * - A model handle may be run from several threads at once: each run takes its own
 *   workspace from a pool in the handle. Create and destroy are not concurrent with runs.
 * - The library verifies itself (a SHA-256 over the whole file, appended by mlc) and its
 *   weights when a handle is created; a damaged or mismatched artifact is refused.
 */
/* The types, shared by every model's header (one program may use several models). */
#ifndef MLC_MODEL_TYPES_H
#define MLC_MODEL_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MLC_ABI_VERSION 1

typedef enum mlc_status {
    MLC_OK = 0,
    MLC_ERROR_NULL_ARGUMENT = 1,    /* a required pointer was NULL */
    MLC_ERROR_INVALID_ARGUMENT = 2, /* a count, an index, a misaligned or overlapping buffer */
    MLC_ERROR_SHAPE_MISMATCH = 3,   /* a tensor's rank or dimensions differ from the model's */
    MLC_ERROR_DTYPE_MISMATCH = 4,   /* a tensor's element type differs from the model's */
    MLC_ERROR_BUFFER_TOO_SMALL = 5, /* a buffer holds fewer bytes than the tensor needs */
    MLC_ERROR_IO = 6,               /* a file could not be opened or read */
    MLC_ERROR_CORRUPT = 7,          /* the library or its weights failed verification */
    MLC_ERROR_PARAMS_MISMATCH = 8,  /* a weights file written for a different model */
    MLC_ERROR_OUT_OF_MEMORY = 9,
    MLC_ERROR_DEVICE = 10           /* the GPU driver failed or is missing (a cuda model library) */
} mlc_status;

typedef enum mlc_dtype {
    MLC_BOOL = 1,   /* one byte, 0 or 1 */
    MLC_INT8 = 2,
    MLC_INT16 = 3,
    MLC_INT32 = 4,
    MLC_INT64 = 5,
    MLC_UINT8 = 6,
    MLC_FLOAT16 = 7,
    MLC_FLOAT32 = 8,
    MLC_FLOAT64 = 9,
    MLC_UINT16 = 10,
    MLC_UINT32 = 11,
    MLC_UINT64 = 12
} mlc_dtype;

/* What the model expects of one input or output (owned by the library). */
typedef struct mlc_tensor_info {
    const char *name;
    mlc_dtype dtype;
    int32_t ndim;
    const int64_t *shape;   /* ndim dimensions */
    size_t nbytes;          /* product(shape) * element size */
} mlc_tensor_info;

/* A caller's buffer and what the caller says it holds; checked by mlc_model_run. */
typedef struct mlc_tensor {
    void *data;
    size_t nbytes;          /* capacity of data in bytes */
    mlc_dtype dtype;
    int32_t ndim;
    const int64_t *shape;
} mlc_tensor;

typedef struct mlc_model mlc_model;

/* mlc_model_create flag: skip the library's whole-file SHA-256 (the caller verified it). */
#define MLC_CREATE_SKIP_LIBRARY_CHECK 1u

#if defined(_WIN32)
#define MLC_API
#else
#define MLC_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
}
#endif
#endif /* MLC_MODEL_TYPES_H */

/* The functions. A library exported with a prefix (mlc compile --prefix resnet) names
 * them resnet_model_create, resnet_model_run, ... instead of mlc_model_create, ... */
#ifndef MLC_MODEL_API_H
#define MLC_MODEL_API_H

#ifdef __cplusplus
extern "C" {
#endif

/* MLC_ABI_VERSION of the library (check it equals the header's before anything else). */
MLC_API int mlc_abi_version(void);
/* The version of mlc that generated the library, e.g. "0.1.0". */
MLC_API const char *mlc_version(void);
/* A JSON object describing the model: signature, target, versions, sizes. */
MLC_API const char *mlc_metadata(void);
/* The name of a status code, e.g. "MLC_ERROR_SHAPE_MISMATCH". */
MLC_API const char *mlc_status_name(mlc_status status);
/* The message of the last failed call on this thread ("" if none failed). */
MLC_API const char *mlc_last_error(void);

/* Create a model handle. params_path: the weights file of a library exported with
 * external weights (NULL: the file named at export, next to the library); must be NULL
 * or ignored for embedded weights. flags: 0 or MLC_CREATE_SKIP_LIBRARY_CHECK. */
MLC_API mlc_status mlc_model_create(const char *params_path, unsigned flags, mlc_model **out);
/* Free a handle and every workspace it holds; NULL is ignored. */
MLC_API void mlc_model_destroy(mlc_model *model);

MLC_API size_t mlc_model_num_inputs(const mlc_model *model);
MLC_API size_t mlc_model_num_outputs(const mlc_model *model);
MLC_API mlc_status mlc_model_input_info(const mlc_model *model, size_t index, mlc_tensor_info *info);
MLC_API mlc_status mlc_model_output_info(const mlc_model *model, size_t index, mlc_tensor_info *info);
/* Bytes of scratch memory one run uses (allocated by the handle, once per concurrent run). */
MLC_API size_t mlc_model_workspace_size(const mlc_model *model);

/* Run the model: every input and output is checked against the model's signature
 * (count, dtype, shape, capacity, alignment to the element size, no output overlapping
 * another buffer) before anything runs. */
MLC_API mlc_status mlc_model_run(mlc_model *model, const mlc_tensor *inputs, size_t num_inputs,
                                 const mlc_tensor *outputs, size_t num_outputs);
/* Run with bare data pointers, one per input and output, in order: no checks beyond NULL.
 * For callers that have checked the buffers themselves (the Python loader does). */
MLC_API mlc_status mlc_model_run_unchecked(mlc_model *model, const void *const *inputs, void *const *outputs);

/* A library built with `mlc compile --profile` times every kernel call: after a run,
 * *records points at two values per call, its start and end (CLOCK_MONOTONIC
 * nanoseconds) in the last run of any handle, and the number of calls is returned; the
 * calls' kernels (name, fused ops, FLOPs, bytes) are the "profile" list of
 * mlc_metadata(). Returns 0 (and NULL) for a library built without --profile. */
MLC_API size_t mlc_model_profile(const mlc_model *model, const int64_t **records);

#ifdef __cplusplus
}
#endif
#endif /* MLC_MODEL_API_H */
