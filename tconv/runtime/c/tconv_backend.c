/*
 * The host side of a TVM kernel library: workspace allocation, a thread pool
 * for parallel loops, and the error hook. See tconv_backend.h.
 */
#define _GNU_SOURCE /* RTLD_DEFAULT */
#include "tconv_backend.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

_Static_assert(sizeof(TVMFFIAny) == 16, "TVMFFIAny is 16 bytes");
_Static_assert(sizeof(DLTensor) == 48, "DLTensor is 48 bytes");

#define WORKSPACE_ALIGNMENT 64
#define MESSAGE_SIZE 1024

/* TVMParallelGroupEnv and FTVMParallelLambda (tvm/runtime/c_backend_api.h). */
typedef struct {
    void *sync_handle;
    int32_t num_task;
} TVMParallelGroupEnv;

typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv *env, void *closure);

/* ---------------------------------------------------------------- errors */

/* The error a kernel (or this file) raised on this thread, until taken. */
static _Thread_local struct {
    int set;
    char text[MESSAGE_SIZE];
} raised;

/* Nonzero while this thread runs tconv kernels: errors they raise are ours. */
static _Thread_local int serving;

static void raise_error(const char *kind, const char **parts, int32_t num_parts)
{
    size_t length =
        (size_t)snprintf(raised.text, sizeof raised.text, "%s: ", kind ? kind : "Error");
    for (int32_t i = 0; i < num_parts && length < sizeof raised.text; i++) {
        if (parts[i] != NULL)
            length += (size_t)snprintf(raised.text + length, sizeof raised.text - length, "%s",
                                       parts[i]);
    }
    raised.set = 1;
}

static void raise_message(const char *message)
{
    raise_error("RuntimeError", &message, 1);
}

/* Hand an error that is not ours to tvm_ffi, where it is loaded: 1 if done. */
static int forward_to_tvm_ffi(const char *kind, const char **parts, int32_t num_parts)
{
    /* TVMFFIErrorSetRaisedFromCStr, unlike the Parts form, is defined only by
     * tvm_ffi, so the default lookup cannot find this file's own definition. */
    void (*set_raised)(const char *, const char *);
    void *symbol = dlsym(RTLD_DEFAULT, "TVMFFIErrorSetRaisedFromCStr");
    if (symbol == NULL)
        return 0;
    memcpy(&set_raised, &symbol, sizeof set_raised);
    size_t size = 1;
    for (int32_t i = 0; i < num_parts; i++)
        size += parts[i] ? strlen(parts[i]) : 0;
    char *message = malloc(size);
    if (message == NULL)
        return 0;
    message[0] = '\0';
    for (int32_t i = 0; i < num_parts; i++) {
        if (parts[i] != NULL)
            strcat(message, parts[i]);
    }
    set_raised(kind, message);
    free(message);
    return 1;
}

void TVMFFIErrorSetRaisedFromCStrParts(const char *kind, const char **message_parts,
                                       int32_t num_parts)
{
    /* Kernels that TVM itself runs may bind to this definition too, where
     * this runtime was loaded before tvm_ffi: their errors belong to tvm_ffi. */
    if (serving || !forward_to_tvm_ffi(kind, message_parts, num_parts))
        raise_error(kind, message_parts, num_parts);
}

/* The object header and error cell of tvm-ffi (TVMFFIObject, TVMFFIErrorCell). */
typedef struct {
    uint64_t combined_ref_count;
    int32_t type_index;
    uint32_t padding;
    void *deleter;
} ffi_object;

typedef struct {
    const char *data;
    size_t size;
} ffi_bytes;

typedef struct {
    ffi_bytes kind;
    ffi_bytes message;
} ffi_error_cell;

/* Where tvm_ffi was loaded (with RTLD_GLOBAL) before this runtime, kernels
 * report errors to it: take the error from there. 1 if there was one. */
