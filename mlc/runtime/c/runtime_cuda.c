/* The runtime of a cuda model library exported by mlc (mlc compile --target cuda-sm90
 * -o model.so): the C API of mlc_model.h over the generated tables (tables.c: the
 * signature and weights, as for a CPU library; the module and its launch table).
 *
 * No CUDA header or library is needed to build it: libcuda.so.1 (or $MLC_LIBCUDA) is
 * opened when a handle is created and the few driver functions used are looked up by
 * name. Creating a handle loads the module (the embedded cubin for the target's
 * architecture, or the PTX, which the driver compiles for the device), uploads the
 * weights and allocates the workspace arena; a run replays the launch table on the
 * default stream with the caller's device pointers and waits for it. Every driver error
 * becomes MLC_ERROR_DEVICE (MLC_ERROR_OUT_OF_MEMORY for device memory) with a message
 * naming the driver call and its CUresult.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlc_internal.h"

#define fail mlc__fail

/* ------------------------------------------------------------------ the driver API, declared here */

typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef unsigned long long CUdeviceptr;

#define CUDA_SUCCESS 0
#define CUDA_ERROR_OUT_OF_MEMORY 2
#define CUDA_ERROR_INVALID_IMAGE 200
#define CUDA_ERROR_NO_BINARY_FOR_GPU 209
#define CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES 8
#define STATIC_SHARED_LIMIT (48u << 10)   /* more dynamic shared memory needs the attribute */

typedef struct cuda_driver {
    CUresult (*Init)(unsigned);
    CUresult (*GetErrorName)(CUresult, const char **);
    CUresult (*DeviceGet)(CUdevice *, int);
    CUresult (*CtxGetCurrent)(CUcontext *);
    CUresult (*CtxPushCurrent)(CUcontext);
    CUresult (*CtxPopCurrent)(CUcontext *);
    CUresult (*DevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*DevicePrimaryCtxRelease)(CUdevice);
    CUresult (*ModuleLoadData)(CUmodule *, const void *);
    CUresult (*ModuleUnload)(CUmodule);
    CUresult (*ModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*FuncSetAttribute)(CUfunction, int, int);
    CUresult (*MemAlloc)(CUdeviceptr *, size_t);
    CUresult (*MemFree)(CUdeviceptr);
    CUresult (*MemcpyHtoD)(CUdeviceptr, const void *, size_t);
    CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             CUstream, void **, void **);
    CUresult (*StreamSynchronize)(CUstream);
} cuda_driver;

/* The exported names (cuda.h maps cuMemAlloc to cuMemAlloc_v2 and so on). */
static const struct { const char *name; size_t offset; } DRIVER_SYMBOLS[] = {
    {"cuInit", offsetof(cuda_driver, Init)},
    {"cuGetErrorName", offsetof(cuda_driver, GetErrorName)},
    {"cuDeviceGet", offsetof(cuda_driver, DeviceGet)},
    {"cuCtxGetCurrent", offsetof(cuda_driver, CtxGetCurrent)},
    {"cuCtxPushCurrent_v2", offsetof(cuda_driver, CtxPushCurrent)},
    {"cuCtxPopCurrent_v2", offsetof(cuda_driver, CtxPopCurrent)},
    {"cuDevicePrimaryCtxRetain", offsetof(cuda_driver, DevicePrimaryCtxRetain)},
    {"cuDevicePrimaryCtxRelease_v2", offsetof(cuda_driver, DevicePrimaryCtxRelease)},
    {"cuModuleLoadData", offsetof(cuda_driver, ModuleLoadData)},
    {"cuModuleUnload", offsetof(cuda_driver, ModuleUnload)},
    {"cuModuleGetFunction", offsetof(cuda_driver, ModuleGetFunction)},
    {"cuFuncSetAttribute", offsetof(cuda_driver, FuncSetAttribute)},
    {"cuMemAlloc_v2", offsetof(cuda_driver, MemAlloc)},
    {"cuMemFree_v2", offsetof(cuda_driver, MemFree)},
    {"cuMemcpyHtoD_v2", offsetof(cuda_driver, MemcpyHtoD)},
    {"cuLaunchKernel", offsetof(cuda_driver, LaunchKernel)},
    {"cuStreamSynchronize", offsetof(cuda_driver, StreamSynchronize)},
};

