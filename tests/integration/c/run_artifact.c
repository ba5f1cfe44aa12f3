/*
 * Runs a tconv artifact through the C runtime alone, for the valgrind test:
 *
 *   run_artifact DIR THREADS RUNS [--expect-kernel-error]
 *
 * Input i is filled with sin(0.1 * k + i) at element k. The program runs the
 * network RUNS times, checks every run gives the same outputs, exercises a
 * few error paths, and prints one line per output: its index and the sum of
 * its elements. With --expect-kernel-error, every run must instead fail with
 * TCONV_ERR_KERNEL, and the program prints the message. Exit status 0 on
 * success, 1 on any failure.
 */
#include "tconv_runtime.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check(int status, const char *what)
{
    if (status != TCONV_OK)
        fprintf(stderr, "%s failed (%d): %s\n", what, status, tconv_last_error());
    return status == TCONV_OK;
}

static int expect_error(int status, int expected, const char *what)
{
    if (status != expected || tconv_last_error()[0] == '\0') {
        fprintf(stderr, "%s: expected error %d with a message, got %d\n", what, expected, status);
        return 0;
    }
    return 1;
}

static int exercise_errors(tconv_runtime *runtime, const char *directory)
{
    tconv_runtime *missing = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/no-such-artifact", directory);
    tconv_buffer none[1] = {{NULL, 0}};
    return expect_error(tconv_open(path, &missing), TCONV_ERR_IO, "open of a missing artifact") &&
           missing == NULL &&
           expect_error(tconv_set_threads(runtime, 0), TCONV_ERR_ARGUMENT, "zero threads") &&
           expect_error(tconv_run(runtime, none, 1, none, 0), TCONV_ERR_ARGUMENT,
                        "run with wrong buffers");
}

int main(int argc, char **argv)
{
    if (argc != 4 && !(argc == 5 && strcmp(argv[4], "--expect-kernel-error") == 0)) {
        fprintf(stderr, "usage: %s DIR THREADS RUNS [--expect-kernel-error]\n", argv[0]);
        return 1;
    }
    int threads = atoi(argv[2]), runs = atoi(argv[3]), ok = 1, expect_kernel_error = argc == 5;
    tconv_runtime *runtime = NULL;
    size_t num_inputs = 0, num_outputs = 0;
    if (!check(tconv_open(argv[1], &runtime), "tconv_open"))
        return 1;
    ok = check(tconv_set_threads(runtime, threads), "tconv_set_threads") &&
         check(tconv_num_inputs(runtime, &num_inputs), "tconv_num_inputs") &&
         check(tconv_num_outputs(runtime, &num_outputs), "tconv_num_outputs");
    tconv_buffer *inputs = calloc(num_inputs + 1, sizeof *inputs);
    tconv_buffer *outputs = calloc(num_outputs + 1, sizeof *outputs);
    tconv_buffer *first = calloc(num_outputs + 1, sizeof *first);
    for (size_t i = 0; ok && i < num_inputs; i++) {
        tconv_tensor_info info;
        ok = check(tconv_input_info(runtime, i, &info), "tconv_input_info");
        float *data = malloc(info.bytes);
        for (size_t k = 0; data != NULL && k < info.bytes / sizeof(float); k++)
            data[k] = (float)sin(0.1 * (double)k + (double)i);
        inputs[i] = (tconv_buffer){data, info.bytes};
        ok = ok && data != NULL;
    }
    for (size_t i = 0; ok && i < num_outputs; i++) {
        tconv_tensor_info info;
        ok = check(tconv_output_info(runtime, i, &info), "tconv_output_info");
        outputs[i] = (tconv_buffer){malloc(info.bytes), info.bytes};
        first[i] = (tconv_buffer){malloc(info.bytes), info.bytes};
        ok = ok && outputs[i].data != NULL && first[i].data != NULL;
    }
    for (int run = 0; ok && expect_kernel_error && run < runs; run++) {
        ok = expect_error(tconv_run(runtime, inputs, num_inputs, outputs, num_outputs),
                          TCONV_ERR_KERNEL, "tconv_run");
        if (ok && run == 0)
            printf("%s\n", tconv_last_error());
    }
    for (int run = 0; ok && !expect_kernel_error && run < runs; run++) {
        ok = check(tconv_run(runtime, inputs, num_inputs, outputs, num_outputs), "tconv_run");
        for (size_t i = 0; ok && i < num_outputs; i++) {
            if (run == 0)
                memcpy(first[i].data, outputs[i].data, outputs[i].bytes);
            else if (memcmp(first[i].data, outputs[i].data, outputs[i].bytes) != 0)
                ok = !fprintf(stderr, "run %d: output %zu differs from run 0\n", run, i);
        }
    }
    ok = ok && exercise_errors(runtime, argv[1]);
    for (size_t i = 0; ok && !expect_kernel_error && i < num_outputs; i++) {
        const float *data = outputs[i].data;
        double sum = 0;
        for (size_t k = 0; k < outputs[i].bytes / sizeof(float); k++)
            sum += data[k];
        printf("%zu %.9e\n", i, sum);
    }
    for (size_t i = 0; i < num_inputs; i++)
        free(inputs[i].data);
    for (size_t i = 0; i < num_outputs; i++) {
        free(outputs[i].data);
        free(first[i].data);
    }
    free(inputs);
    free(outputs);
    free(first);
    ok = check(tconv_close(runtime), "tconv_close") && ok;
    return ok ? 0 : 1;
}
