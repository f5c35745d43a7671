// The guest of the README's "From a wasm component": runs JavaScript in an isolate with a
// 100 ms timeout and prints the result.
#include <stdio.h>

#include "guest.h"

bool exports_guest_run(guest_list_string_t *args, guest_string_t *failure) {
    ivm_isolate_types_isolate_options_t options = {.memory_limit_mb = 32};
    ivm_isolate_types_own_isolate_t isolate;
    ivm_isolate_types_own_context_t context;
    ivm_isolate_types_error_t error;
    if (!ivm_isolate_types_static_isolate_create(&options, &isolate, &error) ||
        !ivm_isolate_types_method_isolate_create_context(ivm_isolate_types_borrow_isolate(isolate), &(ivm_isolate_types_context_options_t){0}, &context, &error)) {
        guest_string_dup(failure, "no isolate");
        return false;
    }
    char code[256];
    snprintf(code, sizeof code, "`Hello, ${'%.*s'}! ${6 * 7}`", args->len ? (int)args->ptr[0].len : 5,
             args->len ? (const char *)args->ptr[0].ptr : "guest");
    guest_string_t source;
    guest_string_set(&source, code);
    ivm_isolate_types_run_options_t run = {.timeout_ms = {.is_some = true, .val = 100}};
    ivm_isolate_types_value_t result;
    if (!ivm_isolate_types_method_context_eval(ivm_isolate_types_borrow_context(context), &source, &run, &result, &error)) {
        guest_string_dup(failure, "eval failed");
        return false;
    }
    printf("%.*s\n", (int)result.val.string.len, result.val.string.ptr);
    fflush(stdout);
    return true;
}
