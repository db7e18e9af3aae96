/* edgepack-runner: load an ONNX model with ONNX Runtime's C API, feed it the TensorProto inputs of
 * a test_data_set directory, time the Run call, write the outputs as TensorProto files, and print
 * exactly one JSON document on stdout (schema edgepack-runner/1), success or error.
 *
 * What is timed follows onnxruntime_perf_test: input tensors are created once before the loop and
 * the timed region is the Run call alone. Session creation and the first inference are reported
 * apart from the steady state; every iteration's latency is reported so the host computes the
 * statistics.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "onnxruntime_c_api.h"
#ifdef __ANDROID__
#include "nnapi_provider_factory.h"
#endif

#include "jsonw.h"
#include "tensorproto.h"

#ifndef EDGEPACK_RUNNER_VERSION
#define EDGEPACK_RUNNER_VERSION "0.1.0"
#endif
#ifndef EDGEPACK_TARGET
#define EDGEPACK_TARGET "unknown"
#endif

#define SCHEMA "edgepack-runner/1"
#define MAX_ITERATIONS 10000000L
#define MAX_INPUT_FILES 4096

enum {
    EXIT_BAD_ARGUMENTS = 2,
    EXIT_MODEL_LOAD = 3,
    EXIT_INPUT_MISMATCH = 4,
    EXIT_RUN_FAILURE = 5,
    EXIT_OUTPUT_WRITE = 6
};

static const OrtApi *g_ort;
/* The real stdout: fd 1 is pointed at stderr at start-up so that nothing a library prints can
 * corrupt the one JSON document, which alone goes here. */
static int g_json_fd = -1;

static const char *kind_of(int code) {
    switch (code) {
    case EXIT_BAD_ARGUMENTS: return "bad_arguments";
    case EXIT_MODEL_LOAD: return "model_load";
    case EXIT_INPUT_MISMATCH: return "input_mismatch";
    case EXIT_RUN_FAILURE: return "run_failure";
    case EXIT_OUTPUT_WRITE: return "output_write";
    default: return "internal";
    }
}

static void write_all(int fd, const char *buf, size_t len) {
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

static void emit_json(jsonw *w) {
    if (w->failed) {
        static const char oom[] = "{\"schema\":\"" SCHEMA "\",\"status\":\"error\",\"error\":{\"kind\":"
                                  "\"run_failure\",\"message\":\"out of memory writing the report\"},"
                                  "\"exit_code\":5}\n";
        write_all(g_json_fd, oom, sizeof oom - 1);
        return;
    }
    write_all(g_json_fd, w->buf, w->len);
    write_all(g_json_fd, "\n", 1);
}

/* Report an error as the one JSON document and exit. _exit skips library destructors: after a
 * failure the exit code must be ours, whatever state ONNX Runtime's threads are in. */
static void fail(int code, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "edgepack-runner: error (%s): %s\n", kind_of(code), msg);
    fflush(stderr);
    jsonw w;
    jw_init(&w);
    jw_begin_object(&w);
    jw_key(&w, "schema"); jw_string(&w, SCHEMA);
    jw_key(&w, "status"); jw_string(&w, "error");
    jw_key(&w, "runner_version"); jw_string(&w, EDGEPACK_RUNNER_VERSION);
    jw_key(&w, "error");
    jw_begin_object(&w);
    jw_key(&w, "kind"); jw_string(&w, kind_of(code));
    jw_key(&w, "message"); jw_string(&w, msg);
    jw_end_object(&w);
    jw_key(&w, "exit_code"); jw_int(&w, code);
    jw_end_object(&w);
    emit_json(&w);
    _exit(code);
}

/* ORT status -> message (and release). Returns NULL for success. */
static const char *status_message(OrtStatus *st, char *buf, size_t len) {
    if (!st) return NULL;
    snprintf(buf, len, "%s", g_ort->GetErrorMessage(st));
    g_ort->ReleaseStatus(st);
    /* ORT messages can span lines; the report's message is one line. */
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return buf;
}

#define ORT_CHECK(expr, code, what)                                                      \
    do {                                                                                 \
        char ort_msg_[1536];                                                             \
        const char *m_ = status_message((expr), ort_msg_, sizeof ort_msg_);              \
        if (m_) fail((code), "%s: %s", (what), m_);                                      \
    } while (0)

