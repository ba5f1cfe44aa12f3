/*
 * The tconv runtime: reads an artifact's plan, loads its parameters and
 * kernels, and runs the plan over one arena. See tconv_runtime.h.
 */
#define _POSIX_C_SOURCE 200809L
#include "tconv_runtime.h"

#include "tconv_backend.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ERROR_SIZE 2048
#define MAX_PLAN_BYTES ((uint64_t)16 << 20)
#define MAX_BYTES ((uint64_t)1 << 48)   /* the largest arena, parameter file or tensor */
#define MAX_TENSORS ((uint64_t)1 << 24) /* the largest tensor id + 1 */
#define MAX_NAME 255
#define MAX_SYMBOL 200
#define MAX_TOKENS (3 + TCONV_MAX_ARGS + 1)
#define SYMBOL_PREFIX "__tvm_ffi_"
#define FINGERPRINT_SYMBOL "tconv_plan_fingerprint"

/* The element types of the plan's `<dtype>` token (plan.DTYPE_BYTES in Python). */
typedef struct {
    const char *token;
    DLDataType dl;
} element_type;

static const element_type element_types[] = {
    {"f32", {kDLFloat, 32, 1}},
    {"u8", {kDLUInt, 8, 1}},
    {"i8", {kDLInt, 8, 1}},
    {"i32", {kDLInt, 32, 1}},
};
#define NUM_ELEMENT_TYPES (sizeof element_types / sizeof element_types[0])
#define DTYPE_LIST "f32, u8, i8, i32"

typedef struct {
    char *name;
    int line;
    int in_params;
    const element_type *type;
    uint64_t offset;
    uint64_t bytes;
    int32_t ndim;
    int64_t shape[TCONV_MAX_NDIM];
    DLTensor dl;
} tensor;

/* A kernel library this process has open through the runtime. The dynamic
 * loader knows a library by the path it was opened with: a second dlopen of
 * that path returns the library already loaded, even if the file was replaced
 * since. The list lets tconv_open refuse that case instead. */
typedef struct loaded_library {
    struct loaded_library *next;
    char *path;
    dev_t device;
    ino_t inode;
    int handles;
} loaded_library;

static loaded_library *loaded_libraries;
static pthread_mutex_t loaded_libraries_lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct {
    char *symbol;
    int line;
    int column; /* of the symbol */
    int32_t num_args;
    size_t *args; /* tensor ids */
    TVMFFIAny *packed;
    tvm_ffi_safe_call kernel;
    uint64_t profiled_ns; /* wall time in this call since profiling was turned on */
} call;

struct tconv_runtime {
    char *directory;
    char *plan_path;
    char *library_name;
    char *params_name;
    uint64_t params_bytes;
    int params_line;
    uint64_t arena_bytes;
    uint64_t fingerprint; /* FNV-1a of the plan's bytes */
    tensor *tensors;
    size_t num_tensors, tensors_capacity;
    size_t *inputs;
    size_t num_inputs, inputs_capacity;
    size_t *outputs;
    size_t num_outputs, outputs_capacity;
    call *calls;
    size_t num_calls, calls_capacity;
    void *library;
    loaded_library *library_entry;
    void *params;
    void *arena;
    tconv_pool *pool;
    int profiling;
    uint64_t profiled_runs;
};

/* ---------------------------------------------------------------- errors */

static _Thread_local char last_error[ERROR_SIZE];

const char *tconv_last_error(void)
{
    return last_error;
}

static int fail(int status, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(last_error, sizeof last_error, format, arguments);
    va_end(arguments);
    return status;
}

static int out_of_memory(const char *what)
{
    return fail(TCONV_ERR_MEMORY, "out of memory for %s", what);
}

/* --------------------------------------------------------------- helpers */

static char *copy_string(const char *text)
{
    size_t size = strlen(text) + 1;
    char *copy = malloc(size);
    if (copy != NULL)
        memcpy(copy, text, size);
    return copy;
}

static char *join_path(const char *directory, const char *name)
{
    size_t length = strlen(directory) + strlen(name) + 2;
    char *path = malloc(length);
    if (path != NULL)
        snprintf(path, length, "%s/%s", directory, name);
    return path;
}

/* Room for one more item in a growing array: the (maybe moved) array, or
 * NULL with the array left as it was. */
static void *reserve(void *items, size_t *capacity, size_t count, size_t item_size)
{
    if (count < *capacity)
        return items;
    size_t wanted = *capacity ? 2 * *capacity : 16;
    void *bigger = realloc(items, wanted * item_size);
    if (bigger != NULL)
        *capacity = wanted;
    return bigger;
}

static void *aligned_buffer(uint64_t bytes)
{
    void *data = NULL;
    if (posix_memalign(&data, TCONV_ALIGNMENT, bytes ? (size_t)bytes : 1) != 0)
        return NULL;
    return data;
}

static void format_shape(const int64_t *shape, int32_t ndim, char *text, size_t size)
{
    size_t length = 0;
    text[0] = '\0';
    for (int32_t i = 0; i < ndim && length < size; i++)
        length += (size_t)snprintf(text + length, size - length, i ? "x%lld" : "%lld",
                                   (long long)shape[i]);
}

/* Open a regular file for reading; its size in *size. */
static int open_regular(const char *path, int *fd, uint64_t *size)
{
    struct stat info;
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return fail(TCONV_ERR_IO, "%s: error: cannot read the file: %s", path, strerror(errno));
    if (fstat(*fd, &info) != 0) {
        int error = errno;
        close(*fd);
        return fail(TCONV_ERR_IO, "%s: error: cannot read the file: %s", path, strerror(error));
    }
    if (!S_ISREG(info.st_mode)) {
        close(*fd);
        return fail(TCONV_ERR_IO, "%s: error: cannot read the file: not a regular file", path);
    }
    *size = (uint64_t)info.st_size;
    return TCONV_OK;
}

