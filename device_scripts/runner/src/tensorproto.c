/* TensorProto wire-format reader and writer; see tensorproto.h for the contract.
 *
 * Field numbers (onnx.proto, message TensorProto):
 *   1 dims (int64, packed or not)      2 data_type (int32)      3 segment (message)
 *   4 float_data (float)               5 int32_data (int32)     6 string_data (bytes)
 *   7 int64_data (int64)               8 name (string)          9 raw_data (bytes)
 *   10 double_data (double)            11 uint64_data (uint64)  12 doc_string (string)
 *   13 external_data (message)         14 data_location (enum)  16 metadata_props (message)
 * Repeated numeric fields may arrive packed (wire type 2) or one value per tag, and a field may
 * occur several times: protobuf concatenates repeated fields and keeps the last of a singular one,
 * and so do we. string_data is never packed: one length-delimited field per string.
 */
#define _POSIX_C_SOURCE 200809L

#include "tensorproto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WT_VARINT = 0, WT_FIXED64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_FIXED32 = 5 };

typedef struct {
    const uint8_t *start;
    const uint8_t *p;
    const uint8_t *end;
} reader;

/* A growable array of fixed-size elements; every size computation is overflow-checked. */
typedef struct {
    uint8_t *data;
    size_t len; /* elements */
    size_t cap; /* elements */
    size_t elem;
} vec;

typedef struct {
    char *err;
    size_t errlen;
} errbuf;

static void set_err(errbuf *e, const char *fmt, ...) {
    va_list ap;
    if (e->errlen == 0) return;
    va_start(ap, fmt);
    vsnprintf(e->err, e->errlen, fmt, ap);
    va_end(ap);
}

size_t tp_elem_bits(int32_t t) {
    switch (t) {
    case TP_FLOAT: case TP_INT32: case TP_UINT32: return 32;
    case TP_UINT8: case TP_INT8: case TP_BOOL: return 8;
    case TP_FLOAT8E4M3FN: case TP_FLOAT8E4M3FNUZ: case TP_FLOAT8E5M2: case TP_FLOAT8E5M2FNUZ:
        return 8;
    case TP_UINT16: case TP_INT16: case TP_FLOAT16: case TP_BFLOAT16: return 16;
    case TP_INT64: case TP_UINT64: case TP_DOUBLE: return 64;
    case TP_FLOAT8E8M0: return 8;
    case TP_UINT4: case TP_INT4: case TP_FLOAT4E2M1: return 4;
    case TP_UINT2: case TP_INT2: return 2;
    default: return 0;
    }
}

int32_t tp_to_ort(int32_t t) {
    switch (t) {
    case TP_FLOAT8E8M0: return 26;
    case TP_UINT2: return 24;
    case TP_INT2: return 25;
    default: return t;
    }
}

int32_t tp_from_ort(int32_t t) {
    switch (t) {
    case 24: return TP_UINT2;
    case 25: return TP_INT2;
    case 26: return TP_FLOAT8E8M0;
    default: return t;
    }
}

size_t tp_elem_size(int32_t t) {
    size_t bits = tp_elem_bits(t);
    return bits >= 8 ? bits / 8 : 0;
}

int tp_data_bytes(int32_t t, size_t count, size_t *nbytes) {
    size_t bits = tp_elem_bits(t);
    if (bits == 0) return -1;
    if (bits < 8) {
        size_t per = 8 / bits;
        *nbytes = count / per + (count % per != 0);
        return 0;
    }
    if (count > SIZE_MAX / (bits / 8)) return -1;
    *nbytes = count * (bits / 8);
    return 0;
}