static void ignore_status(OrtStatus *st) {
    if (st) g_ort->ReleaseStatus(st);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A number from /proc/self/status ("VmHWM:" in kB, "Threads:"), or -1 when /proc does not
 * tell. */
static long long proc_status(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t n = strlen(key);
    long long v = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, n) == 0) {
            v = strtoll(line + n, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* Peak resident set size of the whole process, in kB. */
static long long peak_rss_kb(void) { return proc_status("VmHWM:"); }

/* Threads of the process. The runner starts none of its own, so those that appear while the
 * session is created are its intra-op pool's (ORT's own, or XNNPACK's when it has the threads). */
static long long process_threads(void) { return proc_status("Threads:"); }

/* ---------------------------------------------------------------- arguments */

typedef struct {
    const char *model;
    const char *inputs;
    const char *output_dir;
    const char *profile;
    const char *ep;
    const char *optimization;
    long warmup;
    long iterations;
    double min_seconds; /* > 0 when --min-seconds was given */
    long threads;
    int have_iterations;
    int nnapi_fp16;
    int nnapi_cpu_disabled;
} options;

static const char usage[] =
    "usage: edgepack-runner --model MODEL.onnx --inputs DIR [options]\n"
    "\n"
    "Runs MODEL (.onnx with its external data beside it, or .ort) with ONNX Runtime on the\n"
    "input_<i>.pb TensorProto files of DIR, times the Run call, and prints one JSON document\n"
    "(schema " SCHEMA ") on stdout. Human messages go to stderr.\n"
    "\n"
    "  --model PATH            the model file\n"
    "  --inputs DIR            a test_data_set directory holding input_0.pb, input_1.pb, ...\n"
    "  --output-dir DIR        write output_<i>.pb there (created if missing)\n"
    "  --warmup N              untimed runs after the first inference (default 1)\n"
    "  --iterations N          timed runs (default 10)\n"
    "  --min-seconds S         instead of --iterations: run until S seconds have passed\n"
    "  --threads N             intra-op threads, 0 = ONNX Runtime's default (default 1)\n"
    "  --ep cpu|xnnpack|nnapi  execution provider; falls back to cpu, and says why, when the\n"
    "                          library lacks it (default cpu)\n"
    "  --nnapi-fp16            NNAPI: allow fp16 relaxation\n"
    "  --nnapi-cpu-disabled    NNAPI: do not use NNAPI's own CPU implementation\n"
    "  --optimization disable|basic|extended|all   graph optimization level (default all)\n"
    "  --profile PREFIX        write ONNX Runtime's profiling JSON (PREFIX_<date>.json)\n"
    "  --version               print versions as JSON and exit\n"
    "  --help                  print this help and exit\n"
    "\n"
    "Exit codes: 0 ok, 2 bad arguments, 3 model load, 4 inputs do not fit the model,\n"
    "5 run failure, 6 output write failure.\n";

static long parse_long(const char *opt, const char *s, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        fail(EXIT_BAD_ARGUMENTS, "%s takes an integer from %ld to %ld, not '%s'", opt, lo, hi, s);
    return v;
}

static double parse_seconds(const char *opt, const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v <= 0 || v > 1e6)
        fail(EXIT_BAD_ARGUMENTS, "%s takes a number of seconds above 0, not '%s'", opt, s);
    return v;
}

static int one_of(const char *s, const char *const *choices) {
    for (int i = 0; choices[i]; i++)
        if (strcmp(s, choices[i]) == 0) return 1;
    return 0;
}

static void print_version(void);

static void parse_args(int argc, char **argv, options *o) {
    static const char *const eps[] = {"cpu", "xnnpack", "nnapi", NULL};
    static const char *const opts[] = {"disable", "basic", "extended", "all", NULL};
    memset(o, 0, sizeof *o);
    o->ep = "cpu";
    o->optimization = "all";
    o->warmup = 1;
    o->iterations = 10;
    o->threads = 1;
    int have_min_seconds = 0;

    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        const char *val = NULL;
        char name[64];
        /* --opt=value and --opt value */
        const char *eq = strchr(arg, '=');
        if (strncmp(arg, "--", 2) == 0 && eq && (size_t)(eq - arg) < sizeof name) {
            memcpy(name, arg, (size_t)(eq - arg));
            name[eq - arg] = '\0';
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", arg);
        }
#define FLAG(s) (strcmp(name, (s)) == 0)
#define VALUE()                                                                          \
    (val ? val                                                                           \
         : (i + 1 < argc ? argv[++i]                                                     \
                         : (fail(EXIT_BAD_ARGUMENTS, "%s needs a value", name), "")))
        if (FLAG("--help") || FLAG("-h")) {
            write_all(g_json_fd, usage, sizeof usage - 1);
            _exit(0);
        } else if (FLAG("--version")) {
            print_version();
            _exit(0);
        } else if (FLAG("--model")) {
            o->model = VALUE();
        } else if (FLAG("--inputs")) {
            o->inputs = VALUE();
        } else if (FLAG("--output-dir")) {
            o->output_dir = VALUE();
        } else if (FLAG("--profile")) {
            o->profile = VALUE();
        } else if (FLAG("--warmup")) {
            o->warmup = parse_long(name, VALUE(), 0, MAX_ITERATIONS);
        } else if (FLAG("--iterations")) {
            o->iterations = parse_long(name, VALUE(), 1, MAX_ITERATIONS);
            o->have_iterations = 1;
        } else if (FLAG("--min-seconds")) {
            o->min_seconds = parse_seconds(name, VALUE());
            have_min_seconds = 1;
        } else if (FLAG("--threads")) {
            o->threads = parse_long(name, VALUE(), 0, 4096);
        } else if (FLAG("--ep")) {
            o->ep = VALUE();
            if (!one_of(o->ep, eps))
                fail(EXIT_BAD_ARGUMENTS, "--ep takes cpu, xnnpack or nnapi, not '%s'", o->ep);
        } else if (FLAG("--optimization")) {
            o->optimization = VALUE();
            if (!one_of(o->optimization, opts))
                fail(EXIT_BAD_ARGUMENTS,
                     "--optimization takes disable, basic, extended or all, not '%s'",
                     o->optimization);
        } else if (FLAG("--nnapi-fp16") && !val) {
            o->nnapi_fp16 = 1;
        } else if (FLAG("--nnapi-cpu-disabled") && !val) {
            o->nnapi_cpu_disabled = 1;
        } else {
            fail(EXIT_BAD_ARGUMENTS, "unknown argument '%s' (see --help)", arg);
        }
#undef FLAG
#undef VALUE
    }
    if (o->have_iterations && have_min_seconds)
        fail(EXIT_BAD_ARGUMENTS, "give --iterations or --min-seconds, not both");
    if (!o->model) fail(EXIT_BAD_ARGUMENTS, "--model is required (see --help)");
    if (!o->inputs) fail(EXIT_BAD_ARGUMENTS, "--inputs is required (see --help)");
    if ((o->nnapi_fp16 || o->nnapi_cpu_disabled) && strcmp(o->ep, "nnapi") != 0)
        fail(EXIT_BAD_ARGUMENTS, "--nnapi-fp16 and --nnapi-cpu-disabled apply only with --ep nnapi");

    struct stat st;
    if (stat(o->model, &st) != 0)
        fail(EXIT_BAD_ARGUMENTS, "--model %s: %s", o->model, strerror(errno));
    if (!S_ISREG(st.st_mode)) fail(EXIT_BAD_ARGUMENTS, "--model %s: not a regular file", o->model);
    if (stat(o->inputs, &st) != 0)
        fail(EXIT_BAD_ARGUMENTS, "--inputs %s: %s", o->inputs, strerror(errno));
    if (!S_ISDIR(st.st_mode)) fail(EXIT_BAD_ARGUMENTS, "--inputs %s: not a directory", o->inputs);
}