static int take_tvm_ffi_error(char *message, size_t size)
{
    void (*move_from_raised)(void **);
    int (*decref)(void *);
    void *move_symbol = dlsym(RTLD_DEFAULT, "TVMFFIErrorMoveFromRaised");
    void *decref_symbol = dlsym(RTLD_DEFAULT, "TVMFFIObjectDecRef");
    if (move_symbol == NULL || decref_symbol == NULL)
        return 0;
    memcpy(&move_from_raised, &move_symbol, sizeof move_from_raised);
    memcpy(&decref, &decref_symbol, sizeof decref);
    void *error = NULL;
    move_from_raised(&error);
    if (error == NULL)
        return 0;
    const ffi_object *header = error;
    if (header->type_index == kTVMFFIError) {
        const ffi_error_cell *cell = (const void *)(header + 1);
        snprintf(message, size, "%.*s: %.*s", (int)cell->kind.size, cell->kind.data,
                 (int)cell->message.size, cell->message.data);
    } else {
        snprintf(message, size, "an error object of type index %d", header->type_index);
    }
    decref(error);
    return 1;
}

/* Move this thread's raised error into `message`. */
static void take_error(char *message, size_t size)
{
    if (raised.set) {
        snprintf(message, size, "%s", raised.text);
        raised.set = 0;
    } else if (!take_tvm_ffi_error(message, size)) {
        snprintf(message, size, "no error message was raised");
    }
}

/* ------------------------------------------------------------- workspace */

/* Kernels allocate the same scratch buffers on every run (padded rows,
 * packed tiles), often above malloc's mmap threshold, where each allocation
 * would map fresh pages and fault them in. Each thread keeps the buffers
 * freed since and hands one back for a request of the same size. It keeps
 * every size a network's kernels use, up to CACHED_WORKSPACES buffers and
 * CACHED_BYTES in all, the oldest going first: a cache of 8 buffers, tried
 * before, was smaller than a network's kernels need in one run, so that
 * each kernel found its buffer gone and faulted it in again (ResNeXt-29,
 * 19 kernels: the first call of a kernel in a run took up to twice as long
 * as the same kernel called again). */
#define CACHED_WORKSPACES 128
#define CACHED_BYTES ((uint64_t)256 << 20)
#define MAX_CACHED_BYTES ((uint64_t)64 << 20) /* a larger buffer is not kept */
#define LIVE_WORKSPACES 16

typedef struct {
    int count;
    uint64_t cached_bytes;
    struct {
        void *data;
        uint64_t bytes;
    } entry[CACHED_WORKSPACES];
    /* the size of each live buffer handed out, to file it when freed */
    int live_count;
    struct {
        void *data;
        uint64_t bytes;
    } live[LIVE_WORKSPACES];
} workspace_cache;

static _Atomic uint64_t fresh_workspaces;

uint64_t tconv_fresh_workspaces(void)
{
    return atomic_load(&fresh_workspaces);
}

static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;

static void free_cache(void *argument)
{
    workspace_cache *cache = argument;
    for (int i = 0; i < cache->count; i++)
        free(cache->entry[i].data);
    free(cache);
}

static void make_cache_key(void)
{
    /* The destructor frees a thread's cache when the thread exits. */
    if (pthread_key_create(&cache_key, free_cache) != 0)
        cache_key_once = PTHREAD_ONCE_INIT; /* no cache: plain malloc/free */
}

static workspace_cache *thread_cache(void)
{
    pthread_once(&cache_key_once, make_cache_key);
    workspace_cache *cache = pthread_getspecific(cache_key);
    if (cache == NULL) {
        cache = calloc(1, sizeof *cache);
        if (cache != NULL && pthread_setspecific(cache_key, cache) != 0) {
            free(cache);
            cache = NULL;
        }
    }
    return cache;
}

void tconv_backend_release_workspaces(void)
{
    pthread_once(&cache_key_once, make_cache_key);
    workspace_cache *cache = pthread_getspecific(cache_key);
    if (cache != NULL) {
        pthread_setspecific(cache_key, NULL);
        free_cache(cache);
    }
}