const char *tp_dtype_name(int32_t t) {
    switch (t) {
    case TP_FLOAT: return "float32";
    case TP_UINT8: return "uint8";
    case TP_INT8: return "int8";
    case TP_UINT16: return "uint16";
    case TP_INT16: return "int16";
    case TP_INT32: return "int32";
    case TP_INT64: return "int64";
    case TP_BOOL: return "bool";
    case TP_FLOAT16: return "float16";
    case TP_DOUBLE: return "float64";
    case TP_UINT32: return "uint32";
    case TP_UINT64: return "uint64";
    case TP_STRING: return "string";
    /* ml_dtypes' names, as edgepack/dtypes.py records them. */
    case TP_BFLOAT16: return "bfloat16";
    case TP_FLOAT8E4M3FN: return "float8_e4m3fn";
    case TP_FLOAT8E4M3FNUZ: return "float8_e4m3fnuz";
    case TP_FLOAT8E5M2: return "float8_e5m2";
    case TP_FLOAT8E5M2FNUZ: return "float8_e5m2fnuz";
    case TP_UINT4: return "uint4";
    case TP_INT4: return "int4";
    case TP_FLOAT4E2M1: return "float4_e2m1fn";
    case TP_FLOAT8E8M0: return "float8_e8m0fnu";
    case TP_UINT2: return "uint2";
    case TP_INT2: return "int2";
    default: return NULL;
    }
}

void *tp_aligned_alloc(size_t nbytes) {
    void *p = NULL;
    /* 64 bytes: a cache line, and what ORT's own CPU allocator aligns to. Never 0 bytes, so an
     * empty tensor still has a valid data pointer. */
    if (posix_memalign(&p, 64, nbytes ? nbytes : 1) != 0) return NULL;
    return p;
}

void tp_aligned_free(void *p) { free(p); }

static size_t remaining(const reader *r) { return (size_t)(r->end - r->p); }

static size_t offset(const reader *r) { return (size_t)(r->p - r->start); }

