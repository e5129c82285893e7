//! Links libsrt (Debian's `libsrt-openssl-dev`), found through pkg-config's `srt`.
//!
//! Statically (`libsrt.a`, from the same package), with the libraries it needs (`--static`:
//! libstdc++, libcrypto) linked dynamically. Inside `libsrt.so` every call between libsrt's
//! own functions goes through the PLT: its threads cost castway about 45 % more than the same
//! code costs srt-live-transmit, which Debian links statically (docs/architecture.md, "What an
//! SRT relay costs"). Linked in, libsrt's symbols stay hidden inside the extension, so another
//! libsrt in the process (libavformat's `libsrt-gnutls`) never stands in for it.

use std::process::Command;

fn pkg_config(args: &[&str]) -> Option<String> {
    Command::new("pkg-config")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let (Some(libs), Some(libdir)) = (
        pkg_config(&["--libs", "--static", "srt"]),
        pkg_config(&["--variable=libdir", "srt"]),
    ) else {
        panic!("libsrt not found by pkg-config (`srt`): apt-get install libsrt-openssl-dev");
    };
    // pkg-config leaves out the system's own library directory, where `libsrt.a` is.
    println!("cargo:rustc-link-search=native={libdir}");
    for flag in libs.split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if flag == "-lsrt" {
            println!("cargo:rustc-link-lib=static=srt");
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
}
