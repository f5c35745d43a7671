// A guest that makes isolates, contexts, references and an unfinished task and drops none
// of them: the host must dispose them all when the guest's store goes away.
#include <stdio.h>

#include "guest.h"

bool exports_guest_run(guest_list_string_t *args, guest_string_t *failure) {
    ivm_isolate_types_error_t error;
    for (int i = 0; i < 3; i++) {
        ivm_isolate_types_isolate_options_t options = {.memory_limit_mb = 16};
        ivm_isolate_types_own_isolate_t isolate;
        ivm_isolate_types_own_context_t context;
        ivm_isolate_types_own_reference_t global;
        if (!ivm_isolate_types_static_isolate_create(&options, &isolate, &error) ||
            !ivm_isolate_types_method_isolate_create_context(ivm_isolate_types_borrow_isolate(isolate), &context, &error) ||
            !ivm_isolate_types_method_context_global(ivm_isolate_types_borrow_context(context), &global, &error)) {
            guest_string_dup(failure, "could not make an isolate");
            return false;
        }
        // A task left waiting in a guest call, never resumed again.
        ivm_isolate_types_own_reference_t callback;
        guest_string_t name;
        guest_string_set(&name, "wait");
        ivm_isolate_types_method_context_callback(ivm_isolate_types_borrow_context(context), 1, &name, &callback, &error);
        ivm_isolate_types_value_t function = {.tag = IVM_ISOLATE_TYPES_VALUE_REFERENCE, .val.reference = callback};
        ivm_isolate_types_method_reference_set(ivm_isolate_types_borrow_reference(global), &name, &function, &error);
        guest_string_t code;
        guest_string_set(&code, "wait()");
        ivm_isolate_types_run_options_t run = {0};
        ivm_isolate_types_own_task_t task = ivm_isolate_types_method_context_eval_task(ivm_isolate_types_borrow_context(context), &code, &run);
        ivm_isolate_types_step_t step;
        ivm_isolate_types_method_task_resume(ivm_isolate_types_borrow_task(task), NULL, &step);
    }
    printf("leaked\n");
    fflush(stdout);
    return true;
}
