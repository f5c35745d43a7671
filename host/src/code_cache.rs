//! Code caches that cannot be forged: V8's cached data is machine code, so a blob from an
//! attacker is a sandbox escape (isolated-vm's CVE-2022-39266). ivm never hands V8 a blob it
//! did not make itself under the host's key.
//!
//! A sealed blob is `IVMCACHE`, a format byte, the kind (script or module), the V8 version,
//! a hash of V8's flags and cache version tag, a SHA-256 of the source, V8's payload, and an
//! HMAC-SHA-256 of all of that under the [`CacheKey`]. A blob whose tag, V8, flags or source
//! do not match — tampered, truncated, made under another key or for other code — is
//! *rejected*: the code compiles normally, the rejection is reported, and V8 never sees it.

use std::sync::OnceLock;

use ring::{digest, hmac, rand::SecureRandom};

use crate::data::{CacheOutcome, CachedData, CompileOptions};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"IVMCACHE";
const FORMAT: u8 = 1;
const TAG_LEN: usize = 32;

/// What was compiled: a cache for a script is no use for a module of the same text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Script = 1,
    Module = 2,
}

/// The secret code caches are sealed with. Keep it where untrusted code and data cannot read
/// it; anyone who has it can make blobs ivm will run.
#[derive(Clone)]
pub struct CacheKey {
    key: hmac::Key,
    /// The secret, for the worker processes of process-isolated isolates.
    secret: std::sync::Arc<[u8]>,
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKey(..)")
    }
}

impl CacheKey {
    /// A key from secret bytes (at least 32 of them).
    pub fn new(secret: &[u8]) -> Result<CacheKey> {
        if secret.len() < 32 {
            return Err(Error::InvalidArgument("a code cache key needs at least 32 bytes".into()));
        }
        Ok(CacheKey { key: hmac::Key::new(hmac::HMAC_SHA256, secret), secret: secret.into() })
    }

    pub(crate) fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The HMAC key, for what else is sealed with it (snapshots).
    pub(crate) fn hmac(&self) -> &hmac::Key {
        &self.key
    }

    /// 32 fresh random bytes, e.g. to store as a key file.
    pub fn generate_secret() -> Result<[u8; 32]> {
        let mut secret = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| Error::InvalidArgument("the system random number generator failed".into()))?;
        Ok(secret)
    }

    /// The key of this process, made at random on first use: caches sealed with it are good
    /// only within this process. Isolates use it unless given one with
    /// [`IsolateOptions::code_cache_key`](crate::IsolateOptions::code_cache_key). Fails if
    /// the system's random number generator does (a guessable key would let anyone forge
    /// caches).
    pub fn for_this_process() -> Result<CacheKey> {
        static KEY: OnceLock<CacheKey> = OnceLock::new();
        if let Some(key) = KEY.get() {
            return Ok(key.clone());
        }
        let secret = CacheKey::generate_secret()?;
        Ok(KEY.get_or_init(|| CacheKey { key: hmac::Key::new(hmac::HMAC_SHA256, &secret), secret: secret.as_slice().into() }).clone())
    }
}

/// What V8's cached data (and a startup snapshot) depends on besides the source: its
/// version, its flags and its own cache version tag (which hashes the flags that change code
/// generation).
pub(crate) fn environment() -> &'static [u8; 32] {
    static ENVIRONMENT: OnceLock<[u8; 32]> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        // The tag hashes V8's flags, which are set when V8 starts.
        crate::engine::platform();
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(v8::V8::get_version().as_bytes());
        context.update(crate::engine::flags().as_bytes());
        context.update(&v8::script_compiler::cached_data_version_tag().to_le_bytes());
        context.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
    })
}

fn header(kind: Kind, source: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 2 + 64);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.push(kind as u8);
    out.extend_from_slice(environment());
    out.extend_from_slice(digest::digest(&digest::SHA256, source.as_bytes()).as_ref());
    out
}

/// Seals V8's cached data for `source`.
pub(crate) fn seal(key: &CacheKey, kind: Kind, source: &str, payload: &[u8]) -> CachedData {
    let mut out = header(kind, source);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let tag = hmac::sign(&key.key, &out);
    out.extend_from_slice(tag.as_ref());
    CachedData::from_bytes(out)
}

/// V8's cached data from a sealed blob, if it is genuine and made for this source, kind and
/// V8; `None` otherwise (the blob is rejected).
pub(crate) fn open<'b>(key: &CacheKey, kind: Kind, source: &str, blob: &'b CachedData) -> Option<&'b [u8]> {
    let bytes = blob.as_bytes();
    let (sealed, tag) = bytes.split_at_checked(bytes.len().checked_sub(TAG_LEN)?)?;
    hmac::verify(&key.key, sealed, tag).ok()?;
    let expected = header(kind, source);
    let rest = sealed.strip_prefix(expected.as_slice())?;
    let (len, payload) = rest.split_at_checked(8)?;
    (u64::from_le_bytes(len.try_into().ok()?) == payload.len() as u64).then_some(payload)
}

/// The cache side of one compile.
pub(crate) struct CacheRequest<'a> {
    pub(crate) key: &'a CacheKey,
    pub(crate) kind: Kind,
    pub(crate) code: &'a str,
    pub(crate) supplied: Option<&'a CachedData>,
    pub(crate) produce: bool,
}

impl CacheRequest<'_> {
    /// The cache side of compiling `code` with `options`.
    pub(crate) fn new<'a>(options: &'a CompileOptions, key: &'a CacheKey, kind: Kind, code: &'a str) -> CacheRequest<'a> {
        CacheRequest { key, kind, code, supplied: options.cached_data.as_ref(), produce: options.produce_cached_data }
    }

    /// The source to compile, with V8's cached data when the supplied blob opens, and the
    /// matching compile option.
    pub(crate) fn source(
        &self,
        text: v8::Local<v8::String>,
        origin: &v8::ScriptOrigin,
    ) -> (v8::script_compiler::Source, v8::script_compiler::CompileOptions) {
        use v8::script_compiler::{CompileOptions, Source};
        match self.supplied.and_then(|blob| open(self.key, self.kind, self.code, blob)) {
            Some(payload) => (
                Source::new_with_cached_data(text, Some(origin), v8::CachedData::new(payload)),
                CompileOptions::ConsumeCodeCache,
            ),
            None => (Source::new(text, Some(origin)), CompileOptions::NoCompileOptions),
        }
    }

    /// After compiling `source`: whether the supplied cache was rejected (by ivm, or by V8),
    /// and a new sealed cache from `make` if one was asked for and none was used.
    pub(crate) fn outcome(
        &self,
        source: &v8::script_compiler::Source,
        make: impl FnOnce() -> Option<v8::UniqueRef<v8::CachedData<'static>>>,
    ) -> CacheOutcome {
        let rejected = self.supplied.map(|_| source.get_cached_data().is_none_or(|data| data.rejected()));
        // As isolated-vm: produced only if none was supplied, or the supplied one was rejected.
        let produced = (self.produce && rejected != Some(false))
            .then(make)
            .flatten()
            .map(|data| seal(self.key, self.kind, self.code, &data));
        CacheOutcome { produced, rejected }
    }
}
