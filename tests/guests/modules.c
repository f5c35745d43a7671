// A guest of ivm:isolate@0.2.0 that uses what 0.2.0 added for modules and data: a data
// module, `import()` and `import.meta` answered as task steps (compiling the imported module
// while JavaScript waits), unhandled-rejection reports, and an ArrayBuffer moved between two
// isolates by a transfer list.
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "guest.h"
#include "guest_util.h"

typedef ivm_isolate_types_borrow_context_t context_t;

static const ivm_isolate_types_run_options_t RUN = {.timeout_ms = {.is_some = true, .val = 10000}, .promise = true, .transfer = IVM_ISOLATE_TYPES_TRANSFER_COPY};

// Prints `label`, then the string `result` holds or the error's name.
static void print_result(const char *label, bool ok, const ivm_isolate_types_value_t *result, const error_t *error) {
    if (!ok)
        printf("%s: %s\n", label, error_name(error));
    else if (result->tag == IVM_ISOLATE_TYPES_VALUE_STRING)
        printf("%s: %.*s\n", label, (int)result->val.string.len, (const char *)result->val.string.ptr);
    else
        printf("%s: (tag %d)\n", label, result->tag);
    fflush(stdout);
}

static void eval(context_t context, const char *label, const char *code) {
    guest_string_t source = text(code);
    ivm_isolate_types_value_t result;
    error_t error;
    bool ok = ivm_isolate_types_method_context_eval(context, &source, (ivm_isolate_types_run_options_t *)&RUN, &result, &error);
    print_result(label, ok, &result, &error);
}

static bool compile(ivm_isolate_types_borrow_isolate_t isolate, const char *name, const char *code, ivm_isolate_types_own_module_t *module) {
    guest_string_t source = text(code);
    ivm_isolate_types_compile_options_t options = {.origin = {.is_some = true, .val = {.filename = text(name)}}};
    error_t error;
    return ivm_isolate_types_method_isolate_compile_module(isolate, &source, &options, module, &error);
}

// A data module `config`: { limit: 3, color: 'blue' }.
static bool config_module(ivm_isolate_types_borrow_isolate_t isolate, ivm_isolate_types_own_module_t *config) {
    ivm_isolate_types_tuple2_string_value_t exports[] = {
        {text("limit"), {.tag = IVM_ISOLATE_TYPES_VALUE_NUMBER, .val.number = 3}},
        {text("color"), {.tag = IVM_ISOLATE_TYPES_VALUE_STRING, .val.string = text("blue")}},
    };
    ivm_isolate_types_list_tuple2_string_value_t list = {exports, 2};
    guest_string_t name = text("config");
    error_t error;
    return ivm_isolate_types_method_isolate_data_module(isolate, &name, &list, config, &error);
}

// Imports a module graph that uses the data module, statically.
static void data_module(ivm_isolate_types_borrow_isolate_t isolate, context_t context, ivm_isolate_types_own_module_t config) {
    ivm_isolate_types_own_module_t main;
    if (!compile(isolate, "main.js", "import { limit, color } from 'config'; export const answer = `${limit} ${color}`;", &main)) {
        printf("data module: no module\n");
        return;
    }
    ivm_isolate_types_tuple2_string_borrow_module_t links[] = {{text("config"), ivm_isolate_types_borrow_module(config)}};
    ivm_isolate_types_list_tuple2_string_borrow_module_t table = {links, 1};
    ivm_isolate_types_own_reference_t namespace;
    ivm_isolate_types_value_t answer;
    error_t error;
    guest_string_t key = text("answer");
    bool ok = ivm_isolate_types_method_module_instantiate(ivm_isolate_types_borrow_module(main), context, &table, &error) &&
              ivm_isolate_types_method_module_evaluate(ivm_isolate_types_borrow_module(main), (ivm_isolate_types_run_options_t *)&RUN, &error) &&
              ivm_isolate_types_method_module_namespace(ivm_isolate_types_borrow_module(main), &namespace, &error) &&
              ivm_isolate_types_method_reference_get(ivm_isolate_types_borrow_reference(namespace), &key, IVM_ISOLATE_TYPES_TRANSFER_COPY, &answer, &error);
    print_result("data module", ok, &answer, &error);
    ivm_isolate_types_module_drop_own(main);
}

