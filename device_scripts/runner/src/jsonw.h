/* A minimal JSON writer into a growable buffer: the runner's one document on stdout is built in
 * memory and written with a single write(), so a reader never sees half of it. */
#ifndef EDGEPACK_JSONW_H
#define EDGEPACK_JSONW_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *buf;
    size_t len;
    size_t cap;
    int failed; /* out of memory: the document is unusable */
    int need_comma;
} jsonw;

void jw_init(jsonw *w);
void jw_free(jsonw *w);
void jw_begin_object(jsonw *w);
void jw_end_object(jsonw *w);
void jw_begin_array(jsonw *w);
void jw_end_array(jsonw *w);
/* A key inside an object; the next value call writes its value. */
void jw_key(jsonw *w, const char *key);
/* Strings are escaped; bytes that are not valid UTF-8 become U+FFFD so the document stays valid. */
void jw_string(jsonw *w, const char *s);
void jw_int(jsonw *w, long long v);
void jw_double(jsonw *w, double v);
void jw_bool(jsonw *w, int v);
void jw_null(jsonw *w);

#endif