static int read_all(int fd, const char *path, void *buffer, uint64_t size)
{
    char *at = buffer;
    while (size > 0) {
        ssize_t count = read(fd, at, size > (1u << 30) ? (1u << 30) : (size_t)size);
        if (count < 0 && errno == EINTR)
            continue;
        if (count <= 0)
            return fail(TCONV_ERR_IO, "%s: error: cannot read the file: %s", path,
                        count < 0 ? strerror(errno) : "the file ended early");
        at += count;
        size -= (uint64_t)count;
    }
    return TCONV_OK;
}

/* ------------------------------------------------------------------ plan */

typedef struct {
    tconv_runtime *runtime;
    const char *path;
    int line;
    const char *line_start;
    char *token[MAX_TOKENS];
    int num_tokens;
    int statements;
    int target_line, library_line, params_line, arena_line, end_line;
} parser;

/* The 1-based byte column of token `index` of the current line (1 if there is none). */
static int token_column(const parser *p, int index)
{
    if (index < 0 || index >= p->num_tokens)
        return 1;
    return (int)(p->token[index] - p->line_start) + 1;
}

static int vplan_error(const parser *p, int column, const char *format, va_list arguments)
{
    int length = snprintf(last_error, sizeof last_error, "%s:%d:%d: error: ", p->path, p->line,
                          column);
    if (length < 0 || (size_t)length >= sizeof last_error)
        return TCONV_ERR_PLAN;
    vsnprintf(last_error + length, sizeof last_error - (size_t)length, format, arguments);
    return TCONV_ERR_PLAN;
}

/* An error at the current line, located at its token `index`. */
static int plan_error_at(const parser *p, int index, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    vplan_error(p, token_column(p, index), format, arguments);
    va_end(arguments);
    return TCONV_ERR_PLAN;
}

/* An error at the current line, located at its first token. */
static int plan_error(const parser *p, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    vplan_error(p, token_column(p, 0), format, arguments);
    va_end(arguments);
    return TCONV_ERR_PLAN;
}

static int expect_fields(const parser *p, int count, const char *usage)
{
    if (p->num_tokens != count)
        return plan_error(p, "expected `%s`, found %d fields instead of %d", usage,
                          p->num_tokens, count);
    return TCONV_OK;
}

/* Token `index` as an unsigned decimal integer no larger than `limit`. */
static int parse_number(const parser *p, int index, const char *what, uint64_t limit,
                        uint64_t *value)
{
    const char *text = p->token[index];
    uint64_t result = 0;
    for (const char *c = text; *c != '\0'; c++) {
        if (*c < '0' || *c > '9')
            return plan_error_at(p, index, "%s: expected an unsigned integer, found `%s`", what,
                                 text);
        unsigned digit = (unsigned)(*c - '0');
        if (digit > limit || result > (limit - digit) / 10)
            return plan_error_at(p, index, "%s %s is larger than %llu", what, text,
                                 (unsigned long long)limit);
        result = result * 10 + digit;
    }
    *value = result;
    return TCONV_OK;
}

/* A tensor id that an earlier `tensor` line declared. */
static int parse_tensor_id(const parser *p, int index, const char *what, size_t *id)
{
    uint64_t value;
    int status = parse_number(p, index, what, MAX_TENSORS, &value);
    if (status != TCONV_OK)
        return status;
    if (value >= p->runtime->num_tensors)
        return plan_error_at(p, index, "%s: unknown tensor id %llu (%zu tensors declared so far)",
                             what, (unsigned long long)value, p->runtime->num_tensors);
    *id = (size_t)value;
    return TCONV_OK;
}

static int check_file_name(const parser *p, const char *name)
{
    if (strlen(name) > MAX_NAME || strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
        strcmp(name, "..") == 0)
        return plan_error_at(p, 1, "`%s` is not a plain file name in the artifact directory",
                             name);
    return TCONV_OK;
}

static int check_once(const parser *p, int *line, const char *keyword)
{
    if (*line != 0)
        return plan_error(p, "a second `%s` line (the first is line %d)", keyword, *line);
    if (p->runtime->num_tensors > 0)
        return plan_error(p, "`%s` must come before the first `tensor` line", keyword);
    *line = p->line;
    return TCONV_OK;
}

static int parse_header(parser *p)
{
    uint64_t version;
    int status = expect_fields(p, 2, "tconv-plan <version>");
    if (status == TCONV_OK)
        status = parse_number(p, 1, "plan version", UINT32_MAX, &version);
    if (status != TCONV_OK)
        return status;
    if (version != TCONV_PLAN_VERSION)
        return plan_error_at(p, 1,
                             "plan version %llu is not supported (this runtime reads version %d)",
                             (unsigned long long)version, TCONV_PLAN_VERSION);
    return TCONV_OK;
}

/* `target cpu`, or `target cuda <arch>`: this runtime runs cpu plans only. */
static int parse_target(parser *p)
{
    int status = check_once(p, &p->target_line, "target");
    if (status != TCONV_OK)
        return status;
    if (p->num_tokens == 2 && strcmp(p->token[1], "cpu") == 0)
        return TCONV_OK;
    if (p->num_tokens == 3 && strcmp(p->token[1], "cuda") == 0)
        return plan_error_at(p, 1, "this artifact is compiled for cuda (%s); the C runtime runs "
                             "cpu artifacts (run cuda ones with tconv.runtime.cuda on a GPU "
                             "machine)",
                             p->token[2]);
    return plan_error_at(p, 1, "expected `target cpu` or `target cuda <arch>`");
}

