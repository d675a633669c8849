//! Gives the shared library its soname, `libupdate_lock.so.<major>`, so programs linked
//! against it keep working across compatible updates (`make install` creates the links).

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libupdate_lock.so.{major}");
    println!("cargo:rerun-if-changed=build.rs");
}
