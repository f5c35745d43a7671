//! Secret key files: the keys that seal code caches and snapshots. Whoever can read one can
//! make blobs this machine will run, and whoever can write one can swap it, so a key file
//! must be the user's own with no permissions for anyone else; one is made on first use with
//! mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ivm::CacheKey;

/// The key in `path` (`what` names it in errors), made there if there is none yet.
pub fn load_or_make(path: &Path, what: &str) -> Result<CacheKey, String> {
    let secret = match fs::read(path) {
        Ok(secret) => {
            check(path, what)?;
            secret
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = CacheKey::generate_secret().map_err(|e| e.to_string())?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot create the {what} {}: {e}", path.display()))?;
            file.write_all(&secret).map_err(|e| e.to_string())?;
            secret.to_vec()
        }
        Err(e) => return Err(format!("cannot read the {what} {}: {e}", path.display())),
    };
    CacheKey::new(&secret).map_err(|e| format!("the {what} {}: {e}", path.display()))
}

/// The key in `path`, which must exist.
pub fn load(path: &Path, what: &str) -> Result<CacheKey, String> {
    let secret = fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    check(path, what)?;
    CacheKey::new(&secret).map_err(|e| format!("the {what} {}: {e}", path.display()))
}

/// Refuses a key file that is not the user's own, or that others may read or write.
fn check(path: &Path, what: &str) -> Result<(), String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!("the {what} {} is readable by others or writable by them (mode {:o}); chmod 600 it", path.display(), mode & 0o777));
    }
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!("the {what} {} belongs to another user (uid {})", path.display(), meta.uid()));
    }
    Ok(())
}