static int parse_library(parser *p)
{
    tconv_runtime *rt = p->runtime;
    int status = check_once(p, &p->library_line, "library");
    if (status == TCONV_OK)
        status = expect_fields(p, 2, "library <file>");
    if (status == TCONV_OK)
        status = check_file_name(p, p->token[1]);
    if (status != TCONV_OK)
        return status;
    rt->library_name = copy_string(p->token[1]);
    return rt->library_name ? TCONV_OK : out_of_memory("the plan");
}

static int parse_params(parser *p)
{
    tconv_runtime *rt = p->runtime;
    int status = check_once(p, &p->params_line, "params");
    if (status == TCONV_OK)
        status = expect_fields(p, 3, "params <file> <bytes>");
    if (status == TCONV_OK)
        status = check_file_name(p, p->token[1]);
    if (status == TCONV_OK)
        status = parse_number(p, 2, "parameter bytes", MAX_BYTES, &rt->params_bytes);
    if (status != TCONV_OK)
        return status;
    rt->params_line = p->line;
    rt->params_name = copy_string(p->token[1]);
    return rt->params_name ? TCONV_OK : out_of_memory("the plan");
}

static int parse_arena(parser *p)
{
    int status = check_once(p, &p->arena_line, "arena");
    if (status == TCONV_OK)
        status = expect_fields(p, 2, "arena <bytes>");
    if (status == TCONV_OK)
        status = parse_number(p, 1, "arena bytes", MAX_BYTES, &p->runtime->arena_bytes);
    return status;
}

/* tensor <id> <name> <dtype> arena|param <offset> <ndim> <dim>... */
static int parse_tensor(parser *p)
{
    static const char usage[] = "tensor <id> <name> <dtype> arena|param <offset> <ndim> <dim>...";
    tconv_runtime *rt = p->runtime;
    tensor t = {.line = p->line};
    uint64_t id, ndim, region;
    int status;

    if (p->library_line == 0 || p->params_line == 0 || p->arena_line == 0)
        return plan_error(p, "`library`, `params` and `arena` must come before the first tensor");
    if (p->num_tokens < 7)
        return plan_error(p, "expected `%s`, found %d fields", usage, p->num_tokens);
    if ((status = parse_number(p, 1, "tensor id", MAX_TENSORS, &id)) != TCONV_OK)
        return status;
    if (id < rt->num_tensors)
        return plan_error_at(p, 1, "duplicate tensor id %llu (declared on line %d)",
                             (unsigned long long)id, rt->tensors[id].line);
    if (id > rt->num_tensors)
        return plan_error_at(p, 1, "tensor id %llu is out of order: expected %zu",
                             (unsigned long long)id, rt->num_tensors);
    if (strlen(p->token[2]) > MAX_NAME)
        return plan_error_at(p, 2, "tensor name is longer than %d bytes", MAX_NAME);
    for (size_t i = 0; i < NUM_ELEMENT_TYPES && t.type == NULL; i++) {
        if (strcmp(p->token[3], element_types[i].token) == 0)
            t.type = &element_types[i];
    }
    if (t.type == NULL)
        return plan_error_at(p, 3,
                             "tensor %llu: dtype `%s` is not supported (expected one of "
                             DTYPE_LIST ")",
                             (unsigned long long)id, p->token[3]);
    if (strcmp(p->token[4], "arena") == 0) {
        region = rt->arena_bytes;
    } else if (strcmp(p->token[4], "param") == 0) {
        t.in_params = 1;
        region = rt->params_bytes;
    } else {
        return plan_error_at(p, 4, "tensor %llu: expected `arena` or `param`, found `%s`",
                             (unsigned long long)id, p->token[4]);
    }
    if ((status = parse_number(p, 5, "tensor offset", MAX_BYTES, &t.offset)) != TCONV_OK ||
        (status = parse_number(p, 6, "tensor ndim", TCONV_MAX_NDIM, &ndim)) != TCONV_OK)
        return status;
    if (ndim == 0)
        return plan_error_at(p, 6, "tensor %llu: ndim must be at least 1", (unsigned long long)id);
    if (p->num_tokens != 7 + (int)ndim)
        return plan_error_at(p, 6, "tensor %llu: ndim %llu needs %llu dims, found %d",
                             (unsigned long long)id, (unsigned long long)ndim,
                             (unsigned long long)ndim, p->num_tokens - 7);
    t.ndim = (int32_t)ndim;
    t.bytes = t.type->dl.bits / 8u;
    for (int32_t i = 0; i < t.ndim; i++) {
        uint64_t dim;
        if ((status = parse_number(p, 7 + i, "tensor dim", MAX_BYTES, &dim)) != TCONV_OK)
            return status;
        if (dim == 0)
            return plan_error_at(p, 7 + i, "tensor %llu: dim %d is 0", (unsigned long long)id, i);
        if (dim > MAX_BYTES / t.bytes)
            return plan_error_at(p, 5, "tensor %llu: larger than %llu bytes",
                                 (unsigned long long)id, (unsigned long long)MAX_BYTES);
        t.bytes *= dim;
        t.shape[i] = (int64_t)dim;
    }
    if (t.offset % TCONV_ALIGNMENT != 0)
        return plan_error_at(p, 5, "tensor %llu: offset %llu is not a multiple of %d",
                             (unsigned long long)id, (unsigned long long)t.offset,
                             TCONV_ALIGNMENT);
    if (t.offset > region || t.bytes > region - t.offset)
        return plan_error_at(p, 5, "tensor %llu: bytes [%llu, %llu) lie outside the %s (%llu bytes)",
                             (unsigned long long)id, (unsigned long long)t.offset,
                             (unsigned long long)(t.offset + t.bytes),
                             t.in_params ? "parameters" : "arena", (unsigned long long)region);
    tensor *tensors = reserve(rt->tensors, &rt->tensors_capacity, rt->num_tensors, sizeof t);
    if (tensors == NULL)
        return out_of_memory("the plan");
    rt->tensors = tensors;
    if ((t.name = copy_string(p->token[2])) == NULL)
        return out_of_memory("the plan");
    rt->tensors[rt->num_tensors++] = t;
    return TCONV_OK;
}