/* ------------------------------------------------------------------ ORT setup */

static const char *ort_version(void) { return OrtGetApiBase()->GetVersionString(); }

static void init_api(void) {
    g_ort = OrtGetApiBase()->GetApi(ORT_API_VERSION);
    if (!g_ort)
        fail(EXIT_MODEL_LOAD,
             "the onnxruntime library (version %s) does not serve C API version %d, which this "
             "runner was built for (headers of onnxruntime 1.%d): use a library of 1.%d or newer",
             ort_version(), ORT_API_VERSION, ORT_API_VERSION, ORT_API_VERSION);
}

typedef struct {
    char **names;
    int count;
} provider_list;

static provider_list available_providers(void) {
    provider_list p = {NULL, 0};
    OrtStatus *st = g_ort->GetAvailableProviders(&p.names, &p.count);
    if (st) {
        g_ort->ReleaseStatus(st);
        p.names = NULL;
        p.count = 0;
    }
    return p;
}

static int has_provider(const provider_list *p, const char *name) {
    for (int i = 0; i < p->count; i++)
        if (strcmp(p->names[i], name) == 0) return 1;
    return 0;
}

static void json_providers(jsonw *w, const provider_list *p) {
    jw_begin_array(w);
    for (int i = 0; i < p->count; i++) jw_string(w, p->names[i]);
    jw_end_array(w);
}

static void print_version(void) {
    jsonw w;
    jw_init(&w);
    init_api();
    provider_list p = available_providers();
    jw_begin_object(&w);
    jw_key(&w, "schema"); jw_string(&w, SCHEMA);
    jw_key(&w, "status"); jw_string(&w, "version");
    jw_key(&w, "engine"); jw_string(&w, "native");
    jw_key(&w, "runner_version"); jw_string(&w, EDGEPACK_RUNNER_VERSION);
    jw_key(&w, "target"); jw_string(&w, EDGEPACK_TARGET);
    jw_key(&w, "onnxruntime_version"); jw_string(&w, ort_version());
    jw_key(&w, "ort_api_version"); jw_int(&w, ORT_API_VERSION);
    jw_key(&w, "available_providers"); json_providers(&w, &p);
    jw_end_object(&w);
    emit_json(&w);
}

/* ------------------------------------------------------------------ inputs */

typedef struct {
    char path[PATH_MAX];
    char file[64];
    long index;
    tp_tensor t;
} input_file;

static int cmp_index(const void *a, const void *b) {
    long x = ((const input_file *)a)->index, y = ((const input_file *)b)->index;
    return (x > y) - (x < y);
}

/* "input_<digits>.pb" -> index, else -1. */
static long input_index(const char *name) {
    if (strncmp(name, "input_", 6) != 0) return -1;
    const char *p = name + 6;
    long v = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9') {
        if (digits++ >= 6) return -1;
        v = v * 10 + (*p++ - '0');
    }
    if (!digits || strcmp(p, ".pb") != 0) return -1;
    return v;
}

static uint8_t *read_file(const char *path, size_t *len) {
    /* O_NONBLOCK: a FIFO named input_0.pb must be refused below, not block the open. */
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) fail(EXIT_INPUT_MISMATCH, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        fail(EXIT_INPUT_MISMATCH, "%s: not a regular file", path);
    if ((unsigned long long)st.st_size > (unsigned long long)(SIZE_MAX / 2))
        fail(EXIT_INPUT_MISMATCH, "%s: too large for this machine", path);
    size_t size = (size_t)st.st_size;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) fail(EXIT_INPUT_MISMATCH, "%s: out of memory reading %zu bytes", path, size);
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) fail(EXIT_INPUT_MISMATCH, "%s: read failed (%s)", path,
                         n < 0 ? strerror(errno) : "file shrank while reading");
        got += (size_t)n;
    }
    close(fd);
    *len = size;
    return buf;
}

static input_file *load_inputs(const char *dir, size_t *count) {
    DIR *d = opendir(dir);
    if (!d) fail(EXIT_BAD_ARGUMENTS, "--inputs %s: %s", dir, strerror(errno));
    input_file *files = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long idx = input_index(e->d_name);
        if (idx < 0) continue;
        if (n == MAX_INPUT_FILES) fail(EXIT_INPUT_MISMATCH, "%s holds too many input files", dir);
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            input_file *grown = realloc(files, cap * sizeof *files);
            if (!grown) fail(EXIT_INPUT_MISMATCH, "out of memory listing %s", dir);
            files = grown;
        }
        memset(&files[n], 0, sizeof files[n]);
        files[n].index = idx;
        /* input_index() admits at most "input_999999.pb". */
        snprintf(files[n].file, sizeof files[n].file, "%.63s", e->d_name);
        if ((size_t)snprintf(files[n].path, sizeof files[n].path, "%s/%s", dir, e->d_name) >=
            sizeof files[n].path)
            fail(EXIT_BAD_ARGUMENTS, "--inputs %s: path too long", dir);
        n++;
    }
    closedir(d);
    /* No files is a model without inputs (a constant generator); match_inputs refuses it for a
     * model that has inputs. */
    if (n) qsort(files, n, sizeof *files, cmp_index);
    for (size_t i = 0; i < n; i++) {
        if (files[i].index != (long)i)
            fail(EXIT_INPUT_MISMATCH, "%s: input_%zu.pb is missing (files must be numbered from 0 "
                 "without gaps)", dir, i);
        size_t len;
        uint8_t *buf = read_file(files[i].path, &len);
        char err[512];
        if (tp_parse(buf, len, &files[i].t, err, sizeof err) != 0)
            fail(EXIT_INPUT_MISMATCH, "%s is not a valid TensorProto: %s", files[i].path, err);
        free(buf);
    }
    *count = n;
    return files;
}

/* ------------------------------------------------------------ model metadata */

typedef struct {
    char *name;
    int is_tensor;
    const char *kind; /* for non-tensors: "sequence", "map", ... */
    int32_t elem_type;
    size_t ndims;
    int64_t *dims;
    char **symbolic; /* per dim: symbolic name or "" */
} io_info;

