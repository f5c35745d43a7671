// A guest of ivm:isolate@0.2.0 that debugs and profiles its own isolate: the CPU profiler, a
// heap snapshot read in pieces, and an inspector session it drives by polling while a task
// of its own is paused at `debugger;`. Without the host's permission it reports the refusal.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guest.h"
#include "guest_util.h"

static bool eval(ivm_isolate_types_borrow_context_t context, const char *code, ivm_isolate_types_value_t *result) {
    guest_string_t source = text(code);
    ivm_isolate_types_run_options_t run = {.timeout_ms = {.is_some = true, .val = 5000}};
    error_t error;
    if (!ivm_isolate_types_method_context_eval(context, &source, &run, result, &error)) {
        printf("eval failed: %s\n", error_name(&error));
        return false;
    }
    return true;
}

// A string result as C text (the caller frees it).
static char *string_of(const ivm_isolate_types_value_t *value) {
    if (value->tag != IVM_ISOLATE_TYPES_VALUE_STRING) return strdup("not a string");
    return strndup((const char *)value->val.string.ptr, value->val.string.len);
}

static char *step_string(const ivm_isolate_types_step_t *step) {
    if (step->tag != IVM_ISOLATE_TYPES_STEP_DONE) return strdup("not done");
    if (step->val.done.is_err) return strdup(error_name(&step->val.done.val.err));
    return string_of(&step->val.done.val.ok);
}

static void dispatch(ivm_isolate_types_borrow_inspector_session_t session, const char *message) {
    guest_string_t m = text(message);
    error_t error;
    if (!ivm_isolate_types_method_inspector_session_dispatch(session, &m, &error)) printf("dispatch failed: %s\n", error_name(&error));
}

// Polls the session until a message containing `needle` comes (up to ~5 s): it, or NULL. The
// caller frees it.
static char *await_message(ivm_isolate_types_borrow_inspector_session_t session, const char *needle) {
    for (int i = 0; i < 500; i++) {
        guest_option_string_t message;
        error_t error;
        if (!ivm_isolate_types_method_inspector_session_poll(session, 10, &message, &error)) return NULL;
        if (!message.is_some) continue;
        char *copy = strndup((const char *)message.val.ptr, message.val.len);
        guest_string_free(&message.val);
        if (strstr(copy, needle)) return copy;
        free(copy);
    }
    return NULL;
}

