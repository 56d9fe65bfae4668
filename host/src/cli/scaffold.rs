//! `steadfast new` and `steadfast build`: from an idea to a component, outside this
//! repository.
//!
//! The SDK and the test kit are not on crates.io, so the binary carries their sources
//! (the SDK with its WIT, the test kit, and the engine and guest builder the kit is made
//! of: see `CARRIED` in `host/build.rs`). `steadfast new` writes them once per version to
//! `$STEADFAST_HOME/sdk/<version>-<digest>/` (`~/.steadfast` by default), a small Cargo
//! workspace of its own, and the new crate depends on them by path, with the
//! `Cargo.lock` this binary was built and tested with. `--sdk DIR` points the crate at
//! another copy instead (a Steadfast checkout).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};
use steadfast_guest_build::{GuestCrate, World};

use crate::engine::{ComponentKind, Deployment, Engine, EngineConfig};

/// Every carried file: its path under the workspace root, and its bytes.
const CARRIED: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/carried.rs"));

/// The file that marks a written SDK copy complete.
const COMPLETE: &str = ".steadfast-complete";

/// The members of the carried workspace (the full one has more).
const CARRIED_MEMBERS: &str =
    "members = [\"host\", \"guest-sdk\", \"tools/guest-build\", \"testkit\"]";

/// What `steadfast new` makes.
#[derive(Debug)]
pub(super) struct NewCrate {
    pub name: String,
    pub activity: bool,
    pub path: Option<PathBuf>,
    pub sdk: Option<PathBuf>,
}

/// Writes a new workflow (or activity) crate and prints what to do next.
pub(super) fn new(args: NewCrate) -> anyhow::Result<()> {
    check_crate_name(&args.name)?;
    let dir = args
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() && !dir.is_dir() {
        bail!("{} is a file; choose another NAME or --path", dir.display());
    }
    if dir.is_dir()
        && std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty; choose another NAME or --path",
            dir.display()
        );
    }
    let sdk = match &args.sdk {
        Some(sdk) => {
            for needed in ["guest-sdk/Cargo.toml", "testkit/Cargo.toml"] {
                if !sdk.join(needed).is_file() {
                    bail!(
                        "{} has no {needed}: --sdk takes a Steadfast source tree (a checkout)",
                        sdk.display()
                    );
                }
            }
            sdk.canonicalize()
                .with_context(|| format!("resolving {}", sdk.display()))?
        }
        None => write_carried_sources()?,
    };
    let crate_ident = args.name.replace('-', "_");
    let world = if args.activity {
        "activity"
    } else {
        "orchestrator"
    };
    let sdk_text = sdk.to_str().with_context(|| {
        format!(
            "the SDK's path {} is not UTF-8; set STEADFAST_HOME to a UTF-8 path",
            sdk.display()
        )
    })?;
    // Paths go into Cargo.toml as TOML strings, quoted and escaped.
    let toml_path = |dir: &str| toml::Value::String(format!("{sdk_text}/{dir}")).to_string();
    let values = [
        ("name", args.name.clone()),
        ("crate", crate_ident.clone()),
        ("workflow", crate_ident.clone()),
        ("world", world.to_owned()),
        (
            "kind",
            if args.activity {
                "activity"
            } else {
                "workflow"
            }
            .to_owned(),
        ),
        ("sdk_path", toml_path("guest-sdk")),
        ("testkit_path", toml_path("testkit")),
        (
            "sdk_features",
            if args.activity {
                ", default-features = false, features = [\"activity\"]".to_owned()
            } else {
                String::new()
            },
        ),
    ];
    let fill = |template: &str| fill_template(template, &values);
    let (lib, test, test_name) = if args.activity {
        (
            include_str!("templates/activity_lib.rs"),
            include_str!("templates/activity_test.rs"),
            "activities.rs",
        )
    } else {
        (
            include_str!("templates/orchestrator_lib.rs"),
            include_str!("templates/orchestrator_test.rs"),
            "workflow.rs",
        )
    };
    let files = [
        ("Cargo.toml", fill(include_str!("templates/Cargo.toml.in"))),
        ("README.md", fill(include_str!("templates/README.md.in"))),
        (".gitignore", "/target\n/steadfast-data\n".to_owned()),
        ("src/lib.rs", fill(lib)),
        (&format!("tests/{test_name}"), fill(test)),
        // The versions this binary was tested with; `cargo update` moves on from them.
        ("Cargo.lock", carried_text("Cargo.lock")?.to_owned()),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        // Never over a file that appeared meanwhile (another `new` into the same folder).
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "created {world} crate `{}` in {} (SDK: {})",
        args.name,
        dir.display(),
        sdk.display()
    );
    if !args.activity {
        println!("it exports the workflow `{crate_ident}`");
    }
    println!("next:");
    println!("  cd {}", dir.display());
    println!("  cargo test                # its tests, on a virtual clock");
    println!("  steadfast build           # -> target/steadfast/{crate_ident}.wasm");
    println!("  steadfast deploy .        # build, then deploy to the server");
    Ok(())
}

