/*
 * What a TVM kernel library needs from its host, and how to call its kernels.
 *
 * Internal to the tconv runtime. The ABI structs are declared here, with the
 * layouts of tvm-ffi 0.1 (tvm/ffi/c_api.h) and DLPack 1.x (dlpack/dlpack.h),
 * so that the runtime builds without TVM installed.
 *
 * A kernel exported as `__tvm_ffi_<name>` has the tvm-ffi "safe call" type:
 * it takes its tensors as TVMFFIAny values of type kTVMFFIDLTensorPtr, returns
 * 0 on success, and on failure returns nonzero after reporting the error
 * through TVMFFIErrorSetRaisedFromCStrParts. The library holds function
 * pointers its host must set: __TVMBackendAllocWorkspace,
 * __TVMBackendFreeWorkspace, and, where loops are parallel,
 * __TVMBackendParallelLaunch and __TVMBackendParallelBarrier.
 */
#ifndef TCONV_BACKEND_H
#define TCONV_BACKEND_H

#include <stddef.h>
#include <stdint.h>

enum {
    kDLCPU = 1, /* DLDeviceType */
    kDLInt = 0, /* DLDataTypeCode */
    kDLUInt = 1,
    kDLFloat = 2,
    kTVMFFINone = 0,
    kTVMFFIDLTensorPtr = 7,
    kTVMFFIError = 67
};

typedef struct {
    int32_t device_type;
    int32_t device_id;
} DLDevice;

typedef struct {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
} DLDataType;

typedef struct {
    void *data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t *shape;
    int64_t *strides; /* NULL: compact, row-major */
    uint64_t byte_offset;
} DLTensor;

typedef struct {
    int32_t type_index;
    uint32_t zero_padding;
    union {
        int64_t v_int64;
        double v_float64;
        void *v_ptr;
    };
} TVMFFIAny;

typedef int (*tvm_ffi_safe_call)(void *self, const TVMFFIAny *args, int32_t num_args,
                                 TVMFFIAny *result);

/* The exported error hook that TVM-generated code calls (an undefined symbol
 * of every kernel library, resolved when the library is loaded). */
void TVMFFIErrorSetRaisedFromCStrParts(const char *kind, const char **message_parts,
                                       int32_t num_parts);

/* Threads that run parallel loops: the caller of tconv_backend_call and
 * threads - 1 persistent workers. */
typedef struct tconv_pool tconv_pool;

/* 0, or an errno value from pthread_create and friends. */
int tconv_pool_create(int threads, tconv_pool **pool);
void tconv_pool_destroy(tconv_pool *pool);
int tconv_pool_threads(const tconv_pool *pool);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t tconv_now_ns(void);

/* Kernel scratch buffers are cached per thread for reuse across runs; a
 * worker's go when it exits, the calling thread's here (tconv_close). */
void tconv_backend_release_workspaces(void);

/* Point the library's host function pointers at this runtime's. 0, or -1 with
 * a message in `error` if the library needs more than this runtime provides. */
int tconv_backend_install(void *library, char *error, size_t error_size);

/* Call `kernel` on the calling thread, with `pool` running its parallel
 * loops. 0, or the kernel's nonzero status with its message in `message`. */
int tconv_backend_call(tvm_ffi_safe_call kernel, const TVMFFIAny *args, int32_t num_args,
                       tconv_pool *pool, char *message, size_t message_size);

#endif /* TCONV_BACKEND_H */
