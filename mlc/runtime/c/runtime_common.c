/* What every model library's runtime shares, CPU (runtime.c) or CUDA (runtime_cuda.c):
 * errors, the library's self-check (the SHA-256 trailer mlc appends after linking;
 * docs/formats.md), the weights container's checks, the signature queries and the
 * argument checks of mlc_model_run. The backend defines the handle (struct mlc_model),
 * mlc_model_create / destroy / profile and mlc__run. Hidden: only the API is exported.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mlc_internal.h"

#define WEIGHTS_MAGIC "MLCTENS"       /* 8 bytes with its NUL */
#define WEIGHTS_VERSION 1u
#define WEIGHTS_PREAMBLE 24u           /* magic, version u32, flags u32, header length u64 */
#define LIBRARY_MAGIC "MLC_LIB"        /* 8 bytes with its NUL, the last bytes of the file */
#define LIBRARY_TRAILER_VERSION 1u
#define LIBRARY_TAIL 52u               /* version u32, metadata length u64, SHA-256, magic */
#define ALIGN 64u

/* ------------------------------------------------------------------ errors */

static _Thread_local char last_error[1024];

mlc_status mlc__fail(mlc_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

#define fail mlc__fail

MLC_API const char *mlc_last_error(void) { return last_error; }

MLC_API const char *mlc_status_name(mlc_status status) {
    switch (status) {
    case MLC_OK: return "MLC_OK";
    case MLC_ERROR_NULL_ARGUMENT: return "MLC_ERROR_NULL_ARGUMENT";
    case MLC_ERROR_INVALID_ARGUMENT: return "MLC_ERROR_INVALID_ARGUMENT";
    case MLC_ERROR_SHAPE_MISMATCH: return "MLC_ERROR_SHAPE_MISMATCH";
    case MLC_ERROR_DTYPE_MISMATCH: return "MLC_ERROR_DTYPE_MISMATCH";
    case MLC_ERROR_BUFFER_TOO_SMALL: return "MLC_ERROR_BUFFER_TOO_SMALL";
    case MLC_ERROR_IO: return "MLC_ERROR_IO";
    case MLC_ERROR_CORRUPT: return "MLC_ERROR_CORRUPT";
    case MLC_ERROR_PARAMS_MISMATCH: return "MLC_ERROR_PARAMS_MISMATCH";
    case MLC_ERROR_OUT_OF_MEMORY: return "MLC_ERROR_OUT_OF_MEMORY";
    case MLC_ERROR_DEVICE: return "MLC_ERROR_DEVICE";
    }
    return "MLC_ERROR_UNKNOWN";
}

MLC_API int mlc_abi_version(void) { return MLC_ABI_VERSION; }
MLC_API const char *mlc_version(void) { return mlc__tables.version; }
MLC_API const char *mlc_metadata(void) { return mlc__tables.metadata; }

/* ------------------------------------------------------------------ SHA-256 (FIPS 180-4) */

typedef struct { uint32_t h[8]; uint64_t length; unsigned char block[64]; size_t used; } sha256_ctx;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const unsigned char *p) {
    uint32_t w[64], a, b, c, d, e, f, g, k, t1, t2;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_SHA_NI 1

/* The SHA extensions (x86 SHA-NI): about 4x the portable code, checked at run time. */
__attribute__((target("sha,sse4.1,ssse3"))) static void sha256_block_shani(uint32_t h[8], const unsigned char *p) {
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i t = _mm_loadu_si128((const __m128i *)&h[0]);
    __m128i s1 = _mm_loadu_si128((const __m128i *)&h[4]);
    t = _mm_shuffle_epi32(t, 0xB1);                 /* CDAB */
    s1 = _mm_shuffle_epi32(s1, 0x1B);               /* EFGH */
    __m128i s0 = _mm_alignr_epi8(t, s1, 8);         /* ABEF */
    s1 = _mm_blend_epi16(s1, t, 0xF0);              /* CDGH */
    const __m128i abef = s0, cdgh = s1;
    __m128i w[16];
    for (int i = 0; i < 4; i++) w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), swap);
    for (int i = 4; i < 16; i++)
        w[i] = _mm_sha256msg2_epu32(_mm_add_epi32(_mm_sha256msg1_epu32(w[i - 4], w[i - 3]),
                                                  _mm_alignr_epi8(w[i - 1], w[i - 2], 4)), w[i - 1]);
    for (int i = 0; i < 16; i++) {
        __m128i m = _mm_add_epi32(w[i], _mm_loadu_si128((const __m128i *)&K256[4 * i]));
        s1 = _mm_sha256rnds2_epu32(s1, s0, m);
        s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(m, 0x0E));
    }
    s0 = _mm_add_epi32(s0, abef);
    s1 = _mm_add_epi32(s1, cdgh);
    t = _mm_shuffle_epi32(s0, 0x1B);                /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);               /* DCHG */
    s0 = _mm_blend_epi16(t, s1, 0xF0);              /* DCBA */
    s1 = _mm_alignr_epi8(s1, t, 8);                 /* HGFE */
    _mm_storeu_si128((__m128i *)&h[0], s0);
    _mm_storeu_si128((__m128i *)&h[4], s1);
}
#endif

