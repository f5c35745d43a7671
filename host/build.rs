//! Checks the local V8 archive before the v8 crate links it.
//!
//! `.cargo/config.toml` points `RUSTY_V8_MIRROR` at `../shared/v8`. When that folder exists
//! and holds a `SHA256SUMS`, every file it lists must hash to the recorded value, or the build
//! stops: a truncated or tampered archive is never linked. Without the folder the v8 crate
//! downloads its upstream release and this check has nothing to do. See BUILDING.md.

use std::path::Path;

use sha2::{Digest, Sha256};

fn main() {
    println!("cargo:rerun-if-env-changed=RUSTY_V8_MIRROR");
    let Ok(mirror) = std::env::var("RUSTY_V8_MIRROR") else { return };
    let sums = Path::new(&mirror).join("SHA256SUMS");
    let Ok(listing) = std::fs::read_to_string(&sums) else { return };
    println!("cargo:rerun-if-changed={}", sums.display());
    for line in listing.lines().filter(|l| !l.trim().is_empty()) {
        let Some((expected, name)) = line.split_once(char::is_whitespace) else {
            panic!("{}: malformed line {line:?}", sums.display());
        };
        let file = Path::new(&mirror).join(name.trim_start().trim_start_matches('*'));
        println!("cargo:rerun-if-changed={}", file.display());
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: listed in {} but unreadable: {e}", file.display(), sums.display()));
        let actual: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        if !actual.eq_ignore_ascii_case(expected) {
            panic!(
                "{} does not match {}: expected sha256 {expected}, found {actual}. \
                 Refusing to link an unverified V8 archive; restore the file or see BUILDING.md.",
                file.display(),
                sums.display()
            );
        }
    }
}
