//! Hands the linker script to the image's link (and only to the binary's:
//! the library is also built for the host, where it must link normally).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-search={dir}");
    println!("cargo:rerun-if-changed=link.x");
    if std::env::var("TARGET").is_ok_and(|t| t == "aarch64-unknown-none") {
        println!("cargo:rustc-link-arg-bins=-Tlink.x");
    }
}