static void *alloc_workspace(int device_type, int device_id, uint64_t bytes, int dtype_code,
                             int dtype_bits)
{
    (void)device_id;
    (void)dtype_code;
    (void)dtype_bits;
    void *data = NULL;
    if (device_type != kDLCPU) {
        raise_message("workspace requested on a device other than the CPU");
        return NULL;
    }
    workspace_cache *cache = bytes <= MAX_CACHED_BYTES ? thread_cache() : NULL;
    if (cache != NULL) {
        for (int i = cache->count - 1; i >= 0; i--) {
            if (cache->entry[i].bytes == bytes) {
                data = cache->entry[i].data;
                cache->cached_bytes -= bytes;
                memmove(&cache->entry[i], &cache->entry[i + 1],
                        (size_t)(cache->count - 1 - i) * sizeof cache->entry[0]);
                cache->count--;
                break;
            }
        }
    }
    if (data == NULL && bytes <= SIZE_MAX)
        atomic_fetch_add(&fresh_workspaces, 1);
    if (data == NULL &&
        (bytes > SIZE_MAX || posix_memalign(&data, WORKSPACE_ALIGNMENT, bytes ? (size_t)bytes : 1))) {
        char text[96];
        snprintf(text, sizeof text, "out of memory for a workspace of %llu bytes",
                 (unsigned long long)bytes);
        raise_message(text);
        return NULL;
    }
    if (cache != NULL && cache->live_count < LIVE_WORKSPACES) {
        cache->live[cache->live_count].data = data;
        cache->live[cache->live_count++].bytes = bytes;
    }
    return data;
}

static int free_workspace(int device_type, int device_id, void *data)
{
    (void)device_type;
    (void)device_id;
    workspace_cache *cache = pthread_getspecific(cache_key);
    if (cache != NULL) {
        for (int i = cache->live_count - 1; i >= 0; i--) {
            if (cache->live[i].data != data)
                continue;
            uint64_t bytes = cache->live[i].bytes;
            cache->live[i] = cache->live[--cache->live_count];
            while (cache->count > 0 &&
                   (cache->count == CACHED_WORKSPACES || cache->cached_bytes + bytes > CACHED_BYTES)) {
                free(cache->entry[0].data); /* the oldest goes */
                cache->cached_bytes -= cache->entry[0].bytes;
                memmove(&cache->entry[0], &cache->entry[1],
                        (size_t)(cache->count - 1) * sizeof cache->entry[0]);
                cache->count--;
            }
            cache->entry[cache->count].data = data;
            cache->entry[cache->count++].bytes = bytes;
            cache->cached_bytes += bytes;
            return 0;
        }
    }
    free(data);
    return 0;
}

/* ----------------------------------------------------------- thread pool */

/* A barrier over the tasks of one launch; usable only when they all run at once. */
typedef struct {
    pthread_mutex_t *lock;
    pthread_cond_t *cond;
    int parties;
    int arrived;
    uint64_t phase;
    int usable;
} barrier;

typedef struct {
    tconv_pool *pool;
    int index;
    uint64_t placed; /* the placement epoch this worker last bound itself to */
} worker;

/* Thread i's share of a launch: a run of consecutive tasks, claimed one at a
 * time from the front, by thread i and, once their own share is done, by the
 * others. `next` packs the launch's generation, whether others may take
 * from it, and the next task, so that one compare-and-swap both claims a
 * task and checks that its launch is still the current one. */
typedef struct {
    _Alignas(64) _Atomic uint64_t next;
    _Atomic int end;
} share;

#define SHARE_STEALABLE ((uint64_t)1 << 63)
/* The 31 bits of a launch's generation that a share's word keeps. */
#define SHARE_TAG(generation) ((uint32_t)(generation) & 0x7fffffffu)
#define SHARE_GENERATION(word) SHARE_TAG((word) >> 32)

struct tconv_pool {
    int threads;
    int tasks_per_thread; /* of a loop the runtime splits (see launch) */
    int started;
    pthread_t *threads_ids;
    worker *workers;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_cond_t done;
    pthread_mutex_t barrier_lock;
    pthread_cond_t barrier_cond;
    _Atomic uint64_t generation; /* counts launches; a worker waits for the next one */
    _Atomic int stopping;
    /* Where the workers run (see place_workers): the CPUs this process may
     * use, the launcher's CPU they were last placed around, the epoch of
     * that placement, and each worker's CPU in it (-1: unbound). */
    int binding;
    int cpu_count;
    int *cpus;
    int launcher_cpu;
    uint64_t placement;
    int *worker_cpu;
    /* the current launch */
    FTVMParallelLambda lambda;
    void *closure;
    TVMParallelGroupEnv env;
    barrier sync;
    share *shares;        /* one per thread */
    _Atomic int remaining; /* tasks not finished */
    _Atomic int failed;
    char error[MESSAGE_SIZE];
};