/* libcuda is never closed: the driver does not support being unloaded from a process. */
static mlc_status open_driver(cuda_driver *d) {
    const char *env = getenv("MLC_LIBCUDA");
    const char *path = env && env[0] ? env : "libcuda.so.1";
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        return fail(MLC_ERROR_DEVICE, "%s could not be loaded: %s; a cuda model library needs the NVIDIA driver%s",
                    path, dlerror(), env && env[0] ? " (MLC_LIBCUDA names it)" : "");
    for (size_t i = 0; i < sizeof DRIVER_SYMBOLS / sizeof *DRIVER_SYMBOLS; i++) {
        void *fn = dlsym(lib, DRIVER_SYMBOLS[i].name);
        if (!fn)
            return fail(MLC_ERROR_DEVICE, "%s has no %s: the NVIDIA driver is too old for this library (it needs "
                        "CUDA 11 or later)", path, DRIVER_SYMBOLS[i].name);
        memcpy((char *)d + DRIVER_SYMBOLS[i].offset, &fn, sizeof fn);
    }
    return MLC_OK;
}

/* A failed driver call as an mlc status: "cuLaunchKernel failed: CUDA_ERROR_LAUNCH_FAILED (719) ...". */
static mlc_status driver_error(const cuda_driver *d, CUresult r, const char *call, const char *detail) {
    const char *name = NULL;
    if (!d->GetErrorName || d->GetErrorName(r, &name) != CUDA_SUCCESS || !name) name = "unknown CUresult";
    return fail(r == CUDA_ERROR_OUT_OF_MEMORY ? MLC_ERROR_OUT_OF_MEMORY : MLC_ERROR_DEVICE, "%s failed: %s (%d)%s%s",
                call, name, r, detail && detail[0] ? " " : "", detail ? detail : "");
}

