/* Run a model compiled by mlc from C, with no Python anywhere.
 *
 *   mlc compile model.onnx -o model.so           # writes model.so and model.h
 *   cc -O2 run_model.c -I. model.so -Wl,-rpath,'$ORIGIN' -o run_model
 *   ./run_model input.bin
 *
 * input.bin holds the model's inputs one after another, raw (C order, the machine's
 * byte order), e.g. x.astype(np.float32).tofile("input.bin") from numpy.
 *
 * Options:
 *   --output FILE    also write the outputs, raw, one after another
 *   --params FILE    the weights file of a library exported with --params external
 *                    (default: the file named at export, next to the library)
 *   --repeat N       time N runs after a warm-up and print the latency per call
 *   --threads T      run on T threads at once from one model handle and check that
 *                    every thread gets the same outputs as the first run
 *
 * A library named other than model.so: cc -DMODEL_HEADER='"resnet.h"' ...
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef MODEL_HEADER
#define MODEL_HEADER "model.h"
#endif
#include MODEL_HEADER

typedef struct {
    mlc_model *model;
    mlc_tensor *inputs, *outputs;   /* outputs: this thread's own buffers */
    size_t num_inputs, num_outputs;
    int repeat;
    mlc_status status;
} job;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int fail(mlc_status st, const char *what) {
    fprintf(stderr, "error: %s: %s: %s\n", what, mlc_status_name(st), mlc_last_error());
    return 1;
}

static double element(const void *data, mlc_dtype dtype, size_t i) {
    switch (dtype) {
    case MLC_FLOAT32: return ((const float *)data)[i];
    case MLC_FLOAT64: return ((const double *)data)[i];
    case MLC_INT8: return ((const int8_t *)data)[i];
    case MLC_INT16: return ((const int16_t *)data)[i];
    case MLC_INT32: return ((const int32_t *)data)[i];
    case MLC_INT64: return (double)((const int64_t *)data)[i];
    case MLC_UINT8: case MLC_BOOL: return ((const uint8_t *)data)[i];
    default: return 0.0;   /* float16: not printed */
    }
}

