// Round-trip latency of `eval` from a guest: the same workload as ivm-bench's eval_sync_us
// (`1+1`, 20,000 times), timed with the WASI monotonic clock. Prints one JSON object.
#include <stdio.h>
#include <time.h>

#include "guest.h"

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

bool exports_guest_run(guest_list_string_t *args, guest_string_t *failure) {
    ivm_isolate_types_isolate_options_t options = {.memory_limit_mb = 128};
    ivm_isolate_types_own_isolate_t isolate;
    ivm_isolate_types_own_context_t context;
    ivm_isolate_types_error_t error;
    if (!ivm_isolate_types_static_isolate_create(&options, &isolate, &error) ||
        !ivm_isolate_types_method_isolate_create_context(ivm_isolate_types_borrow_isolate(isolate), &(ivm_isolate_types_context_options_t){0}, &context, &error)) {
        guest_string_dup(failure, "could not make an isolate");
        return false;
    }
    ivm_isolate_types_borrow_context_t ctx = ivm_isolate_types_borrow_context(context);
    guest_string_t code;
    guest_string_set(&code, "1+1");
    ivm_isolate_types_run_options_t run = {0};
    ivm_isolate_types_value_t result;
    const int n = 20000;
    for (int warm = 0; warm < 1000; warm++) ivm_isolate_types_method_context_eval(ctx, &code, &run, &result, &error);
    double start = now_us();
    for (int i = 0; i < n; i++) {
        if (!ivm_isolate_types_method_context_eval(ctx, &code, &run, &result, &error) || result.val.number != 2) {
            guest_string_dup(failure, "eval failed");
            return false;
        }
    }
    printf("{\"component_eval_us\":%.3f}\n", (now_us() - start) / n);
    fflush(stdout);
    return true;
}
