//! Process-wide machinery shared by all isolates: V8 initialisation, the worker pool that runs
//! async operations, the watchdog that enforces timeouts, and the reaper that frees disposed
//! isolates.

pub(crate) mod executor;
pub(crate) mod platform;
pub(crate) mod reaper;
pub(crate) mod tasks;

use std::sync::OnceLock;

/// V8 flags ivm sets for every isolate.
///
/// `--no-maglev`: without the Maglev tier V8 optimises hot code with TurboFan only, as the
/// V8 that isolated-vm users run (Node 20) does. Maglev's on-stack replacement recompiles the
/// loops of every fresh closure, which made short evals 3× slower, and one JIT tier fewer is
/// less attack surface for untrusted code. `IVM_V8_FLAGS=--maglev` turns it back on.
const V8_FLAGS: &str = "--no-maglev";

static PLATFORM: OnceLock<v8::SharedRef<v8::Platform>> = OnceLock::new();

/// Initialises V8 once per process. Every isolate constructor calls this first.
///
/// `IVM_V8_FLAGS`, when set, is passed to V8 after ivm's own flags (e.g. `--max-lazy` for
/// experiments; flags apply to every isolate of the process).
///
/// The platform is ivm's own (see [`platform`](self::platform)), "unprotected": isolates are
/// locked and run on the caller's thread for synchronous calls, and those threads may predate
/// V8's initialisation, which memory protection keys (PKU) would punish with a segfault.
pub(crate) fn platform() -> &'static v8::SharedRef<v8::Platform> {
    PLATFORM.get_or_init(|| {
        ignore_stray_profiler_signals();
        v8::V8::set_entropy_source(fill_random);
        v8::V8::set_flags_from_string(flags());
        let platform = v8::new_custom_platform(0, false, true, self::platform::Platform).make_shared();
        v8::V8::initialize_platform(platform.clone());
        v8::V8::initialize();
        platform
    })
}

/// Where V8 seeds its random number generators (`Math.random`, hash seeds): the kernel's
/// `getrandom`, which needs no file. V8's own source is `/dev/urandom`, which a sandboxed
/// worker cannot open, and without either it would seed from the time.
fn fill_random(buffer: &mut [u8]) -> bool {
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), buffer).is_ok()
}

/// Gives `SIGPROF` a handler that does nothing if it has its default action, which ends the
/// process.
///
/// V8's CPU profiler samples a thread by sending it `SIGPROF`, installs its handler when the
/// process's first profile starts, and puts back the disposition it found when the last one
/// stops. A signal still on its way then (a profile stopped on another thread than the one it
/// samples) met the default action and killed the process. A handler, unlike `SIG_IGN`, is
/// not inherited by the programs this process runs. A handler the embedder installed is left
/// alone.
fn ignore_stray_profiler_signals() {
    extern "C" fn stray(_signal: libc::c_int) {}
    // SAFETY: plain sigaction calls on zeroed structs; the handler does nothing, so it is
    // async-signal-safe.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut current) == 0 && current.sa_sigaction == libc::SIG_DFL {
            let mut quiet: libc::sigaction = std::mem::zeroed();
            quiet.sa_sigaction = stray as extern "C" fn(libc::c_int) as libc::sighandler_t;
            quiet.sa_flags = libc::SA_RESTART;
            libc::sigaction(libc::SIGPROF, &quiet, std::ptr::null_mut());
        }
    }
}

/// The V8 flags of this process: ivm's, then `IVM_V8_FLAGS`.
pub(crate) fn flags() -> &'static str {
    static FLAGS: OnceLock<String> = OnceLock::new();
    FLAGS.get_or_init(|| match std::env::var("IVM_V8_FLAGS") {
        Ok(extra) => format!("{V8_FLAGS} {extra}"),
        Err(_) => V8_FLAGS.to_owned(),
    })
}

/// The version of the bundled V8, e.g. `15.2.124.1-rusty`.
pub fn v8_version() -> &'static str {
    v8::V8::get_version()
}