// Runs `code` as a task whose `import()`s and `import.meta`s the guest answers: `config` is
// the data module, `./lib.js` is compiled when asked for (it imports `config` and reads
// `import.meta.url`), anything else is compiled in `elsewhere`, another isolate.
// A specifier starting with `slow` is answered after 300 ms, past the task's `timeout_ms`, with
// a module that would leave `sideEffect` behind.
static void dynamic_import(const char *label, const char *source, uint32_t timeout_ms, ivm_isolate_types_borrow_isolate_t isolate,
                           ivm_isolate_types_borrow_isolate_t elsewhere, context_t context, ivm_isolate_types_own_module_t config) {
    guest_string_t code = text(source);
    ivm_isolate_types_run_options_t run = RUN;
    run.timeout_ms.val = timeout_ms;
    ivm_isolate_types_own_task_t task = ivm_isolate_types_method_context_eval_task(context, &code, &run);
    ivm_isolate_types_borrow_task_t borrowed = ivm_isolate_types_borrow_task(task);
    ivm_isolate_types_own_module_t lib = {0};
    ivm_isolate_types_step_t step;
    ivm_isolate_types_method_task_resume(borrowed, NULL, NULL, &step);
    while (step.tag != IVM_ISOLATE_TYPES_STEP_DONE) {
        if (step.tag == IVM_ISOLATE_TYPES_STEP_IMPORT) {
            const guest_string_t *specifier = &step.val.import.specifier;
            printf("step: import %.*s\n", (int)specifier->len, (const char *)specifier->ptr);
            ivm_isolate_types_result_borrow_module_js_error_t reply = {0};
            bool slow = specifier->len > 4 && memcmp(specifier->ptr, "slow", 4) == 0;
            if (slow)
                usleep(300 * 1000);
            if (slow && compile(isolate, "slow.js", "globalThis.sideEffect = 'ran'; export default 1", &lib)) {
                // Too late: the run is over, and the module must never run.
                reply.val.ok = ivm_isolate_types_borrow_module(lib);
            } else if (specifier->len == 6 && memcmp(specifier->ptr, "config", 6) == 0) {
                reply.val.ok = ivm_isolate_types_borrow_module(config);
            } else if (specifier->len == 8 && memcmp(specifier->ptr, "./lib.js", 8) == 0 &&
                       compile(isolate, "lib.js", "import { limit } from 'config'; export const double = x => x * 2 + limit - 3; export const url = import.meta.url;", &lib)) {
                // Compiled while the import waits.
                reply.val.ok = ivm_isolate_types_borrow_module(lib);
            } else if (compile(elsewhere, "elsewhere.js", "export default 1", &lib)) {
                reply.val.ok = ivm_isolate_types_borrow_module(lib);
            } else {
                reply.is_err = true;
                reply.val.err = (ivm_isolate_types_js_error_t){.name = text("Error"), .message = text("no such module")};
            }
            ivm_isolate_types_method_task_resume_import(borrowed, &reply, NULL, &step);
        } else if (step.tag == IVM_ISOLATE_TYPES_STEP_IMPORT_META) {
            printf("step: import.meta of %.*s\n", (int)step.val.import_meta.len, (const char *)step.val.import_meta.ptr);
            // MessagePack { url: 'guest:lib.js' }
            static uint8_t meta[] = "\x81\xa3url\xac" "guest:lib.js";
            ivm_isolate_types_result_value_js_error_t reply = {.val.ok = {.tag = IVM_ISOLATE_TYPES_VALUE_MSGPACK, .val.msgpack = {meta, sizeof meta - 1}}};
            ivm_isolate_types_method_task_resume(borrowed, &reply, NULL, &step);
        } else {
            printf("step: unexpected %d\n", step.tag);
            break;
        }
    }
    if (step.tag == IVM_ISOLATE_TYPES_STEP_DONE)
        print_result(label, !step.val.done.is_err, &step.val.done.val.ok, &step.val.done.val.err);
    ivm_isolate_types_task_drop_own(task);
    if (lib.__handle)
        ivm_isolate_types_module_drop_own(lib);
}

// Two rejected promises, one handled later in the same turn: one report.
static void rejections(ivm_isolate_types_borrow_isolate_t isolate, context_t context) {
    eval(context, "rejecting", "Promise.reject(new Error('lost')); Promise.reject(2).catch(() => {}); 'done'");
    ivm_isolate_types_unhandled_rejections_t taken;
    ivm_isolate_types_method_isolate_unhandled_rejections(isolate, &taken);
    printf("unhandled rejections: %zu (dropped %llu)", taken.reports.len, (unsigned long long)taken.dropped);
    for (size_t i = 0; i < taken.reports.len; i++)
        printf(", %.*s: %.*s", (int)taken.reports.ptr[i].name.len, (const char *)taken.reports.ptr[i].name.ptr, (int)taken.reports.ptr[i].message.len,
               (const char *)taken.reports.ptr[i].message.ptr);
    printf("\n");
    ivm_isolate_types_unhandled_rejections_free(&taken);
    ivm_isolate_types_method_isolate_unhandled_rejections(isolate, &taken);
    printf("taken again: %zu\n", taken.reports.len);
    eval(context, "rejecting a thousand", "for (let i = 0; i < 1000; i++) Promise.reject(new Error('x'.repeat(1000))); 'done'");
    ivm_isolate_types_method_isolate_unhandled_rejections(isolate, &taken);
    printf("kept %zu, dropped %llu\n", taken.reports.len, (unsigned long long)taken.dropped);
    ivm_isolate_types_unhandled_rejections_free(&taken);
}

