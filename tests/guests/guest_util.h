// Helpers of the C guests of ivm:isolate@0.2.0 (include after "guest.h").
#ifndef GUEST_UTIL_H
#define GUEST_UTIL_H

typedef ivm_isolate_types_error_t error_t;

// The WIT name of an error's case.
static const char *error_name(const error_t *e) {
    static const char *names[] = {"exception", "timeout", "memory-limit", "disposed", "abandoned", "invalid-argument", "conversion", "limit", "cpu-limit"};
    return e->tag < sizeof names / sizeof *names ? names[e->tag] : "?";
}

// A guest string pointing at `s` (not copied).
static guest_string_t text(const char *s) {
    guest_string_t out;
    guest_string_set(&out, s);
    return out;
}

#endif
