// The shared library's soname, so that programs linked with it find `libivm.so.0` (the Debian
// package's runtime library) whatever `libivm.so` points at. The major number is 0 until the
// API is declared stable, as ivm.h's IVM_VERSION_MAJOR says.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libivm.so.0");
}