static const char *onnx_type_kind(enum ONNXType t) {
    switch (t) {
    case ONNX_TYPE_TENSOR: return "tensor";
    case ONNX_TYPE_SEQUENCE: return "sequence";
    case ONNX_TYPE_MAP: return "map";
    case ONNX_TYPE_OPAQUE: return "opaque";
    case ONNX_TYPE_SPARSETENSOR: return "sparse_tensor";
    case ONNX_TYPE_OPTIONAL: return "optional";
    default: return "unknown";
    }
}

/* edgepack's name for an element type (tensorproto.c's table); ONNX's lower-case name for the
 * few the runner does not carry. */
static const char *elem_name(int32_t t) {
    const char *n = tp_dtype_name(t);
    if (n) return n;
    switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX64: return "complex64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX128: return "complex128";
    default: return "unsupported";
    }
}

static void describe(OrtTypeInfo *ti, io_info *io) {
    enum ONNXType type;
    ORT_CHECK(g_ort->GetOnnxTypeFromTypeInfo(ti, &type), EXIT_MODEL_LOAD, "reading model I/O");
    io->is_tensor = type == ONNX_TYPE_TENSOR;
    io->kind = onnx_type_kind(type);
    if (!io->is_tensor) return;
    const OrtTensorTypeAndShapeInfo *tsi;
    ORT_CHECK(g_ort->CastTypeInfoToTensorInfo(ti, &tsi), EXIT_MODEL_LOAD, "reading model I/O");
    enum ONNXTensorElementDataType et;
    ORT_CHECK(g_ort->GetTensorElementType(tsi, &et), EXIT_MODEL_LOAD, "reading model I/O");
    io->elem_type = tp_from_ort((int32_t)et);
    ORT_CHECK(g_ort->GetDimensionsCount(tsi, &io->ndims), EXIT_MODEL_LOAD, "reading model I/O");
    io->dims = calloc(io->ndims ? io->ndims : 1, sizeof *io->dims);
    io->symbolic = calloc(io->ndims ? io->ndims : 1, sizeof *io->symbolic);
    if (!io->dims || !io->symbolic) fail(EXIT_MODEL_LOAD, "out of memory");
    ORT_CHECK(g_ort->GetDimensions(tsi, io->dims, io->ndims), EXIT_MODEL_LOAD, "reading model I/O");
    ORT_CHECK(g_ort->GetSymbolicDimensions(tsi, (const char **)io->symbolic, io->ndims),
              EXIT_MODEL_LOAD, "reading model I/O");
    /* The names belong to the type info, which the caller releases: keep copies. */
    for (size_t d = 0; d < io->ndims; d++) {
        io->symbolic[d] = strdup(io->symbolic[d] ? io->symbolic[d] : "");
        if (!io->symbolic[d]) fail(EXIT_MODEL_LOAD, "out of memory");
    }
}

static io_info *model_io(OrtSession *s, OrtAllocator *alloc, int outputs, size_t *count) {
    ORT_CHECK(outputs ? g_ort->SessionGetOutputCount(s, count)
                      : g_ort->SessionGetInputCount(s, count),
              EXIT_MODEL_LOAD, "reading model I/O");
    io_info *io = calloc(*count ? *count : 1, sizeof *io);
    if (!io) fail(EXIT_MODEL_LOAD, "out of memory");
    for (size_t i = 0; i < *count; i++) {
        OrtTypeInfo *ti;
        ORT_CHECK(outputs ? g_ort->SessionGetOutputName(s, i, alloc, &io[i].name)
                          : g_ort->SessionGetInputName(s, i, alloc, &io[i].name),
                  EXIT_MODEL_LOAD, "reading model I/O");
        ORT_CHECK(outputs ? g_ort->SessionGetOutputTypeInfo(s, i, &ti)
                          : g_ort->SessionGetInputTypeInfo(s, i, &ti),
                  EXIT_MODEL_LOAD, "reading model I/O");
        describe(ti, &io[i]);
        g_ort->ReleaseTypeInfo(ti);
    }
    return io;
}

static void free_io(io_info *io, size_t n, OrtAllocator *alloc) {
    for (size_t i = 0; i < n; i++) {
        ignore_status(g_ort->AllocatorFree(alloc, io[i].name));
        for (size_t d = 0; io[i].symbolic && d < io[i].ndims; d++) free(io[i].symbolic[d]);
        free(io[i].symbolic);
        free(io[i].dims);
    }
    free(io);
}

static void json_declared_shape(jsonw *w, const io_info *io) {
    jw_begin_array(w);
    for (size_t d = 0; io->is_tensor && d < io->ndims; d++) {
        if (io->dims[d] >= 0) jw_int(w, io->dims[d]);
        else if (io->symbolic[d] && io->symbolic[d][0]) jw_string(w, io->symbolic[d]);
        else jw_null(w);
    }
    jw_end_array(w);
}

static const char *join_names(const io_info *io, size_t n, char *buf, size_t len) {
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s'%s'", i ? ", " : "", io[i].name);
    return buf;
}

/* Pairs input files with model inputs: by the TensorProto's name, by position when it has none.
 * Returns, per model input, the index of its file. */