/// Replaces each `{{key}}` of `template` with its value, in one pass (a value is never
/// read as a template). An unknown key is a bug in a template.
fn fill_template(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").expect("a template's {{ is closed");
        let key = &after[..end];
        let (_, value) = values
            .iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("the template names an unknown key {{{{{key}}}}}"));
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Cargo package names: ASCII letters, digits, `-` and `_`, starting with a letter; the
/// workflow is named after it.
fn check_crate_name(name: &str) -> anyhow::Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!(
            "'{name}' cannot name a crate: use lowercase letters, digits, '-' and '_', \
             starting with a letter (e.g. expense-approval)"
        );
    }
    // The workflow function is named after the crate, and the crate is a Rust library.
    const TAKEN: &[&str] = &[
        "as",
        "async",
        "await",
        "break",
        "const",
        "continue",
        "crate",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "fn",
        "for",
        "gen",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "match",
        "mod",
        "move",
        "mut",
        "pub",
        "ref",
        "return",
        "self",
        "static",
        "struct",
        "super",
        "trait",
        "true",
        "type",
        "unsafe",
        "use",
        "where",
        "while",
        "abstract",
        "become",
        "box",
        "do",
        "final",
        "macro",
        "override",
        "priv",
        "try",
        "typeof",
        "unsized",
        "virtual",
        "yield",
        "alloc",
        "core",
        "proc_macro",
        "std",
        "test",
    ];
    // A package may not share a name with one of its dependencies.
    const DEPENDENCIES: &[&str] = &[
        "steadfast",
        "steadfast_sdk",
        "steadfast_testkit",
        "steadfast_guest_build",
        "serde",
        "serde_json",
    ];
    let ident = name.replace('-', "_");
    if TAKEN.contains(&ident.as_str()) {
        bail!("'{name}' is taken by Rust itself; choose another name (e.g. {name}-flow)");
    }
    if DEPENDENCIES.contains(&ident.as_str()) {
        bail!(
            "'{name}' is the name of one of the crate's dependencies; choose another name \
             (e.g. {name}-flow)"
        );
    }
    Ok(())
}

fn carried_text(path: &str) -> anyhow::Result<&'static str> {
    let (_, bytes) = CARRIED
        .iter()
        .find(|(p, _)| *p == path)
        .with_context(|| format!("this binary carries no {path}"))?;
    std::str::from_utf8(bytes).with_context(|| format!("{path} is not UTF-8"))
}

