//! Turns a guest crate into a `.wasm` component: for the workspace's build scripts
//! ([`build`]), and for `steadfast build` and the test kit on an author's crate
//! ([`build_component`]).
//!
//! Guests are compiled for `wasm32-unknown-unknown`, so the core module imports nothing but
//! our WIT (no WASI, no ambient authority), and then wrapped as a component with
//! `wit-component`. The helper installs the wasm target through rustup when it is missing,
//! so a fresh machine with only the stock toolchain can build everything.
//!
//! The workspace's own guests are built in release mode into `target/guests`, shared by
//! every build script that calls this, so each is compiled once however many host crates
//! embed it. An author's crate is built into `<its target dir>/steadfast`.

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
/// WASI preview 2: for activity components that use WASI (outgoing HTTP).
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
    let component = build_component(&Build {
        manifest_path: &root.join("Cargo.toml"),
        package: Some(guest.package),
        lib_name: &guest.package.replace('-', "_"),
        features: guest.features,
        target: guest.target,
        target_dir: &root.join("target").join("guests"),
        quiet: false,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let out = out_dir.join(guest.output);
    std::fs::write(&out, component)
        .unwrap_or_else(|e| panic!("writing {} failed: {e}", out.display()));
    out
}

/// One guest crate to build, anywhere: the `steadfast build` command and the test kit use
/// this for an author's crate, build scripts for the workspace's own guests.
#[derive(Debug, Clone)]
pub struct Build<'a> {
    /// The crate's (or its workspace's) `Cargo.toml`.
    pub manifest_path: &'a Path,
    /// `-p PACKAGE`, for a manifest that is a workspace.
    pub package: Option<&'a str>,
    /// The name of the crate's `cdylib` target (the package name with `-` made `_`,
    /// unless `[lib] name` says otherwise): the core module is `<lib_name>.wasm`.
    pub lib_name: &'a str,
    pub features: &'a [&'a str],
    /// [`PURE`] or [`WASIP2`].
    pub target: &'a str,
    /// Where cargo builds. Not the target directory of a cargo that may be running
    /// around this one (a build script's, a test's): cargo locks it while it builds.
    pub target_dir: &'a Path,
    /// Pass `--quiet` to cargo.
    pub quiet: bool,
}

/// Builds a guest crate in release mode for its wasm target and returns the component:
/// a `wasm32-unknown-unknown` core module wrapped with `wit-component`, or the component
/// the `wasm32-wasip2` linker made. Adds the target through rustup when it is missing.
pub fn build_component(build: &Build<'_>) -> Result<Vec<u8>, String> {
    // From the crate's folder: its `.cargo/config.toml` and toolchain file apply, not the
    // ones of wherever the command was typed. So the paths given must not be relative.
    let absolute =
        |path: &Path| std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()));
    let manifest_path = absolute(build.manifest_path)?;
    let target_dir = absolute(build.target_dir)?;
    let dir = manifest_path.parent().unwrap_or(Path::new("/"));
    ensure_target_installed(build.target, dir)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args(["build", "--release", "--target", build.target])
        .arg("--manifest-path")
        .arg(&manifest_path)
        .arg("--target-dir")
        .arg(&target_dir);
    if let Some(package) = build.package {
        cmd.args(["-p", package]);
    }
    if !build.features.is_empty() {
        cmd.arg("--features").arg(build.features.join(","));
    }
    if build.quiet {
        cmd.arg("--quiet");
    }
    // The outer build's settings are for the host; the guest gets its own.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
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
    let what = build
        .package
        .map_or_else(|| build.manifest_path.display().to_string(), str::to_owned);
    let status = cmd
        .status()
        .map_err(|e| format!("could not run cargo to build {what}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building {what} for {} failed ({status}); see cargo's output above",
            build.target
        ));
    }
    let core = target_dir
        .join(build.target)
        .join("release")
        .join(format!("{}.wasm", build.lib_name));
    let module = std::fs::read(&core).map_err(|e| {
        format!(
            "cargo built {what} but wrote no {}: {e}; is its crate-type \"cdylib\"?",
            core.display()
        )
    })?;
    if build.target == WASIP2 {
        // wasm-component-ld already made a component.
        return Ok(module);
    }
    wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| format!("wrapping {} as a component failed: {e:#}", core.display()))
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
/// `dir` is where the build runs: the toolchain is the one rustup picks there.
pub fn ensure_target_installed(target: &str, dir: &Path) -> Result<(), String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let sysroot = Command::new(&rustc)
        .current_dir(dir)
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
        return Ok(());
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
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    if installed() {
        return Ok(());
    }
    let status = Command::new("rustup")
        .current_dir(dir)
        .args(["target", "add", target])
        .status()
        .map_err(|e| {
            format!("the {target} target is missing and rustup could not be run to add it: {e}")
        })?;
    if !status.success() {
        return Err(format!(
            "`rustup target add {target}` failed ({status}); install the target and build again"
        ));
    }
    Ok(())
}