/* The pool serving this thread's kernel calls (NULL: run loops inline). */
static _Thread_local tconv_pool *current_pool;
/* Nonzero while this thread runs a parallel task: nested loops run inline. */
static _Thread_local int in_task;

static void record_failure(tconv_pool *pool)
{
    char message[MESSAGE_SIZE];
    take_error(message, sizeof message);
    pthread_mutex_lock(&pool->lock);
    if (!atomic_load(&pool->failed)) {
        snprintf(pool->error, sizeof pool->error, "%s", message);
        atomic_store(&pool->failed, 1);
    }
    pthread_mutex_unlock(&pool->lock);
}

/* The next task of `from` in launch `generation`, or -1 when its tasks are
 * all taken, the launch is over, or (for a thief) the share is not stealable. */
static int claim(share *from, uint32_t generation, int thief)
{
    uint64_t word = atomic_load_explicit(&from->next, memory_order_acquire);
    for (;;) {
        if (SHARE_GENERATION(word) != generation || (thief && !(word & SHARE_STEALABLE)) ||
            (int)(uint32_t)word >= atomic_load_explicit(&from->end, memory_order_acquire))
            return -1;
        /* The launch cannot end while one of its tasks is unclaimed, so a
         * successful claim leaves lambda, closure and env as they are until
         * this task is finished. An `end` newer than `word` fails here: the
         * launch that stored it replaced `word` first. */
        if (atomic_compare_exchange_weak_explicit(&from->next, &word, word + 1, memory_order_acquire,
                                                  memory_order_acquire))
            return (int)(uint32_t)word;
    }
}

static void finish_task(tconv_pool *pool)
{
    if (atomic_fetch_sub_explicit(&pool->remaining, 1, memory_order_acq_rel) == 1) {
        /* The last one: wake the launcher if it went to sleep. */
        pthread_mutex_lock(&pool->lock);
        pthread_cond_signal(&pool->done);
        pthread_mutex_unlock(&pool->lock);
    }
}

/* Thread `index`'s part of launch `generation`: its own share, then whatever
 * the other threads have not started of theirs. Taking over tasks is what
 * keeps a launch going when a thread is late: woken from sleep, or waiting
 * for a CPU that another process holds (with one busy process beside it, a
 * static split ran 3-4 times slower than one thread). After a failure the
 * remaining tasks are claimed but not run. */
static void run_tasks(tconv_pool *pool, int index, uint32_t generation)
{
    int saved_in_task = in_task, saved_serving = serving;
    in_task = 1;
    serving = 1;
    for (int k = 0; k < pool->threads; k++) {
        share *from = &pool->shares[(index + k) % pool->threads];
        for (int task; (task = claim(from, generation, k > 0)) >= 0;) {
            if (!atomic_load_explicit(&pool->failed, memory_order_relaxed) &&
                pool->lambda(task, &pool->env, pool->closure) != 0)
                record_failure(pool);
            finish_task(pool);
        }
    }
    in_task = saved_in_task;
    serving = saved_serving;
}

/* Kernels of a network follow each other within microseconds, and waking a
 * sleeping thread costs tens of microseconds (more on a VM): a waiting thread
 * spins this long before it sleeps on a condition variable. It yields the
 * core while it spins: on a machine shared with other processes, a thread
 * that burns its time slice delays the very threads it waits for. */
#define SPIN_NS 200000

/* The launcher waits for its workers longer before it sleeps: Linux wakes a
 * sleeping thread on its waker's CPU, so a launcher woken by a late worker
 * moved onto that worker's CPU, and the next launch moved the worker away
 * (see place_workers), cold; a cycle that, once started, ran whole batches
 * of 0.2 ms kernels at a third of their speed, the two threads trading CPUs
 * at almost every launch. A launch's tasks take milliseconds at most. */
#define LAUNCHER_SPIN_NS 20000000

/* Tasks per thread of a loop the runtime splits: enough that a late thread's
 * share can be taken over in parts; few, so that each task keeps a
 * contiguous block of the loop. TCONV_TASKS_PER_THREAD overrides it. */
#define TASKS_PER_THREAD 4

