//! Process-wide machinery shared by all isolates: V8 initialisation, the worker pool that runs
//! async operations, and the watchdog that enforces timeouts.

pub(crate) mod executor;
pub(crate) mod watchdog;

use std::sync::OnceLock;

static PLATFORM: OnceLock<v8::SharedRef<v8::Platform>> = OnceLock::new();

/// Initialises V8 once per process. Every isolate constructor calls this first.
///
/// The platform is the "unprotected" one: isolates are locked and run on the caller's thread
/// for synchronous calls, and those threads may predate V8's initialisation, which memory
/// protection keys (PKU) would punish with a segfault.
pub(crate) fn platform() -> &'static v8::SharedRef<v8::Platform> {
    PLATFORM.get_or_init(|| {
        let platform = v8::new_unprotected_default_platform(0, false).make_shared();
        v8::V8::initialize_platform(platform.clone());
        v8::V8::initialize();
        platform
    })
}

/// The version of the bundled V8, e.g. `15.2.124.1-rusty`.
pub fn v8_version() -> &'static str {
    v8::V8::get_version()
}
