//! `ivm snapshot create` and `--snapshot FILE`: startup snapshots kept in files, sealed with
//! the user's snapshot key (`--snapshot-key FILE`, else one made on first use under
//! `$XDG_CONFIG_HOME/ivm/`, or `~/.config/ivm/`).

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use ivm::{CacheKey, Error, ScriptOrigin, Snapshot};

/// The snapshot key: from `key_file`, or the user's own.
pub fn key(key_file: Option<&Path>) -> Result<CacheKey, String> {
    if let Some(path) = key_file {
        return ivm::key_file::load(path, "snapshot key").map_err(|e| e.message().to_owned());
    }
    let config = match (std::env::var_os("XDG_CONFIG_HOME"), std::env::var_os("HOME")) {
        (Some(dir), _) if !dir.is_empty() => PathBuf::from(dir),
        (_, Some(home)) if !home.is_empty() => PathBuf::from(home).join(".config"),
        _ => return Err("no place for the snapshot key: set XDG_CONFIG_HOME or HOME, or give --snapshot-key FILE".into()),
    };
    let dir = config.join("ivm");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    ivm::key_file::load_or_make(&dir.join("snapshot.key"), "snapshot key").map_err(|e| e.message().to_owned())
}

/// The snapshot in `path`, opened with the key: a refusal says why.
pub fn open(path: &Path, key_file: Option<&Path>) -> Result<Snapshot, String> {
    let key = key(key_file)?;
    let sealed = fs::read(path).map_err(|e| format!("cannot read the snapshot {}: {e}", path.display()))?;
    Snapshot::open(sealed, &key).map_err(|e| format!("{}: {}", path.display(), e.message()))
}

/// What `ivm snapshot create` was asked.
pub struct Create<'a> {
    pub scripts: &'a [String],
    pub output: &'a Path,
    pub warmup: Option<&'a str>,
    pub memory_limit: u64,
    /// `None`: the default (30 s); `Some(None)`: no limit.
    pub timeout: Option<Option<std::time::Duration>>,
    pub key_file: Option<&'a Path>,
}

/// How creating failed: a usage problem (a file, the key) or the scripts' own failure.
pub enum Failed {
    Usage(String),
    Run(Error),
}

/// Makes the snapshot and writes it, sealed, to `output`.
pub fn create(request: &Create<'_>) -> Result<(), Failed> {
    let key = key(request.key_file).map_err(Failed::Usage)?;
    let mut builder = Snapshot::builder().key(key).memory_limit(request.memory_limit);
    if let Some(timeout) = request.timeout {
        builder = builder.timeout(timeout);
    }
    for path in request.scripts {
        let code = crate::read_source(path).map_err(|e| Failed::Usage(format!("cannot read {path}: {e}")))?;
        builder = builder.script(code, ScriptOrigin::new(path.as_str()));
    }
    if let Some(warmup) = request.warmup {
        builder = builder.warmup(warmup);
    }
    let snapshot = builder.create().map_err(|e| match e {
        Error::InvalidArgument(message) => Failed::Usage(message),
        other => Failed::Run(other),
    })?;
    fs::write(request.output, snapshot.sealed()).map_err(|e| Failed::Usage(format!("cannot write {}: {e}", request.output.display())))
}