uint64_t tconv_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Spin until `*value != unwanted` or SPIN_NS pass: whether it changed. */
static int spin_while_equal_u64(_Atomic uint64_t *value, uint64_t unwanted, _Atomic int *or_flag)
{
    uint64_t start = 0;
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(value, memory_order_acquire) != unwanted ||
            atomic_load_explicit(or_flag, memory_order_acquire))
            return 1;
        if ((i & 15) == 15) {
            uint64_t t = tconv_now_ns();
            if (start == 0)
                start = t;
            else if (t - start > SPIN_NS)
                return 0;
            sched_yield();
        }
        cpu_relax();
    }
}

/* Thread placement. Two threads on one core run at one core's speed, however
 * the tasks are shared between them. Linux puts a woken worker beside its
 * waker often enough (on these 2-vCPU VMs, about half the time after a
 * pause) and does not move it back while both are cache-hot: whole
 * benchmark rounds then ran at 1-thread speed. So each worker binds itself to a CPU other than the one the
 * launcher runs on. The launcher itself stays free; when the kernel moves
 * it, the next launch places the workers around it again.
 * TCONV_BIND_THREADS=0 turns this off. */
static void place_workers(tconv_pool *pool)
{
    if (!pool->binding)
        return;
    int cpu = sched_getcpu();
    if (cpu < 0 || cpu == pool->launcher_cpu)
        return;
    pool->launcher_cpu = cpu;
    int next = 0;
    for (int i = 1; i < pool->threads; i++) {
        if (next < pool->cpu_count && pool->cpus[next] == cpu)
            next++;
        pool->worker_cpu[i] = next < pool->cpu_count ? pool->cpus[next++] : -1;
    }
    pool->placement++;
}

static void bind_worker(worker *self)
{
    tconv_pool *pool = self->pool;
    if (self->placed == pool->placement)
        return;
    self->placed = pool->placement;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (pool->worker_cpu[self->index] >= 0)
        CPU_SET((size_t)pool->worker_cpu[self->index], &set);
    else
        for (int i = 0; i < pool->cpu_count; i++)
            CPU_SET((size_t)pool->cpus[i], &set);
    /* Best effort: a refused binding leaves the thread where it is. */
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* Bind workers only when each can have a CPU of its own besides the
 * launcher's. */
static void init_placement(tconv_pool *pool)
{
    const char *setting = getenv("TCONV_BIND_THREADS");
    cpu_set_t set;
    pool->launcher_cpu = -1;
    if ((setting != NULL && strcmp(setting, "0") == 0) || pool->threads < 2 ||
        sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) < pool->threads)
        return;
    pool->cpus = calloc((size_t)CPU_COUNT(&set), sizeof *pool->cpus);
    pool->worker_cpu = calloc((size_t)pool->threads, sizeof *pool->worker_cpu);
    if (pool->cpus == NULL || pool->worker_cpu == NULL)
        return; /* unbound; freed with the pool */
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET((size_t)cpu, &set))
            pool->cpus[pool->cpu_count++] = cpu;
    pool->binding = 1;
}

static void *worker_main(void *argument)
{
    worker *self = argument;
    tconv_pool *pool = self->pool;
    uint64_t seen = 0;
    for (;;) {
        if (!spin_while_equal_u64(&pool->generation, seen, &pool->stopping)) {
            pthread_mutex_lock(&pool->lock);
            while (!pool->stopping && pool->generation == seen)
                pthread_cond_wait(&pool->wake, &pool->lock);
            pthread_mutex_unlock(&pool->lock);
        }
        if (atomic_load(&pool->stopping))
            break;
        seen = atomic_load(&pool->generation);
        bind_worker(self);
        run_tasks(pool, self->index, SHARE_TAG(seen));
    }
    return NULL;
}

static void stop_workers(tconv_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    atomic_store(&pool->stopping, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->started; i++)
        pthread_join(pool->threads_ids[i], NULL);
    pool->started = 0;
}

void tconv_pool_destroy(tconv_pool *pool)
{
    if (pool == NULL)
        return;
    stop_workers(pool);
    pthread_cond_destroy(&pool->barrier_cond);
    pthread_mutex_destroy(&pool->barrier_lock);
    pthread_cond_destroy(&pool->done);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    free(pool->shares);
    free(pool->worker_cpu);
    free(pool->cpus);
    free(pool->workers);
    free(pool->threads_ids);
    free(pool);
}

