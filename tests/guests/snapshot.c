// A guest of ivm:isolate@0.2.0 that makes a startup snapshot of a small library, keeps its
// sealed bytes, opens them again, and starts isolates from it; tampered bytes and hostile
// creation scripts come back as error values.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guest.h"
#include "guest_util.h"

// A snapshot of one script, or the error's name.
static bool make(const char *code, uint32_t memory_limit_mb, uint32_t timeout_ms, ivm_isolate_types_own_snapshot_t *out, error_t *error) {
    ivm_isolate_types_tuple2_string_origin_t script = {.f0 = text(code), .f1 = {.filename = text("library.js")}};
    ivm_isolate_types_snapshot_options_t options = {
        .scripts = {.ptr = &script, .len = 1},
        .memory_limit_mb = memory_limit_mb,
        .timeout_ms = {.is_some = timeout_ms != 0, .val = timeout_ms},
    };
    return ivm_isolate_types_static_snapshot_create(&options, out, error);
}

// Evaluates `code` in a new isolate from `snapshot`, printing the string it gives.
static bool run(ivm_isolate_types_borrow_snapshot_t snapshot, const char *label, const char *code) {
    ivm_isolate_types_isolate_options_t options = {.memory_limit_mb = 64};
    ivm_isolate_types_own_isolate_t isolate;
    ivm_isolate_types_own_context_t context;
    error_t error;
    if (!ivm_isolate_types_static_isolate_create_from_snapshot(&options, snapshot, &isolate, &error) ||
        !ivm_isolate_types_method_isolate_create_context(ivm_isolate_types_borrow_isolate(isolate), &(ivm_isolate_types_context_options_t){0}, &context, &error)) {
        printf("%s: error %s\n", label, error_name(&error));
        return false;
    }
    guest_string_t source = text(code);
    ivm_isolate_types_run_options_t run = {.timeout_ms = {.is_some = true, .val = 5000}};
    ivm_isolate_types_value_t result;
    if (!ivm_isolate_types_method_context_eval(ivm_isolate_types_borrow_context(context), &source, &run, &result, &error))
        printf("%s: error %s\n", label, error_name(&error));
    else
        printf("%s: %.*s\n", label, (int)result.val.string.len, (const char *)result.val.string.ptr);
    ivm_isolate_types_context_drop_own(context);
    ivm_isolate_types_isolate_drop_own(isolate);
    return true;
}

bool exports_guest_run(guest_list_string_t *args, guest_string_t *failure) {
    (void)args;
    (void)failure;
    error_t error;
    ivm_isolate_types_own_snapshot_t snapshot;
    if (!make("globalThis.greet = name => `Hello, ${name}!`; var count = (() => { let n = 0; return () => ++n })()", 0, 0, &snapshot, &error)) {
        printf("create: error %s\n", error_name(&error));
        return false;
    }
    run(ivm_isolate_types_borrow_snapshot(snapshot), "from the snapshot", "greet('guest') + ' ' + count() + count()");

    // Kept as bytes, opened again.
    guest_list_u8_t sealed;
    ivm_isolate_types_method_snapshot_sealed(ivm_isolate_types_borrow_snapshot(snapshot), &sealed);
    ivm_isolate_types_own_snapshot_t reopened;
    if (ivm_isolate_types_static_snapshot_open(&sealed, &reopened, &error)) {
        run(ivm_isolate_types_borrow_snapshot(reopened), "reopened", "greet('again')");
        ivm_isolate_types_snapshot_drop_own(reopened);
    } else {
        printf("reopened: error %s\n", error_name(&error));
    }
    sealed.ptr[sealed.len / 2] ^= 1;
    bool opened = ivm_isolate_types_static_snapshot_open(&sealed, &reopened, &error);
    printf("tampered: %s\n", opened ? "opened" : error_name(&error));
    guest_list_u8_free(&sealed);
    ivm_isolate_types_snapshot_drop_own(snapshot);

    // Hostile creation scripts.
    ivm_isolate_types_own_snapshot_t hostile;
    printf("spinning: %s\n", make("for (;;);", 0, 200, &hostile, &error) ? "made" : error_name(&error));
    printf("hoarding: %s\n", make("const all = []; for (;;) all.push(new Array(1e5).fill(1.5))", 16, 0, &hostile, &error) ? "made" : error_name(&error));
    printf("throwing: %s\n", make("throw new Error('no')", 0, 0, &hostile, &error) ? "made" : error_name(&error));
    fflush(stdout);
    return true;
}
