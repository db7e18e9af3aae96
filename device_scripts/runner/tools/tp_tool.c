/* Test helper (not shipped): runs the runner's TensorProto reader and writer on one file.
 *
 *   tp_tool IN [OUT]
 *
 * Prints {"name":...,"dtype":...,"dims":[...],"nbytes":N} on success, plus "lengths":[...] (each
 * string's byte length) for a string tensor, and writes the tensor back out with tp_serialize or
 * tp_serialize_strings when OUT is given; or {"error":"..."} with exit code 1. The tests compile
 * it with ASan and UBSan and compare its writes byte for byte with onnx's own serializer.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>

#include "../src/jsonw.h"
#include "../src/tensorproto.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: tp_tool IN [OUT]\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 2;
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (!buf) return 2;

    tp_tensor t;
    char err[512];
    jsonw w;
    jw_init(&w);
    jw_begin_object(&w);
    int rc = 0;
    if (tp_parse(buf, len, &t, err, sizeof err) != 0) {
        jw_key(&w, "error");
        jw_string(&w, err);
        rc = 1;
    } else {
        jw_key(&w, "name"); jw_string(&w, t.name);
        jw_key(&w, "dtype"); jw_string(&w, tp_dtype_name(t.data_type));
        jw_key(&w, "dims");
        jw_begin_array(&w);
        for (size_t i = 0; i < t.ndims; i++) jw_int(&w, t.dims[i]);
        jw_end_array(&w);
        jw_key(&w, "nbytes"); jw_int(&w, (long long)t.nbytes);
        if (t.data_type == TP_STRING) {
            jw_key(&w, "lengths");
            jw_begin_array(&w);
            for (size_t i = 0; i < t.count; i++)
                jw_int(&w, (long long)(t.offsets[i + 1] - t.offsets[i]));
            jw_end_array(&w);
        }
        if (argc > 2) {
            unsigned char *out;
            size_t out_len;
            int bad = t.data_type == TP_STRING
                ? tp_serialize_strings(t.name, t.dims, t.ndims, t.data, t.offsets, t.count, &out,
                                       &out_len)
                : tp_serialize(t.name, t.data_type, t.dims, t.ndims, t.data, t.nbytes, &out,
                               &out_len);
            if (bad) return 3;
            FILE *o = fopen(argv[2], "wb");
            if (!o || fwrite(out, 1, out_len, o) != out_len || fclose(o) != 0) return 3;
            free(out);
        }
        tp_free(&t);
    }
    jw_end_object(&w);
    printf("%s\n", w.buf);
    jw_free(&w);
    free(buf);
    return rc;
}
