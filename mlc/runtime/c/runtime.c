/* The runtime of a CPU model library exported by mlc: the C API of mlc_model.h over the
 * generated tables (tables.c) and the model's code (mlc_entry); what every library
 * shares (self-check, weights checks, argument checks) is in runtime_common.c.
 *
 * Creating a handle verifies the library file (the SHA-256 trailer mlc appends after
 * linking; docs/formats.md) and the weights container (embedded in .rodata, or a side
 * file mapped read-only), then points the weight table into it: the weights are used in
 * place, never copied. Runs take a workspace from a pool in the handle, so concurrent
 * runs never share scratch memory.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "mlc_internal.h"

#define ALIGN 64u
#define fail mlc__fail

/* ------------------------------------------------------------------ handles */

struct mlc_model {
    void **params;                  /* one pointer per weight, into the container */
    mlc_weights weights;            /* the container (a mapped external file, or the embedded one) */
    pthread_mutex_t lock;           /* guards the workspace pool */
    void **pool;                    /* free workspaces */
    size_t pool_count, pool_cap;
};

MLC_API mlc_status mlc_model_create(const char *params_path, unsigned flags, mlc_model **out) {
    const mlc_model_tables *t = &mlc__tables;
    mlc_status st = mlc__begin_create(flags, out);
    if (st != MLC_OK) return st;
    mlc_model *m = calloc(1, sizeof *m);
    void **params = calloc(t->num_params ? t->num_params : 1, sizeof(void *));
    if (!m || !params) {
        free(m);
        free(params);
        return fail(MLC_ERROR_OUT_OF_MEMORY, "out of memory creating the model");
    }
    m->params = params;
    if ((st = mlc__open_weights(params_path, &m->weights)) != MLC_OK) {
        free(m->params);
        free(m);
        return st;
    }
    for (size_t i = 0; i < t->num_params; i++) m->params[i] = (void *)(m->weights.data + t->param_offsets[i]);
    pthread_mutex_init(&m->lock, NULL);
    *out = m;
    return MLC_OK;
}

MLC_API void mlc_model_destroy(mlc_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->pool_count; i++) free(m->pool[i]);
    free(m->pool);
    mlc__close_weights(&m->weights);
    pthread_mutex_destroy(&m->lock);
    free(m->params);
    free(m);
}

MLC_API size_t mlc_model_profile(const mlc_model *m, const int64_t **records) {
    if (records) *records = NULL;
    if (!m || !mlc__tables.profile_calls || !mlc_profile) return 0;
    if (records) *records = mlc_profile;
    return (size_t)mlc__tables.profile_calls;
}

/* ------------------------------------------------------------------ runs */

mlc_status mlc__run(mlc_model *m, void **inputs, void **outputs) {
    static _Alignas(64) char no_workspace[64];
    void *ws = NULL;
    size_t bytes = (size_t)mlc__tables.workspace_bytes;
    if (bytes) {
        pthread_mutex_lock(&m->lock);
        if (m->pool_count) ws = m->pool[--m->pool_count];
        pthread_mutex_unlock(&m->lock);
        if (!ws && posix_memalign(&ws, ALIGN, bytes) != 0)
            return fail(MLC_ERROR_OUT_OF_MEMORY, "out of memory allocating a %zu-byte workspace", bytes);
    }
    mlc_entry(inputs, outputs, m->params, ws ? ws : no_workspace);
    if (ws) {
        pthread_mutex_lock(&m->lock);
        if (m->pool_count == m->pool_cap) {
            size_t cap = m->pool_cap ? 2 * m->pool_cap : 4;
            void **grown = realloc(m->pool, cap * sizeof *grown);
            if (grown) m->pool = grown, m->pool_cap = cap;
        }
        if (m->pool_count < m->pool_cap) m->pool[m->pool_count++] = ws, ws = NULL;
        pthread_mutex_unlock(&m->lock);
        free(ws);   /* only when the pool could not grow */
    }
    return MLC_OK;
}