/* input <id> or output <id>: appended to `ids`. */
static int parse_port(parser *p, const char *keyword, size_t **ids, size_t *count,
                      size_t *capacity)
{
    tconv_runtime *rt = p->runtime;
    size_t id;
    int status = expect_fields(p, 2, strcmp(keyword, "input") == 0 ? "input <tensor-id>"
                                                                  : "output <tensor-id>");
    if (status == TCONV_OK)
        status = parse_tensor_id(p, 1, keyword, &id);
    if (status != TCONV_OK)
        return status;
    if (rt->tensors[id].in_params)
        return plan_error_at(p, 1,
                             "%s %zu (%s) is a parameter; inputs and outputs live in the arena",
                             keyword, id, rt->tensors[id].name);
    if (strcmp(rt->tensors[id].type->token, "f32") != 0)
        return plan_error_at(p, 1, "%s %zu (%s) is %s; inputs and outputs are f32", keyword, id,
                             rt->tensors[id].name, rt->tensors[id].type->token);
    for (size_t i = 0; i < *count; i++) {
        if ((*ids)[i] == id)
            return plan_error_at(p, 1, "tensor %zu (%s) is already an %s", id,
                                 rt->tensors[id].name, keyword);
    }
    size_t *grown = reserve(*ids, capacity, *count, sizeof id);
    if (grown == NULL)
        return out_of_memory("the plan");
    *ids = grown;
    (*ids)[(*count)++] = id;
    return TCONV_OK;
}

/* call <symbol> <nargs> <tensor-id>... */
static int parse_call(parser *p)
{
    tconv_runtime *rt = p->runtime;
    call c = {.line = p->line, .column = token_column(p, 1)};
    uint64_t num_args;
    int status;

    if (p->num_tokens < 3)
        return plan_error(p, "expected `call <symbol> <nargs> <tensor-id>...`, found %d fields",
                          p->num_tokens);
    const char *symbol = p->token[1];
    size_t length = strlen(symbol);
    if (length > MAX_SYMBOL || strspn(symbol, "abcdefghijklmnopqrstuvwxyz"
                                              "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != length)
        return plan_error_at(p, 1,
                             "`%s` is not a kernel symbol (letters, digits and _, at most %d)",
                             symbol, MAX_SYMBOL);
    if ((status = parse_number(p, 2, "call nargs", TCONV_MAX_ARGS, &num_args)) != TCONV_OK)
        return status;
    if (num_args == 0)
        return plan_error_at(p, 2, "call %s: nargs must be at least 1", symbol);
    if (p->num_tokens != 3 + (int)num_args)
        return plan_error_at(p, 2, "call %s: nargs %llu needs %llu tensor ids, found %d", symbol,
                             (unsigned long long)num_args, (unsigned long long)num_args,
                             p->num_tokens - 3);
    c.num_args = (int32_t)num_args;
    size_t args[TCONV_MAX_ARGS];
    for (int32_t i = 0; i < c.num_args; i++) {
        if ((status = parse_tensor_id(p, 3 + i, "call argument", &args[i])) != TCONV_OK)
            return status;
    }
    call *calls = reserve(rt->calls, &rt->calls_capacity, rt->num_calls, sizeof c);
    if (calls == NULL)
        return out_of_memory("the plan");
    rt->calls = calls;
    c.symbol = copy_string(symbol);
    c.args = malloc((size_t)c.num_args * sizeof *c.args);
    if (c.symbol == NULL || c.args == NULL) {
        free(c.symbol);
        free(c.args);
        return out_of_memory("the plan");
    }
    memcpy(c.args, args, (size_t)c.num_args * sizeof *c.args);
    rt->calls[rt->num_calls++] = c;
    return TCONV_OK;
}

static int parse_statement(parser *p)
{
    tconv_runtime *rt = p->runtime;
    const char *keyword = p->token[0];
    if (p->end_line != 0)
        return plan_error(p, "a statement after `end` (line %d)", p->end_line);
    if (p->statements++ == 0) {
        if (strcmp(keyword, "tconv-plan") != 0)
            return plan_error(p, "expected `tconv-plan %d` as the first statement, found `%s`",
                              TCONV_PLAN_VERSION, keyword);
        return parse_header(p);
    }
    if (strcmp(keyword, "target") == 0)
        return parse_target(p);
    if (strcmp(keyword, "library") == 0)
        return parse_library(p);
    if (strcmp(keyword, "params") == 0)
        return parse_params(p);
    if (strcmp(keyword, "arena") == 0)
        return parse_arena(p);
    if (strcmp(keyword, "tensor") == 0)
        return parse_tensor(p);
    if (strcmp(keyword, "input") == 0)
        return parse_port(p, "input", &rt->inputs, &rt->num_inputs, &rt->inputs_capacity);
    if (strcmp(keyword, "output") == 0)
        return parse_port(p, "output", &rt->outputs, &rt->num_outputs, &rt->outputs_capacity);
    if (strcmp(keyword, "call") == 0)
        return parse_call(p);
    if (strcmp(keyword, "end") == 0) {
        int status = expect_fields(p, 1, "end");
        p->end_line = p->line;
        return status;
    }
    if (strcmp(keyword, "tconv-plan") == 0)
        return plan_error(p, "a second `tconv-plan` line");
    return plan_error(p, "unknown statement `%s`", keyword);
}

/* Split `line` in place into the parser's tokens. */
static int tokenize(parser *p, char *line)
{
    p->num_tokens = 0;
    for (char *at = line;;) {
        at += strspn(at, " \t");
        if (*at == '\0')
            return TCONV_OK;
        if (p->num_tokens == MAX_TOKENS)
            return plan_error(p, "more than %d fields", MAX_TOKENS);
        p->token[p->num_tokens++] = at;
        at += strcspn(at, " \t");
        if (*at != '\0')
            *at++ = '\0';
    }
}

static int parse_plan(tconv_runtime *rt, char *text, size_t size)
{
    parser p = {.runtime = rt, .path = rt->plan_path};
    for (char *line = text; line < text + size;) {
        char *end = memchr(line, '\n', (size_t)(text + size - line));
        char *next = end ? end + 1 : text + size;
        if (end == NULL)
            end = text + size;
        p.line++;
        p.line_start = line;
        p.num_tokens = 0;
        for (const char *at = line; at < end; at++) {
            unsigned char c = (unsigned char)*at;
            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                p.token[0] = (char *)at;
                p.num_tokens = 1;
                return plan_error(&p, "unexpected control character 0x%02x", c);
            }
        }
        *end = '\0';
        int status = tokenize(&p, line);
        if (status != TCONV_OK)
            return status;
        if (p.num_tokens > 0 && p.token[0][0] != '#' && (status = parse_statement(&p)) != TCONV_OK)
            return status;
        line = next;
    }
    static const char *const required[] = {"tconv-plan", "library", "params", "arena", "end"};
    int lines[] = {p.statements, p.library_line, p.params_line, p.arena_line, p.end_line};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        if (lines[i] == 0)
            return fail(TCONV_ERR_PLAN, "%s: error: no `%s` line%s", rt->plan_path, required[i],
                        i == 4 ? " (the plan is truncated)" : "");
    }
    if (rt->num_inputs == 0 || rt->num_outputs == 0 || rt->num_calls == 0)
        return fail(TCONV_ERR_PLAN, "%s: error: a plan needs at least one input, output and call",
                    rt->plan_path);
    return TCONV_OK;
}

