/*
 * A kernel library that uses the host services the way TVM-generated code
 * does, and reports what it saw, to test the runtime's thread pool, barrier,
 * workspace and error paths (which TVM's own kernels rarely reach).
 *
 * `__tvm_ffi_launch(control, report)`: control is f32[3] = {num_task to
 * request (0: the runtime chooses), a task that fails (-1: none), whether
 * tasks meet at a barrier (or, built with -DNO_BARRIER, whether the first task
 * that a thread other than the caller runs sleeps 200 ms)}; report is
 * f32[MAX_TASKS + 4] = {how often each task id ran..., num_task seen,
 * distinct threads seen, 1 if the barrier held, tasks the caller ran}.
 *
 * Built with -DNO_BARRIER, the library does not define the barrier's slot,
 * as TVM leaves it out of libraries that never meet at one.
 *
 * `__tvm_ffi_nested(report)`: a parallel loop whose tasks start parallel
 * loops of their own; report is f32[1] = {inner tasks run}.
 *
 * `__tvm_ffi_dtypes(a..., report)`: for each tensor a[k] but the last,
 * report[2k] = its DLPack dtype code * 100 + bits and report[2k + 1] = the
 * sum of its elements read as that dtype (f32, u8, i8 or i32; any other
 * dtype, or lanes other than 1, fails the call); report is f32.
 */
#define _POSIX_C_SOURCE 199309L /* nanosleep */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define MAX_TASKS 64

typedef struct {
    void *data;
    int32_t device[2];
    int32_t ndim;
    uint8_t dtype[4];
    int64_t *shape;
    int64_t *strides;
    uint64_t byte_offset;
} DLTensor;

typedef struct {
    int32_t type_index;
    uint32_t zero_padding;
    void *v_ptr;
} TVMFFIAny;

typedef struct {
    void *sync_handle;
    int32_t num_task;
} TVMParallelGroupEnv;

typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv *env, void *closure);

void *(*__TVMBackendAllocWorkspace)(int, int, uint64_t, int, int);
int (*__TVMBackendFreeWorkspace)(int, int, void *);
int (*__TVMBackendParallelLaunch)(FTVMParallelLambda, void *, int);
#ifndef NO_BARRIER
int (*__TVMBackendParallelBarrier)(int, TVMParallelGroupEnv *);
#endif
void TVMFFIErrorSetRaisedFromCStrParts(const char *kind, const char **parts, int32_t num_parts);

typedef struct {
    int fail_task;
    int barrier;
    int num_task;
    int runs[MAX_TASKS];
    int arrived[MAX_TASKS];
    int barrier_held;
    int stalled;
    pthread_t caller;
    pthread_t threads[MAX_TASKS];
} launch_state;

static void fail(const char *message)
{
    TVMFFIErrorSetRaisedFromCStrParts("RuntimeError", &message, 1);
}

static int task(int task_id, TVMParallelGroupEnv *env, void *closure)
{
    launch_state *state = closure;
    if (task_id == state->fail_task) {
        fail("task 3 failed on purpose");
        return -1;
    }
    if (task_id < 0 || task_id >= MAX_TASKS || env->num_task > MAX_TASKS) {
        fail("task id out of range");
        return -1;
    }
    __atomic_store_n(&state->num_task, env->num_task, __ATOMIC_RELAXED);
    __atomic_fetch_add(&state->runs[task_id], 1, __ATOMIC_RELAXED);
    state->threads[task_id] = pthread_self();
    char *workspace = __TVMBackendAllocWorkspace(1, 0, 4096, 2, 32);
    if (workspace == NULL || (uintptr_t)workspace % 64 != 0)
        return -1;
    memset(workspace, task_id, 4096);
    __TVMBackendFreeWorkspace(1, 0, workspace);
#ifdef NO_BARRIER
    if (state->barrier && !pthread_equal(pthread_self(), state->caller) &&
        !__atomic_exchange_n(&state->stalled, 1, __ATOMIC_RELAXED)) {
        struct timespec pause = {0, 200000000};
        nanosleep(&pause, NULL);
    }
#else
    if (state->barrier) {
        __atomic_store_n(&state->arrived[task_id], 1, __ATOMIC_RELEASE);
        if (__TVMBackendParallelBarrier(task_id, env) != 0)
            return -1;
        for (int other = 0; other < env->num_task; other++) {
            if (!__atomic_load_n(&state->arrived[other], __ATOMIC_ACQUIRE))
                __atomic_store_n(&state->barrier_held, 0, __ATOMIC_RELAXED);
        }
    }
#endif
    return 0;
}

