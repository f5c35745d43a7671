// libivm from C++: small RAII wrappers over the C API (handles in unique_ptrs, errors as
// exceptions, host functions as lambdas), then many isolates at once from several threads,
// some of them spinning until their timeouts. CI builds and runs it; it exits 0 when every
// check held.
//
//   c++ -std=c++17 example.cpp $(pkg-config --cflags --libs ivm) -pthread -o example-cpp
#include <ivm.h>

#include <atomic>
#include <cstdio>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace ivmpp {

// One owning pointer type per handle, freed by its `_delete`.
template <typename T, void (*Delete)(T *)>
struct Deleter {
    void operator()(T *handle) const { Delete(handle); }
};
template <typename T, void (*Delete)(T *)>
using Owned = std::unique_ptr<T, Deleter<T, Delete>>;

using Value = Owned<ivm_value_t, ivm_value_delete>;

// An ivm error as a C++ exception: its kind, and for a JavaScript exception its name.
class Error : public std::runtime_error {
public:
    explicit Error(ivm_error_t *error)
        : std::runtime_error(ivm_error_message(error)), kind(ivm_error_kind(error)), name(ivm_error_name(error)) {
        ivm_error_delete(error);
    }
    ivm_error_kind_t kind;
    std::string name;
};

inline void check(ivm_error_t *error) {
    if (error) throw Error(error);
}

inline std::string to_json(const ivm_value_t *value) {
    ivm_bytes_t json{};
    check(ivm_value_to_json(value, &json));
    std::string text(reinterpret_cast<const char *>(json.data), json.size);
    ivm_bytes_delete(&json);
    return text;
}

inline Value json_value(const std::string &json) {
    ivm_value_t *value = nullptr;
    check(ivm_value_new_json(json.data(), json.size(), &value));
    return Value(value);
}

// A host function from any callable taking and returning JSON text; a C++ exception it
// throws becomes a JavaScript Error.
using Function = std::function<std::string(const std::vector<std::string> &)>;

inline Value function(const char *name, Function f) {
    auto call = [](void *data, const ivm_value_t *const *args, size_t nargs, ivm_value_t **result) -> ivm_error_t * {
        try {
            std::vector<std::string> json;
            for (size_t i = 0; i < nargs; i++) json.push_back(to_json(args[i]));
            *result = json_value((*static_cast<Function *>(data))(json)).release();
            return nullptr;
        } catch (const std::exception &e) {
            return ivm_error_new("Error", e.what(), std::char_traits<char>::length(e.what()));
        }
    };
    auto finalize = [](void *data) { delete static_cast<Function *>(data); };
    ivm_value_t *value = nullptr;
    check(ivm_function_new(name, call, new Function(std::move(f)), finalize, &value));
    return Value(value);
}

class Context {
public:
    explicit Context(ivm_context_t *context) : context_(context) {}

    // Runs `code` and returns its result (awaited if a promise) as JSON.
    std::string eval(const std::string &code, uint64_t timeout_ms = 0) const {
        Owned<ivm_run_options_t, ivm_run_options_delete> options(ivm_run_options_new());
        check(ivm_run_options_set_transfer(options.get(), IVM_TRANSFER_COPY));
        check(ivm_run_options_set_promise(options.get(), true));
        check(ivm_run_options_set_timeout_ms(options.get(), timeout_ms));
        ivm_value_t *result = nullptr;
        check(ivm_context_eval(context_.get(), code.data(), code.size(), options.get(), &result));
        return to_json(Value(result).get());
    }

    void set_global(const std::string &name, const Value &value) const {
        ivm_reference_t *global = nullptr;
        check(ivm_context_global(context_.get(), &global));
        Owned<ivm_reference_t, ivm_reference_delete> owned(global);
        check(ivm_reference_set(global, name.data(), name.size(), value.get()));
    }

private:
    Owned<ivm_context_t, ivm_context_delete> context_;
};

class Isolate {
public:
    explicit Isolate(uint64_t memory_limit_mb = 128) {
        Owned<ivm_isolate_options_t, ivm_isolate_options_delete> options(ivm_isolate_options_new());
        check(ivm_isolate_options_set_memory_limit(options.get(), memory_limit_mb));
        ivm_isolate_t *isolate = nullptr;
        check(ivm_isolate_new(options.get(), &isolate));
        isolate_.reset(isolate);
    }

    Context create_context() const {
        ivm_context_t *context = nullptr;
        check(ivm_isolate_create_context(isolate_.get(), nullptr, &context));
        return Context(context);
    }

private:
    Owned<ivm_isolate_t, ivm_isolate_delete> isolate_;
};

}  // namespace ivmpp

static int failures = 0;
#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)

int main() {
    using namespace ivmpp;

    // The wrappers at work: a lambda as a host function, errors as exceptions.
    {
        Isolate isolate(32);
        Context context = isolate.create_context();
        context.set_global("greet", function("greet", [](const std::vector<std::string> &args) {
            if (args.empty()) throw std::invalid_argument("greet needs a name");
            return "\"Hello, " + args[0].substr(1);  // JSON in, JSON out: "C++" gives "Hello, C++"
        }));
        CHECK(context.eval("greet('C++')") == "\"Hello, C++\"");
        CHECK(context.eval("try { greet() } catch (e) { e.message }") == "\"greet needs a name\"");
        try {
            context.eval("null.x");
            CHECK(false);
        } catch (const Error &e) {
            CHECK(e.kind == IVM_ERROR_EXCEPTION && e.name == "TypeError");
        }
        try {
            context.eval("for (;;) {}", 20);
            CHECK(false);
        } catch (const Error &e) {
            CHECK(e.kind == IVM_ERROR_TIMEOUT && std::string(e.what()) == "Script execution timed out.");
        }
    }

    // Many isolates at once: 8 threads, 25 isolates each; every fifth spins into its timeout,
    // the others call a host function shared by all of them.
    std::atomic<int> calls{0}, timeouts{0}, answers{0};
    Value count = function("count", [&calls](const std::vector<std::string> &args) {
        calls++;
        return args.at(0);
    });
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; t++) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 25; i++) {
                Isolate isolate(16);
                Context context = isolate.create_context();
                context.set_global("count", count);
                try {
                    if (i % 5 == 0) {
                        context.eval("for (;;) {}", 30);
                    } else if (context.eval("count(" + std::to_string(t * 100 + i) + ") + 1") ==
                               std::to_string(t * 100 + i + 1)) {
                        answers++;
                    }
                } catch (const Error &e) {
                    if (e.kind == IVM_ERROR_TIMEOUT) timeouts++;
                }
            }
        });
    }
    for (auto &thread : threads) thread.join();
    CHECK(calls == 160 && answers == 160 && timeouts == 40);

    if (failures) {
        std::fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    std::printf("all checks passed (%d host calls, %d timeouts)\n", calls.load(), timeouts.load());
    return 0;
}