static size_t *match_inputs(const io_info *in, size_t n_in, input_file *files, size_t n_files) {
    char names[1024];
    if (n_files != n_in)
        fail(EXIT_INPUT_MISMATCH, "the model has %zu input(s) (%s) but the inputs directory holds "
             "%zu input_<i>.pb file(s)", n_in, join_names(in, n_in, names, sizeof names), n_files);
    size_t *file_of = malloc((n_in ? n_in : 1) * sizeof *file_of);
    if (!file_of) fail(EXIT_INPUT_MISMATCH, "out of memory");
    for (size_t i = 0; i < n_in; i++) file_of[i] = SIZE_MAX;
    for (size_t f = 0; f < n_files; f++) {
        if (!files[f].t.name[0]) continue;
        size_t i = 0;
        while (i < n_in && strcmp(in[i].name, files[f].t.name) != 0) i++;
        if (i == n_in)
            fail(EXIT_INPUT_MISMATCH, "%s is named '%s' but the model has no input of that name "
                 "(it has %s)", files[f].file, files[f].t.name,
                 join_names(in, n_in, names, sizeof names));
        if (file_of[i] != SIZE_MAX)
            fail(EXIT_INPUT_MISMATCH, "%s and %s are both named '%s'", files[file_of[i]].file,
                 files[f].file, in[i].name);
        file_of[i] = f;
    }
    for (size_t f = 0; f < n_files; f++) {
        if (files[f].t.name[0]) continue;
        if (file_of[f] != SIZE_MAX)
            fail(EXIT_INPUT_MISMATCH, "%s carries no name, and model input %zu ('%s') that its "
                 "position stands for is already fed by %s", files[f].file, f, in[f].name,
                 files[file_of[f]].file);
        file_of[f] = f;
    }
    for (size_t i = 0; i < n_in; i++) {
        const io_info *m = &in[i];
        const tp_tensor *t = &files[file_of[i]].t;
        const char *file = files[file_of[i]].file;
        if (!m->is_tensor)
            fail(EXIT_INPUT_MISMATCH, "model input '%s' is a %s; the runner feeds tensors only",
                 m->name, m->kind);
        if (m->elem_type != t->data_type)
            fail(EXIT_INPUT_MISMATCH, "%s holds %s but model input '%s' expects %s", file,
                 elem_name(t->data_type), m->name, elem_name(m->elem_type));
        if (m->ndims != t->ndims)
            fail(EXIT_INPUT_MISMATCH, "%s has %zu dimension(s) but model input '%s' expects %zu",
                 file, t->ndims, m->name, m->ndims);
        for (size_t d = 0; d < m->ndims; d++)
            if (m->dims[d] >= 0 && m->dims[d] != t->dims[d])
                fail(EXIT_INPUT_MISMATCH, "%s has size %lld in dimension %zu but model input '%s' "
                     "expects %lld", file, (long long)t->dims[d], d, m->name,
                     (long long)m->dims[d]);
    }
    return file_of;
}

/* ORT's string tensors own std::string elements, so strings are copied in rather than wrapped:
 * each element's buffer is sized first, then filled, since FillStringTensor would stop every
 * string at its first NUL byte. */
static OrtValue *string_tensor(OrtAllocator *alloc, const tp_tensor *t, const char *file) {
    static const int64_t scalar_shape[1] = {0};
    OrtValue *v;
    ORT_CHECK(g_ort->CreateTensorAsOrtValue(alloc, t->ndims ? t->dims : scalar_shape, t->ndims,
                                            ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING, &v),
              EXIT_INPUT_MISMATCH, file);
    for (size_t k = 0; k < t->count; k++) {
        size_t n = t->offsets[k + 1] - t->offsets[k];
        char *dst;
        ORT_CHECK(g_ort->GetResizedStringTensorElementBuffer(v, k, n, &dst), EXIT_INPUT_MISMATCH,
                  file);
        if (n) memcpy(dst, (const char *)t->data + t->offsets[k], n);
    }
    return v;
}

/* ----------------------------------------------------------------- outputs */

typedef struct {
    int32_t elem_type;
    int is_tensor;
    const char *kind;
    size_t ndims;
    int64_t *dims;
    char file[64]; /* "" when not written */
} out_info;

static void write_atomic(const char *dir, const char *file, const uint8_t *buf, size_t len) {
    char tmp[PATH_MAX], final[PATH_MAX];
    if ((size_t)snprintf(final, sizeof final, "%s/%s", dir, file) >= sizeof final ||
        (size_t)snprintf(tmp, sizeof tmp, "%s/.%s.tmp-%ld", dir, file, (long)getpid()) >=
            sizeof tmp)
        fail(EXIT_OUTPUT_WRITE, "--output-dir %s: path too long", dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) fail(EXIT_OUTPUT_WRITE, "cannot create %s: %s", tmp, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, buf + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int err = errno;
            close(fd);
            unlink(tmp);
            fail(EXIT_OUTPUT_WRITE, "writing %s: %s", tmp, strerror(err));
        }
        done += (size_t)n;
    }
    if (close(fd) != 0) {
        int err = errno;
        unlink(tmp);
        fail(EXIT_OUTPUT_WRITE, "writing %s: %s", tmp, strerror(err));
    }
    if (rename(tmp, final) != 0) {
        int err = errno;
        unlink(tmp);
        fail(EXIT_OUTPUT_WRITE, "renaming %s to %s: %s", tmp, final, strerror(err));
    }
}

static void ensure_dir(const char *dir) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) fail(EXIT_OUTPUT_WRITE, "--output-dir %s: not a directory", dir);
        return;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        fail(EXIT_OUTPUT_WRITE, "--output-dir %s: %s", dir, strerror(errno));
}

/* A string output as TensorProto string_data. The strings come out back to back with their
 * start offsets, never as C strings: an element may hold NUL bytes. */
static void write_string_output(OrtValue *val, const char *name, out_info *o, size_t count,
                                const char *dir, size_t index) {
    size_t total;
    ORT_CHECK(g_ort->GetStringTensorDataLength(val, &total), EXIT_RUN_FAILURE, "reading outputs");
    if (count >= SIZE_MAX / sizeof(size_t))
        fail(EXIT_OUTPUT_WRITE, "output '%s' is too large", name);
    uint8_t *chars = malloc(total ? total : 1);
    size_t *offsets = malloc((count + 1) * sizeof *offsets);
    if (!chars || !offsets) fail(EXIT_OUTPUT_WRITE, "out of memory reading output '%s'", name);
    if (count)
        ORT_CHECK(g_ort->GetStringTensorContent(val, chars, total, offsets, count),
                  EXIT_RUN_FAILURE, "reading outputs");
    offsets[count] = total;
    uint8_t *buf;
    size_t len;
    if (tp_serialize_strings(name, o->dims, o->ndims, chars, offsets, count, &buf, &len) != 0)
        fail(EXIT_OUTPUT_WRITE, "out of memory serializing output '%s'", name);
    snprintf(o->file, sizeof o->file, "output_%zu.pb", index);
    write_atomic(dir, o->file, buf, len);
    free(buf);
    free(chars);
    free(offsets);
}