static int read_plan(tconv_runtime *rt)
{
    int fd;
    uint64_t size;
    int status = open_regular(rt->plan_path, &fd, &size);
    if (status != TCONV_OK)
        return status;
    if (size > MAX_PLAN_BYTES) {
        close(fd);
        return fail(TCONV_ERR_PLAN, "%s: error: larger than %llu bytes", rt->plan_path,
                    (unsigned long long)MAX_PLAN_BYTES);
    }
    char *text = malloc((size_t)size + 1);
    if (text == NULL) {
        close(fd);
        return out_of_memory("the plan");
    }
    status = read_all(fd, rt->plan_path, text, size);
    close(fd);
    if (status == TCONV_OK) {
        text[size] = '\0';
        rt->fingerprint = 0xcbf29ce484222325u;
        for (uint64_t i = 0; i < size; i++)
            rt->fingerprint = (rt->fingerprint ^ (unsigned char)text[i]) * 0x100000001b3u;
        status = parse_plan(rt, text, (size_t)size);
    }
    free(text);
    return status;
}

/* ------------------------------------------------------------ the loading */

static int load_params(tconv_runtime *rt)
{
    int fd;
    uint64_t size;
    char *path = join_path(rt->directory, rt->params_name);
    if (path == NULL)
        return out_of_memory("a path");
    int status = open_regular(path, &fd, &size);
    if (status == TCONV_OK) {
        if (size != rt->params_bytes)
            status = fail(TCONV_ERR_IO, "%s: error: has %llu bytes, but %s:%d declares %llu", path,
                          (unsigned long long)size, rt->plan_path, rt->params_line,
                          (unsigned long long)rt->params_bytes);
        else if ((rt->params = aligned_buffer(size)) == NULL)
            status = out_of_memory("the parameters");
        else
            status = read_all(fd, path, rt->params, size);
        close(fd);
    }
    free(path);
    return status;
}

static int truncated_library(const char *path, uint64_t size, uint64_t needed)
{
    return fail(TCONV_ERR_LIBRARY,
                "%s: error: the kernel library is truncated (%llu bytes; its ELF headers need "
                "%llu) — the artifact is damaged; compile it again",
                path, (unsigned long long)size, (unsigned long long)needed);
}

/* The loader maps a shared library's segments as its ELF headers say: where
 * they reach past the end of the file, touching them raises SIGBUS. Check
 * that the headers of an ELF-64 library lie inside the file, and so do the
 * segments they map. Anything else that is not a library, dlopen refuses. */
