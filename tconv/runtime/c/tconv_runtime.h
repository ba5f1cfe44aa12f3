/*
 * tconv runtime: executes a compiled network without TVM and without Python.
 *
 * An artifact is a directory of three files:
 *
 *   plan.txt    what to run (format below)
 *   <library>   the kernels: a shared library built by TVM
 *               (`tvm.compile(...).export_library`), exporting one function
 *               `__tvm_ffi_<symbol>` per kernel, called through the tvm-ffi C ABI
 *   <params>    the parameters: raw bytes (native byte order), each tensor
 *               the plan names in its dtype at the offset it names
 *
 * tconv_open reads the plan, reads the parameters into one buffer, loads the
 * library and resolves every kernel the plan calls, and allocates one arena
 * for all activations; tconv_run then copies the inputs in, calls the kernels
 * in order, and copies the outputs out.
 *
 * The runtime is the kernels' host: it sets the library's workspace allocator
 * and parallel-launch/barrier pointers to its own (a pthread pool), and it
 * exports the error hook `TVMFFIErrorSetRaisedFromCStrParts` that every TVM
 * kernel library imports. A program that dlopens this runtime must use
 * RTLD_GLOBAL so kernel libraries can resolve that hook. Where tvm_ffi is
 * loaded in the same process as well, kernels may report to it instead; the
 * runtime then takes the message from tvm_ffi, and hands errors of kernels
 * that TVM itself runs on to tvm_ffi.
 *
 * plan.txt, version 1: one statement per line, tokens separated by spaces or
 * tabs, blank lines and lines starting with '#' ignored, numbers unsigned
 * decimal integers.
 *
 *   tconv-plan 1                          first statement
 *   target cpu                            optional; `target cuda <arch>` is refused
 *   library <file>                        the kernel library
 *   params <file> <bytes>                 the parameter file and its exact size
 *   arena <bytes>                         the arena size
 *   tensor <id> <name> <dtype> arena|param <offset> <ndim> <dim>...
 *   input <tensor-id>                     the network's inputs, in order
 *   output <tensor-id>                    the network's outputs, in order
 *   call <symbol> <nargs> <tensor-id>...  the kernel calls, in order
 *   end                                   last statement
 *
 * - `target`, where present, and `library`, `params` and `arena` come once
 *   each, before the first tensor;
 *   a <file> is a plain name inside the artifact directory (no '/').
 * - Tensor ids count up from 0 in the order of the `tensor` lines, and a
 *   tensor is declared before it is named. <dtype> is the element type, and
 *   the DLPack dtype of the DLTensor a kernel gets: f32 (kDLFloat 32), u8
 *   (kDLUInt 8), i8 (kDLInt 8) or i32 (kDLInt 32). A tensor's bytes (the
 *   element size * the product of its dims) start at <offset>, a multiple of
 *   TCONV_ALIGNMENT (TVM kernels assume aligned data), and lie inside the
 *   arena or the parameters. <name> is for diagnostics (at most 255 bytes);
 *   1 <= ndim <= TCONV_MAX_NDIM and every dim >= 1.
 * - Inputs and outputs are distinct f32 arena tensors. Inputs are copied in
 *   before the first call and outputs out after the last, so nothing may
 *   overwrite an input before its last reader or an output after its writer.
 * - A call passes its tensors, in order, to `__tvm_ffi_<symbol>`; <symbol> is
 *   letters, digits and '_'; 1 <= nargs <= TCONV_MAX_ARGS.
 * - `end` makes a truncated plan an error.
 * A malformed plan fails tconv_open with TCONV_ERR_PLAN and a message located
 * at its line and column: "PATH:LINE:COL: error: ...". Errors about a file of
 * the artifact start "PATH: error: ".
 *
 * Before dlopen, the library's ELF headers and the segments they map must lie
 * inside the file (a truncated library is refused, not mapped). A library
 * that exports `const uint64_t tconv_plan_fingerprint` (every library tconv
 * compiles does) must carry the 64-bit FNV-1a hash of plan.txt's bytes: a
 * library compiled with another plan is refused (TCONV_ERR_LIBRARY). The
 * artifact's MANIFEST (sizes and SHA-256 of its files) is checked by the
 * Python driver before tconv_open, not here.
 *
 * Errors: every function returns TCONV_OK or an error code and never aborts
 * or exits; tconv_last_error() gives the message of the calling thread's last
 * failed call. A handle runs one call at a time; separate handles may be used
 * from separate threads.
 *
 * The dynamic loader knows a kernel library by the path it was opened with:
 * while a handle has a library open, tconv_open refuses a different file at
 * the same path (TCONV_ERR_LIBRARY) rather than get the old kernels. It cannot
 * tell when TVM in the same process holds the old file: do not replace a
 * library that TVM has loaded.
 */
