#define _POSIX_C_SOURCE 200809L

#include "jsonw.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void jw_init(jsonw *w) { memset(w, 0, sizeof *w); }

void jw_free(jsonw *w) {
    free(w->buf);
    memset(w, 0, sizeof *w);
}

static void put(jsonw *w, const char *s, size_t n) {
    if (w->failed) return;
    if (n + 1 > w->cap - w->len) {
        size_t cap = w->cap ? w->cap : 1024;
        while (n + 1 > cap - w->len) {
            if (cap > SIZE_MAX / 2) {
                w->failed = 1;
                return;
            }
            cap *= 2;
        }
        char *b = realloc(w->buf, cap);
        if (!b) {
            w->failed = 1;
            return;
        }
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

static void puts_(jsonw *w, const char *s) { put(w, s, strlen(s)); }

static void sep(jsonw *w) {
    if (w->need_comma) put(w, ",", 1);
    w->need_comma = 1;
}

void jw_begin_object(jsonw *w) {
    sep(w);
    put(w, "{", 1);
    w->need_comma = 0;
}

void jw_end_object(jsonw *w) {
    put(w, "}", 1);
    w->need_comma = 1;
}

void jw_begin_array(jsonw *w) {
    sep(w);
    put(w, "[", 1);
    w->need_comma = 0;
}

void jw_end_array(jsonw *w) {
    put(w, "]", 1);
    w->need_comma = 1;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not valid UTF-8. */
static size_t utf8_len(const unsigned char *s) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if ((s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && s[1] > 0x9F) return 0; /* surrogates */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if ((s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;
        if (c == 0xF4 && s[1] > 0x8F) return 0;
        return 4;
    }
    return 0;
}

static void string_raw(jsonw *w, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    put(w, "\"", 1);
    while (*p) {
        unsigned char c = *p;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(w, esc, 2);
            p++;
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            puts_(w, esc);
            p++;
        } else {
            /* utf8_len reads at most 4 bytes and stops at the NUL, whose top bits are never 10. */
            size_t n = utf8_len(p);
            if (n == 0) {
                puts_(w, "\\ufffd");
                p++;
            } else {
                put(w, (const char *)p, n);
                p += n;
            }
        }
    }
    put(w, "\"", 1);
}

void jw_key(jsonw *w, const char *key) {
    sep(w);
    string_raw(w, key);
    put(w, ":", 1);
    w->need_comma = 0;
}

void jw_string(jsonw *w, const char *s) {
    sep(w);
    if (!s) {
        puts_(w, "null");
        return;
    }
    string_raw(w, s);
}

void jw_int(jsonw *w, long long v) {
    char b[32];
    sep(w);
    snprintf(b, sizeof b, "%lld", v);
    puts_(w, b);
}

void jw_double(jsonw *w, double v) {
    char b[64];
    sep(w);
    if (!isfinite(v)) {
        puts_(w, "null");
        return;
    }
    /* Nanosecond resolution for millisecond values. */
    snprintf(b, sizeof b, "%.6f", v);
    puts_(w, b);
}

void jw_bool(jsonw *w, int v) {
    sep(w);
    puts_(w, v ? "true" : "false");
}

void jw_null(jsonw *w) {
    sep(w);
    puts_(w, "null");
}