bool exports_guest_run(guest_list_string_t *args, guest_string_t *failure) {
    (void)args;
    error_t error;
    ivm_isolate_types_isolate_options_t options = {.memory_limit_mb = 64, .inspector = true};
    ivm_isolate_types_own_isolate_t isolate;
    if (!ivm_isolate_types_static_isolate_create(&options, &isolate, &error)) {
        printf("inspector: refused (%s)\n", error_name(&error));
        options.inspector = false;
        if (!ivm_isolate_types_static_isolate_create(&options, &isolate, &error)) return false;
        guest_string_t title = text("p");
        if (!ivm_isolate_types_method_isolate_start_cpu_profiler(ivm_isolate_types_borrow_isolate(isolate), &title, &error))
            printf("profiler: refused (%s)\n", error_name(&error));
        ivm_isolate_types_own_heap_snapshot_stream_t refused;
        if (!ivm_isolate_types_method_isolate_take_heap_snapshot(ivm_isolate_types_borrow_isolate(isolate), &refused, &error))
            printf("heap snapshot: refused (%s)\n", error_name(&error));
        ivm_isolate_types_isolate_drop_own(isolate);
        fflush(stdout);
        return true;
    }
    ivm_isolate_types_borrow_isolate_t iso = ivm_isolate_types_borrow_isolate(isolate);
    ivm_isolate_types_context_options_t context_options = {.name = {.is_some = true, .val = text("guest-main")}};
    ivm_isolate_types_own_context_t context;
    if (!ivm_isolate_types_method_isolate_create_context(iso, &context_options, &context, &error)) return false;
    ivm_isolate_types_borrow_context_t ctx = ivm_isolate_types_borrow_context(context);
    ivm_isolate_types_value_t result;

    // The CPU profiler: the profile is a .cpuprofile naming the hot function.
    guest_string_t title = text("work");
    if (!ivm_isolate_types_method_isolate_start_cpu_profiler(iso, &title, &error)) return false;
    if (!eval(ctx, "function hot() { let x = 0; for (let i = 0; i < 3e6; i++) x += i % 7; return x } hot()", &result)) return false;
    ivm_isolate_types_list_thread_cpu_profile_t profiles;
    if (!ivm_isolate_types_method_isolate_stop_cpu_profiler(iso, &title, &profiles, &error)) return false;
    char *profile = profiles.len ? strndup((const char *)profiles.ptr[0].profile.ptr, profiles.ptr[0].profile.len) : strdup("");
    printf("profiles: %zu, names hot: %s, has samples: %s\n", profiles.len, strstr(profile, "\"functionName\":\"hot\"") ? "yes" : "no",
           strstr(profile, "\"samples\":[") && !strstr(profile, "\"samples\":[]") ? "yes" : "no");
    free(profile);
    ivm_isolate_types_list_thread_cpu_profile_free(&profiles);

    // A heap snapshot, read in pieces, holds a string the script made.
    if (!eval(ctx, "globalThis.kept = ['guest', 'made', 'this'].join('-'); 0", &result)) return false;
    ivm_isolate_types_own_heap_snapshot_stream_t stream;
    if (!ivm_isolate_types_method_isolate_take_heap_snapshot(iso, &stream, &error)) return false;
    size_t size = 0, pieces = 0;
    char *snapshot = NULL;
    for (;;) {
        guest_list_u8_t piece;
        if (!ivm_isolate_types_method_heap_snapshot_stream_read(ivm_isolate_types_borrow_heap_snapshot_stream(stream), &piece, &error)) {
            printf("snapshot failed: %s\n", error_name(&error));
            return false;
        }
        if (piece.len == 0) break;
        snapshot = realloc(snapshot, size + piece.len + 1);
        memcpy(snapshot + size, piece.ptr, piece.len);
        size += piece.len;
        snapshot[size] = 0;
        pieces++;
        guest_list_u8_free(&piece);
    }
    // One stream per isolate at a time: the host keeps what a guest has not read.
    ivm_isolate_types_own_heap_snapshot_stream_t second, third;
    bool took = ivm_isolate_types_method_isolate_take_heap_snapshot(iso, &second, &error);
    bool refused_third = took && !ivm_isolate_types_method_isolate_take_heap_snapshot(iso, &third, &error) && error.tag == 7;
    if (took) ivm_isolate_types_heap_snapshot_stream_drop_own(second);
    printf("second snapshot after the first's end: %s, a third before that one's: %s\n", took ? "ok" : "refused", refused_third ? "refused" : "taken");
    ivm_isolate_types_heap_snapshot_stream_drop_own(stream);
    printf("snapshot: %s, has the string: %s\n", snapshot && strncmp(snapshot, "{\"snapshot\":", 12) == 0 ? "json" : "other",
           snapshot && strstr(snapshot, "guest-made-this") ? "yes" : "no");
    free(snapshot);

    uint64_t references;
    if (!ivm_isolate_types_method_isolate_reference_count(iso, &references, &error)) return false;
    printf("reference count: %llu\n", (unsigned long long)references);

    // An inspector session: the named context, then a task paused at `debugger;`, a local
    // read while paused, and the task finishing after `Debugger.resume`.
    ivm_isolate_types_own_inspector_session_t session;
    if (!ivm_isolate_types_method_isolate_inspector_session(iso, &session, &error)) return false;
    ivm_isolate_types_borrow_inspector_session_t s = ivm_isolate_types_borrow_inspector_session(session);
    dispatch(s, "{\"id\":1,\"method\":\"Runtime.enable\"}");
    char *created = await_message(s, "Runtime.executionContextCreated");
    printf("context: %s\n", created && strstr(created, "\"name\":\"guest-main\"") ? "guest-main" : "missing");
    free(created);
    dispatch(s, "{\"id\":2,\"method\":\"Debugger.enable\"}");
    free(await_message(s, "\"id\":2"));

    guest_string_t code = text("let local = 41; debugger; local + 1");
    ivm_isolate_types_run_options_t run = {.timeout_ms = {.is_some = true, .val = 5000}};
    ivm_isolate_types_own_task_t task = ivm_isolate_types_method_context_eval_task(ctx, &code, &run);
    ivm_isolate_types_step_t step;
    uint32_t wait = 10;
    bool paused = false;
    for (int i = 0; i < 1000; i++) {
        ivm_isolate_types_method_task_resume(ivm_isolate_types_borrow_task(task), NULL, &wait, &step);
        if (step.tag != IVM_ISOLATE_TYPES_STEP_RUNNING) break;
        if (paused) continue;
        char *pause = await_message(s, "Debugger.paused");
        if (!pause) continue;
        paused = true;
        char *frame = strstr(pause, "\"callFrameId\":\"");
        char request[512];
        snprintf(request, sizeof request,
                 "{\"id\":3,\"method\":\"Debugger.evaluateOnCallFrame\",\"params\":{\"callFrameId\":\"%.*s\",\"expression\":\"local\"}}",
                 frame ? (int)strcspn(frame + 15, "\"") : 0, frame ? frame + 15 : "");
        free(pause);
        dispatch(s, request);
        char *local = await_message(s, "\"id\":3");
        printf("paused: yes, local: %s\n", local && strstr(local, "\"value\":41") ? "41" : "missing");
        free(local);
        dispatch(s, "{\"id\":4,\"method\":\"Debugger.resume\"}");
    }
    if (step.tag == IVM_ISOLATE_TYPES_STEP_DONE && !step.val.done.is_err)
        printf("task: %g\n", step.val.done.val.ok.val.number);
    else
        printf("task: not done\n");
    ivm_isolate_types_task_drop_own(task);

    // A guest inside a call cannot serve its session, so a pause never waits for it: a
    // synchronous run does not pause, nor does a task waited on without a limit, and a call on
    // an isolate paused in a task lets the task go on first.
    char *ran = eval(ctx, "debugger; 'ran'", &result) ? string_of(&result) : strdup("failed");
    printf("eval with a debugger on: %s\n", ran);
    free(ran);
    code = text("debugger; 'unlimited'");
    task = ivm_isolate_types_method_context_eval_task(ctx, &code, &run);
    ivm_isolate_types_method_task_resume(ivm_isolate_types_borrow_task(task), NULL, NULL, &step);
    char *unlimited = step_string(&step);
    printf("task waited on without a limit: %s\n", unlimited);
    free(unlimited);
    ivm_isolate_types_task_drop_own(task);
    code = text("debugger; 'went on'");
    task = ivm_isolate_types_method_context_eval_task(ctx, &code, &run);
    ivm_isolate_types_method_task_resume(ivm_isolate_types_borrow_task(task), NULL, &wait, &step);
    char *pause = await_message(s, "Debugger.paused");
    char *other = eval(ctx, "'other'", &result) ? string_of(&result) : strdup("failed");
    printf("call while paused: %s (paused first: %s)\n", other, pause ? "yes" : "no");
    free(pause);
    free(other);
    ivm_isolate_types_method_task_resume(ivm_isolate_types_borrow_task(task), NULL, NULL, &step);
    char *went_on = step_string(&step);
    printf("the paused task: %s\n", went_on);
    free(went_on);
    ivm_isolate_types_task_drop_own(task);

    // Disposing the isolate ends the session.
    if (!ivm_isolate_types_method_isolate_dispose(iso, &error)) return false;
    guest_option_string_t message;
    bool open = true;
    for (int i = 0; i < 100 && open; i++) {
        open = ivm_isolate_types_method_inspector_session_poll(s, 10, &message, &error);
        if (open && message.is_some) guest_string_free(&message.val);
    }
    printf("session after dispose: %s\n", open ? "open" : error_name(&error));
    ivm_isolate_types_inspector_session_drop_own(session);
    ivm_isolate_types_context_drop_own(context);
    ivm_isolate_types_isolate_drop_own(isolate);
    (void)failure;
    fflush(stdout);
    return true;
}