#ifndef TCONV_RUNTIME_H
#define TCONV_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TCONV_PLAN_VERSION 1
#define TCONV_ALIGNMENT 64
#define TCONV_MAX_NDIM 8
#define TCONV_MAX_ARGS 64
#define TCONV_MAX_THREADS 256

typedef enum {
    TCONV_OK = 0,
    TCONV_ERR_IO = 1,       /* a file is missing, unreadable or of the wrong size */
    TCONV_ERR_PLAN = 2,     /* plan.txt is malformed or inconsistent */
    TCONV_ERR_LIBRARY = 3,  /* the kernel library does not load or lacks a kernel */
    TCONV_ERR_ARGUMENT = 4, /* a bad argument to this API */
    TCONV_ERR_MEMORY = 5,   /* out of memory */
    TCONV_ERR_KERNEL = 6,   /* a kernel reported an error */
    TCONV_ERR_THREAD = 7    /* a worker thread could not be started */
} tconv_status;

typedef struct tconv_runtime tconv_runtime;

/* What a network input or output is. `name` lives as long as the handle. */
typedef struct {
    const char *name;
    int32_t ndim;
    int64_t shape[TCONV_MAX_NDIM];
    uint64_t bytes;
} tconv_tensor_info;

/* A caller's buffer: `bytes` must equal the tensor's size. */
typedef struct {
    void *data;
    uint64_t bytes;
} tconv_buffer;

/* The message of the calling thread's last failed call ("" if none). */
const char *tconv_last_error(void);

/* Load the artifact in `directory`. On success *runtime is a handle for
 * tconv_close; on failure it is NULL. The handle starts with one thread. */
int tconv_open(const char *directory, tconv_runtime **runtime);

/* Free everything the handle owns. A NULL handle is ignored. */
int tconv_close(tconv_runtime *runtime);

/* Run parallel loops on `threads` threads (1..TCONV_MAX_THREADS): the caller's
 * and threads - 1 persistent workers. */
int tconv_set_threads(tconv_runtime *runtime, int threads);

int tconv_num_inputs(const tconv_runtime *runtime, size_t *count);
int tconv_num_outputs(const tconv_runtime *runtime, size_t *count);
int tconv_input_info(const tconv_runtime *runtime, size_t index, tconv_tensor_info *info);
int tconv_output_info(const tconv_runtime *runtime, size_t index, tconv_tensor_info *info);

/* The size of the activation arena, in bytes. */
int tconv_arena_bytes(const tconv_runtime *runtime, uint64_t *bytes);

/* Copy the inputs into the arena, run every call of the plan, and copy the
 * outputs out. Buffers are given in the order of the plan's input and output
 * lines; input buffers are only read. */
int tconv_run(tconv_runtime *runtime, const tconv_buffer *inputs, size_t num_inputs,
              const tconv_buffer *outputs, size_t num_outputs);

/* Zero-copy use: where input or output `index` lives in the arena. Write the
 * inputs there, call tconv_execute, read the outputs there. The pointers are
 * valid until tconv_close. Arena space is reused across a run, so an output
 * may share bytes with an input: read the outputs before writing the next
 * inputs. */
int tconv_input_data(tconv_runtime *runtime, size_t index, void **data);
int tconv_output_data(const tconv_runtime *runtime, size_t index, const void **data);

/* Run every call of the plan on the arena as it is (no copies). */
int tconv_execute(tconv_runtime *runtime);

/* Profiling: while on, tconv_execute adds each call's wall time (the
 * launch and every thread's share) to that call's total; turning it on
 * resets the totals. tconv_call_time gives call `index`'s total (in the
 * order of the plan's call lines) and the runs it was taken over. */
int tconv_set_profiling(tconv_runtime *runtime, int on);
int tconv_num_calls(const tconv_runtime *runtime, size_t *count);
int tconv_call_time(const tconv_runtime *runtime, size_t index, uint64_t *total_ns,
                    uint64_t *runs);

/* Scratch buffers the kernels have asked for that the runtime allocated
 * afresh (in this process, all handles): each thread keeps its freed ones
 * for the next request of the same size, so a network run again on the
 * same threads allocates none. */
uint64_t tconv_fresh_workspaces(void);

#ifdef __cplusplus
}
#endif

#endif /* TCONV_RUNTIME_H */