/* Records what each output is and, with an output directory, writes output_<i>.pb. */
static void collect_outputs(OrtValue **vals, const io_info *meta, size_t n, const char *dir,
                            out_info *info) {
    for (size_t i = 0; i < n; i++) {
        out_info *o = &info[i];
        memset(o, 0, sizeof *o);
        o->kind = "unknown";
        if (!vals[i]) {
            o->kind = "none"; /* an optional output the model did not produce */
            continue;
        }
        enum ONNXType type;
        ORT_CHECK(g_ort->GetValueType(vals[i], &type), EXIT_RUN_FAILURE, "reading outputs");
        o->kind = onnx_type_kind(type);
        o->is_tensor = type == ONNX_TYPE_TENSOR;
        if (!o->is_tensor) {
            fprintf(stderr, "edgepack-runner: output '%s' is a %s; it is reported but not written\n",
                    meta[i].name, o->kind);
            continue;
        }
        OrtTensorTypeAndShapeInfo *tsi;
        ORT_CHECK(g_ort->GetTensorTypeAndShape(vals[i], &tsi), EXIT_RUN_FAILURE, "reading outputs");
        enum ONNXTensorElementDataType et;
        ORT_CHECK(g_ort->GetTensorElementType(tsi, &et), EXIT_RUN_FAILURE, "reading outputs");
        o->elem_type = tp_from_ort((int32_t)et);
        ORT_CHECK(g_ort->GetDimensionsCount(tsi, &o->ndims), EXIT_RUN_FAILURE, "reading outputs");
        o->dims = calloc(o->ndims ? o->ndims : 1, sizeof *o->dims);
        if (!o->dims) fail(EXIT_RUN_FAILURE, "out of memory");
        ORT_CHECK(g_ort->GetDimensions(tsi, o->dims, o->ndims), EXIT_RUN_FAILURE,
                  "reading outputs");
        size_t count;
        ORT_CHECK(g_ort->GetTensorShapeElementCount(tsi, &count), EXIT_RUN_FAILURE,
                  "reading outputs");
        g_ort->ReleaseTensorTypeAndShapeInfo(tsi);
        if (!dir) continue;
        if (o->elem_type == TP_STRING) {
            write_string_output(vals[i], meta[i].name, o, count, dir, i);
            continue;
        }
        size_t nbytes;
        if (!tp_elem_bits(o->elem_type)) {
            fprintf(stderr, "edgepack-runner: output '%s' holds %s; it is reported but not "
                    "written\n", meta[i].name, elem_name(o->elem_type));
            continue;
        }
        if (tp_data_bytes(o->elem_type, count, &nbytes) != 0)
            fail(EXIT_OUTPUT_WRITE, "output '%s' is too large", meta[i].name);
        void *data = NULL;
        if (count) ORT_CHECK(g_ort->GetTensorMutableData(vals[i], &data), EXIT_RUN_FAILURE,
                             "reading outputs");
        uint8_t *buf;
        size_t len;
        if (tp_serialize(meta[i].name, o->elem_type, o->dims, o->ndims, data, nbytes, &buf,
                         &len) != 0)
            fail(EXIT_OUTPUT_WRITE, "out of memory serializing output '%s'", meta[i].name);
        snprintf(o->file, sizeof o->file, "output_%zu.pb", i);
        write_atomic(dir, o->file, buf, len);
        free(buf);
    }
}

static void release_values(OrtValue **vals, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (vals[i]) g_ort->ReleaseValue(vals[i]);
        vals[i] = NULL;
    }
}

/* -------------------------------------------------------------------- main */

typedef struct {
    double *v;
    size_t n, cap;
} dvec;

static void dvec_push(dvec *d, double x) {
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        double *g = realloc(d->v, cap * sizeof *g);
        if (!g) fail(EXIT_RUN_FAILURE, "out of memory recording latencies");
        d->v = g;
        d->cap = cap;
    }
    d->v[d->n++] = x;
}

