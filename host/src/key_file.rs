//! Secret key files, and the private files they seal: the keys that seal code caches,
//! snapshots and compiled components ([`CacheKey`]). Whoever can read one can make blobs this
//! machine will run, and whoever can write one can swap it, so a key file must be the user's
//! own with no permissions for anyone else; one is made on first use with mode 0600, in a
//! directory that must be the user's own and writable by no one else.
//!
//! A key file is opened without following a symbolic link and checked on the open file (not
//! the path, which may change in between); a new one is written under a random name and
//! linked into place, so two processes making it at once agree on one.
//!
//! ```no_run
//! let key = ivm::key_file::load_or_make("/home/me/.cache/myapp/key".as_ref(), "cache key")?;
//! ivm::key_file::write_private("/home/me/.cache/myapp/blob".as_ref(), b"sealed bytes")?;
//! # let _ = key;
//! # Ok::<(), ivm::Error>(())
//! ```

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{CacheKey, Error, Result};

/// The key in `path` (`what` names it in errors), made there if there is none yet. Its
/// directory must exist, be the caller's own and be writable by no one else.
pub fn load_or_make(path: &Path, what: &str) -> Result<CacheKey> {
    check_dir(path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
    match open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            make(path, what)?;
            load(path, what)
        }
        Err(e) => Err(refused(format!("cannot read the {what} {}: {e}", path.display()))),
        Ok(file) => read(file, path, what),
    }
}

/// The key in `path`, which must exist, be the caller's own and be readable by no one else.
pub fn load(path: &Path, what: &str) -> Result<CacheKey> {
    let file = open(path).map_err(|e| refused(format!("cannot read the {what} {}: {e}", path.display())))?;
    read(file, path, what)
}

/// Writes `bytes` to `path` (mode 0600) through a new file beside it renamed into place, so
/// a reader sees the old file or the new one, never half of one, and two writers at once
/// leave one of their files whole.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let written = write_beside(path, bytes, false).and_then(|temporary| {
        let renamed = fs::rename(&temporary, path);
        if renamed.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        renamed
    });
    written.map_err(|e| refused(format!("cannot write {}: {e}", path.display())))
}

fn refused(message: String) -> Error {
    Error::InvalidArgument(message)
}

/// Refuses a directory for key files that is not the user's own, or that others may write
/// to (they could swap the key).
fn check_dir(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(|e| refused(format!("cannot read {}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(refused(format!("{} is not a directory", dir.display())));
    }
    if meta.uid() != my_uid() || meta.permissions().mode() & 0o022 != 0 {
        return Err(refused(format!(
            "{} must be your own and writable by you alone to hold a key (uid {}, mode {:o})",
            dir.display(),
            meta.uid(),
            meta.permissions().mode() & 0o777
        )));
    }
    Ok(())
}

fn open(path: &Path) -> std::io::Result<File> {
    fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// Checks the open key file, then reads it.
fn read(mut file: File, path: &Path, what: &str) -> Result<CacheKey> {
    let meta = file.metadata().map_err(|e| refused(format!("cannot read the {what} {}: {e}", path.display())))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(refused(format!("the {what} {} is readable by others or writable by them (mode {:o}); chmod 600 it", path.display(), mode & 0o777)));
    }
    if meta.uid() != my_uid() {
        return Err(refused(format!("the {what} {} belongs to another user (uid {})", path.display(), meta.uid())));
    }
    let mut secret = Vec::new();
    file.read_to_end(&mut secret).map_err(|e| refused(format!("cannot read the {what} {}: {e}", path.display())))?;
    CacheKey::new(&secret).map_err(|e| refused(format!("the {what} {}: {}", path.display(), e.message())))
}

/// Writes a new key to `path`, unless another process just did.
fn make(path: &Path, what: &str) -> Result<()> {
    let secret = CacheKey::generate_secret()?;
    // Linked, not renamed, into place: a key another process made meanwhile stays.
    let linked = write_beside(path, &secret, true).and_then(|temporary| {
        let linked = fs::hard_link(&temporary, path);
        let _ = fs::remove_file(&temporary);
        linked
    });
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(refused(format!("cannot create the {what} {}: {e}", path.display()))),
    }
}

/// Writes `bytes` to a new file of a random name beside `path` (mode 0600; `durable`: synced
/// to disk), for the caller to move into place, so a reader never sees half a file. The file
/// is created exclusively, so nothing placed there beforehand (a symlink elsewhere, say) is
/// followed or reused. Its path, which the caller removes.
fn write_beside(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<PathBuf> {
    let mut random = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).map_err(|_| std::io::Error::other("no randomness"))?;
    let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let temporary = path.with_file_name(format!(".{random}.tmp"));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temporary)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| if durable { file.sync_all() } else { Ok(()) }));
    match written {
        Ok(()) => Ok(temporary),
        Err(e) => {
            let _ = fs::remove_file(&temporary);
            Err(e)
        }
    }
}

fn my_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}
