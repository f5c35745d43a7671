// A guest component that uses every part of the ivm:isolate interface once and prints one
// line per step; tests/acceptance/component.rs checks the lines. Built during the tests (see
// build_guest there): `wit-bindgen c` for the bindings, clang for wasm32-wasi,
// `wasm-component-ld` to make the component.
#include <stdio.h>
#include <string.h>

#include "guest.h"

static bool tour(guest_list_string_t *argv);

typedef ivm_isolate_types_value_t value_t;
typedef ivm_isolate_types_error_t error_t;
typedef ivm_isolate_types_run_options_t options_t;

static guest_string_t str(const char *s) {
    guest_string_t out;
    guest_string_set(&out, s);
    return out;
}

static options_t run_options(int timeout_ms, ivm_isolate_types_transfer_t transfer) {
    options_t options = {0};
    options.timeout_ms.is_some = timeout_ms > 0;
    options.timeout_ms.val = timeout_ms;
    options.transfer = transfer;
    return options;
}

// Prints a value (numbers, strings, MessagePack as hex) or an error, after `label: `.
static void print_value(const char *label, const value_t *v) {
    printf("%s: ", label);
    switch (v->tag) {
    case IVM_ISOLATE_TYPES_VALUE_UNDEFINED: printf("undefined"); break;
    case IVM_ISOLATE_TYPES_VALUE_NUMBER: printf("%g", v->val.number); break;
    case IVM_ISOLATE_TYPES_VALUE_BOOLEAN: printf("%s", v->val.boolean ? "true" : "false"); break;
    case IVM_ISOLATE_TYPES_VALUE_STRING: printf("'%.*s'", (int)v->val.string.len, v->val.string.ptr); break;
    case IVM_ISOLATE_TYPES_VALUE_MSGPACK:
        printf("msgpack ");
        for (size_t i = 0; i < v->val.msgpack.len; i++) printf("%02x", v->val.msgpack.ptr[i]);
        break;
    case IVM_ISOLATE_TYPES_VALUE_REFERENCE: printf("reference"); break;
    default: printf("value %d", v->tag);
    }
    printf("\n");
}

static void print_error(const char *label, const error_t *e) {
    static const char *kinds[] = {"exception", "timeout", "memory-limit", "disposed", "abandoned", "invalid-argument", "conversion", "limit"};
    printf("%s: error %s", label, kinds[e->tag]);
    if (e->tag == IVM_ISOLATE_TYPES_ERROR_EXCEPTION) {
        printf(" %.*s: %.*s", (int)e->val.exception.name.len, e->val.exception.name.ptr, (int)e->val.exception.message.len,
               e->val.exception.message.ptr);
    } else if (e->tag == IVM_ISOLATE_TYPES_ERROR_LIMIT) {
        printf(" %.*s", (int)e->val.limit.len, e->val.limit.ptr);
    }
    printf("\n");
}

static void eval(ivm_isolate_types_borrow_context_t context, const char *label, const char *code, options_t options) {
    guest_string_t source = str(code);
    value_t result;
    error_t error;
    if (ivm_isolate_types_method_context_eval(context, &source, &options, &result, &error)) {
        print_value(label, &result);
        ivm_isolate_types_value_free(&result);
    } else {
        print_error(label, &error);
        ivm_isolate_types_error_free(&error);
    }
}

bool exports_guest_run(guest_list_string_t *argv, guest_string_t *failure) {
    bool ok = tour(argv);
    fflush(stdout);
    if (!ok) guest_string_dup(failure, "the tour failed");
    return ok;
}