#define CHECK(call, args, detail)                                         \
    do {                                                                  \
        CUresult r_ = m->cu.call args;                                    \
        if (r_ != CUDA_SUCCESS) return driver_error(&m->cu, r_, "cu" #call, detail); \
    } while (0)

/* ------------------------------------------------------------------ handles */

struct mlc_model {
    cuda_driver cu;
    CUcontext ctx;
    CUdevice device;
    int retained;                   /* ctx is device's primary context, retained by this handle */
    CUmodule module;
    CUfunction *functions;          /* one per kernel name */
    CUdeviceptr weights;            /* the weights' data section, one allocation */
    CUdeviceptr arena;              /* the workspace */
    CUdeviceptr *values;            /* one launch's arguments, and pointers to them */
    void **params;
    pthread_mutex_t lock;           /* one arena: runs on a handle take turns */
};

static mlc_status load_module(mlc_model *m) {
    const mlc_cuda_tables *g = &mlc__cuda_tables;
    char what[96];
    if (g->cubin) {
        CUresult r = m->cu.ModuleLoadData(&m->module, g->cubin);
        if (r == CUDA_SUCCESS) return MLC_OK;
        /* a device of another architecture: the PTX, compiled for it by the driver */
        if (r != CUDA_ERROR_NO_BINARY_FOR_GPU && r != CUDA_ERROR_INVALID_IMAGE) {
            snprintf(what, sizeof what, "(loading the cubin for %s)", g->arch);
            return driver_error(&m->cu, r, "cuModuleLoadData", what);
        }
    }
    snprintf(what, sizeof what, "(loading the PTX for %s, JIT-compiled by the driver)", g->arch);
    CHECK(ModuleLoadData, (&m->module, g->ptx), what);
    return MLC_OK;
}

/* Everything after the driver is open, in the context made current by the caller. */
static mlc_status setup(mlc_model *m, const mlc_weights *w) {
    const mlc_model_tables *t = &mlc__tables;
    const mlc_cuda_tables *g = &mlc__cuda_tables;
    mlc_status st = load_module(m);
    if (st != MLC_OK) return st;
    char what[320];
    for (size_t k = 0; k < g->num_kernels; k++) {
        snprintf(what, sizeof what, "(kernel %s)", g->kernels[k]);
        CHECK(ModuleGetFunction, (&m->functions[k], m->module, g->kernels[k]), what);
        if (g->max_dynamic_shared[k] > STATIC_SHARED_LIMIT)
            CHECK(FuncSetAttribute, (m->functions[k], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                     (int)g->max_dynamic_shared[k]), what);
    }
    if (t->params_data_nbytes) {
        snprintf(what, sizeof what, "(%llu bytes of weights)", (unsigned long long)t->params_data_nbytes);
        CHECK(MemAlloc, (&m->weights, (size_t)t->params_data_nbytes), what);
        CHECK(MemcpyHtoD, (m->weights, w->data, (size_t)t->params_data_nbytes), what);
    }
    if (t->workspace_bytes) {
        snprintf(what, sizeof what, "(a %llu-byte workspace)", (unsigned long long)t->workspace_bytes);
        CHECK(MemAlloc, (&m->arena, (size_t)t->workspace_bytes), what);
    }
    return MLC_OK;
}

static void release(mlc_model *m) {
    if (m->ctx && m->cu.CtxPushCurrent(m->ctx) == CUDA_SUCCESS) {
        CUcontext popped;
        if (m->weights) m->cu.MemFree(m->weights);
        if (m->arena) m->cu.MemFree(m->arena);
        if (m->module) m->cu.ModuleUnload(m->module);
        m->cu.CtxPopCurrent(&popped);
    }
    if (m->retained) m->cu.DevicePrimaryCtxRelease(m->device);
    pthread_mutex_destroy(&m->lock);
    free(m->functions);
    free(m->values);
    free(m->params);
    free(m);
}

MLC_API mlc_status mlc_model_create(const char *params_path, unsigned flags, mlc_model **out) {
    const mlc_cuda_tables *g = &mlc__cuda_tables;
    mlc_status st = mlc__begin_create(flags, out);
    if (st != MLC_OK) return st;
    size_t max_args = 1;
    for (size_t i = 0; i < g->num_launches; i++)
        if (g->launches[i].num_args > max_args) max_args = g->launches[i].num_args;
    mlc_model *m = calloc(1, sizeof *m);
    if (m) {
        pthread_mutex_init(&m->lock, NULL);
        m->functions = calloc(g->num_kernels ? g->num_kernels : 1, sizeof *m->functions);
        m->values = calloc(max_args, sizeof *m->values);
        m->params = calloc(max_args, sizeof *m->params);
    }
    if (!m || !m->functions || !m->values || !m->params) {
        if (m) release(m);
        return fail(MLC_ERROR_OUT_OF_MEMORY, "out of memory creating the model");
    }
    for (size_t i = 0; i < max_args; i++) m->params[i] = &m->values[i];
    mlc_weights w;
    if ((st = mlc__open_weights(params_path, &w)) != MLC_OK) {
        release(m);
        return st;
    }
    CUresult r;
    CUcontext popped;
    if ((st = open_driver(&m->cu)) != MLC_OK) goto done;
    if ((r = m->cu.Init(0)) != CUDA_SUCCESS) {
        st = driver_error(&m->cu, r, "cuInit", "(is a CUDA device present and the driver loaded?)");
        goto done;
    }
    if ((r = m->cu.CtxGetCurrent(&m->ctx)) != CUDA_SUCCESS) {
        st = driver_error(&m->cu, r, "cuCtxGetCurrent", NULL);
        goto done;
    }
    if (!m->ctx) {   /* no context on this thread: the one the CUDA runtime (CuPy, PyTorch) uses too */
        if ((r = m->cu.DeviceGet(&m->device, 0)) != CUDA_SUCCESS) {
            st = driver_error(&m->cu, r, "cuDeviceGet", "(device 0)");
            goto done;
        }
        if ((r = m->cu.DevicePrimaryCtxRetain(&m->ctx, m->device)) != CUDA_SUCCESS) {
            st = driver_error(&m->cu, r, "cuDevicePrimaryCtxRetain", "(device 0)");
            goto done;
        }
        m->retained = 1;
    }
    if ((r = m->cu.CtxPushCurrent(m->ctx)) != CUDA_SUCCESS) {
        st = driver_error(&m->cu, r, "cuCtxPushCurrent", NULL);
        goto done;
    }
    st = setup(m, &w);
    m->cu.CtxPopCurrent(&popped);
done:
    mlc__close_weights(&w);   /* the weights live on the device now */
    if (st != MLC_OK) {
        release(m);
        return st;
    }
    *out = m;
    return MLC_OK;
}

MLC_API void mlc_model_destroy(mlc_model *m) {
    if (m) release(m);
}

/* Kernels are timed with CUDA events by the caller, not recorded by the library. */
MLC_API size_t mlc_model_profile(const mlc_model *m, const int64_t **records) {
    (void)m;
    if (records) *records = NULL;
    return 0;
}

/* ------------------------------------------------------------------ runs */

static mlc_status replay(mlc_model *m, void **inputs, void **outputs) {
    const mlc_model_tables *t = &mlc__tables;
    const mlc_cuda_tables *g = &mlc__cuda_tables;
    char what[320];
    for (size_t n = 0; n < g->num_launches; n++) {
        const mlc_cuda_launch *l = &g->launches[n];
        if (!l->grid[0] || !l->grid[1] || !l->grid[2]) continue;   /* an empty tensor: nothing to launch */
        for (uint32_t a = 0; a < l->num_args; a++) {
            const mlc_cuda_slot *s = &l->args[a];
            switch (s->space) {
            case MLC_SLOT_INPUT: m->values[a] = (CUdeviceptr)(uintptr_t)inputs[s->index]; break;
            case MLC_SLOT_OUTPUT: m->values[a] = (CUdeviceptr)(uintptr_t)outputs[s->index]; break;
            case MLC_SLOT_PARAM: m->values[a] = m->weights + t->param_offsets[s->index]; break;
            default: m->values[a] = m->arena + s->index; break;
            }
        }
        CUresult r = m->cu.LaunchKernel(m->functions[l->kernel], l->grid[0], l->grid[1], l->grid[2], l->block[0],
                                        l->block[1], l->block[2], l->dynamic_shared_bytes, NULL, m->params, NULL);
        if (r != CUDA_SUCCESS) {
            snprintf(what, sizeof what, "(launch %zu of %zu, kernel %s)", n + 1, g->num_launches,
                     g->kernels[l->kernel]);
            return driver_error(&m->cu, r, "cuLaunchKernel", what);
        }
    }
    CUresult r = m->cu.StreamSynchronize(NULL);
    if (r != CUDA_SUCCESS) return driver_error(&m->cu, r, "cuStreamSynchronize", "(after the model's kernels)");
    return MLC_OK;
}

mlc_status mlc__run(mlc_model *m, void **inputs, void **outputs) {
    pthread_mutex_lock(&m->lock);
    CUcontext popped;
    CUresult r = m->cu.CtxPushCurrent(m->ctx);
    mlc_status st = r == CUDA_SUCCESS ? replay(m, inputs, outputs) : driver_error(&m->cu, r, "cuCtxPushCurrent", NULL);
    if (r == CUDA_SUCCESS) m->cu.CtxPopCurrent(&popped);
    pthread_mutex_unlock(&m->lock);
    return st;
}