static size_t element_size(mlc_dtype dtype) {
    static const size_t sizes[] = {0, 1, 1, 2, 4, 8, 1, 2, 4, 8};
    return sizes[dtype];
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void *run_job(void *arg) {
    job *j = arg;
    for (int r = 0; r < j->repeat && j->status == MLC_OK; r++)
        j->status = mlc_model_run(j->model, j->inputs, j->num_inputs, j->outputs, j->num_outputs);
    return NULL;
}

static mlc_tensor *alloc_tensors(const mlc_model *m, size_t n, int outputs) {
    mlc_tensor *t = calloc(n ? n : 1, sizeof *t);
    for (size_t i = 0; t && i < n; i++) {
        mlc_tensor_info info;
        (outputs ? mlc_model_output_info : mlc_model_input_info)(m, i, &info);
        t[i].nbytes = info.nbytes;
        t[i].dtype = info.dtype;
        t[i].ndim = info.ndim;
        t[i].shape = info.shape;
        t[i].data = aligned_alloc(64, (info.nbytes + 63) / 64 * 64 + 64);
        if (!t[i].data) return NULL;
    }
    return t;
}

int main(int argc, char **argv) {
    const char *input_path = NULL, *output_path = NULL, *params_path = NULL;
    int repeat = 0, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--output") && i + 1 < argc) output_path = argv[++i];
        else if (!strcmp(argv[i], "--params") && i + 1 < argc) params_path = argv[++i];
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !input_path) input_path = argv[i];
        else {
            fprintf(stderr, "usage: %s INPUT.bin [--output FILE] [--params FILE] [--repeat N] [--threads T]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!input_path) {
        fprintf(stderr, "usage: %s INPUT.bin [--output FILE] [--params FILE] [--repeat N] [--threads T]\n", argv[0]);
        return 2;
    }
    if (mlc_abi_version() != MLC_ABI_VERSION) {
        fprintf(stderr, "error: the library has C ABI %d, this program was built for %d\n", mlc_abi_version(),
                MLC_ABI_VERSION);
        return 1;
    }

    mlc_model *m;
    mlc_status st = mlc_model_create(params_path, 0, &m);
    if (st != MLC_OK) return fail(st, "loading the model");
    printf("model %s (mlc %s): %zu input(s), %zu output(s), workspace %zu bytes\n", MLC_MODEL_NAME, mlc_version(),
           mlc_model_num_inputs(m), mlc_model_num_outputs(m), mlc_model_workspace_size(m));

    size_t ni = mlc_model_num_inputs(m), no = mlc_model_num_outputs(m);
    mlc_tensor *inputs = alloc_tensors(m, ni, 0), *outputs = alloc_tensors(m, no, 1);
    if (!inputs || !outputs) return fail(MLC_ERROR_OUT_OF_MEMORY, "allocating buffers");

    /* the input file must hold exactly the inputs' bytes */
    FILE *f = fopen(input_path, "rb");
    if (!f) {
        perror(input_path);
        return 1;
    }
    size_t want = 0;
    for (size_t i = 0; i < ni; i++) want += inputs[i].nbytes;
    fseek(f, 0, SEEK_END);
    long have = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (have < 0 || (size_t)have != want) {
        fprintf(stderr, "error: %s has %ld bytes; the model's inputs take %zu:\n", input_path, have, want);
        for (size_t i = 0; i < ni; i++) {
            mlc_tensor_info info;
            mlc_model_input_info(m, i, &info);
            fprintf(stderr, "  %s: %zu bytes\n", info.name, info.nbytes);
        }
        return 1;
    }
    for (size_t i = 0; i < ni; i++)
        if (fread(inputs[i].data, 1, inputs[i].nbytes, f) != inputs[i].nbytes) {
            fprintf(stderr, "error: short read from %s\n", input_path);
            return 1;
        }
    fclose(f);

    if ((st = mlc_model_run(m, inputs, ni, outputs, no)) != MLC_OK) return fail(st, "running the model");

    if (repeat > 0) {
        double *t = malloc((size_t)repeat * sizeof *t), sum = 0;
        for (int r = 0; r < repeat; r++) {
            double t0 = now();
            mlc_model_run(m, inputs, ni, outputs, no);
            t[r] = now() - t0;
            sum += t[r];
        }
        qsort(t, (size_t)repeat, sizeof *t, cmp_double);
        printf("latency over %d runs: median %.2f us, mean %.2f us, min %.2f us\n", repeat, 1e6 * t[repeat / 2],
               1e6 * sum / repeat, 1e6 * t[0]);
        free(t);
    }

    if (threads > 0) {   /* one handle, many threads, each with its own output buffers */
        job *jobs = calloc((size_t)threads, sizeof *jobs);
        pthread_t *tid = calloc((size_t)threads, sizeof *tid);
        for (int k = 0; k < threads; k++) {
            jobs[k] = (job){m, inputs, alloc_tensors(m, no, 1), ni, no, repeat > 0 ? repeat : 10, MLC_OK};
            pthread_create(&tid[k], NULL, run_job, &jobs[k]);
        }
        int same = 1;
        for (int k = 0; k < threads; k++) {
            pthread_join(tid[k], NULL);
            if (jobs[k].status != MLC_OK) return fail(jobs[k].status, "running on a thread");
            for (size_t i = 0; i < no; i++) same &= !memcmp(jobs[k].outputs[i].data, outputs[i].data, outputs[i].nbytes);
        }
        printf("%d threads x %d runs on one handle: outputs %s\n", threads, repeat > 0 ? repeat : 10,
               same ? "identical to the first run" : "DIFFER from the first run");
        if (!same) return 1;
    }

    for (size_t i = 0; i < no; i++) {
        mlc_tensor_info info;
        mlc_model_output_info(m, i, &info);
        size_t n = info.nbytes / element_size(info.dtype);
        printf("output %s: shape [", info.name);
        for (int d = 0; d < info.ndim; d++) printf(d ? ", %lld" : "%lld", (long long)info.shape[d]);
        printf("]\n ");
        for (size_t k = 0; k < n && k < 10; k++) printf(" %.9g", element(outputs[i].data, info.dtype, k));
        printf(n > 10 ? " ...\n" : "\n");
    }

    if (output_path) {
        FILE *o = fopen(output_path, "wb");
        if (!o) {
            perror(output_path);
            return 1;
        }
        for (size_t i = 0; i < no; i++) fwrite(outputs[i].data, 1, outputs[i].nbytes, o);
        fclose(o);
        printf("outputs written to %s\n", output_path);
    }
    mlc_model_destroy(m);
    return 0;
}