/// Writes the carried sources to `$STEADFAST_HOME/sdk/<version>-<digest>/` unless they are
/// there already, and returns that directory. Written to a temporary sibling first and
/// renamed, so a crash or a concurrent `new` never leaves half a tree behind.
fn write_carried_sources() -> anyhow::Result<PathBuf> {
    let home = match std::env::var_os("STEADFAST_HOME") {
        // Absolute: the crate's Cargo.toml names the SDK by this path.
        Some(home) => std::path::absolute(PathBuf::from(home))
            .context("STEADFAST_HOME cannot be made an absolute path")?,
        None => std::env::var_os("HOME")
            .and_then(|home| std::path::absolute(PathBuf::from(home).join(".steadfast")).ok())
            .context("neither STEADFAST_HOME nor HOME is set: set STEADFAST_HOME to where the SDK may be written")?,
    };
    let mut digest = Sha256::new();
    for (path, bytes) in CARRIED {
        digest.update(path.as_bytes());
        digest.update((bytes.len() as u64).to_le_bytes());
        digest.update(bytes);
    }
    let digest = digest.finalize();
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let sdk_root = home.join("sdk");
    let dir = sdk_root.join(format!("{}-{hex}", env!("CARGO_PKG_VERSION")));
    if dir.join(COMPLETE).is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&sdk_root)
        .with_context(|| format!("creating {}", sdk_root.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempdir_in(&sdk_root)
        .with_context(|| format!("creating a directory in {}", sdk_root.display()))?;
    for (path, bytes) in CARRIED {
        let target = staging.path().join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let bytes = match *path {
            "Cargo.toml" => carried_workspace_manifest(bytes)?.into_bytes(),
            "host/Cargo.toml" => without_dev_dependencies(bytes)?.into_bytes(),
            _ => bytes.to_vec(),
        };
        std::fs::write(&target, bytes).with_context(|| format!("writing {}", target.display()))?;
    }
    // Written last: a copy without it is incomplete, and is replaced.
    std::fs::write(staging.path().join(COMPLETE), "")?;
    #[cfg(unix)]
    {
        // Readable by everyone who shares this STEADFAST_HOME, like any source tree.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let staged = staging.keep();
    if dir.exists() && !dir.join(COMPLETE).is_file() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let Err(e) = std::fs::rename(&staged, &dir) {
        // Another `new` won the race: use its copy, drop ours.
        let _ = std::fs::remove_dir_all(&staged);
        if !dir.join(COMPLETE).is_file() {
            return Err(e).with_context(|| format!("moving the SDK to {}", dir.display()));
        }
    }
    Ok(dir)
}

/// The workspace manifest, with only the carried members.
fn carried_workspace_manifest(bytes: &[u8]) -> anyhow::Result<String> {
    let text = std::str::from_utf8(bytes)?;
    let start = text
        .find("members = [")
        .context("the workspace manifest lists no members")?;
    let end = start
        + text[start..]
            .find(']')
            .context("the members list is not closed")?
        + 1;
    let mut out = String::new();
    out.push_str(&text[..start]);
    out.push_str(CARRIED_MEMBERS);
    out.push_str(&text[end..]);
    Ok(out
        .lines()
        .filter(|line| !line.starts_with("exclude =") && !line.contains("cargo fuzz"))
        .map(|line| format!("{line}\n"))
        .collect())
}

/// The engine's manifest without its `[dev-dependencies]` (the test crates stay behind).
fn without_dev_dependencies(bytes: &[u8]) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut skipping = false;
    for line in std::str::from_utf8(bytes)?.lines() {
        if line.starts_with('[') {
            skipping = line.trim() == "[dev-dependencies]";
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// Builds the crate in `dir` for its world's target, wraps it as a component and checks
/// it as a server's deploy would. Returns the component and what the check found.
pub(super) async fn build(dir: &Path) -> anyhow::Result<(GuestCrate, Vec<u8>, Deployment)> {
    let guest = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || steadfast_guest_build::describe(&dir))
            .await?
            .map_err(anyhow::Error::msg)?
    };
    let bytes = {
        let guest = guest.clone();
        tokio::task::spawn_blocking(move || guest.build(false))
            .await?
            .map_err(anyhow::Error::msg)?
    };
    let deployment = check(&bytes).await?;
    let claimed = match guest.world {
        World::Orchestrator => ComponentKind::Orchestrator,
        World::Activity => ComponentKind::Activity,
    };
    if deployment.kind != claimed {
        bail!(
            "{} claims the {} world (package.metadata.steadfast) but the component is an {} component",
            guest.package,
            claimed.as_str(),
            deployment.kind.as_str()
        );
    }
    Ok((guest, bytes, deployment))
}

/// Deploys `bytes` to a throwaway engine: the checks a server makes (world, imports,
/// size, compile, the names export) without a server.
async fn check(bytes: &[u8]) -> anyhow::Result<Deployment> {
    let scratch = tempfile::Builder::new()
        .prefix("steadfast-build-")
        .tempdir()
        .context("creating a scratch directory for the check")?;
    let engine = Engine::open(EngineConfig::new(scratch.path()))
        .await
        .context("starting an engine for the check")?;
    let deployed = engine.deploy(bytes.to_vec()).await;
    engine.shutdown().await;
    deployed.context("the component would be refused by a server")
}

/// `steadfast build [PATH]`.
pub(super) async fn run_build(dir: &Path, json: bool) -> anyhow::Result<()> {
    let (guest, bytes, deployment) = build(dir).await?;
    let path = guest.component_path();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "path": path,
                "bytes": bytes.len(),
                "kind": deployment.kind.as_str(),
                "names": deployment.names,
                "digest": deployment.digest.to_string(),
            })
        );
    } else {
        let what = match deployment.kind {
            ComponentKind::Orchestrator => "workflows",
            ComponentKind::Activity => "activities",
        };
        println!(
            "built {} ({:.1} KiB, {} component)\n{what}: {}",
            path.display(),
            bytes.len() as f64 / 1024.0,
            deployment.kind.as_str(),
            deployment.names.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_carried_workspace_has_only_the_carried_members() {
        let manifest =
            carried_workspace_manifest(carried_text("Cargo.toml").unwrap().as_bytes()).unwrap();
        assert!(manifest.contains(CARRIED_MEMBERS), "{manifest}");
        assert!(!manifest.contains("workflows/"), "{manifest}");
        assert!(!manifest.contains("exclude"), "{manifest}");
        // What members inherit is still there.
        assert!(manifest.contains("[workspace.dependencies]"));
        assert!(manifest.contains("[profile.dev.package.\"*\"]"));
        for member in ["host", "guest-sdk", "tools/guest-build", "testkit"] {
            assert!(
                CARRIED
                    .iter()
                    .any(|(path, _)| *path == format!("{member}/Cargo.toml")),
                "{member} is not carried"
            );
        }
    }

    #[test]
    fn the_carried_engine_leaves_its_test_crates_behind() {
        let manifest =
            without_dev_dependencies(carried_text("host/Cargo.toml").unwrap().as_bytes()).unwrap();
        assert!(!manifest.contains("[dev-dependencies]"), "{manifest}");
        assert!(!manifest.contains("../tests"), "{manifest}");
        assert!(manifest.contains("[dependencies]"));
        assert!(manifest.contains("[build-dependencies]"));
    }

    #[test]
    fn crate_names_are_checked() {
        for good in ["expense-approval", "a", "orders_v2"] {
            check_crate_name(good).unwrap();
        }
        for taken in ["fn", "test", "std", "self"] {
            let e = check_crate_name(taken).unwrap_err().to_string();
            assert!(e.contains("taken by Rust"), "{taken}: {e}");
        }
        for dependency in ["steadfast-sdk", "serde_json", "steadfast"] {
            let e = check_crate_name(dependency).unwrap_err().to_string();
            assert!(e.contains("dependencies"), "{dependency}: {e}");
        }
        for bad in [
            "",
            "Expense",
            "2fast",
            "-x",
            "a b",
            "../x",
            "a/b",
            &"x".repeat(65),
        ] {
            let e = check_crate_name(bad).unwrap_err().to_string();
            assert!(e.contains("lowercase"), "{bad}: {e}");
        }
    }

    #[test]
    fn templates_are_filled_in_one_pass() {
        let values = [("a", "{{b}}".to_owned()), ("b", "B".to_owned())];
        assert_eq!(fill_template("x {{a}} {{b}} y", &values), "x {{b}} B y");
    }

    #[test]
    fn paths_with_quotes_stay_one_toml_string() {
        let root = tempfile::tempdir().unwrap();
        let sdk = root.path().join("odd \"sdk\" \\ dir");
        for needed in ["guest-sdk", "testkit"] {
            std::fs::create_dir_all(sdk.join(needed)).unwrap();
            std::fs::write(sdk.join(needed).join("Cargo.toml"), "").unwrap();
        }
        let dir = root.path().join("flow");
        new(NewCrate {
            name: "flow".into(),
            activity: true,
            path: Some(dir.clone()),
            sdk: Some(sdk.clone()),
        })
        .unwrap();
        let manifest: toml::Value =
            toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap();
        let sdk = sdk.canonicalize().unwrap();
        assert_eq!(
            manifest["dependencies"]["steadfast-sdk"]["path"].as_str(),
            Some(format!("{}/guest-sdk", sdk.display()).as_str())
        );
        assert_eq!(
            manifest["dev-dependencies"]["steadfast-testkit"]["path"].as_str(),
            Some(format!("{}/testkit", sdk.display()).as_str())
        );
        assert_eq!(
            manifest["package"]["metadata"]["steadfast"]["world"].as_str(),
            Some("activity")
        );
    }
}