static void (*sha256_block_fn)(uint32_t h[8], const unsigned char *p) = NULL;

static void sha256_blocks(uint32_t h[8], const unsigned char *p, size_t n) {
    if (!sha256_block_fn) {
        sha256_block_fn = sha256_block;
#ifdef HAVE_SHA_NI
        if (!getenv("MLC_PORTABLE_SHA256") && __builtin_cpu_supports("sha")) sha256_block_fn = sha256_block_shani;
#endif
    }
    for (; n; n--, p += 64) sha256_block_fn(h, p);
}

static void sha256_init(sha256_ctx *s) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->length = 0;
    s->used = 0;
}

static void sha256_update(sha256_ctx *s, const unsigned char *p, size_t n) {
    s->length += n;
    if (s->used) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->block + s->used, p, take);
        s->used += take, p += take, n -= take;
        if (s->used < 64) return;
        sha256_blocks(s->h, s->block, 1);
        s->used = 0;
    }
    sha256_blocks(s->h, p, n / 64);
    p += n / 64 * 64;
    n %= 64;
    memcpy(s->block, p, n);
    s->used = n;
}

static void sha256_final(sha256_ctx *s, unsigned char out[32]) {
    uint64_t bits = s->length * 8;
    unsigned char pad[72] = {0x80};
    size_t padlen = (s->used < 56 ? 56 : 120) - s->used;
    for (int i = 0; i < 8; i++) pad[padlen + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(s, pad, padlen + 8);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (unsigned char)(s->h[i] >> (24 - 8 * j));
}

/* ------------------------------------------------------------------ little-endian fields */

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

static uint64_t align_up(uint64_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

/* ------------------------------------------------------------------ the library's own file */

static const char *library_path(void) {
    Dl_info info;
    if (dladdr((const void *)&mlc__tables, &info) && info.dli_fname && info.dli_fname[0]) return info.dli_fname;
    return NULL;
}

/* The trailer mlc appends to the linked library: metadata JSON, its length, a SHA-256 of
 * every byte before the digest, and a magic. Stripping or patching the file breaks it. */
static mlc_status verify_library(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return fail(MLC_ERROR_IO, "cannot open the library %s to verify it: %s", path, strerror(errno));
    mlc_status st = MLC_OK;
    struct stat sb;
    unsigned char tail[LIBRARY_TAIL], digest[32];
    unsigned char *chunk = NULL;
    if (fstat(fd, &sb) != 0) {
        st = fail(MLC_ERROR_IO, "cannot stat the library %s: %s", path, strerror(errno));
        goto done;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < LIBRARY_TAIL || pread(fd, tail, LIBRARY_TAIL, (off_t)(size - LIBRARY_TAIL)) != LIBRARY_TAIL ||
        memcmp(tail + LIBRARY_TAIL - 8, LIBRARY_MAGIC, 8) != 0) {
        st = fail(MLC_ERROR_CORRUPT, "library %s has no mlc trailer: it was modified after export (stripped?) "
                  "or not written by mlc", path);
        goto done;
    }
    if (le32(tail) != LIBRARY_TRAILER_VERSION) {
        st = fail(MLC_ERROR_CORRUPT, "library %s: unsupported trailer version %u (this runtime reads %u)", path,
                  le32(tail), LIBRARY_TRAILER_VERSION);
        goto done;
    }
    uint64_t hashed = size - 40;   /* everything before the digest and the magic */
    sha256_ctx s;
    sha256_init(&s);
    const size_t CHUNK = 1u << 20;
    if (!(chunk = malloc(CHUNK))) {
        st = fail(MLC_ERROR_OUT_OF_MEMORY, "out of memory verifying %s", path);
        goto done;
    }
    for (uint64_t pos = 0; pos < hashed;) {
        size_t want = hashed - pos < CHUNK ? (size_t)(hashed - pos) : CHUNK;
        ssize_t got = pread(fd, chunk, want, (off_t)pos);
        if (got <= 0) {
            st = fail(MLC_ERROR_IO, "cannot read the library %s: %s", path, got < 0 ? strerror(errno) : "short read");
            goto done;
        }
        sha256_update(&s, chunk, (size_t)got);
        pos += (uint64_t)got;
    }
    sha256_final(&s, digest);
    if (memcmp(digest, tail + 12, 32) != 0)
        st = fail(MLC_ERROR_CORRUPT, "library %s is corrupted: SHA-256 checksum mismatch (damaged or modified "
                  "after export)", path);
done:
    free(chunk);
    close(fd);
    return st;
}

/* ------------------------------------------------------------------ the weights container */

/* The tensor entry of a JSON header around byte `pos`, for messages: {"name": ...}. */
static void entry_around(const char *h, size_t len, size_t pos, char *out, size_t cap) {
    size_t start = pos < len ? pos : len, end;
    while (start > 0 && !(start + 7 <= len && memcmp(h + start, "{\"name\"", 7) == 0)) start--;
    for (end = start; end < len && h[end] != '}'; end++) {}
    size_t n = end - start + (end < len);
    if (n >= cap) n = cap - 1;
    memcpy(out, h + start, n);
    out[n] = 0;
}

static size_t entry_index(const char *h, size_t pos) {
    size_t k = 0;
    for (const char *p = h; (p = strstr(p, "{\"name\"")) && (size_t)(p - h) <= pos; p++) k++;
    return k ? k - 1 : 0;
}

/* Check a weights container (docs/formats.md) against the tables; on success *data is
 * its data section. The SHA-256 is checked only when `hash` (the library's own checksum
 * already covers embedded weights). */
static mlc_status check_weights(const unsigned char *buf, uint64_t size, const char *source, int hash,
                                const unsigned char **data) {
    const mlc_model_tables *t = &mlc__tables;
    if (size == 0) return fail(MLC_ERROR_CORRUPT, "weights %s: empty (0 bytes)", source);
    if (memcmp(buf, WEIGHTS_MAGIC, size < 8 ? (size_t)size : 8) != 0)
        return fail(MLC_ERROR_CORRUPT, "weights %s: not an mlc weights file (bad magic)", source);
    if (size < WEIGHTS_PREAMBLE)
        return fail(MLC_ERROR_CORRUPT, "weights %s: truncated: %llu bytes", source, (unsigned long long)size);
    if (le32(buf + 8) != WEIGHTS_VERSION)
        return fail(MLC_ERROR_CORRUPT, "weights %s: unsupported format version %u (this runtime reads %u)", source,
                    le32(buf + 8), WEIGHTS_VERSION);
    if (le32(buf + 12) != 0)
        return fail(MLC_ERROR_CORRUPT, "weights %s: unsupported flags 0x%x", source, le32(buf + 12));
    uint64_t header_len = le64(buf + 16);
    uint64_t data_start = align_up(WEIGHTS_PREAMBLE + header_len);
    uint64_t expected = data_start + t->params_data_nbytes + 32;
    const char *header = (const char *)buf + WEIGHTS_PREAMBLE;
    uint64_t avail = size - WEIGHTS_PREAMBLE < header_len ? size - WEIGHTS_PREAMBLE : header_len;
    size_t n = t->params_header_prefix_len, d = 0;
    while (d < n && d < avail && header[d] == t->params_header_prefix[d]) d++;
    if (d < n && d < avail) {   /* the tensor tables differ: weights of another model */
        char mine[256], theirs[256];
        entry_around(t->params_header_prefix, n, d, mine, sizeof mine);
        entry_around(header, (size_t)avail, d, theirs, sizeof theirs);
        return fail(MLC_ERROR_PARAMS_MISMATCH, "weights %s were written for a different model: tensor #%zu differs; "
                    "the file has %s, the library expects %s", source, entry_index(t->params_header_prefix, d),
                    theirs, mine);
    }
    if (size != expected)
        return fail(MLC_ERROR_CORRUPT, "weights %s: %s: expected %llu bytes, got %llu", source,
                    size < expected ? "truncated" : "has trailing bytes", (unsigned long long)expected,
                    (unsigned long long)size);
    if (hash) {
        unsigned char digest[32];
        sha256_ctx s;
        sha256_init(&s);
        sha256_update(&s, buf, (size_t)(size - 32));
        sha256_final(&s, digest);
        if (memcmp(digest, buf + size - 32, 32) != 0)
            return fail(MLC_ERROR_CORRUPT, "weights %s: corrupted: SHA-256 checksum mismatch", source);
    }
    *data = buf + data_start;
    return MLC_OK;
}

static mlc_status map_file(const char *path, void **addr, size_t *size) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return fail(MLC_ERROR_IO, "cannot open the weights file %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return fail(MLC_ERROR_IO, "cannot stat the weights file %s: %s", path, strerror(errno));
    }
    *size = (size_t)sb.st_size;
    *addr = NULL;
    if (*size) {
        void *p = mmap(NULL, *size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return fail(MLC_ERROR_IO, "cannot map the weights file %s: %s", path, strerror(errno));
        }
        *addr = p;
    }
    close(fd);
    return MLC_OK;
}

/* The external weights' default path: the name given at export, in the library's folder. */
static mlc_status default_weights_path(char *out, size_t cap) {
    const char *lib = library_path();
    if (!lib) return fail(MLC_ERROR_IO, "cannot find the library's own path to locate %s; pass its path",
                          mlc__tables.params_file);
    const char *slash = strrchr(lib, '/');
    size_t dir = slash ? (size_t)(slash - lib) + 1 : 0;
    if (dir + strlen(mlc__tables.params_file) + 1 > cap)
        return fail(MLC_ERROR_INVALID_ARGUMENT, "the weights path is too long");
    memcpy(out, lib, dir);
    strcpy(out + dir, mlc__tables.params_file);
    return MLC_OK;
}
mlc_status mlc__begin_create(unsigned flags, mlc_model **out) {
    if (!out) return fail(MLC_ERROR_NULL_ARGUMENT, "mlc_model_create: out is NULL");
    *out = NULL;
    if (flags & ~MLC_CREATE_SKIP_LIBRARY_CHECK)
        return fail(MLC_ERROR_INVALID_ARGUMENT, "mlc_model_create: unknown flags 0x%x", flags);
    if (!(flags & MLC_CREATE_SKIP_LIBRARY_CHECK)) {
        const char *lib = library_path();
        if (!lib) return fail(MLC_ERROR_IO, "cannot find the library's own path to verify it");
        return verify_library(lib);
    }
    return MLC_OK;
}

mlc_status mlc__open_weights(const char *params_path, mlc_weights *w) {
    const mlc_model_tables *t = &mlc__tables;
    memset(w, 0, sizeof *w);
    if (t->params_blob) return check_weights(t->params_blob, t->params_blob_size, "(embedded)", 0, &w->data);
    char path[4096];
    mlc_status st;
    if (!params_path) {
        if ((st = default_weights_path(path, sizeof path)) != MLC_OK) return st;
        params_path = path;
    }
    if ((st = map_file(params_path, &w->mapping, &w->mapping_size)) != MLC_OK) return st;
    st = check_weights(w->mapping ? w->mapping : (const void *)"", w->mapping_size, params_path, 1, &w->data);
    if (st != MLC_OK) mlc__close_weights(w);
    return st;
}

void mlc__close_weights(mlc_weights *w) {
    if (w->mapping) munmap(w->mapping, w->mapping_size);
    memset(w, 0, sizeof *w);
}

MLC_API size_t mlc_model_num_inputs(const mlc_model *m) { return m ? mlc__tables.num_inputs : 0; }
MLC_API size_t mlc_model_num_outputs(const mlc_model *m) { return m ? mlc__tables.num_outputs : 0; }
MLC_API size_t mlc_model_workspace_size(const mlc_model *m) { return m ? (size_t)mlc__tables.workspace_bytes : 0; }
static mlc_status info_of(const mlc_model *m, size_t index, mlc_tensor_info *info, const char *what,
                          size_t count, const mlc_tensor_info *table) {
    if (!m) return fail(MLC_ERROR_NULL_ARGUMENT, "mlc_model_%s_info: model is NULL", what);
    if (!info) return fail(MLC_ERROR_NULL_ARGUMENT, "mlc_model_%s_info: info is NULL", what);
    if (index >= count)
        return fail(MLC_ERROR_INVALID_ARGUMENT, "mlc_model_%s_info: index %zu out of range (the model has %zu %ss)",
                    what, index, count, what);
    *info = table[index];
    return MLC_OK;
}

MLC_API mlc_status mlc_model_input_info(const mlc_model *m, size_t index, mlc_tensor_info *info) {
    return info_of(m, index, info, "input", mlc__tables.num_inputs, mlc__tables.inputs);
}

MLC_API mlc_status mlc_model_output_info(const mlc_model *m, size_t index, mlc_tensor_info *info) {
    return info_of(m, index, info, "output", mlc__tables.num_outputs, mlc__tables.outputs);
}

/* ------------------------------------------------------------------ runs */

static const char *dtype_name(mlc_dtype d) {
    static const char *names[] = {"?", "bool", "int8", "int16", "int32", "int64", "uint8", "float16", "float32",
                                  "float64", "uint16", "uint32", "uint64"};
    return (unsigned)d < sizeof names / sizeof *names ? names[d] : "unknown dtype";
}

static size_t dtype_size(mlc_dtype d) {
    static const size_t sizes[] = {0, 1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 4, 8};
    return (unsigned)d < sizeof sizes / sizeof *sizes ? sizes[d] : 0;
}

static void shape_text(char *out, size_t cap, int32_t ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(out, cap, "[");
    for (int32_t i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (n < cap) snprintf(out + n, cap - n, "]");
}

static mlc_status check_tensor(const mlc_tensor *x, const mlc_tensor_info *want, const char *what, size_t i) {
    if (!x->data && want->nbytes)
        return fail(MLC_ERROR_NULL_ARGUMENT, "%s %zu ('%s'): data is NULL", what, i, want->name);
    if (x->dtype != want->dtype)
        return fail(MLC_ERROR_DTYPE_MISMATCH, "%s %zu ('%s'): expected %s, got %s", what, i, want->name,
                    dtype_name(want->dtype), dtype_name(x->dtype));
    int same = x->ndim == want->ndim && (x->ndim == 0 || x->shape);
    for (int32_t d = 0; same && d < x->ndim; d++) same = x->shape[d] == want->shape[d];
    if (!same) {
        char a[160], b[160] = "(NULL)";
        shape_text(a, sizeof a, want->ndim, want->shape);
        if (x->shape || x->ndim == 0) shape_text(b, sizeof b, x->ndim < 0 ? 0 : x->ndim, x->shape);
        return fail(MLC_ERROR_SHAPE_MISMATCH, "%s %zu ('%s'): expected shape %s, got %s (ndim %d)", what, i,
                    want->name, a, b, (int)x->ndim);
    }
    if (x->nbytes < want->nbytes)
        return fail(MLC_ERROR_BUFFER_TOO_SMALL, "%s %zu ('%s'): the buffer holds %zu bytes, the %s tensor needs %zu",
                    what, i, want->name, x->nbytes, dtype_name(want->dtype), want->nbytes);
    if ((uintptr_t)x->data % dtype_size(want->dtype))
        return fail(MLC_ERROR_INVALID_ARGUMENT, "%s %zu ('%s'): data %p is not aligned to its %zu-byte elements",
                    what, i, want->name, x->data, dtype_size(want->dtype));
    return MLC_OK;
}

static int overlap(const void *a, size_t na, const void *b, size_t nb) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return na && nb && x < y + nb && y < x + na;
}
#define MAX_ARGS_ON_STACK 64

MLC_API mlc_status mlc_model_run(mlc_model *m, const mlc_tensor *inputs, size_t num_inputs,
                                 const mlc_tensor *outputs, size_t num_outputs) {
    const mlc_model_tables *t = &mlc__tables;
    if (!m) return fail(MLC_ERROR_NULL_ARGUMENT, "mlc_model_run: model is NULL");
    if (num_inputs != t->num_inputs)
        return fail(MLC_ERROR_INVALID_ARGUMENT, "mlc_model_run: the model takes %zu input(s), got %zu",
                    t->num_inputs, num_inputs);
    if (num_outputs != t->num_outputs)
        return fail(MLC_ERROR_INVALID_ARGUMENT, "mlc_model_run: the model has %zu output(s), got %zu",
                    t->num_outputs, num_outputs);
    if (num_inputs && !inputs) return fail(MLC_ERROR_NULL_ARGUMENT, "mlc_model_run: inputs is NULL");
    if (num_outputs && !outputs) return fail(MLC_ERROR_NULL_ARGUMENT, "mlc_model_run: outputs is NULL");
    mlc_status st;
    for (size_t i = 0; i < num_inputs; i++)
        if ((st = check_tensor(&inputs[i], &t->inputs[i], "input", i)) != MLC_OK) return st;
    for (size_t i = 0; i < num_outputs; i++) {
        if ((st = check_tensor(&outputs[i], &t->outputs[i], "output", i)) != MLC_OK) return st;
        size_t n = t->outputs[i].nbytes;
        for (size_t j = 0; j < num_inputs; j++)
            if (overlap(outputs[i].data, n, inputs[j].data, t->inputs[j].nbytes))
                return fail(MLC_ERROR_INVALID_ARGUMENT, "output %zu ('%s') overlaps input %zu ('%s'): outputs need "
                            "their own buffers", i, t->outputs[i].name, j, t->inputs[j].name);
        for (size_t j = 0; j < i; j++)
            if (overlap(outputs[i].data, n, outputs[j].data, t->outputs[j].nbytes))
                return fail(MLC_ERROR_INVALID_ARGUMENT, "output %zu ('%s') overlaps output %zu ('%s')", i,
                            t->outputs[i].name, j, t->outputs[j].name);
    }
    void *small[2 * MAX_ARGS_ON_STACK], **ptrs = small;
    if (num_inputs + num_outputs > 2 * MAX_ARGS_ON_STACK &&
        !(ptrs = malloc((num_inputs + num_outputs) * sizeof *ptrs)))
        return fail(MLC_ERROR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; i < num_inputs; i++) ptrs[i] = inputs[i].data;
    for (size_t i = 0; i < num_outputs; i++) ptrs[num_inputs + i] = outputs[i].data;
    st = mlc__run(m, ptrs, ptrs + num_inputs);
    if (ptrs != small) free(ptrs);
    return st;
}

MLC_API mlc_status mlc_model_run_unchecked(mlc_model *m, const void *const *inputs, void *const *outputs) {
    if (!m) return fail(MLC_ERROR_NULL_ARGUMENT, "mlc_model_run_unchecked: model is NULL");
    if ((mlc__tables.num_inputs && !inputs) || (mlc__tables.num_outputs && !outputs))
        return fail(MLC_ERROR_NULL_ARGUMENT, "mlc_model_run_unchecked: inputs or outputs is NULL");
    return mlc__run(m, (void **)inputs, (void **)outputs);
}
