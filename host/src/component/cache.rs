//! Compiled components kept between runs. Compiling a large guest takes seconds (an 18 MB
//! componentize-py guest: 5–9 s here), so the machine code wasmtime makes is stored, and the
//! next start loads it instead. That code is trusted as it is (`Component::deserialize` runs
//! whatever it is given), so a stored artifact is sealed like a code cache: an HMAC-SHA-256
//! under a per-user key, over the compiled code, what it was compiled from and what it was
//! compiled for. Anything else found there — altered, truncated, made under another key, for
//! other code or for another wasmtime, configuration or CPU — is refused and recompiled.
//!
//! A sealed artifact is `IVMCWASM`, a format byte, a SHA-256 of what the code is bound to
//! (ivm's version and wasmtime's compatibility hash: its version, configuration, target and
//! the CPU features it compiles for), a SHA-256 of the component, the serialized component's
//! length and bytes, and the HMAC of all of that.

use std::hash::Hasher;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use ring::{digest, hmac};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::{CacheKey, Error};

const MAGIC: &[u8; 8] = b"IVMCWASM";
const FORMAT: u8 = 1;
const TAG_LEN: usize = 32;

/// Where compiled components are kept between runs, and the key that seals them.
///
/// ```no_run
/// use ivm::component::CompileCache;
/// use wasmtime::Engine;
///
/// let engine = Engine::default();
/// let cache = CompileCache::open(CompileCache::default_dir().expect("a home directory"))?;
/// let wasm = std::fs::read("guest.wasm")?;
/// let (component, how) = cache.compile(&engine, &wasm)?;
/// println!("{how:?}"); // Compiled the first time, Loaded from then on
/// # let _ = component;
/// # Ok::<(), wasmtime::Error>(())
/// ```
///
/// Each component and engine configuration has a file of its own under `components/`;
/// artifacts of other wasmtime or ivm versions stay until the directory is cleaned.
/// Processes starting the same guest at once each write a whole file and rename it into place,
/// so a reader never sees half of one.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    key: CacheKey,
}

/// How [`CompileCache::compile`] got its component.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheUse {
    /// Loaded from a sealed artifact: no compile.
    Loaded,
    /// Compiled: there was no artifact yet. It is stored for next time (unless the directory
    /// could not be written).
    Compiled,
    /// Compiled: the artifact there was refused, for the reason given, and is replaced.
    Refused(String),
}

