/* libFuzzer target for the runner's TensorProto reader (and its writer and JSON string escaping).
 *
 * Properties checked beyond "no crash, no sanitizer report":
 *   - whatever tp_parse accepts, tp_serialize (tp_serialize_strings for a string tensor) writes
 *     and tp_parse reads back identically;
 *   - an accepted tensor's sizes are consistent: nbytes == count * element size (ceil(count / 2)
 *     for the packed 4-bit types), or for strings count + 1 offsets from 0, never decreasing,
 *     ending at nbytes.
 * Build: cmake -DEDGEPACK_BUILD_FUZZER=ON -DCMAKE_C_COMPILER=clang (see bench/fuzz_tensorproto.sh).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/jsonw.h"
#include "../src/tensorproto.h"

/* jsonw.c is compiled in here so that the fuzz build needs only this file and tensorproto.c. */
#include "../src/jsonw.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tp_tensor t, back;
    char err[256];
    if (tp_parse(data, size, &t, err, sizeof err) == 0) {
        int is_string = t.data_type == TP_STRING;
        uint8_t *buf;
        size_t len;
        if (is_string) {
            if (!t.offsets || t.offsets[0] != 0 || t.offsets[t.count] != t.nbytes) abort();
            for (size_t i = 0; i < t.count; i++)
                if (t.offsets[i + 1] < t.offsets[i]) abort();
            if (tp_serialize_strings(t.name, t.dims, t.ndims, t.data, t.offsets, t.count, &buf,
                                     &len) != 0)
                abort();
        } else {
            size_t want;
            if (t.offsets || tp_data_bytes(t.data_type, t.count, &want) != 0 || t.nbytes != want)
                abort();
            if (tp_serialize(t.name, t.data_type, t.dims, t.ndims, t.data, t.nbytes, &buf,
                             &len) != 0)
                abort();
        }
        if (tp_parse(buf, len, &back, err, sizeof err) != 0) abort();
        if (strcmp(back.name, t.name) != 0 || back.data_type != t.data_type ||
            back.ndims != t.ndims || back.count != t.count || back.nbytes != t.nbytes ||
            (t.ndims && memcmp(back.dims, t.dims, t.ndims * sizeof *t.dims) != 0) ||
            (t.nbytes && memcmp(back.data, t.data, t.nbytes) != 0) ||
            (is_string &&
             memcmp(back.offsets, t.offsets, (t.count + 1) * sizeof *t.offsets) != 0))
            abort();
        jsonw w;
        jw_init(&w);
        jw_string(&w, t.name);
        jw_free(&w);
        tp_free(&back);
        free(buf);
        tp_free(&t);
    } else {
        if (err[0] == '\0') abort(); /* every rejection explains itself */
    }
    /* The escaper sees arbitrary bytes too: names come from models the runner did not write. */
    char *s = malloc(size + 1);
    if (s) {
        memcpy(s, data, size);
        s[size] = '\0';
        jsonw w;
        jw_init(&w);
        jw_string(&w, s);
        jw_free(&w);
        free(s);
    }
    return 0;
}