int main(int argc, char **argv) {
    /* Keep the real stdout for the JSON document and send fd 1 to stderr. */
    g_json_fd = dup(STDOUT_FILENO);
    if (g_json_fd < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
        g_json_fd = STDOUT_FILENO;
    }

    options o;
    parse_args(argc, argv, &o);
    init_api();

    size_t n_files;
    input_file *files = load_inputs(o.inputs, &n_files);

    OrtEnv *env;
    ORT_CHECK(g_ort->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "edgepack-runner", &env),
              EXIT_MODEL_LOAD, "creating the onnxruntime environment");
    OrtSessionOptions *so;
    ORT_CHECK(g_ort->CreateSessionOptions(&so), EXIT_MODEL_LOAD, "creating session options");

    GraphOptimizationLevel level = ORT_ENABLE_ALL;
    if (strcmp(o.optimization, "disable") == 0) level = ORT_DISABLE_ALL;
    else if (strcmp(o.optimization, "basic") == 0) level = ORT_ENABLE_BASIC;
    else if (strcmp(o.optimization, "extended") == 0) level = ORT_ENABLE_EXTENDED;
    ORT_CHECK(g_ort->SetSessionGraphOptimizationLevel(so, level), EXIT_MODEL_LOAD,
              "setting the optimization level");

    /* Execution provider: ask for it only when the library has it, else run on cpu and say why. */
    provider_list providers = available_providers();
    const char *ep_used = "cpu";
    char fallback[1024] = "";
    int session_threads = (int)o.threads;
    if (strcmp(o.ep, "xnnpack") == 0) {
        if (!has_provider(&providers, "XnnpackExecutionProvider")) {
            snprintf(fallback, sizeof fallback, "this onnxruntime library (%s) was built without "
                     "the XNNPACK execution provider, so the model ran on cpu", ort_version());
        } else {
            /* ORT's advice for XNNPACK: XNNPACK gets the threads and the session's own pool is
             * reduced to one thread without spinning, so the two pools do not fight. */
            char nthreads[32];
            snprintf(nthreads, sizeof nthreads, "%ld", o.threads);
            const char *keys[] = {"intra_op_num_threads"};
            const char *vals[] = {nthreads};
            char msg[768];
            const char *m = status_message(
                g_ort->SessionOptionsAppendExecutionProvider(so, "XNNPACK", keys, vals, 1), msg,
                sizeof msg);
            if (m) {
                snprintf(fallback, sizeof fallback, "XNNPACK could not be enabled (%s), so the "
                         "model ran on cpu", m);
            } else {
                ep_used = "xnnpack";
                session_threads = 1;
                ORT_CHECK(g_ort->AddSessionConfigEntry(so, "session.intra_op.allow_spinning", "0"),
                          EXIT_MODEL_LOAD, "configuring XNNPACK threads");
            }
        }
    } else if (strcmp(o.ep, "nnapi") == 0) {
        if (!has_provider(&providers, "NnapiExecutionProvider")) {
            snprintf(fallback, sizeof fallback, "this onnxruntime library (%s) has no NNAPI "
                     "execution provider (NNAPI exists only in Android builds), so the model ran "
                     "on cpu", ort_version());
        } else {
#ifdef __ANDROID__
            uint32_t flags = 0;
            if (o.nnapi_fp16) flags |= NNAPI_FLAG_USE_FP16;
            if (o.nnapi_cpu_disabled) flags |= NNAPI_FLAG_CPU_DISABLED;
            char msg[768];
            const char *m = status_message(OrtSessionOptionsAppendExecutionProvider_Nnapi(so, flags),
                                           msg, sizeof msg);
            if (m)
                snprintf(fallback, sizeof fallback, "NNAPI could not be enabled (%s), so the "
                         "model ran on cpu", m);
            else
                ep_used = "nnapi";
#else
            snprintf(fallback, sizeof fallback, "this runner was not built for Android, where "
                     "NNAPI lives, so the model ran on cpu");
#endif
        }
    }
    if (fallback[0]) fprintf(stderr, "edgepack-runner: %s\n", fallback);
    if (session_threads > 0)
        ORT_CHECK(g_ort->SetIntraOpNumThreads(so, session_threads), EXIT_MODEL_LOAD,
                  "setting the thread count");
    if (o.profile) ORT_CHECK(g_ort->EnableProfiling(so, o.profile), EXIT_MODEL_LOAD,
                             "enabling profiling");

    OrtSession *session;
    long long threads_before = process_threads();
    double t0 = now_ms();
    ORT_CHECK(g_ort->CreateSession(env, o.model, so, &session), EXIT_MODEL_LOAD, o.model);
    double session_create_ms = now_ms() - t0;
    long long rss_after_load = peak_rss_kb();
    long long threads_after_load = process_threads();

    OrtAllocator *alloc;
    ORT_CHECK(g_ort->GetAllocatorWithDefaultOptions(&alloc), EXIT_MODEL_LOAD, "allocator");
    size_t n_in, n_out;
    io_info *in = model_io(session, alloc, 0, &n_in);
    io_info *outm = model_io(session, alloc, 1, &n_out);
    size_t *file_of = match_inputs(in, n_in, files, n_files);

    /* Input tensors are created once, over the parsed buffers, before anything is timed. */
    OrtMemoryInfo *mem;
    ORT_CHECK(g_ort->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &mem),
              EXIT_INPUT_MISMATCH, "memory info");
    OrtValue **in_vals = calloc(n_in ? n_in : 1, sizeof *in_vals);
    const char **in_names = calloc(n_in ? n_in : 1, sizeof *in_names);
    const char **out_names = calloc(n_out ? n_out : 1, sizeof *out_names);
    OrtValue **out_vals = calloc(n_out ? n_out : 1, sizeof *out_vals);
    out_info *oinfo = calloc(n_out ? n_out : 1, sizeof *oinfo);
    if (!in_vals || !in_names || !out_names || !out_vals || !oinfo)
        fail(EXIT_RUN_FAILURE, "out of memory");
    for (size_t i = 0; i < n_in; i++) {
        tp_tensor *t = &files[file_of[i]].t;
        static const int64_t scalar_shape[1] = {0}; /* a valid pointer for rank 0 */
        in_names[i] = in[i].name;
        if (t->data_type == TP_STRING) {
            in_vals[i] = string_tensor(alloc, t, files[file_of[i]].file);
            continue;
        }
        ORT_CHECK(g_ort->CreateTensorWithDataAsOrtValue(
                      mem, t->data, t->nbytes, t->ndims ? t->dims : scalar_shape, t->ndims,
                      (ONNXTensorElementDataType)tp_to_ort(t->data_type), &in_vals[i]),
                  EXIT_INPUT_MISMATCH, files[file_of[i]].file);
    }
    for (size_t i = 0; i < n_out; i++) out_names[i] = outm[i].name;

#define RUN_ONCE()                                                                       \
    g_ort->Run(session, NULL, in_names, (const OrtValue *const *)in_vals, n_in, out_names, \
               n_out, out_vals)

    t0 = now_ms();
    OrtStatus *st = RUN_ONCE();
    double first_inference_ms = now_ms() - t0;
    ORT_CHECK(st, EXIT_RUN_FAILURE, "first inference");
    /* The threads the session runs the model on: those that appeared since just before it was
     * created (its intra-op pool, ORT's or XNNPACK's, created eagerly; a pool made lazily shows
     * up by the end of the first run), plus this thread, which takes part in every Run. With
     * --threads N that is N; with 0 it is what ORT chose for this device. */
    long long threads_now = process_threads();
    if (threads_after_load > threads_now) threads_now = threads_after_load;
    long long threads_used = threads_before > 0 && threads_now >= threads_before
                                 ? threads_now - threads_before + 1
                                 : -1;
    if (o.output_dir) ensure_dir(o.output_dir);
    collect_outputs(out_vals, outm, n_out, o.output_dir, oinfo);
    release_values(out_vals, n_out);

    for (long i = 0; i < o.warmup; i++) {
        ORT_CHECK(RUN_ONCE(), EXIT_RUN_FAILURE, "warm-up run");
        release_values(out_vals, n_out);
    }

    dvec lat = {NULL, 0, 0};
    double loop_start = now_ms();
    for (long i = 0;; i++) {
        if (o.min_seconds > 0) {
            if (i > 0 && (now_ms() - loop_start >= o.min_seconds * 1e3 || i >= MAX_ITERATIONS))
                break;
        } else if (i >= o.iterations) {
            break;
        }
        t0 = now_ms();
        st = RUN_ONCE();
        double dt = now_ms() - t0;
        ORT_CHECK(st, EXIT_RUN_FAILURE, "timed run");
        /* Outputs are released outside the timed region. */
        release_values(out_vals, n_out);
        dvec_push(&lat, dt);
    }