/// Which world a guest crate implements, as its manifest claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `steadfast:workflow/orchestrator`: workflows.
    Orchestrator,
    /// `steadfast:workflow/activity-worker`: activities.
    Activity,
}

/// What [`describe`] learnt of a guest crate from `cargo metadata`.
#[derive(Debug, Clone)]
pub struct GuestCrate {
    pub package: String,
    pub manifest_path: PathBuf,
    /// The `cdylib` target's name: the core module is `<lib_name>.wasm`.
    pub lib_name: String,
    pub world: World,
    /// [`PURE`], or [`WASIP2`] for activities that use WASI (outgoing HTTP).
    pub target: &'static str,
    /// Cargo's target directory for the crate.
    pub target_dir: PathBuf,
}

impl GuestCrate {
    /// Where `steadfast build` and the test kit build the crate: a folder of its own in the
    /// crate's target directory, so a `cargo test` running around the build does not hold
    /// the lock the build needs.
    pub fn guest_target_dir(&self) -> PathBuf {
        self.target_dir.join("steadfast")
    }

    /// Where the built component is written.
    pub fn component_path(&self) -> PathBuf {
        self.guest_target_dir()
            .join(format!("{}.wasm", self.lib_name))
    }

    /// Builds the crate (see [`build_component`]), writes the component to
    /// [`GuestCrate::component_path`] and returns its bytes.
    pub fn build(&self, quiet: bool) -> Result<Vec<u8>, String> {
        let component = build_component(&Build {
            manifest_path: &self.manifest_path,
            package: Some(&self.package),
            lib_name: &self.lib_name,
            features: &[],
            target: self.target,
            target_dir: &self.guest_target_dir(),
            quiet,
        })?;
        let out = self.component_path();
        std::fs::write(&out, &component)
            .map_err(|e| format!("writing {} failed: {e}", out.display()))?;
        Ok(component)
    }
}