int __tvm_ffi_launch(void *self, const TVMFFIAny *args, int32_t num_args, TVMFFIAny *result)
{
    (void)self;
    (void)result;
    if (num_args != 2)
        return -1;
    const float *control = ((DLTensor *)args[0].v_ptr)->data;
    float *report = ((DLTensor *)args[1].v_ptr)->data;
    launch_state state = {.fail_task = (int)control[1], .barrier = control[2] != 0,
                          .barrier_held = 1, .caller = pthread_self()};
    int status = __TVMBackendParallelLaunch(task, &state, (int)control[0]);
    if (status != 0)
        return status;
    int distinct = 0, by_caller = 0;
    for (int i = 0; i < state.num_task; i++) {
        int first = 1;
        for (int j = 0; j < i; j++)
            first = first && !pthread_equal(state.threads[i], state.threads[j]);
        distinct += first;
        by_caller += pthread_equal(state.threads[i], state.caller);
    }
    for (int i = 0; i < MAX_TASKS; i++)
        report[i] = (float)state.runs[i];
    report[MAX_TASKS] = (float)state.num_task;
    report[MAX_TASKS + 1] = (float)distinct;
    report[MAX_TASKS + 2] = (float)(state.barrier && state.barrier_held);
    report[MAX_TASKS + 3] = (float)by_caller;
    return 0;
}

static int inner(int task_id, TVMParallelGroupEnv *env, void *closure)
{
    (void)task_id;
    (void)env;
    __atomic_fetch_add((int *)closure, 1, __ATOMIC_RELAXED);
    return 0;
}

static int outer(int task_id, TVMParallelGroupEnv *env, void *closure)
{
    (void)task_id;
    (void)env;
    return __TVMBackendParallelLaunch(inner, closure, 3);
}

int __tvm_ffi_nested(void *self, const TVMFFIAny *args, int32_t num_args, TVMFFIAny *result)
{
    (void)self;
    (void)result;
    if (num_args != 1)
        return -1;
    int count = 0;
    int status = __TVMBackendParallelLaunch(outer, &count, 4);
    ((float *)((DLTensor *)args[0].v_ptr)->data)[0] = (float)count;
    return status;
}

/* Asks for a scratch buffer of control[0] bytes, fills it and gives it back;
 * counts its calls in out[0]. */
int __tvm_ffi_scratch(void *self, const TVMFFIAny *args, int32_t num_args, TVMFFIAny *result)
{
    (void)self;
    (void)result;
    if (num_args != 2)
        return -1;
    uint64_t bytes = (uint64_t)((const float *)((DLTensor *)args[0].v_ptr)->data)[0];
    float *out = ((DLTensor *)args[1].v_ptr)->data;
    char *workspace = __TVMBackendAllocWorkspace(1, 0, bytes, 2, 32);
    if (workspace == NULL)
        return -1;
    memset(workspace, 1, bytes);
    out[0] += 1;
    return __TVMBackendFreeWorkspace(1, 0, workspace);
}

/* Sleeps control[0] milliseconds: a call of known length for the profiler. */
int __tvm_ffi_pause(void *self, const TVMFFIAny *args, int32_t num_args, TVMFFIAny *result)
{
    (void)self;
    (void)result;
    if (num_args != 2)
        return -1;
    float ms = ((const float *)((DLTensor *)args[0].v_ptr)->data)[0];
    struct timespec pause = {0, (long)(ms * 1e6f)};
    return nanosleep(&pause, NULL);
}

/* The sum of the elements of `t`, read as its dtype: f32, u8, i8 or i32,
 * one lane. 0 with *ok = 0 for any other dtype. */
static double element_sum(const DLTensor *t, int *ok)
{
    int code = t->dtype[0], bits = t->dtype[1], lanes = t->dtype[2] | t->dtype[3] << 8;
    int64_t count = 1;
    double sum = 0;
    *ok = lanes == 1 && ((code == 2 && bits == 32) || (code == 1 && bits == 8) ||
                         (code == 0 && (bits == 8 || bits == 32)));
    for (int32_t i = 0; i < t->ndim; i++)
        count *= t->shape[i];
    for (int64_t i = 0; i < count && *ok; i++) {
        if (code == 2)
            sum += ((const float *)t->data)[i];
        else if (code == 1)
            sum += ((const uint8_t *)t->data)[i];
        else if (bits == 8)
            sum += ((const int8_t *)t->data)[i];
        else
            sum += ((const int32_t *)t->data)[i];
    }
    return sum;
}

int __tvm_ffi_dtypes(void *self, const TVMFFIAny *args, int32_t num_args, TVMFFIAny *result)
{
    (void)self;
    (void)result;
    if (num_args < 2)
        return -1;
    float *report = ((DLTensor *)args[num_args - 1].v_ptr)->data;
    for (int32_t k = 0; k < num_args - 1; k++) {
        const DLTensor *t = args[k].v_ptr;
        int ok;
        double sum = element_sum(t, &ok);
        if (!ok) {
            fail("unexpected dtype");
            return -1;
        }
        report[2 * k] = (float)(t->dtype[0] * 100 + t->dtype[1]);
        report[2 * k + 1] = (float)sum;
    }
    return 0;
}