static int check_elf_extent(const char *path)
{
    int fd;
    uint64_t size;
    Elf64_Ehdr header;
    int status = open_regular(path, &fd, &size);
    if (status != TCONV_OK)
        return status;
    memset(&header, 0, sizeof header);
    ssize_t count = pread(fd, &header, sizeof header, 0);
    if (count < (ssize_t)SELFMAG || memcmp(header.e_ident, ELFMAG, SELFMAG) != 0) {
        close(fd); /* not ELF: dlopen says so */
        return TCONV_OK;
    }
    if (count != (ssize_t)sizeof header) {
        close(fd);
        return truncated_library(path, size, sizeof header);
    }
    if (header.e_ident[EI_CLASS] != ELFCLASS64) {
        close(fd);
        return TCONV_OK;
    }
    uint64_t tables[][2] = {
        {header.e_phoff, (uint64_t)header.e_phnum * header.e_phentsize},
        {header.e_shoff, (uint64_t)header.e_shnum * header.e_shentsize},
    };
    for (size_t i = 0; status == TCONV_OK && i < 2; i++) {
        if (tables[i][0] > size || tables[i][1] > size - tables[i][0])
            status = truncated_library(path, size, tables[i][0] + tables[i][1]);
    }
    if (status == TCONV_OK && header.e_phentsize != sizeof(Elf64_Phdr) && header.e_phnum != 0)
        status = fail(TCONV_ERR_LIBRARY,
                      "%s: error: not a kernel library (ELF program headers of %u bytes) — the "
                      "artifact is damaged; compile it again",
                      path, (unsigned)header.e_phentsize);
    for (uint16_t i = 0; status == TCONV_OK && i < header.e_phnum; i++) {
        Elf64_Phdr segment;
        if (pread(fd, &segment, sizeof segment, (off_t)(header.e_phoff + i * sizeof segment)) !=
            (ssize_t)sizeof segment)
            status = fail(TCONV_ERR_IO, "%s: error: cannot read the file: %s", path,
                          strerror(errno));
        else if (segment.p_type == PT_LOAD &&
                 (segment.p_offset > size || segment.p_filesz > size - segment.p_offset))
            status = truncated_library(path, size, segment.p_offset + segment.p_filesz);
    }
    close(fd);
    return status;
}

