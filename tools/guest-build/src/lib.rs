//! Build-script helper that turns a guest crate of this workspace into a `.wasm` component.
//!
//! Guests are compiled for `wasm32-unknown-unknown`, so the core module imports nothing but
//! our WIT (no WASI, no ambient authority), and then wrapped as a component with
//! `wit-component`. The helper installs the wasm target through rustup when it is missing,
//! so a fresh machine with only the stock toolchain can build everything.
//!
//! Guests are built in release mode into `target/guests`, shared by every build script that
//! calls this, so each guest is compiled once however many host crates embed it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One guest crate to build.
#[derive(Debug, Clone)]
pub struct Guest<'a> {
    /// Cargo package name, e.g. `steadfast-examples`.
    pub package: &'a str,
    /// Cargo features to enable (for building a changed variant of the same crate).
    pub features: &'a [&'a str],
    /// File name of the component written to `OUT_DIR`.
    pub output: &'a str,
    /// The target: `wasm32-unknown-unknown` (imports only our WIT; wrapped here) or
    /// `wasm32-wasip2` (a component straight from the linker, importing WASI).
    pub target: &'a str,
}

/// The target for orchestrators and activities.
pub const PURE: &str = "wasm32-unknown-unknown";
/// WASI preview 2: used only to build components that must be refused.
pub const WASIP2: &str = "wasm32-wasip2";

/// Builds `guest` as a component into `OUT_DIR` and returns the path of the `.wasm` file.
///
/// Panics with a readable message when anything fails: this runs inside `build.rs`, where a
/// panic is how cargo reports an error.
pub fn build(guest: &Guest<'_>) -> PathBuf {
    let root = workspace_root();
    for dir in ["wit", "guest-sdk", "workflows"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    ensure_target_installed(guest.target);

    let target_dir = root.join("target").join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            guest.target,
            "-p",
            guest.package,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    if !guest.features.is_empty() {
        cmd.arg("--features").arg(guest.features.join(","));
    }
    // The outer build's settings are for the host; the guest gets its own.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        // `cargo clippy` on the host must not turn the guest build into a lint run.
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("could not run cargo to build guest {}: {e}", guest.package));
    assert!(
        status.success(),
        "building guest {} for {} failed ({status}); see the cargo output above",
        guest.package,
        guest.target
    );

    let core = target_dir
        .join(guest.target)
        .join("release")
        .join(format!("{}.wasm", guest.package.replace('-', "_")));
    let module = std::fs::read(&core)
        .unwrap_or_else(|e| panic!("guest module {} is missing: {e}", core.display()));
    let component = if guest.target == WASIP2 {
        // wasm-component-ld already made a component.
        Ok(module)
    } else {
        wit_component::ComponentEncoder::default()
            .module(&module)
            .and_then(|encoder| encoder.validate(true).encode())
    }
    .unwrap_or_else(|e| panic!("wrapping {} as a component failed: {e:#}", core.display()));

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let out = out_dir.join(guest.output);
    std::fs::write(&out, component)
        .unwrap_or_else(|e| panic!("writing {} failed: {e}", out.display()));
    out
}

/// The workspace root: the nearest ancestor of the calling crate that holds `wit/`.
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR is set by cargo"),
    );
    manifest
        .ancestors()
        .find(|dir| dir.join("wit").is_dir() && dir.join("Cargo.lock").exists())
        .or_else(|| manifest.ancestors().find(|dir| dir.join("wit").is_dir()))
        .map(Path::to_path_buf)
        .expect("no workspace root with a wit/ folder above the crate")
}

/// Adds the wasm target with rustup when the toolchain lacks it.
fn ensure_target_installed(target: &str) {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = || {
        sysroot
            .as_ref()
            .is_some_and(|s| s.join("lib/rustlib").join(target).is_dir())
    };
    if installed() {
        return;
    }
    // Several build scripts (the host's, the tests') may get here at once, and two
    // `rustup target add` of the same target in parallel fail on each other's files:
    // take turns, and look again once it is our turn.
    let lock_path = std::env::temp_dir().join(format!("steadfast-rustup-{target}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    if installed() {
        return;
    }
    let status = Command::new("rustup")
        .args(["target", "add", target])
        .status()
        .unwrap_or_else(|e| {
            panic!("the {target} target is missing and rustup could not be run to add it: {e}")
        });
    assert!(
        status.success(),
        "`rustup target add {target}` failed ({status}); install the target and build again"
    );
}