/// Reads the guest crate in `dir` (a folder with a `Cargo.toml`) through `cargo metadata`.
///
/// The world comes from `[package.metadata.steadfast] world = "orchestrator" | "activity"`
/// (as `steadfast new` writes it) or else from the `steadfast-sdk` features the crate
/// enables; activities that enable the SDK's `http` feature build for `wasm32-wasip2`.
pub fn describe(dir: &Path) -> Result<GuestCrate, String> {
    // Absolute: cargo runs from the crate's folder, not from where the command was typed.
    let dir = &std::path::absolute(dir)
        .map_err(|e| format!("{} cannot be made absolute: {e}", dir.display()))?;
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(format!(
            "{} has no Cargo.toml; give the folder of a workflow crate (`steadfast new NAME` makes one)",
            dir.display()
        ));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .current_dir(dir)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .map_err(|e| format!("could not run `cargo metadata`: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo metadata` failed on {}: {}",
            manifest.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("`cargo metadata` printed something that is not JSON: {e}"))?;
    let manifest = manifest.canonicalize().unwrap_or(manifest);
    let package = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["manifest_path"].as_str().is_some_and(|m| {
                let m = Path::new(m);
                m == manifest || m.canonicalize().is_ok_and(|m| m == manifest)
            })
        })
        .ok_or_else(|| {
            format!(
                "{} is a workspace manifest; give the folder of one of its guest crates",
                manifest.display()
            )
        })?;
    let name = package["name"].as_str().unwrap_or_default().to_owned();
    let lib_name = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            t["crate_types"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"))
        })
        .and_then(|t| t["name"].as_str())
        .map(|n| n.replace('-', "_"))
        .ok_or_else(|| {
            format!(
                "{name} has no library of crate-type \"cdylib\"; add `[lib] crate-type = [\"cdylib\", \"rlib\"]` to its Cargo.toml"
            )
        })?;
    // The SDK features the crate enables: on the dependency, or through a feature of its
    // own (`x = ["steadfast-sdk/http"]`).
    let mut sdk_features: Vec<String> = package["dependencies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["name"] == "steadfast-sdk" && d["kind"].is_null())
        .flat_map(|d| d["features"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect();
    // Only what the build turns on: the crate's `default` features, followed through.
    let own = package["features"].as_object();
    let mut seen = vec!["default".to_owned()];
    let mut next = 0;
    while let Some(feature) = seen.get(next).cloned() {
        next += 1;
        let enables = own
            .and_then(|features| features.get(&feature))
            .and_then(|enables| enables.as_array())
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str());
        for item in enables {
            if let Some(sdk) = item
                .strip_prefix("steadfast-sdk/")
                .or_else(|| item.strip_prefix("steadfast-sdk?/"))
            {
                sdk_features.push(sdk.to_owned());
            } else if !item.contains('/')
                && !item.starts_with("dep:")
                && !seen.iter().any(|s| s == item)
            {
                seen.push(item.to_owned());
            }
        }
    }
    let claimed = &package["metadata"]["steadfast"];
    let world = match claimed["world"].as_str() {
        Some("orchestrator") => World::Orchestrator,
        Some("activity") => World::Activity,
        Some(other) => {
            return Err(format!(
                "{name}'s [package.metadata.steadfast] world is '{other}'; it must be \"orchestrator\" or \"activity\""
            ));
        }
        None if sdk_features.iter().any(|f| f == "activity" || f == "http") => World::Activity,
        None => World::Orchestrator,
    };
    let target = match (world, claimed["target"].as_str()) {
        (_, Some(PURE)) => PURE,
        (World::Activity, Some(WASIP2)) => WASIP2,
        (World::Orchestrator, Some(WASIP2)) => {
            return Err(format!(
                "{name} is an orchestrator: it builds for {PURE} (it may import nothing but steadfast:workflow), not {WASIP2}"
            ));
        }
        (_, Some(other)) => return Err(format!("{name}: unknown target '{other}'")),
        (World::Activity, None) if sdk_features.iter().any(|f| f == "http") => WASIP2,
        _ => PURE,
    };
    let target_dir = metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or("`cargo metadata` named no target directory")?;
    Ok(GuestCrate {
        package: name,
        manifest_path: manifest,
        lib_name,
        world,
        target,
        target_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate in a temporary folder with `manifest` after its `[package]` name.
    fn krate(manifest: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            format!("[package]\nname = \"my-flow\"\nversion = \"0.1.0\"\nedition = \"2024\"\n{manifest}\n[workspace]\n"),
        )
        .unwrap();
        dir
    }

    const CDYLIB: &str = "[lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n";

    #[test]
    fn a_crate_is_an_orchestrator_for_the_pure_target_by_default() {
        let dir = krate(&format!(
            "{CDYLIB}[dependencies]\nsteadfast-sdk = \"0.1\"\n"
        ));
        let guest = describe(dir.path()).unwrap();
        assert_eq!(guest.package, "my-flow");
        assert_eq!(guest.lib_name, "my_flow");
        assert_eq!(guest.world, World::Orchestrator);
        assert_eq!(guest.target, PURE);
        assert!(guest.component_path().ends_with("steadfast/my_flow.wasm"));
    }

    #[test]
    fn sdk_features_tell_an_activity_and_its_target() {
        let dir = krate(&format!(
            "{CDYLIB}[dependencies]\nsteadfast-sdk = {{ version = \"0.1\", default-features = false, features = [\"activity\"] }}\n"
        ));
        let guest = describe(dir.path()).unwrap();
        assert_eq!((guest.world, guest.target), (World::Activity, PURE));
        // `http`, here enabled through a feature of the crate's own, needs WASI.
        let dir = krate(&format!(
            "{CDYLIB}[features]\ndefault = [\"net\"]\nnet = [\"steadfast-sdk/http\"]\n[dependencies]\nsteadfast-sdk = {{ version = \"0.1\", default-features = false }}\n"
        ));
        let guest = describe(dir.path()).unwrap();
        assert_eq!((guest.world, guest.target), (World::Activity, WASIP2));
        // A feature the build does not turn on changes nothing.
        let dir = krate(&format!(
            "{CDYLIB}[features]\nnet = [\"steadfast-sdk/http\"]\n[dependencies]\nsteadfast-sdk = \"0.1\"\n"
        ));
        let guest = describe(dir.path()).unwrap();
        assert_eq!((guest.world, guest.target), (World::Orchestrator, PURE));
    }

    #[test]
    fn the_manifest_s_claim_wins_and_is_checked() {
        let dir = krate(&format!(
            "{CDYLIB}[package.metadata.steadfast]\nworld = \"activity\"\ntarget = \"wasm32-wasip2\"\n"
        ));
        let guest = describe(dir.path()).unwrap();
        assert_eq!((guest.world, guest.target), (World::Activity, WASIP2));

        let dir = krate(&format!(
            "{CDYLIB}[package.metadata.steadfast]\nworld = \"orchestrator\"\ntarget = \"wasm32-wasip2\"\n"
        ));
        let e = describe(dir.path()).unwrap_err();
        assert!(
            e.contains("may import nothing but steadfast:workflow"),
            "{e}"
        );

        let dir = krate(&format!(
            "{CDYLIB}[package.metadata.steadfast]\nworld = \"saga\"\n"
        ));
        let e = describe(dir.path()).unwrap_err();
        assert!(
            e.contains("must be \"orchestrator\" or \"activity\""),
            "{e}"
        );
    }

    #[test]
    fn what_cannot_be_built_is_named() {
        let dir = krate("");
        let e = describe(dir.path()).unwrap_err();
        assert!(e.contains("crate-type = [\"cdylib\", \"rlib\"]"), "{e}");

        let empty = tempfile::tempdir().unwrap();
        let e = describe(empty.path()).unwrap_err();
        assert!(
            e.contains("has no Cargo.toml") && e.contains("steadfast new"),
            "{e}"
        );
    }
}
