// A guest that hands the host hostile data: MessagePack nested a thousand levels deep around a
// megabyte, and more external copies than its memory budget holds. tests/acceptance/component.rs
// checks the lines it prints. Built during the tests, like tour.c.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guest.h"

typedef ivm_isolate_types_value_t value_t;
typedef ivm_isolate_types_error_t error_t;

static void print_error(const char *label, const error_t *e) {
    static const char *kinds[] = {"exception", "timeout", "memory-limit", "disposed", "abandoned", "invalid-argument", "conversion", "limit"};
    printf("%s: error %s\n", label, kinds[e->tag]);
}

// `depth` Sets (MessagePack ext 3 around a one-element array), each holding the next, around
// `inner` bytes of binary data; written from the inside out.
static uint8_t *nested_sets(size_t depth, size_t inner, size_t *len) {
    size_t total = 5 + inner + depth * (6 + 1);
    uint8_t *out = calloc(total, 1);
    if (!out) return NULL;
    size_t at = total - inner;
    at -= 5;
    out[at] = 0xc6; // bin 32
    out[at + 1] = (uint8_t)(inner >> 24);
    out[at + 2] = (uint8_t)(inner >> 16);
    out[at + 3] = (uint8_t)(inner >> 8);
    out[at + 4] = (uint8_t)inner;
    for (size_t level = 0; level < depth; level++) {
        size_t payload = total - at + 1;
        out[--at] = 0x91; // array of one
        at -= 6;
        out[at] = 0xc9; // ext 32
        out[at + 1] = (uint8_t)(payload >> 24);
        out[at + 2] = (uint8_t)(payload >> 16);
        out[at + 3] = (uint8_t)(payload >> 8);
        out[at + 4] = (uint8_t)payload;
        out[at + 5] = 3; // Set
    }
    *len = total;
    return out;
}

static bool copy_of(uint8_t *bytes, size_t len, ivm_isolate_types_own_external_copy_t *copy, error_t *error) {
    value_t value = {.tag = IVM_ISOLATE_TYPES_VALUE_MSGPACK, .val.msgpack = {.ptr = bytes, .len = len}};
    return ivm_isolate_types_static_external_copy_create(&value, copy, error);
}

bool exports_guest_run(guest_list_string_t *argv, guest_string_t *failure) {
    (void)argv;
    error_t error;
    // 1. Nesting around a megabyte: read in place, once, however deep.
    size_t len;
    uint8_t *deep = nested_sets(300, 1 << 20, &len);
    if (!deep) return false;
    ivm_isolate_types_own_external_copy_t copy;
    if (copy_of(deep, len, &copy, &error)) {
        value_t back;
        if (ivm_isolate_types_method_external_copy_copy(ivm_isolate_types_borrow_external_copy(copy), &back, &error)) {
            printf("deep: %s\n", back.tag == IVM_ISOLATE_TYPES_VALUE_MSGPACK && back.val.msgpack.len > (1 << 20) ? "ok" : "changed");
            ivm_isolate_types_value_free(&back);
        } else {
            print_error("deep copy", &error);
        }
        ivm_isolate_types_external_copy_drop_own(copy);
    } else {
        print_error("deep", &error);
    }
    // 2. Past 1000 levels of nesting (a Set and its array are two): refused.
    free(deep);
    deep = nested_sets(600, 0, &len);
    if (copy_of(deep, len, &copy, &error)) {
        printf("deeper: accepted\n");
        ivm_isolate_types_external_copy_drop_own(copy);
    } else {
        print_error("deeper", &error);
    }
    free(deep);
    // 3. External copies count against the memory budget (the test gives it 64 MB).
    size_t big = 40 << 20;
    uint8_t *bytes = calloc(big + 5, 1);
    bytes[0] = 0xc6;
    bytes[1] = (uint8_t)(big >> 24);
    bytes[2] = (uint8_t)(big >> 16);
    bytes[3] = (uint8_t)(big >> 8);
    bytes[4] = (uint8_t)big;
    ivm_isolate_types_own_external_copy_t first, second;
    if (copy_of(bytes, big + 5, &first, &error)) {
        printf("first copy: ok\n");
        if (copy_of(bytes, big + 5, &second, &error)) {
            printf("second copy: accepted\n");
        } else {
            print_error("second copy", &error);
        }
        ivm_isolate_types_external_copy_drop_own(first);
        if (copy_of(bytes, big + 5, &second, &error)) {
            printf("after dropping the first: ok\n");
            ivm_isolate_types_external_copy_drop_own(second);
        } else {
            print_error("after dropping the first", &error);
        }
    } else {
        print_error("first copy", &error);
    }
    free(bytes);
    fflush(stdout);
    (void)failure;
    return true;
}