static bool tour(guest_list_string_t *argv) {
    ivm_isolate_types_isolate_options_t isolate_options = {.memory_limit_mb = 64};
    ivm_isolate_types_own_isolate_t isolate;
    error_t error;
    if (!ivm_isolate_types_static_isolate_create(&isolate_options, &isolate, &error)) {
        print_error("isolate", &error);
        return false;
    }
    ivm_isolate_types_borrow_isolate_t iso = ivm_isolate_types_borrow_isolate(isolate);
    ivm_isolate_types_own_context_t context;
    if (!ivm_isolate_types_method_isolate_create_context(iso, &context, &error)) return false;
    ivm_isolate_types_borrow_context_t ctx = ivm_isolate_types_borrow_context(context);

    // 1. Plain evaluation, the argument of the command included.
    eval(ctx, "eval", "6 * 7", run_options(0, IVM_ISOLATE_TYPES_TRANSFER_AUTO));
    if (argv->len > 0) {
        char code[256];
        snprintf(code, sizeof code, "'%.*s'.toUpperCase()", (int)argv->ptr[0].len, argv->ptr[0].ptr);
        eval(ctx, "argument", code, run_options(0, IVM_ISOLATE_TYPES_TRANSFER_AUTO));
    }

    // 2. MessagePack in: { rows: [{ n: 1 }, { n: 2 }] }.
    static uint8_t rows[] = {0x81, 0xa4, 'r', 'o', 'w', 's', 0x92, 0x81, 0xa1, 'n', 0x01, 0x81, 0xa1, 'n', 0x02};
    value_t arg = {.tag = IVM_ISOLATE_TYPES_VALUE_MSGPACK, .val.msgpack = {.ptr = rows, .len = sizeof rows}};
    ivm_isolate_types_list_value_t args = {.ptr = &arg, .len = 1};
    guest_string_t closure = str("return $0.rows.length * 10 + $0.rows[1].n");
    options_t plain = run_options(0, IVM_ISOLATE_TYPES_TRANSFER_AUTO);
    value_t result;
    if (ivm_isolate_types_method_context_eval_closure(ctx, &closure, &args, &plain, &result, &error)) {
        print_value("msgpack in", &result);
    } else {
        print_error("msgpack in", &error);
    }

    // 3. MessagePack out.
    eval(ctx, "msgpack out", "({ a: [1, 'x'], when: new Date(0) })", run_options(0, IVM_ISOLATE_TYPES_TRANSFER_COPY));

    // 4. JavaScript calls the guest: function 7 adds its arguments.
    ivm_isolate_types_own_reference_t host_add;
    guest_string_t name = str("hostAdd");
    if (!ivm_isolate_types_method_context_callback(ctx, 7, &name, &host_add, &error)) return false;
    ivm_isolate_types_own_reference_t global;
    if (!ivm_isolate_types_method_context_global(ctx, &global, &error)) return false;
    value_t function = {.tag = IVM_ISOLATE_TYPES_VALUE_REFERENCE, .val.reference = host_add};
    if (!ivm_isolate_types_method_reference_set(ivm_isolate_types_borrow_reference(global), &name, &function, &error)) return false;
    guest_string_t task_code = str("hostAdd(40, 2) * 10 + hostAdd(1, 1)");
    ivm_isolate_types_own_task_t task = ivm_isolate_types_method_context_eval_task(ctx, &task_code, &plain);
    ivm_isolate_types_step_t step;
    ivm_isolate_types_method_task_resume(ivm_isolate_types_borrow_task(task), NULL, &step);
    int calls = 0;
    while (step.tag == IVM_ISOLATE_TYPES_STEP_CALL) {
        calls++;
        // While it answers, the guest may use the task's isolate (the call waits outside it).
        if (calls == 1) eval(ctx, "during a call", "typeof hostAdd", plain);
        ivm_isolate_types_invocation_t *call = &step.val.call;
        double sum = 0;
        for (size_t i = 0; i < call->args.len; i++) sum += call->args.ptr[i].val.number;
        ivm_isolate_types_result_value_js_error_t reply = {.is_err = false};
        reply.val.ok.tag = IVM_ISOLATE_TYPES_VALUE_NUMBER;
        reply.val.ok.val.number = sum;
        ivm_isolate_types_step_free(&step);
        ivm_isolate_types_method_task_resume(ivm_isolate_types_borrow_task(task), &reply, &step);
    }
    printf("guest calls: %d\n", calls);
    if (!step.val.done.is_err) {
        print_value("task", &step.val.done.val.ok);
    } else {
        print_error("task", &step.val.done.val.err);
    }
    ivm_isolate_types_task_drop_own(task);
    // Outside a task, the guest function throws.
    eval(ctx, "outside a task", "try { hostAdd(1, 2) } catch (e) { e.name }", plain);

    // 5. Modules, linked by name.
    ivm_isolate_types_compile_options_t compile = {0};
    compile.origin.is_some = true;
    compile.origin.val.filename = str("file:///main.mjs");
    guest_string_t main_code = str("import { x } from 'dep'; import data from 'data'; export const y = x + data.n;");
    guest_string_t dep_code = str("export const x = 40;");
    guest_string_t data_name = str("data.json");
    guest_string_t data_json = str("{ \"n\": 2 }");
    ivm_isolate_types_own_module_t main_module, dep_module, data_module;
    if (!ivm_isolate_types_method_isolate_compile_module(iso, &main_code, &compile, &main_module, &error)) return false;
    compile.origin.val.filename = str("file:///dep.mjs");
    if (!ivm_isolate_types_method_isolate_compile_module(iso, &dep_code, &compile, &dep_module, &error)) return false;
    if (!ivm_isolate_types_method_isolate_json_module(iso, &data_name, &data_json, &data_module, &error)) return false;
    ivm_isolate_types_tuple2_string_borrow_module_t link_list[] = {
        {.f0 = str("dep"), .f1 = ivm_isolate_types_borrow_module(dep_module)},
        {.f0 = str("data"), .f1 = ivm_isolate_types_borrow_module(data_module)},
    };
    ivm_isolate_types_list_tuple2_string_borrow_module_t links = {.ptr = link_list, .len = 2};
    ivm_isolate_types_borrow_module_t main_ref = ivm_isolate_types_borrow_module(main_module);
    ivm_isolate_types_own_reference_t ns;
    if (ivm_isolate_types_method_module_instantiate(main_ref, ctx, &links, &error) &&
        ivm_isolate_types_method_module_evaluate(main_ref, &plain, &error) &&
        ivm_isolate_types_method_module_namespace(main_ref, &ns, &error)) {
        guest_string_t y = str("y");
        if (ivm_isolate_types_method_reference_get(ivm_isolate_types_borrow_reference(ns), &y, IVM_ISOLATE_TYPES_TRANSFER_COPY, &result, &error)) {
            print_value("module", &result);
        } else {
            print_error("module", &error);
        }
    } else {
        print_error("module", &error);
    }

    // 6. A timeout is an error value; the isolate goes on.
    eval(ctx, "timeout", "for (;;) {}", run_options(50, IVM_ISOLATE_TYPES_TRANSFER_AUTO));
    eval(ctx, "after timeout", "1 + 1", plain);
    eval(ctx, "exception", "throw new TypeError('bad')", plain);

    // 7. Running out of memory disposes that isolate only; the guest goes on.
    ivm_isolate_types_isolate_options_t small = {.memory_limit_mb = 16};
    ivm_isolate_types_own_isolate_t hungry;
    if (!ivm_isolate_types_static_isolate_create(&small, &hungry, &error)) return false;
    ivm_isolate_types_own_context_t hungry_context;
    if (!ivm_isolate_types_method_isolate_create_context(ivm_isolate_types_borrow_isolate(hungry), &hungry_context, &error)) return false;
    eval(ivm_isolate_types_borrow_context(hungry_context), "memory", "const a = []; for (;;) a.push({ x: 1 })", plain);
    printf("disposed: %s\n", ivm_isolate_types_method_isolate_is_disposed(ivm_isolate_types_borrow_isolate(hungry)) ? "yes" : "no");
    eval(ctx, "still running", "'yes'", plain);

    // 8. The host's limits are errors too (the test allows this guest 2 live isolates).
    ivm_isolate_types_own_isolate_t third, fourth;
    if (ivm_isolate_types_static_isolate_create(&small, &third, &error)) {
        if (!ivm_isolate_types_static_isolate_create(&small, &fourth, &error)) print_error("fourth isolate", &error);
    }
    printf("done\n");
    return true;
}
