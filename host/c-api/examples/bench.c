/*
 * The eval round trip through libivm, as ivm-bench's `eval_sync_us` measures it through the
 * Rust API: `1+1` evaluated in a warm context, its result read and freed, 20,000 times after a
 * warm-up. Prints {"c_api_eval_us": ...}. ivm-bench runs it (IVM_BENCH_C_API, set by
 * ci/bench-compare.sh) in the same run as its own figure and reports the ratio.
 */
#include <ivm.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void ok(ivm_error_t *error) {
    if (error != NULL) {
        fprintf(stderr, "bench: %s\n", ivm_error_message(error));
        exit(1);
    }
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(void) {
    ivm_isolate_options_t *options = ivm_isolate_options_new();
    ok(ivm_isolate_options_set_memory_limit(options, 128));
    ok(ivm_isolate_options_set_isolation(options, IVM_ISOLATION_IN_PROCESS));
    ivm_isolate_t *isolate = NULL;
    ivm_context_t *context = NULL;
    ok(ivm_isolate_new(options, &isolate));
    ok(ivm_isolate_create_context(isolate, NULL, &context));
    enum { WARM_UP = 2000, N = 20000 };
    double start = 0;
    for (int i = 0; i < WARM_UP + N; i++) {
        if (i == WARM_UP) start = now_us();
        ivm_value_t *value = NULL;
        ok(ivm_context_eval(context, "1+1", 3, NULL, &value));
        double n;
        if (!ivm_value_get_number(value, &n) || n != 2) exit(1);
        ivm_value_delete(value);
    }
    printf("{\"c_api_eval_us\": %.4f}\n", (now_us() - start) / N);
    ivm_context_delete(context);
    ivm_isolate_delete(isolate);
    ivm_isolate_options_delete(options);
    return 0;
}
