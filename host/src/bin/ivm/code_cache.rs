//! `--code-cache DIR`: sealed code caches kept in a directory across runs.
//!
//! The key that seals them lives in `DIR/key`, made on first use with owner-only permissions
//! (or comes from `--code-cache-key FILE`; see `ivm::key_file`). Each cached file is stored as
//! `DIR/<sha-256 of its name>.ivmcache`; a stale or tampered one is rejected by ivm and
//! replaced.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ivm::{CacheKey, CachedData, CompileOptions};

pub struct DiskCache {
    dir: PathBuf,
    key: CacheKey,
}

impl DiskCache {
    pub fn open(dir: &Path, key_file: Option<&Path>) -> Result<DiskCache, String> {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create the code cache directory {}: {e}", dir.display()))?;
        let key = match key_file {
            Some(file) => ivm::key_file::load(file, "code cache key"),
            None => ivm::key_file::load_or_make(&dir.join("key"), "code cache key"),
        }
        .map_err(|e| e.message().to_owned())?;
        Ok(DiskCache { dir: dir.to_path_buf(), key })
    }

    pub fn key(&self) -> CacheKey {
        self.key.clone()
    }

    fn path(&self, name: &str) -> PathBuf {
        let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}.ivmcache"))
    }

    /// `options` with the stored cache of `name` (if any) and a request for a new one.
    pub fn compile_options(&self, name: &str, options: CompileOptions) -> CompileOptions {
        let options = options.produce_cached_data();
        match fs::read(self.path(name)) {
            Ok(bytes) => options.cached_data(CachedData::from_bytes(bytes)),
            Err(_) => options,
        }
    }

    /// Stores a cache that was made, and reports what happened when `verbose`.
    pub fn store(&self, name: &str, rejected: Option<bool>, made: Option<&CachedData>, verbose: bool) {
        let report = match rejected {
            Some(false) => "used",
            Some(true) => "rejected",
            None => "none yet",
        };
        if let Some(made) = made {
            let _ = ivm::key_file::write_private(&self.path(name), made.as_bytes());
        }
        if verbose {
            let made = if made.is_some() { ", stored a new one" } else { "" };
            let _ = writeln!(std::io::stderr(), "ivm: code cache for {name}: {report}{made}");
        }
    }
}
