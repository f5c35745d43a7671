//! What confines a worker process: the steps a worker takes before it runs anything (see
//! `ivm::process`'s module docs for the policy itself), what it reports back in its hello,
//! and the embedder's choice of whether a step the kernel refuses is fatal.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One confinement step of a worker, in the order the worker takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SandboxStep {
    /// `PR_SET_NO_NEW_PRIVS`: no set-uid or file-capability gains, and the seccomp filter may
    /// be installed without privileges.
    NoNewPrivileges,
    /// Descriptors the worker inherited beyond its three pipes are closed.
    InheritedDescriptorsClosed,
    /// A user namespace of its own: the worker's capabilities count only there, not over the
    /// host's objects (also when the host runs as root).
    UserNamespace,
    /// A network namespace of its own: no interfaces but a loopback that is down.
    NetworkNamespace,
    /// A mount namespace whose root is an empty, read-only tmpfs: no file system.
    EmptyRoot,
    /// A Landlock domain that handles every access it knows and allows none: no file, no
    /// TCP port, no signal to a process outside it (whatever the namespaces left).
    Landlock,
    /// Every capability dropped (what the namespaces gave it, too).
    CapabilitiesDropped,
    /// The seccomp-bpf allow-list: anything else fails with `EPERM`, and calls that can only
    /// mean a takeover (`execve`, `fork`, `ptrace`...) kill the worker with `SIGSYS`.
    SyscallFilter,
}

impl SandboxStep {
    /// Every step, in order.
    pub const ALL: [SandboxStep; 8] = [
        SandboxStep::NoNewPrivileges,
        SandboxStep::InheritedDescriptorsClosed,
        SandboxStep::UserNamespace,
        SandboxStep::NetworkNamespace,
        SandboxStep::EmptyRoot,
        SandboxStep::Landlock,
        SandboxStep::CapabilitiesDropped,
        SandboxStep::SyscallFilter,
    ];

    /// A stable kebab-case name (`no-new-privileges`, `syscall-filter`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxStep::NoNewPrivileges => "no-new-privileges",
            SandboxStep::InheritedDescriptorsClosed => "inherited-descriptors-closed",
            SandboxStep::UserNamespace => "user-namespace",
            SandboxStep::NetworkNamespace => "network-namespace",
            SandboxStep::EmptyRoot => "empty-root",
            SandboxStep::Landlock => "landlock",
            SandboxStep::CapabilitiesDropped => "capabilities-dropped",
            SandboxStep::SyscallFilter => "syscall-filter",
        }
    }
}

impl fmt::Display for SandboxStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What confined a worker: the steps applied, and those the kernel refused with why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    /// The steps that took effect, in order.
    pub applied: Vec<SandboxStep>,
    /// The steps that did not, each with the reason (the kernel's error).
    pub missing: Vec<(SandboxStep, String)>,
}

impl SandboxReport {
    /// Whether every step took effect.
    pub fn is_complete(&self) -> bool {
        SandboxStep::ALL.iter().all(|&step| self.applied(step))
    }

    /// Whether `step` took effect.
    pub fn applied(&self, step: SandboxStep) -> bool {
        self.applied.contains(&step)
    }
}

impl fmt::Display for SandboxReport {
    /// `applied: a, b, c` and, if any, `; missing: d (why)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let applied: Vec<&str> = self.applied.iter().map(|step| step.as_str()).collect();
        write!(f, "applied: {}", if applied.is_empty() { "none".to_owned() } else { applied.join(", ") })?;
        if !self.missing.is_empty() {
            let missing: Vec<String> = self.missing.iter().map(|(step, why)| format!("{step} ({why})")).collect();
            write!(f, "; missing: {}", missing.join(", "))?;
        }
        Ok(())
    }
}

/// Whether a worker may run without a confinement step the kernel refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SandboxPolicy {
    /// The worker starts with what it could apply (the default); its
    /// [`SandboxReport`] says what that was.
    #[default]
    BestEffort,
    /// A step that cannot be applied stops the worker before it runs anything: creating the
    /// isolate fails with [`Error::WorkerCrashed`](crate::Error::WorkerCrashed) naming the
    /// step and the kernel's reason.
    Required,
}

impl SandboxPolicy {
    /// The worker's environment variable that carries the policy.
    pub const ENV: &'static str = "IVM_SANDBOX";

    /// The value of [`ENV`](Self::ENV) for this policy.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxPolicy::BestEffort => "best-effort",
            SandboxPolicy::Required => "required",
        }
    }

    /// The policy [`ENV`](Self::ENV) names (`required`, else best effort).
    pub fn from_env() -> SandboxPolicy {
        match std::env::var(SandboxPolicy::ENV).as_deref() {
            Ok("required") => SandboxPolicy::Required,
            _ => SandboxPolicy::BestEffort,
        }
    }
}
