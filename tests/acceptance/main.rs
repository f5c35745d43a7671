//! ivm's behaviour tests, one binary (each test binary links V8 again). Each module reads like
//! the part of the docs it proves; many port isolated-vm's own tests, with its messages.

mod callbacks;
mod cli;
mod code_cache;
mod component;
mod context;
mod cpu_limits;
mod external_copy;
mod hostile;
mod inspector;
mod isolate;
mod limits;
mod load;
mod modules;
mod process;
mod references;
mod sandbox;
mod script;
mod snapshot;
mod transfer;
mod values;

/// As in the `ivm` binary: copies out of isolates are bounded down to V8's serializer.
#[global_allocator]
static ALLOCATOR: ivm::BoundedAllocator = ivm::BoundedAllocator::new();

use std::future::Future;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};

/// Runs a future to completion on the current thread (ivm's futures need no runtime).
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// Runs the test `name` in a child process of this test binary, for measurements that the
/// other tests running in parallel would disturb. Returns `true` in the parent (which has
/// checked the child passed), `false` in the child (which goes on to run the test body).
pub fn in_own_process(name: &str) -> bool {
    if std::env::var_os("IVM_TEST_CHILD").is_some() {
        return false;
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1"])
        .env("IVM_TEST_CHILD", "1")
        .status()
        .unwrap();
    assert!(status.success(), "{name} failed in its own process");
    true
}

/// This process's resident set size in bytes.
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

pub fn new_context() -> (ivm::Isolate, ivm::Context) {
    let isolate = ivm::Isolate::new(Default::default()).expect("isolate");
    let context = isolate.create_context().expect("context");
    (isolate, context)
}