/* 0 ok, -1 truncated, -2 longer than 10 bytes or above 64 bits. */
static int read_varint(reader *r, uint64_t *out) {
    uint64_t v = 0;
    for (unsigned i = 0; i < 10; i++) {
        if (r->p >= r->end) return -1;
        uint8_t b = *r->p++;
        if (i == 9 && b > 1) return -2;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -2;
}

static int varint_or_err(reader *r, uint64_t *out, errbuf *e, const char *what) {
    size_t at = offset(r);
    int rc = read_varint(r, out);
    if (rc == -1) {
        set_err(e, "truncated %s at byte %zu", what, at);
        return -1;
    }
    if (rc == -2) {
        set_err(e, "malformed %s (varint too long) at byte %zu", what, at);
        return -1;
    }
    return 0;
}

static int vec_reserve(vec *v, size_t extra, errbuf *e) {
    if (extra <= v->cap - v->len) return 0;
    if (extra > SIZE_MAX - v->len) goto too_big;
    size_t need = v->len + extra;
    size_t cap = v->cap ? v->cap : 16;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    if (cap > SIZE_MAX / v->elem) goto too_big;
    uint8_t *d = realloc(v->data, cap * v->elem);
    if (!d) {
        set_err(e, "out of memory reading the tensor");
        return -1;
    }
    v->data = d;
    v->cap = cap;
    return 0;
too_big:
    set_err(e, "tensor too large for this machine");
    return -1;
}

static int vec_push(vec *v, const void *elem, errbuf *e) {
    if (vec_reserve(v, 1, e)) return -1;
    memcpy(v->data + v->len * v->elem, elem, v->elem);
    v->len++;
    return 0;
}

/* Repeated varint field (int64 storage), unpacked (one value) or packed (a length-delimited run). */
static int read_varints(reader *r, int wt, vec *v, errbuf *e, const char *field) {
    uint64_t x;
    if (wt == WT_VARINT) {
        if (varint_or_err(r, &x, e, field)) return -1;
        return vec_push(v, &x, e);
    }
    uint64_t n;
    if (varint_or_err(r, &n, e, "length")) return -1;
    if (n > remaining(r)) {
        set_err(e, "%s: packed field of %llu bytes runs past the end (byte %zu)", field,
                (unsigned long long)n, offset(r));
        return -1;
    }
    reader sub = {r->start, r->p, r->p + (size_t)n};
    /* Count first so that one allocation serves the whole run: every varint ends in a byte
     * without the continuation bit. */
    size_t count = 0;
    for (const uint8_t *q = sub.p; q < sub.end; q++) count += !(*q & 0x80);
    if (vec_reserve(v, count, e)) return -1;
    while (sub.p < sub.end) {
        if (varint_or_err(&sub, &x, e, field)) return -1;
        if (vec_push(v, &x, e)) return -1;
    }
    r->p = sub.end;
    return 0;
}

/* Repeated fixed-width field (4 or 8 bytes), unpacked or packed. */
static int read_fixed(reader *r, int wt, size_t width, vec *v, errbuf *e, const char *field) {
    if (wt != WT_LEN) {
        if (remaining(r) < width) {
            set_err(e, "truncated %s at byte %zu", field, offset(r));
            return -1;
        }
        if (vec_push(v, r->p, e)) return -1;
        r->p += width;
        return 0;
    }
    uint64_t n;
    if (varint_or_err(r, &n, e, "length")) return -1;
    if (n > remaining(r)) {
        set_err(e, "%s: packed field of %llu bytes runs past the end (byte %zu)", field,
                (unsigned long long)n, offset(r));
        return -1;
    }
    if (n % width) {
        set_err(e, "%s: packed field of %llu bytes is not a multiple of %zu", field,
                (unsigned long long)n, width);
        return -1;
    }
    size_t count = (size_t)n / width;
    if (count == 0) return 0; /* an empty run: v->data may still be NULL */
    if (vec_reserve(v, count, e)) return -1;
    memcpy(v->data + v->len * v->elem, r->p, (size_t)n);
    v->len += count;
    r->p += (size_t)n;
    return 0;
}

/* A length-delimited field's payload: returns a pointer into the buffer and its length. */
static int read_bytes(reader *r, const uint8_t **p, size_t *n, errbuf *e, const char *field) {
    uint64_t len;
    if (varint_or_err(r, &len, e, "length")) return -1;
    if (len > remaining(r)) {
        set_err(e, "%s: %llu bytes declared at byte %zu but only %zu remain", field,
                (unsigned long long)len, offset(r), remaining(r));
        return -1;
    }
    *p = r->p;
    *n = (size_t)len;
    r->p += (size_t)len;
    return 0;
}

static int skip_field(reader *r, int wt, uint64_t field, errbuf *e) {
    uint64_t x;
    const uint8_t *p;
    size_t n;
    switch (wt) {
    case WT_VARINT: return varint_or_err(r, &x, e, "varint");
    case WT_FIXED64:
    case WT_FIXED32: {
        size_t w = wt == WT_FIXED64 ? 8 : 4;
        if (remaining(r) < w) {
            set_err(e, "truncated field %llu at byte %zu", (unsigned long long)field, offset(r));
            return -1;
        }
        r->p += w;
        return 0;
    }
    case WT_LEN: return read_bytes(r, &p, &n, e, "field");
    case WT_SGROUP:
    case WT_EGROUP:
        set_err(e, "field %llu uses protobuf groups, which TensorProto never does",
                (unsigned long long)field);
        return -1;
    default:
        set_err(e, "invalid wire type %d at byte %zu", wt, offset(r));
        return -1;
    }
}

static int wrong_wire(errbuf *e, const char *field, int wt) {
    set_err(e, "field %s has wire type %d, which a TensorProto never uses for it", field, wt);
    return -1;
}

void tp_free(tp_tensor *t) {
    if (!t) return;
    free(t->name);
    free(t->dims);
    free(t->offsets);
    tp_aligned_free(t->data);
    memset(t, 0, sizeof *t);
}

/* The second pass over a buffer tp_parse has already walked: copies the `count` strings of
 * string_data (`total` bytes together) into out->data and out->offsets. */
static int read_strings(const uint8_t *buf, size_t len, tp_tensor *out, size_t count, size_t total,
                        errbuf *e) {
    if (count >= SIZE_MAX / sizeof *out->offsets) {
        set_err(e, "tensor too large for this machine");
        return -1;
    }
    out->offsets = malloc((count + 1) * sizeof *out->offsets);
    out->data = tp_aligned_alloc(total);
    if (!out->offsets || !out->data) {
        set_err(e, "out of memory for %zu strings of %zu bytes", count, total);
        return -1;
    }
    reader r = {buf, buf, buf + len};
    size_t k = 0, at = 0;
    while (r.p < r.end) {
        uint64_t tag;
        if (varint_or_err(&r, &tag, e, "field tag")) return -1;
        int wt = (int)(tag & 7);
        if (tag >> 3 != 6) {
            if (skip_field(&r, wt, tag >> 3, e)) return -1;
            continue;
        }
        const uint8_t *p;
        size_t n;
        if (read_bytes(&r, &p, &n, e, "string_data")) return -1;
        /* The first pass counted exactly these; anything else means the buffer changed. */
        if (k == count || n > total - at) {
            set_err(e, "string_data changed between passes");
            return -1;
        }
        out->offsets[k++] = at;
        if (n) memcpy((uint8_t *)out->data + at, p, n);
        at += n;
    }
    if (k != count || at != total) {
        set_err(e, "string_data changed between passes");
        return -1;
    }
    out->offsets[count] = total;
    return 0;
}

int tp_parse(const uint8_t *buf, size_t len, tp_tensor *out, char *err, size_t errlen) {
    errbuf e = {err, errlen};
    reader r = {buf, buf, buf + len};
    vec dims = {NULL, 0, 0, 8}, f32 = {NULL, 0, 0, 4}, i32 = {NULL, 0, 0, 8};
    vec i64 = {NULL, 0, 0, 8}, f64 = {NULL, 0, 0, 8}, u64 = {NULL, 0, 0, 8};
    const uint8_t *raw = NULL, *name = NULL;
    size_t raw_len = 0, name_len = 0;
    int has_raw = 0, has_name = 0;
    /* string_data is only counted here; a second pass copies it once the dims have been checked
     * against the count, so that hostile dims never size an allocation. Both sums are bounded
     * by `len`: every string costs at least its tag and length bytes. */
    size_t n_strings = 0, string_bytes = 0;
    int64_t data_type = 0;
    int rc = -1;

    memset(out, 0, sizeof *out);
    if (errlen) err[0] = '\0';
    if (!buf && len) {
        set_err(&e, "no data");
        return -1;
    }

    while (r.p < r.end) {
        uint64_t tag;
        size_t at = offset(&r);
        if (varint_or_err(&r, &tag, &e, "field tag")) goto done;
        uint64_t field = tag >> 3;
        int wt = (int)(tag & 7);
        if (field == 0 || field > 536870911u) {
            set_err(&e, "invalid field number %llu at byte %zu", (unsigned long long)field, at);
            goto done;
        }
        switch (field) {
        case 1:
            if (wt != WT_VARINT && wt != WT_LEN) { wrong_wire(&e, "dims", wt); goto done; }
            if (read_varints(&r, wt, &dims, &e, "dims")) goto done;
            break;
        case 2: {
            uint64_t v;
            if (wt != WT_VARINT) { wrong_wire(&e, "data_type", wt); goto done; }
            if (varint_or_err(&r, &v, &e, "data_type")) goto done;
            data_type = (int64_t)v;
            break;
        }
        case 3:
            set_err(&e, "segmented TensorProto (field segment) is not supported");
            goto done;
        case 4:
            if (wt != WT_FIXED32 && wt != WT_LEN) { wrong_wire(&e, "float_data", wt); goto done; }
            if (read_fixed(&r, wt, 4, &f32, &e, "float_data")) goto done;
            break;
        case 5:
            if (wt != WT_VARINT && wt != WT_LEN) { wrong_wire(&e, "int32_data", wt); goto done; }
            if (read_varints(&r, wt, &i32, &e, "int32_data")) goto done;
            break;
        case 6: {
            const uint8_t *p;
            size_t n;
            if (wt != WT_LEN) { wrong_wire(&e, "string_data", wt); goto done; }
            if (read_bytes(&r, &p, &n, &e, "string_data")) goto done;
            n_strings++;
            string_bytes += n;
            break;
        }
        case 7:
            if (wt != WT_VARINT && wt != WT_LEN) { wrong_wire(&e, "int64_data", wt); goto done; }
            if (read_varints(&r, wt, &i64, &e, "int64_data")) goto done;
            break;
        case 8:
            if (wt != WT_LEN) { wrong_wire(&e, "name", wt); goto done; }
            if (read_bytes(&r, &name, &name_len, &e, "name")) goto done;
            has_name = 1;
            break;
        case 9:
            if (wt != WT_LEN) { wrong_wire(&e, "raw_data", wt); goto done; }
            if (read_bytes(&r, &raw, &raw_len, &e, "raw_data")) goto done;
            has_raw = 1;
            break;
        case 10:
            if (wt != WT_FIXED64 && wt != WT_LEN) { wrong_wire(&e, "double_data", wt); goto done; }
            if (read_fixed(&r, wt, 8, &f64, &e, "double_data")) goto done;
            break;
        case 11:
            if (wt != WT_VARINT && wt != WT_LEN) { wrong_wire(&e, "uint64_data", wt); goto done; }
            if (read_varints(&r, wt, &u64, &e, "uint64_data")) goto done;
            break;
        case 13:
            set_err(&e, "the tensor's data is external (field external_data); "
                        "save it with its data inside the .pb file");
            goto done;
        case 14: {
            uint64_t v;
            if (wt != WT_VARINT) { wrong_wire(&e, "data_location", wt); goto done; }
            if (varint_or_err(&r, &v, &e, "data_location")) goto done;
            if (v != 0) {
                set_err(&e, "the tensor's data is external (data_location=%llu); "
                            "save it with its data inside the .pb file", (unsigned long long)v);
                goto done;
            }
            break;
        }
        default: /* doc_string, metadata_props and fields from the future */
            if (skip_field(&r, wt, field, &e)) goto done;
        }
    }

    if (data_type == 0) {
        set_err(&e, "no data_type: not a serialized onnx.TensorProto");
        goto done;
    }
    int is_string = data_type == TP_STRING;
    size_t bits = (data_type > 0 && data_type <= INT32_MAX) ? tp_elem_bits((int32_t)data_type) : 0;
    /* For strings and packed types the product of dims counts elements, one byte each as far
     * as overflow goes. */
    size_t esize = is_string || (bits && bits < 8) ? 1 : bits / 8;
    if (!esize) {
        set_err(&e, "data type %lld is not supported (the runner carries float32, float16, "
                    "bfloat16, float64, float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz, e8m0), "
                    "float4e2m1, int2/4/8/16/32/64, uint2/4/8/16/32/64, bool and string)",
                (long long)data_type);
        goto done;
    }

    /* Element count: product of dims, refusing negative dims and anything that overflows. */
    size_t count = 1;
    int any_zero = 0;
    for (size_t i = 0; i < dims.len; i++) {
        int64_t d;
        memcpy(&d, dims.data + i * 8, 8);
        if (d < 0) {
            set_err(&e, "dimension %zu is negative (%lld)", i, (long long)d);
            goto done;
        }
        if (d == 0) any_zero = 1;
    }
    if (any_zero) {
        count = 0;
    } else {
        for (size_t i = 0; i < dims.len; i++) {
            int64_t d;
            memcpy(&d, dims.data + i * 8, 8);
            if ((uint64_t)d > SIZE_MAX / esize / count) {
                set_err(&e, "dims describe a tensor too large for this machine");
                goto done;
            }
            count *= (size_t)d;
        }
    }
    /* Packed types: 8 / bits elements a byte, so the bytes round up; count * 1 did not
     * overflow. */
    int packed = bits && bits < 8;
    size_t nbytes = count * esize;
    if (packed) tp_data_bytes((int32_t)data_type, count, &nbytes);
    /* Typed fields hold one entry per element, or per byte of packed elements. */
    size_t n_values = packed ? nbytes : count;
    size_t vsize = packed ? 1 : esize;

    if (is_string) {
        if (has_raw) {
            set_err(&e, "raw_data cannot carry a string tensor "
                        "(onnx keeps strings in string_data)");
            goto done;
        }
        if (n_strings != count) {
            set_err(&e, "string_data holds %zu strings but dims say %zu elements", n_strings,
                    count);
            goto done;
        }
        if (read_strings(buf, len, out, count, string_bytes, &e)) goto done;
        nbytes = string_bytes;
    } else {
        /* Check the data against the dims before allocating anything the dims ask for: dims alone
         * are a claim, the bytes present in the file are the proof. */
        const vec *src = NULL;
        const char *fname = "raw_data";
        if (has_raw) {
            if (raw_len != nbytes) {
                set_err(&e, "raw_data holds %zu bytes but dims and data_type need %zu", raw_len,
                        nbytes);
                goto done;
            }
        } else {
            /* Typed fields: which one carries which type is fixed by onnx.proto. */
            switch (data_type) {
            case TP_FLOAT: src = &f32; fname = "float_data"; break;
            case TP_DOUBLE: src = &f64; fname = "double_data"; break;
            case TP_INT64: src = &i64; fname = "int64_data"; break;
            case TP_UINT32: case TP_UINT64: src = &u64; fname = "uint64_data"; break;
            default: src = &i32; fname = "int32_data"; break;
            }
            if (src->len != n_values) {
                set_err(&e, "%s holds %zu values but dims and data_type need %zu", fname,
                        src->len, n_values);
                goto done;
            }
        }

        out->data = tp_aligned_alloc(nbytes);
        if (!out->data) {
            set_err(&e, "out of memory for a tensor of %zu bytes", nbytes);
            goto done;
        }

        if (has_raw) {
            if (nbytes) memcpy(out->data, raw, nbytes);
        } else {
            if (src->elem == vsize) {
                if (nbytes) memcpy(out->data, src->data, nbytes);
            } else {
                /* Varint storage (8 bytes) narrowed to the element type: two's complement
                 * truncation, which is what protobuf's int32 -> (u)int8/16, the float16,
                 * bfloat16 and float8 bit patterns and a byte of packed 4-bit or 2-bit values
                 * mean. */
                for (size_t i = 0; i < n_values; i++) {
                    uint64_t v;
                    memcpy(&v, src->data + i * 8, 8);
                    uint8_t *dst = (uint8_t *)out->data + i * vsize;
                    if (vsize == 1) {
                        uint8_t b = (uint8_t)v;
                        *dst = b;
                    } else if (vsize == 2) {
                        uint16_t h = (uint16_t)v;
                        memcpy(dst, &h, 2);
                    } else {
                        uint32_t w = (uint32_t)v;
                        memcpy(dst, &w, 4);
                    }
                }
            }
        }
        if (data_type == TP_BOOL) {
            /* A bool byte other than 0 or 1 is undefined behaviour in ORT's C++ kernels. */
            uint8_t *b = out->data;
            for (size_t i = 0; i < count; i++) b[i] = b[i] != 0;
        }
    }

    out->name = malloc(name_len + 1);
    if (!out->name) {
        set_err(&e, "out of memory");
        goto done;
    }
    if (has_name && name_len) {
        if (memchr(name, 0, name_len)) {
            set_err(&e, "the tensor's name contains a NUL byte");
            goto done;
        }
        memcpy(out->name, name, name_len);
    }
    out->name[name_len] = '\0';

    if (dims.len) {
        out->dims = malloc(dims.len * sizeof(int64_t));
        if (!out->dims) {
            set_err(&e, "out of memory");
            goto done;
        }
        memcpy(out->dims, dims.data, dims.len * 8);
    }
    out->ndims = dims.len;
    out->data_type = (int32_t)data_type;
    out->count = count;
    out->nbytes = nbytes;
    rc = 0;

done:
    free(dims.data);
    free(f32.data);
    free(i32.data);
    free(i64.data);
    free(f64.data);
    free(u64.data);
    if (rc != 0) tp_free(out);
    return rc;
}

static size_t varint_len(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v) {
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Adds b to *a; returns -1 on overflow. */
static int add_size(size_t *a, size_t b) {
    if (b > SIZE_MAX - *a) return -1;
    *a += b;
    return 0;
}

int tp_serialize(const char *name, int32_t data_type, const int64_t *dims, size_t ndims,
                 const void *data, size_t nbytes, uint8_t **out, size_t *out_len) {
    size_t total = 0, name_len = name ? strlen(name) : 0;
    *out = NULL;
    *out_len = 0;
    for (size_t i = 0; i < ndims; i++)
        if (add_size(&total, 1 + varint_len((uint64_t)dims[i]))) return -1;
    if (add_size(&total, 1 + varint_len((uint64_t)(int64_t)data_type))) return -1;
    if (name_len && (add_size(&total, 1 + varint_len(name_len)) || add_size(&total, name_len)))
        return -1;
    if (add_size(&total, 1 + varint_len(nbytes)) || add_size(&total, nbytes)) return -1;

    uint8_t *buf = malloc(total ? total : 1);
    if (!buf) return -1;
    uint8_t *p = buf;
    for (size_t i = 0; i < ndims; i++) {
        *p++ = (1 << 3) | WT_VARINT;
        p = put_varint(p, (uint64_t)dims[i]);
    }
    *p++ = (2 << 3) | WT_VARINT;
    p = put_varint(p, (uint64_t)(int64_t)data_type);
    if (name_len) {
        *p++ = (8 << 3) | WT_LEN;
        p = put_varint(p, name_len);
        memcpy(p, name, name_len);
        p += name_len;
    }
    *p++ = (9 << 3) | WT_LEN;
    p = put_varint(p, nbytes);
    if (nbytes) memcpy(p, data, nbytes);
    p += nbytes;
    *out = buf;
    *out_len = (size_t)(p - buf);
    return 0;
}

int tp_serialize_strings(const char *name, const int64_t *dims, size_t ndims, const uint8_t *data,
                         const size_t *offsets, size_t count, uint8_t **out, size_t *out_len) {
    size_t total = 0, name_len = name ? strlen(name) : 0;
    *out = NULL;
    *out_len = 0;
    for (size_t i = 0; i < ndims; i++)
        if (add_size(&total, 1 + varint_len((uint64_t)dims[i]))) return -1;
    if (add_size(&total, 1 + varint_len(TP_STRING))) return -1;
    for (size_t i = 0; i < count; i++) {
        if (offsets[i + 1] < offsets[i]) return -1;
        size_t n = offsets[i + 1] - offsets[i];
        if (add_size(&total, 1 + varint_len(n)) || add_size(&total, n)) return -1;
    }
    if (name_len && (add_size(&total, 1 + varint_len(name_len)) || add_size(&total, name_len)))
        return -1;

    uint8_t *buf = malloc(total ? total : 1);
    if (!buf) return -1;
    uint8_t *p = buf;
    for (size_t i = 0; i < ndims; i++) {
        *p++ = (1 << 3) | WT_VARINT;
        p = put_varint(p, (uint64_t)dims[i]);
    }
    *p++ = (2 << 3) | WT_VARINT;
    p = put_varint(p, TP_STRING);
    for (size_t i = 0; i < count; i++) {
        size_t n = offsets[i + 1] - offsets[i];
        *p++ = (6 << 3) | WT_LEN;
        p = put_varint(p, n);
        if (n) memcpy(p, data + offsets[i], n);
        p += n;
    }
    if (name_len) {
        *p++ = (8 << 3) | WT_LEN;
        p = put_varint(p, name_len);
        memcpy(p, name, name_len);
        p += name_len;
    }
    *out = buf;
    *out_len = (size_t)(p - buf);
    return 0;
}