int tconv_pool_create(int threads, tconv_pool **result)
{
    *result = NULL;
    tconv_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL)
        return ENOMEM;
    pool->threads = threads;
    pool->tasks_per_thread = TASKS_PER_THREAD;
    const char *setting = getenv("TCONV_TASKS_PER_THREAD");
    if (setting != NULL && atoi(setting) > 0)
        pool->tasks_per_thread = atoi(setting);
    pool->threads_ids = calloc((size_t)threads, sizeof *pool->threads_ids);
    pool->workers = calloc((size_t)threads, sizeof *pool->workers);
    pool->shares = aligned_alloc(_Alignof(share), (size_t)threads * sizeof *pool->shares);
    if (pool->threads_ids == NULL || pool->workers == NULL || pool->shares == NULL) {
        free(pool->shares);
        free(pool->workers);
        free(pool->threads_ids);
        free(pool);
        return ENOMEM;
    }
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done, NULL);
    pthread_mutex_init(&pool->barrier_lock, NULL);
    pthread_cond_init(&pool->barrier_cond, NULL);
    for (int i = 0; i < threads; i++) {
        atomic_init(&pool->shares[i].next, 0);
        atomic_init(&pool->shares[i].end, 0);
    }
    init_placement(pool);
    for (int i = 1; i < threads; i++) {
        pool->workers[i] = (worker){pool, i, 0};
        int status = pthread_create(&pool->threads_ids[pool->started], NULL, worker_main,
                                    &pool->workers[i]);
        if (status != 0) {
            tconv_pool_destroy(pool);
            return status;
        }
        pool->started++;
    }
    *result = pool;
    return 0;
}

int tconv_pool_threads(const tconv_pool *pool)
{
    return pool->threads;
}

static int run_inline(FTVMParallelLambda lambda, void *closure, int num_task)
{
    barrier sync = {.parties = 1, .usable = num_task == 1};
    TVMParallelGroupEnv env = {&sync, num_task};
    int saved_in_task = in_task;
    int status = 0;
    in_task = 1;
    for (int task = 0; task < num_task && status == 0; task++)
        status = lambda(task, &env, closure);
    in_task = saved_in_task;
    return status;
}

/* Run a parallel loop of `num_task` tasks (0: the runtime chooses) on the
 * pool. With `stealing`, the runtime splits a loop into TASKS_PER_THREAD
 * tasks per thread and threads take over each other's unstarted tasks;
 * without, each thread runs only its own tasks, all at once, as a parallel
 * barrier needs. */
static int launch(FTVMParallelLambda lambda, void *closure, int num_task, int stealing)
{
    tconv_pool *pool = current_pool;
    if (pool == NULL || in_task || pool->threads == 1)
        return run_inline(lambda, closure, num_task > 0 ? num_task : 1);
    if (num_task <= 0)
        num_task = stealing ? pool->threads * pool->tasks_per_thread : pool->threads;

    pool->lambda = lambda;
    pool->closure = closure;
    pool->env = (TVMParallelGroupEnv){&pool->sync, num_task};
    pool->sync = (barrier){&pool->barrier_lock, &pool->barrier_cond, num_task, 0, 0,
                           !stealing && num_task <= pool->threads};
    atomic_store(&pool->failed, 0);
    atomic_store(&pool->remaining, num_task);
    uint64_t generation = atomic_load(&pool->generation) + 1;
    uint32_t tag = SHARE_TAG(generation);
    for (int i = 0; i < pool->threads; i++) {
        /* `next` before `end`: a thread still in the previous launch that
         * sees the new end sees the new generation too, and claims nothing. */
        share *s = &pool->shares[i];
        int first = (int)((int64_t)num_task * i / pool->threads);
        atomic_store_explicit(&s->next, ((uint64_t)tag << 32) | (uint32_t)first |
                                            (stealing ? SHARE_STEALABLE : 0),
                              memory_order_release);
        atomic_store_explicit(&s->end, (int)((int64_t)num_task * (i + 1) / pool->threads),
                              memory_order_release);
    }
    place_workers(pool);
    /* Publish the launch (the release orders the fields above before it);
     * spinning workers see it at once, sleeping ones are woken. */
    pthread_mutex_lock(&pool->lock);
    atomic_store_explicit(&pool->generation, generation, memory_order_release);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);

    run_tasks(pool, 0, tag);

    for (uint64_t start = tconv_now_ns(); atomic_load(&pool->remaining) > 0 && tconv_now_ns() - start < LAUNCHER_SPIN_NS;)
        sched_yield();
    pthread_mutex_lock(&pool->lock);
    while (atomic_load(&pool->remaining) > 0)
        pthread_cond_wait(&pool->done, &pool->lock);
    int failed = atomic_load(&pool->failed);
    if (failed) {
        snprintf(raised.text, sizeof raised.text, "%s", pool->error);
        raised.set = 1;
    }
    pthread_mutex_unlock(&pool->lock);
    return failed ? -1 : 0;
}