#undef RUN_ONCE

    char *profile_file = NULL;
    if (o.profile)
        ORT_CHECK(g_ort->SessionEndProfiling(session, alloc, &profile_file), EXIT_RUN_FAILURE,
                  "ending profiling");
    long long rss_end = peak_rss_kb();

    jsonw w;
    jw_init(&w);
    jw_begin_object(&w);
    jw_key(&w, "schema"); jw_string(&w, SCHEMA);
    jw_key(&w, "status"); jw_string(&w, "ok");
    jw_key(&w, "engine"); jw_string(&w, "native");
    jw_key(&w, "runner_version"); jw_string(&w, EDGEPACK_RUNNER_VERSION);
    jw_key(&w, "target"); jw_string(&w, EDGEPACK_TARGET);
    jw_key(&w, "onnxruntime_version"); jw_string(&w, ort_version());
    jw_key(&w, "ort_api_version"); jw_int(&w, ORT_API_VERSION);
    jw_key(&w, "available_providers"); json_providers(&w, &providers);
    jw_key(&w, "ep_requested"); jw_string(&w, o.ep);
    jw_key(&w, "ep_used"); jw_string(&w, ep_used);
    jw_key(&w, "ep_fallback_reason");
    if (fallback[0]) jw_string(&w, fallback); else jw_null(&w);
    jw_key(&w, "threads"); jw_int(&w, o.threads);
    jw_key(&w, "threads_used");
    if (threads_used > 0) jw_int(&w, threads_used); else jw_null(&w);
    jw_key(&w, "optimization"); jw_string(&w, o.optimization);
    jw_key(&w, "warmup"); jw_int(&w, o.warmup);
    jw_key(&w, "iterations"); jw_int(&w, (long long)lat.n);
    jw_key(&w, "min_seconds");
    if (o.min_seconds > 0) jw_double(&w, o.min_seconds); else jw_null(&w);
    jw_key(&w, "session_create_ms"); jw_double(&w, session_create_ms);
    jw_key(&w, "first_inference_ms"); jw_double(&w, first_inference_ms);
    jw_key(&w, "latencies_ms");
    jw_begin_array(&w);
    for (size_t i = 0; i < lat.n; i++) jw_double(&w, lat.v[i]);
    jw_end_array(&w);
    jw_key(&w, "peak_rss_kb_after_load");
    if (rss_after_load >= 0) jw_int(&w, rss_after_load); else jw_null(&w);
    jw_key(&w, "peak_rss_kb_end");
    if (rss_end >= 0) jw_int(&w, rss_end); else jw_null(&w);
    /* VmHWM covers the whole runner process: the session, the inputs and outputs, the library. */
    jw_key(&w, "peak_rss_scope"); jw_string(&w, "process");
    jw_key(&w, "inputs");
    jw_begin_array(&w);
    for (size_t i = 0; i < n_in; i++) {
        jw_begin_object(&w);
        jw_key(&w, "name"); jw_string(&w, in[i].name);
        jw_key(&w, "dtype"); jw_string(&w, in[i].is_tensor ? elem_name(in[i].elem_type)
                                                           : in[i].kind);
        jw_key(&w, "shape"); json_declared_shape(&w, &in[i]);
        jw_key(&w, "file"); jw_string(&w, files[file_of[i]].file);
        jw_end_object(&w);
    }
    jw_end_array(&w);
    jw_key(&w, "outputs");
    jw_begin_array(&w);
    for (size_t i = 0; i < n_out; i++) {
        jw_begin_object(&w);
        jw_key(&w, "name"); jw_string(&w, outm[i].name);
        jw_key(&w, "dtype"); jw_string(&w, oinfo[i].is_tensor ? elem_name(oinfo[i].elem_type)
                                                              : oinfo[i].kind);
        jw_key(&w, "shape");
        jw_begin_array(&w);
        for (size_t d = 0; d < oinfo[i].ndims; d++) jw_int(&w, oinfo[i].dims[d]);
        jw_end_array(&w);
        jw_key(&w, "file");
        if (oinfo[i].file[0]) jw_string(&w, oinfo[i].file); else jw_null(&w);
        jw_end_object(&w);
    }
    jw_end_array(&w);
    jw_key(&w, "profile_file"); jw_string(&w, profile_file);
    jw_end_object(&w);
    emit_json(&w);
    jw_free(&w);

    /* Orderly teardown, so ORT's threads are joined before the process exits, and everything
     * freed so that a leak checker (ASan) run of the runner reports nothing. */
    for (size_t i = 0; i < n_in; i++) g_ort->ReleaseValue(in_vals[i]);
    if (profile_file) ignore_status(g_ort->AllocatorFree(alloc, profile_file));
    free_io(in, n_in, alloc);
    free_io(outm, n_out, alloc);
    for (size_t i = 0; i < n_out; i++) free(oinfo[i].dims);
    free(oinfo);
    free(in_vals);
    free(out_vals);
    free(in_names);
    free(out_names);
    free(file_of);
    free(lat.v);
    g_ort->ReleaseMemoryInfo(mem);
    g_ort->ReleaseSession(session);
    g_ort->ReleaseSessionOptions(so);
    if (providers.names)
        ignore_status(g_ort->ReleaseAvailableProviders(providers.names, providers.count));
    g_ort->ReleaseEnv(env);
    for (size_t f = 0; f < n_files; f++) tp_free(&files[f].t);
    free(files);
    return 0;
}
