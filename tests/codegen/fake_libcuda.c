/* A stand-in for libcuda.so.1 that test_gpu_library.py builds and points MLC_LIBCUDA at:
 * the driver functions a cuda model library uses, over host memory, each call written
 * to the file $FAKE_CUDA_LOG (one line per call) so the test can compare the library's
 * calls with the GpuModule's launch table. Device pointers are host pointers.
 *
 * A module's kernels and their parameter counts come from the PTX the library loads (for
 * a cubin, from the PTX file $FAKE_CUDA_PTX): cuModuleGetFunction of a name the PTX
 * lacks fails, and cuLaunchKernel logs as many parameters as the kernel declares.
 *
 * $FAKE_CUDA_FAIL=<function name> makes that function fail: CUDA_ERROR_LAUNCH_FAILED (719),
 * CUDA_ERROR_OUT_OF_MEMORY (2) for cuMemAlloc_v2, CUDA_ERROR_NO_BINARY_FOR_GPU (209) for
 * cuModuleLoadData of a cubin (so a library falls back to its PTX).
 * $FAKE_CUDA_CONTEXT=1: the calling thread has a current context.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef struct { char name[256]; int params; } fake_function;

static int context_stack;     /* pushes minus pops */

static void logf_(const char *fmt, ...) {
    const char *path = getenv("FAKE_CUDA_LOG");
    if (!path) return;
    FILE *f = fopen(path, "a");
    if (!f) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

static int failing(const char *name) {
    const char *which = getenv("FAKE_CUDA_FAIL");
    return which && strcmp(which, name) == 0;
}

CUresult cuInit(unsigned flags) {
    logf_("cuInit %u", flags);
    return failing("cuInit") ? 719 : 0;
}

CUresult cuGetErrorName(CUresult r, const char **name) {
    switch (r) {
    case 0: *name = "CUDA_SUCCESS"; return 0;
    case 2: *name = "CUDA_ERROR_OUT_OF_MEMORY"; return 0;
    case 209: *name = "CUDA_ERROR_NO_BINARY_FOR_GPU"; return 0;
    case 719: *name = "CUDA_ERROR_LAUNCH_FAILED"; return 0;
    }
    return 1;
}

CUresult cuDeviceGet(int *device, int ordinal) {
    logf_("cuDeviceGet %d", ordinal);
    *device = ordinal;
    return 0;
}

static char the_context;

CUresult cuCtxGetCurrent(void **ctx) {
    const char *env = getenv("FAKE_CUDA_CONTEXT");
    *ctx = env && env[0] == '1' ? (void *)&the_context : NULL;
    logf_("cuCtxGetCurrent %s", *ctx ? "current" : "none");
    return 0;
}

CUresult cuDevicePrimaryCtxRetain(void **ctx, int device) {
    logf_("cuDevicePrimaryCtxRetain %d", device);
    *ctx = &the_context;
    return 0;
}

CUresult cuDevicePrimaryCtxRelease_v2(int device) {
    logf_("cuDevicePrimaryCtxRelease %d", device);
    return 0;
}

CUresult cuCtxPushCurrent_v2(void *ctx) {
    context_stack++;
    return ctx == &the_context ? 0 : 201;
}

CUresult cuCtxPopCurrent_v2(void **ctx) {
    context_stack--;
    if (ctx) *ctx = &the_context;
    return 0;
}

/* The kernels of a PTX text: ".entry NAME(" and the ".param"s up to its ")". */
typedef struct { int count; char names[256][256]; int params[256]; } fake_module;

static void parse_ptx(fake_module *m, const char *ptx) {
    for (const char *p = ptx; (p = strstr(p, ".entry ")) && m->count < 256; ) {
        p += 7;
        const char *open = strchr(p, '(');
        if (!open) break;
        int n = (int)(open - p) < 255 ? (int)(open - p) : 255;
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\n')) n--;
        memcpy(m->names[m->count], p, (size_t)n);
        m->names[m->count][n] = 0;
        const char *close = strchr(open, ')');
        int params = 0;
        for (const char *q = open; close && (q = strstr(q, ".param")) && q < close; q += 6) params++;
        m->params[m->count++] = params;
        p = close ? close : open + 1;
    }
}

static char *read_file(const char *path) {
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = calloc(1, (size_t)n + 1);
    if (text && fread(text, 1, (size_t)n, f) != (size_t)n) text[0] = 0;
    fclose(f);
    return text;
}

CUresult cuModuleLoadData(void **module, const void *image) {
    const unsigned char *p = image;
    int elf = memcmp(p, "\177ELF", 4) == 0;
    logf_("cuModuleLoadData %s", elf ? "cubin" : "ptx");
    if (elf && failing("cuModuleLoadData")) return 209;
    fake_module *m = calloc(1, sizeof *m);
    if (elf) {
        char *ptx = read_file(getenv("FAKE_CUDA_PTX"));
        if (ptx) parse_ptx(m, ptx);
        free(ptx);
    } else {
        parse_ptx(m, image);
    }
    *module = m;
    return 0;
}

CUresult cuModuleUnload(void *module) {
    logf_("cuModuleUnload");
    free(module);
    return 0;
}

CUresult cuModuleGetFunction(void **function, void *module, const char *name) {
    fake_module *m = module;
    logf_("cuModuleGetFunction %s", name);
    for (int i = 0; i < m->count; i++)
        if (strcmp(m->names[i], name) == 0) {
            fake_function *f = calloc(1, sizeof *f);
            snprintf(f->name, sizeof f->name, "%s", name);
            f->params = m->params[i];
            *function = f;
            return 0;
        }
    return 500;   /* CUDA_ERROR_NOT_FOUND */
}

CUresult cuFuncSetAttribute(void *function, int attribute, int value) {
    logf_("cuFuncSetAttribute %s %d %d", ((fake_function *)function)->name, attribute, value);
    return 0;
}

CUresult cuMemAlloc_v2(CUdeviceptr *ptr, size_t bytes) {
    if (failing("cuMemAlloc_v2")) return 2;
    void *p = aligned_alloc(256, (bytes + 255) / 256 * 256);
    *ptr = (CUdeviceptr)(uintptr_t)p;
    logf_("cuMemAlloc %llu %zu", *ptr, bytes);
    return p ? 0 : 2;
}

CUresult cuMemFree_v2(CUdeviceptr ptr) {
    logf_("cuMemFree %llu", ptr);
    free((void *)(uintptr_t)ptr);
    return 0;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t bytes) {
    logf_("cuMemcpyHtoD %llu %zu", dst, bytes);
    memcpy((void *)(uintptr_t)dst, src, bytes);
    return 0;
}

CUresult cuLaunchKernel(void *function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shared, void *stream, void **params, void **extra) {
    fake_function *f = function;
    char args[8192];
    size_t n = 0;
    args[0] = 0;
    for (int i = 0; i < f->params && n < sizeof args - 32; i++)   /* each parameter is a device pointer */
        n += (size_t)snprintf(args + n, sizeof args - n, " %llu", *(CUdeviceptr *)params[i]);
    logf_("cuLaunchKernel %s grid %u %u %u block %u %u %u shared %u stream %p extra %p contexts %d args%s", f->name,
          gx, gy, gz, bx, by, bz, shared, stream, (void *)extra, context_stack, args);
    return failing("cuLaunchKernel") ? 719 : 0;
}

CUresult cuStreamSynchronize(void *stream) {
    logf_("cuStreamSynchronize %p contexts %d", stream, context_stack);
    return 0;
}