impl CompileCache {
    /// The default directory: `$XDG_CACHE_HOME/ivm`, else `~/.cache/ivm`; none without either
    /// variable. A relative `XDG_CACHE_HOME` is ignored, as the XDG specification says.
    pub fn default_dir() -> Option<PathBuf> {
        let absolute = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|dir| dir.is_absolute());
        match (absolute("XDG_CACHE_HOME"), absolute("HOME")) {
            (Some(dir), _) => Some(dir.join("ivm")),
            (None, Some(home)) => Some(home.join(".cache/ivm")),
            (None, None) => None,
        }
    }

    /// The cache in `dir`, made if it does not exist (mode 0700), sealing with the key in
    /// `dir/key`, made on first use (mode 0600; see [`key_file`](crate::key_file)). `dir`
    /// must be the caller's own and writable by no one else.
    pub fn open(dir: impl AsRef<Path>) -> crate::Result<CompileCache> {
        let dir = dir.as_ref();
        make_dir(dir)?;
        let key = crate::key_file::load_or_make(&dir.join("key"), "compile cache key")?;
        CompileCache::with_key(dir, key)
    }

    /// The cache in `dir` (made if it does not exist), sealing with `key`.
    pub fn with_key(dir: impl AsRef<Path>, key: CacheKey) -> crate::Result<CompileCache> {
        let dir = dir.as_ref().to_path_buf();
        make_dir(&dir.join("components"))?;
        Ok(CompileCache { dir, key })
    }

    /// The component `wasm` (a binary component), compiled for `engine`: loaded from its
    /// sealed artifact if there is a good one, else compiled and stored. Fails only as
    /// [`Component::new`] does.
    pub fn compile(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<(Component, CacheUse)> {
        let header = header(engine, wasm);
        let path = self.artifact_path(&header);
        let how = match read_artifact(&path) {
            Err(_) => CacheUse::Compiled,
            Ok(sealed) => match self.open_sealed(&header, &sealed) {
                // SAFETY: the bytes are what `Component::serialize` gave this cache for this
                // component and engine configuration: the HMAC under the cache's key proves it.
                Ok(serialized) => match unsafe { Component::deserialize(engine, serialized) } {
                    Ok(component) => return Ok((component, CacheUse::Loaded)),
                    Err(e) => CacheUse::Refused(format!("wasmtime could not load it: {e}")),
                },
                Err(why) => CacheUse::Refused(why.into()),
            },
        };
        let component = Component::new(engine, wasm)?;
        if let Ok(serialized) = component.serialize() {
            // A cache that cannot be written costs the next start a compile, nothing more.
            let _ = crate::key_file::write_private(&path, &self.seal(header, &serialized));
        }
        Ok((component, how))
    }

    fn artifact_path(&self, header: &[u8]) -> PathBuf {
        let name: String = digest::digest(&digest::SHA256, header).as_ref().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join("components").join(format!("{name}.cwasm"))
    }

    fn seal(&self, mut out: Vec<u8>, serialized: &[u8]) -> Vec<u8> {
        out.reserve(8 + serialized.len() + TAG_LEN);
        out.extend_from_slice(&(serialized.len() as u64).to_le_bytes());
        out.extend_from_slice(serialized);
        let tag = hmac::sign(self.key.hmac(), &out);
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// The serialized component in `sealed`, or why it is refused.
    fn open_sealed<'b>(&self, header: &[u8], sealed: &'b [u8]) -> Result<&'b [u8], &'static str> {
        let unsealed = || "its seal does not match this cache's key (altered, truncated or made elsewhere)";
        let (body, tag) = sealed.split_at_checked(sealed.len().checked_sub(TAG_LEN).ok_or_else(unsealed)?).ok_or_else(unsealed)?;
        hmac::verify(self.key.hmac(), body, tag).map_err(|_| unsealed())?;
        // Genuine: what is left to check is what it was made for (a copied or renamed file).
        let rest = body.strip_prefix(header).ok_or("it was made for other code, or another wasmtime, configuration or CPU")?;
        let (len, serialized) = rest.split_at_checked(8).ok_or_else(unsealed)?;
        if u64::from_le_bytes(len.try_into().map_err(|_| unsealed())?) != serialized.len() as u64 {
            return Err(unsealed());
        }
        Ok(serialized)
    }
}

/// The artifact at `path`: a regular file, not followed through a symbolic link (so nothing
/// planted there makes a start read a device or another file).
fn read_artifact(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn make_dir(dir: &Path) -> crate::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::InvalidArgument(format!("cannot create the compile cache directory {}: {e}", dir.display())))
}

/// What a sealed artifact starts with: its format, what its code is bound to, and the
/// component it was compiled from.
fn header(engine: &Engine, wasm: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 1 + 64);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&environment(engine));
    out.extend_from_slice(digest::digest(&digest::SHA256, wasm).as_ref());
    out
}

/// A SHA-256 of what compiled code depends on besides its source: ivm's version (the
/// wasmtime it pins) and the engine's compatibility hash (wasmtime's version, the
/// configuration, the target and the CPU features it compiles for).
fn environment(engine: &Engine) -> [u8; 32] {
    struct Sha(digest::Context);
    impl Hasher for Sha {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            0
        }
    }
    let mut sha = Sha(digest::Context::new(&digest::SHA256));
    sha.write(concat!("ivm ", env!("CARGO_PKG_VERSION")).as_bytes());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut sha);
    sha.0.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
}
