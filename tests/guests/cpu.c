// A guest of ivm:isolate@0.2.0 that runs into CPU-time limits: a run's own (a spin stops, a
// wait is not charged) and an isolate's budget (spent, then every run is refused).
#include <stdio.h>

#include "guest.h"
#include "guest_util.h"

// Evaluates `code` under `run`, printing the string it gives or the error's name.
static void eval(ivm_isolate_types_own_context_t context, const char *label, const char *code, ivm_isolate_types_run_options_t run) {
    guest_string_t source = text(code);
    ivm_isolate_types_value_t result;
    error_t error;
    if (!ivm_isolate_types_method_context_eval(ivm_isolate_types_borrow_context(context), &source, &run, &result, &error))
        printf("%s: %s\n", label, error_name(&error));
    else
        printf("%s: %.*s\n", label, (int)result.val.string.len, (const char *)result.val.string.ptr);
    fflush(stdout);
}

// A new isolate (with a CPU budget in ms, if not 0) and a context in it.
static bool isolate(uint32_t budget_ms, ivm_isolate_types_own_isolate_t *isolate, ivm_isolate_types_own_context_t *context) {
    ivm_isolate_types_isolate_options_t options = {.memory_limit_mb = 32, .cpu_budget_ms = {.is_some = budget_ms != 0, .val = budget_ms}};
    error_t error;
    return ivm_isolate_types_static_isolate_create(&options, isolate, &error) &&
           ivm_isolate_types_method_isolate_create_context(ivm_isolate_types_borrow_isolate(*isolate), &(ivm_isolate_types_context_options_t){0}, context, &error);
}

bool exports_guest_run(guest_list_string_t *args, guest_string_t *failure) {
    (void)args;
    ivm_isolate_types_own_isolate_t limited, budgeted;
    ivm_isolate_types_own_context_t context, metered;
    if (!isolate(0, &limited, &context) || !isolate(40, &budgeted, &metered)) {
        guest_string_dup(failure, "no isolate");
        return false;
    }
    ivm_isolate_types_run_options_t frugal = {.timeout_ms = {.is_some = true, .val = 10000}, .cpu_limit_ms = {.is_some = true, .val = 30}};
    eval(context, "spinning", "for (;;) {}", frugal);
    eval(context, "waiting", "Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200)", frugal);
    ivm_isolate_types_run_options_t plain = {.timeout_ms = {.is_some = true, .val = 10000}};
    eval(metered, "over budget", "for (;;) {}", plain);
    eval(metered, "spent", "'ran'", plain);
    ivm_isolate_types_context_drop_own(metered);
    ivm_isolate_types_isolate_drop_own(budgeted);
    ivm_isolate_types_context_drop_own(context);
    ivm_isolate_types_isolate_drop_own(limited);
    return true;
}