static int parallel_launch(FTVMParallelLambda lambda, void *closure, int num_task)
{
    return launch(lambda, closure, num_task, 1);
}

/* For libraries that may meet at a parallel barrier. */
static int parallel_launch_together(FTVMParallelLambda lambda, void *closure, int num_task)
{
    return launch(lambda, closure, num_task, 0);
}

static int parallel_barrier(int task_id, TVMParallelGroupEnv *env)
{
    (void)task_id;
    barrier *sync = env->sync_handle;
    if (!sync->usable) {
        raise_message("a parallel barrier needs every task of its loop running at once, "
                      "but there are more tasks than threads");
        return -1;
    }
    if (sync->parties <= 1)
        return 0;
    pthread_mutex_lock(sync->lock);
    uint64_t phase = sync->phase;
    if (++sync->arrived == sync->parties) {
        sync->arrived = 0;
        sync->phase++;
        pthread_cond_broadcast(sync->cond);
    } else {
        while (sync->phase == phase)
            pthread_cond_wait(sync->cond, sync->lock);
    }
    pthread_mutex_unlock(sync->lock);
    return 0;
}

/* ------------------------------------------------------------ the library */

/* Symbols of libraries that call back into a full tvm-ffi runtime (packed
 * function calls, embedded device modules): this runtime does not provide one. */
static const char *const unsupported_symbols[] = {
    "__tvm_ffi__library_ctx",        "__tvm_ffi__library_bin",
    "__TVMFFIFunctionCall",          "__TVMFFIEnvModLookupFromImports",
    "__TVMFFIHandleInitOnce",        "__TVMFFIErrorSetRaisedFromCStr",
};

static void set_pointer(void *library, const char *name, const void *function, size_t size)
{
    void *slot = dlsym(library, name);
    if (slot != NULL)
        memcpy(slot, function, size);
}

int tconv_backend_install(void *library, char *error, size_t error_size)
{
    size_t count = sizeof unsupported_symbols / sizeof unsupported_symbols[0];
    for (size_t i = 0; i < count; i++) {
        if (dlsym(library, unsupported_symbols[i]) != NULL) {
            snprintf(error, error_size,
                     "it defines `%s`, so it needs the full TVM FFI runtime (packed calls or "
                     "device modules), which the tconv runtime does not provide",
                     unsupported_symbols[i]);
            return -1;
        }
    }
    void *(*alloc)(int, int, uint64_t, int, int) = alloc_workspace;
    int (*release)(int, int, void *) = free_workspace;
    /* TVM defines the barrier's slot only in libraries that call it. */
    int (*start)(FTVMParallelLambda, void *, int) =
        dlsym(library, "__TVMBackendParallelBarrier") != NULL ? parallel_launch_together : parallel_launch;
    int (*sync)(int, TVMParallelGroupEnv *) = parallel_barrier;
    set_pointer(library, "__TVMBackendAllocWorkspace", &alloc, sizeof alloc);
    set_pointer(library, "__TVMBackendFreeWorkspace", &release, sizeof release);
    set_pointer(library, "__TVMBackendParallelLaunch", &start, sizeof start);
    set_pointer(library, "__TVMBackendParallelBarrier", &sync, sizeof sync);
    return 0;
}

int tconv_backend_call(tvm_ffi_safe_call kernel, const TVMFFIAny *args, int32_t num_args,
                       tconv_pool *pool, char *message, size_t message_size)
{
    TVMFFIAny result = {.type_index = kTVMFFINone};
    tconv_pool *saved_pool = current_pool;
    int saved_serving = serving;
    current_pool = pool;
    serving = 1;
    raised.set = 0;
    int status = kernel(NULL, args, num_args, &result);
    current_pool = saved_pool;
    serving = saved_serving;
    if (status != 0)
        take_error(message, message_size);
    return status;
}