// `{ data: buffer }` copied out of `from` with `buffer` on the transfer list, then moved into
// `to`: the source is detached, the target has the bytes.
static void transfer(context_t from, context_t to) {
    guest_string_t code = text("globalThis.buffer = new Uint8Array([1, 2, 3]).buffer; ({ data: buffer })");
    ivm_isolate_types_run_options_t by_reference = {.timeout_ms = RUN.timeout_ms, .transfer = IVM_ISOLATE_TYPES_TRANSFER_REFERENCE};
    ivm_isolate_types_value_t object, buffer;
    ivm_isolate_types_own_reference_t global;
    ivm_isolate_types_own_external_copy_t copy;
    error_t error;
    guest_string_t key = text("buffer");
    if (!ivm_isolate_types_method_context_eval(from, &code, &by_reference, &object, &error) || !ivm_isolate_types_method_context_global(from, &global, &error) ||
        !ivm_isolate_types_method_reference_get(ivm_isolate_types_borrow_reference(global), &key, IVM_ISOLATE_TYPES_TRANSFER_REFERENCE, &buffer, &error)) {
        printf("transfer: no buffer\n");
        return;
    }
    ivm_isolate_types_borrow_reference_t list[] = {ivm_isolate_types_borrow_reference(buffer.val.reference)};
    ivm_isolate_types_external_copy_options_t options = {.transfer_list = {list, 1}};
    if (!ivm_isolate_types_method_reference_external_copy(ivm_isolate_types_borrow_reference(object.val.reference), &options, &copy, &error)) {
        printf("transfer: %s\n", error_name(&error));
        return;
    }
    eval(from, "source after the copy", "String(buffer.byteLength)");
    guest_string_t read = text("return `${$0.data.byteLength}: ${[...new Uint8Array($0.data)]}`");
    ivm_isolate_types_value_t args[] = {{.tag = IVM_ISOLATE_TYPES_VALUE_TRANSFER_IN, .val.transfer_in = copy}};
    ivm_isolate_types_list_value_t arg_list = {args, 1};
    ivm_isolate_types_value_t result;
    bool ok = ivm_isolate_types_method_context_eval_closure(to, &read, &arg_list, (ivm_isolate_types_run_options_t *)&RUN, &result, &error);
    print_result("target", ok, &result, &error);
    ivm_isolate_types_reference_drop_own(object.val.reference);
    ivm_isolate_types_reference_drop_own(buffer.val.reference);
    ivm_isolate_types_reference_drop_own(global);
}

bool exports_guest_run(guest_list_string_t *args, guest_string_t *failure) {
    (void)args;
    ivm_isolate_types_isolate_options_t options = {.memory_limit_mb = 32};
    ivm_isolate_types_own_isolate_t isolate, other;
    ivm_isolate_types_own_context_t context, other_context;
    ivm_isolate_types_own_module_t config;
    error_t error;
    ivm_isolate_types_context_options_t unnamed = {0};
    if (!ivm_isolate_types_static_isolate_create(&options, &isolate, &error) || !ivm_isolate_types_static_isolate_create(&options, &other, &error) ||
        !ivm_isolate_types_method_isolate_create_context(ivm_isolate_types_borrow_isolate(isolate), &unnamed, &context, &error) ||
        !ivm_isolate_types_method_isolate_create_context(ivm_isolate_types_borrow_isolate(other), &unnamed, &other_context, &error) ||
        !config_module(ivm_isolate_types_borrow_isolate(isolate), &config)) {
        guest_string_dup(failure, "no isolate");
        return false;
    }
    ivm_isolate_types_borrow_isolate_t borrowed = ivm_isolate_types_borrow_isolate(isolate);
    context_t in = ivm_isolate_types_borrow_context(context);
    data_module(borrowed, in, config);
    eval(in, "import() before the hooks", "import('./lib.js').catch(e => e.message)");
    if (!ivm_isolate_types_method_isolate_enable_module_hooks(borrowed, IVM_ISOLATE_TYPES_MODULE_HOOKS_DYNAMIC_IMPORT | IVM_ISOLATE_TYPES_MODULE_HOOKS_IMPORT_META, &error)) {
        guest_string_dup(failure, "no module hooks");
        return false;
    }
    eval(in, "import() outside a task", "import('./lib.js').catch(e => e.name)");
    ivm_isolate_types_borrow_isolate_t other_borrowed = ivm_isolate_types_borrow_isolate(other);
    dynamic_import("dynamic import", "import('./lib.js').then(lib => `${lib.double(21)} ${lib.url}`)", 10000, borrowed, other_borrowed, in, config);
    dynamic_import("a module of another isolate", "import('./elsewhere.js').then(() => 'imported', e => e.message)", 10000, borrowed, other_borrowed, in, config);
    dynamic_import("an answer too late", "import('slow.js').then(() => 'imported', e => e.message)", 100, borrowed, other_borrowed, in, config);
    eval(in, "after it", "typeof sideEffect");
    rejections(borrowed, in);
    transfer(in, ivm_isolate_types_borrow_context(other_context));
    ivm_isolate_types_module_drop_own(config);
    ivm_isolate_types_context_drop_own(other_context);
    ivm_isolate_types_context_drop_own(context);
    ivm_isolate_types_isolate_drop_own(other);
    ivm_isolate_types_isolate_drop_own(isolate);
    return true;
}