/* dlopen `path`, unless this process has it open already as another file. */
static int open_library(tconv_runtime *rt, const char *path)
{
    struct stat info;
    if (stat(path, &info) != 0)
        return fail(TCONV_ERR_IO, "%s: error: cannot read the file: %s", path, strerror(errno));
    int status = check_elf_extent(path);
    if (status != TCONV_OK)
        return status;
    pthread_mutex_lock(&loaded_libraries_lock);
    loaded_library *entry = loaded_libraries;
    while (entry != NULL && strcmp(entry->path, path) != 0)
        entry = entry->next;
    if (entry != NULL && (entry->device != info.st_dev || entry->inode != info.st_ino)) {
        status = fail(TCONV_ERR_LIBRARY,
                      "%s: error: replaced while an open runtime still uses the library loaded "
                      "from that path; close that runtime first (the dynamic loader would "
                      "give this one the old kernels)",
                      path);
    } else if (entry == NULL && ((entry = calloc(1, sizeof *entry)) == NULL ||
                                 (entry->path = copy_string(path)) == NULL)) {
        free(entry);
        status = out_of_memory("a path");
    } else if ((rt->library = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
        status = fail(TCONV_ERR_LIBRARY, "%s: error: cannot load the kernel library: %s", path,
                      dlerror());
        if (entry->handles == 0) {
            free(entry->path);
            free(entry);
        }
    } else {
        if (entry->handles++ == 0) {
            entry->device = info.st_dev;
            entry->inode = info.st_ino;
            entry->next = loaded_libraries;
            loaded_libraries = entry;
        }
        rt->library_entry = entry;
    }
    pthread_mutex_unlock(&loaded_libraries_lock);
    return status;
}

static void close_library(tconv_runtime *rt)
{
    if (rt->library == NULL)
        return;
    pthread_mutex_lock(&loaded_libraries_lock);
    dlclose(rt->library);
    loaded_library *entry = rt->library_entry;
    if (--entry->handles == 0) {
        loaded_library **link = &loaded_libraries;
        while (*link != entry)
            link = &(*link)->next;
        *link = entry->next;
        free(entry->path);
        free(entry);
    }
    pthread_mutex_unlock(&loaded_libraries_lock);
}

static int load_library(tconv_runtime *rt)
{
    char message[ERROR_SIZE / 2];
    char *path = join_path(rt->directory, rt->library_name);
    if (path == NULL)
        return out_of_memory("a path");
    int status = open_library(rt, path);
    if (status == TCONV_OK) {
        /* A library tconv compiled says which plan it was compiled with: one
         * from another compile (another batch, another network) would be
         * called with tensors it was not built for. */
        void *address = dlsym(rt->library, FINGERPRINT_SYMBOL);
        uint64_t fingerprint;
        if (address != NULL) {
            memcpy(&fingerprint, address, sizeof fingerprint);
            if (fingerprint != rt->fingerprint)
                status = fail(TCONV_ERR_LIBRARY,
                              "%s: error: the kernel library was compiled with another plan than "
                              "%s (its fingerprint is %016llx, the plan's %016llx): the files "
                              "come from different compiles; compile the artifact again",
                              path, rt->plan_path, (unsigned long long)fingerprint,
                              (unsigned long long)rt->fingerprint);
        }
    }
    if (status == TCONV_OK && tconv_backend_install(rt->library, message, sizeof message) != 0)
        status = fail(TCONV_ERR_LIBRARY, "%s: error: %s", path, message);
    for (size_t i = 0; status == TCONV_OK && i < rt->num_calls; i++) {
        call *c = &rt->calls[i];
        char symbol[sizeof SYMBOL_PREFIX + MAX_SYMBOL];
        snprintf(symbol, sizeof symbol, SYMBOL_PREFIX "%s", c->symbol);
        void *address = dlsym(rt->library, symbol);
        if (address == NULL)
            status = fail(TCONV_ERR_LIBRARY,
                          "%s:%d:%d: error: kernel `%s` is not in %s (no symbol `%s`)",
                          rt->plan_path, c->line, c->column, c->symbol, rt->library_name, symbol);
        else
            memcpy(&c->kernel, &address, sizeof c->kernel);
    }
    free(path);
    return status;
}

/* Point every tensor at its bytes and pack every call's arguments. */
static int bind_tensors(tconv_runtime *rt)
{
    for (size_t i = 0; i < rt->num_tensors; i++) {
        tensor *t = &rt->tensors[i];
        char *base = t->in_params ? rt->params : rt->arena;
        t->dl = (DLTensor){
            .data = base + t->offset,
            .device = {kDLCPU, 0},
            .ndim = t->ndim,
            .dtype = t->type->dl,
            .shape = t->shape,
        };
    }
    for (size_t i = 0; i < rt->num_calls; i++) {
        call *c = &rt->calls[i];
        if ((c->packed = calloc((size_t)c->num_args, sizeof *c->packed)) == NULL)
            return out_of_memory("the calls");
        for (int32_t j = 0; j < c->num_args; j++) {
            c->packed[j].type_index = kTVMFFIDLTensorPtr;
            c->packed[j].v_ptr = &rt->tensors[c->args[j]].dl;
        }
    }
    return TCONV_OK;
}

static int load(tconv_runtime *rt, const char *directory)
{
    int status;
    rt->directory = copy_string(directory);
    if (rt->directory == NULL || (rt->plan_path = join_path(directory, "plan.txt")) == NULL)
        return out_of_memory("a path");
    if ((status = read_plan(rt)) != TCONV_OK || (status = load_params(rt)) != TCONV_OK ||
        (status = load_library(rt)) != TCONV_OK)
        return status;
    if ((rt->arena = aligned_buffer(rt->arena_bytes)) == NULL)
        return out_of_memory("the arena");
    if ((status = bind_tensors(rt)) != TCONV_OK)
        return status;
    if ((status = tconv_pool_create(1, &rt->pool)) != 0)
        return fail(TCONV_ERR_THREAD, "cannot create the thread pool: %s", strerror(status));
    return TCONV_OK;
}

/* ------------------------------------------------------------------- API */

int tconv_open(const char *directory, tconv_runtime **runtime)
{
    if (runtime == NULL || directory == NULL)
        return fail(TCONV_ERR_ARGUMENT, "tconv_open: NULL argument");
    *runtime = NULL;
    tconv_runtime *rt = calloc(1, sizeof *rt);
    if (rt == NULL)
        return out_of_memory("the runtime");
    int status = load(rt, directory);
    if (status != TCONV_OK) {
        tconv_close(rt);
        return status;
    }
    *runtime = rt;
    return TCONV_OK;
}

int tconv_close(tconv_runtime *rt)
{
    if (rt == NULL)
        return TCONV_OK;
    tconv_pool_destroy(rt->pool);
    tconv_backend_release_workspaces();
    for (size_t i = 0; i < rt->num_calls; i++) {
        free(rt->calls[i].symbol);
        free(rt->calls[i].args);
        free(rt->calls[i].packed);
    }
    for (size_t i = 0; i < rt->num_tensors; i++)
        free(rt->tensors[i].name);
    close_library(rt);
    free(rt->calls);
    free(rt->tensors);
    free(rt->inputs);
    free(rt->outputs);
    free(rt->arena);
    free(rt->params);
    free(rt->params_name);
    free(rt->library_name);
    free(rt->plan_path);
    free(rt->directory);
    free(rt);
    return TCONV_OK;
}

int tconv_set_threads(tconv_runtime *rt, int threads)
{
    if (rt == NULL)
        return fail(TCONV_ERR_ARGUMENT, "tconv_set_threads: NULL runtime");
    if (threads < 1 || threads > TCONV_MAX_THREADS)
        return fail(TCONV_ERR_ARGUMENT, "thread count %d is not in [1, %d]", threads,
                    TCONV_MAX_THREADS);
    if (threads == tconv_pool_threads(rt->pool))
        return TCONV_OK;
    tconv_pool *pool;
    int status = tconv_pool_create(threads, &pool);
    if (status != 0)
        return fail(TCONV_ERR_THREAD, "cannot start %d threads: %s", threads, strerror(status));
    tconv_pool_destroy(rt->pool);
    rt->pool = pool;
    return TCONV_OK;
}

int tconv_num_inputs(const tconv_runtime *rt, size_t *count)
{
    if (rt == NULL || count == NULL)
        return fail(TCONV_ERR_ARGUMENT, "tconv_num_inputs: NULL argument");
    *count = rt->num_inputs;
    return TCONV_OK;
}

int tconv_num_outputs(const tconv_runtime *rt, size_t *count)
{
    if (rt == NULL || count == NULL)
        return fail(TCONV_ERR_ARGUMENT, "tconv_num_outputs: NULL argument");
    *count = rt->num_outputs;
    return TCONV_OK;
}

static void describe(const tensor *t, tconv_tensor_info *info)
{
    info->name = t->name;
    info->ndim = t->ndim;
    memcpy(info->shape, t->shape, sizeof info->shape);
    info->bytes = t->bytes;
}

int tconv_input_info(const tconv_runtime *rt, size_t index, tconv_tensor_info *info)
{
    if (rt == NULL || info == NULL)
        return fail(TCONV_ERR_ARGUMENT, "tconv_input_info: NULL argument");
    if (index >= rt->num_inputs)
        return fail(TCONV_ERR_ARGUMENT, "input %zu does not exist (the network has %zu)", index,
                    rt->num_inputs);
    describe(&rt->tensors[rt->inputs[index]], info);
    return TCONV_OK;
}

int tconv_output_info(const tconv_runtime *rt, size_t index, tconv_tensor_info *info)
{
    if (rt == NULL || info == NULL)
        return fail(TCONV_ERR_ARGUMENT, "tconv_output_info: NULL argument");
    if (index >= rt->num_outputs)
        return fail(TCONV_ERR_ARGUMENT, "output %zu does not exist (the network has %zu)", index,
                    rt->num_outputs);
    describe(&rt->tensors[rt->outputs[index]], info);
    return TCONV_OK;
}

int tconv_arena_bytes(const tconv_runtime *rt, uint64_t *bytes)
{
    if (rt == NULL || bytes == NULL)
        return fail(TCONV_ERR_ARGUMENT, "tconv_arena_bytes: NULL argument");
    *bytes = rt->arena_bytes;
    return TCONV_OK;
}

/* Every buffer is there and has its tensor's size. */
static int check_buffers(const tconv_runtime *rt, const char *kind, const size_t *ids,
                         size_t expected, const tconv_buffer *buffers, size_t count)
{
    if (count != expected)
        return fail(TCONV_ERR_ARGUMENT, "the network takes %zu %ss, got %zu", expected, kind,
                    count);
    for (size_t i = 0; i < count; i++) {
        const tensor *t = &rt->tensors[ids[i]];
        if (buffers[i].data == NULL || buffers[i].bytes != t->bytes) {
            char shape[TCONV_MAX_NDIM * 21];
            format_shape(t->shape, t->ndim, shape, sizeof shape);
            return fail(TCONV_ERR_ARGUMENT, "%s %zu (%s) is %s f32: %llu bytes, got %s%llu bytes",
                        kind, i, t->name, shape, (unsigned long long)t->bytes,
                        buffers[i].data == NULL ? "NULL data with " : "",
                        (unsigned long long)buffers[i].bytes);
        }
    }
    return TCONV_OK;
}

int tconv_execute(tconv_runtime *rt)
{
    if (rt == NULL)
        return fail(TCONV_ERR_ARGUMENT, "tconv_execute: NULL argument");
    uint64_t before = rt->profiling ? tconv_now_ns() : 0;
    for (size_t i = 0; i < rt->num_calls; i++) {
        call *c = &rt->calls[i];
        char message[ERROR_SIZE / 2];
        if (tconv_backend_call(c->kernel, c->packed, c->num_args, rt->pool, message,
                               sizeof message) != 0)
            return fail(TCONV_ERR_KERNEL, "%s:%d:%d: error: kernel `%s` (call %zu) failed: %s",
                        rt->plan_path, c->line, c->column, c->symbol, i, message);
        if (rt->profiling) {
            uint64_t after = tconv_now_ns();
            c->profiled_ns += after - before;
            before = after;
        }
    }
    rt->profiled_runs += rt->profiling ? 1u : 0u;
    return TCONV_OK;
}

int tconv_set_profiling(tconv_runtime *rt, int on)
{
    if (rt == NULL)
        return fail(TCONV_ERR_ARGUMENT, "tconv_set_profiling: NULL runtime");
    if (on && !rt->profiling) {
        for (size_t i = 0; i < rt->num_calls; i++)
            rt->calls[i].profiled_ns = 0;
        rt->profiled_runs = 0;
    }
    rt->profiling = on != 0;
    return TCONV_OK;
}

int tconv_num_calls(const tconv_runtime *rt, size_t *count)
{
    if (rt == NULL || count == NULL)
        return fail(TCONV_ERR_ARGUMENT, "tconv_num_calls: NULL argument");
    *count = rt->num_calls;
    return TCONV_OK;
}

int tconv_call_time(const tconv_runtime *rt, size_t index, uint64_t *total_ns, uint64_t *runs)
{
    if (rt == NULL || total_ns == NULL || runs == NULL)
        return fail(TCONV_ERR_ARGUMENT, "tconv_call_time: NULL argument");
    if (index >= rt->num_calls)
        return fail(TCONV_ERR_ARGUMENT, "call %zu does not exist (the plan has %zu)", index,
                    rt->num_calls);
    *total_ns = rt->calls[index].profiled_ns;
    *runs = rt->profiled_runs;
    return TCONV_OK;
}

int tconv_input_data(tconv_runtime *rt, size_t index, void **data)
{
    if (rt == NULL || data == NULL)
        return fail(TCONV_ERR_ARGUMENT, "tconv_input_data: NULL argument");
    if (index >= rt->num_inputs)
        return fail(TCONV_ERR_ARGUMENT, "input %zu does not exist (the network has %zu)", index,
                    rt->num_inputs);
    *data = rt->tensors[rt->inputs[index]].dl.data;
    return TCONV_OK;
}

int tconv_output_data(const tconv_runtime *rt, size_t index, const void **data)
{
    if (rt == NULL || data == NULL)
        return fail(TCONV_ERR_ARGUMENT, "tconv_output_data: NULL argument");
    if (index >= rt->num_outputs)
        return fail(TCONV_ERR_ARGUMENT, "output %zu does not exist (the network has %zu)", index,
                    rt->num_outputs);
    *data = rt->tensors[rt->outputs[index]].dl.data;
    return TCONV_OK;
}

int tconv_run(tconv_runtime *rt, const tconv_buffer *inputs, size_t num_inputs,
              const tconv_buffer *outputs, size_t num_outputs)
{
    int status;
    if (rt == NULL || (inputs == NULL && num_inputs > 0) || (outputs == NULL && num_outputs > 0))
        return fail(TCONV_ERR_ARGUMENT, "tconv_run: NULL argument");
    if ((status = check_buffers(rt, "input", rt->inputs, rt->num_inputs, inputs, num_inputs)) !=
            TCONV_OK ||
        (status = check_buffers(rt, "output", rt->outputs, rt->num_outputs, outputs,
                                num_outputs)) != TCONV_OK)
        return status;
    for (size_t i = 0; i < num_inputs; i++)
        memcpy(rt->tensors[rt->inputs[i]].dl.data, inputs[i].data, (size_t)inputs[i].bytes);
    if ((status = tconv_execute(rt)) != TCONV_OK)
        return status;
    for (size_t i = 0; i < num_outputs; i++)
        memcpy(outputs[i].data, rt->tensors[rt->outputs[i]].dl.data, (size_t)outputs[i].bytes);
    return TCONV_OK;
}
