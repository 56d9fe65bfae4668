//! Python tools for the tests, installed from PyPI at pinned versions into venvs under
//! `target/dapr-sdks/`, made once and reused (keyed by their requirements' text).

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Tests of one binary run on threads of one process: one makes a venv, the others wait.
/// (Test binaries run one after another.)
static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A venv named `name` with `requirements` (a pinned requirements file's text) installed.
pub fn venv(name: &str, requirements: &str) -> PathBuf {
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|p| p.into_inner());
    let key: u64 = requirements.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let venv = target_dir()
        .join("dapr-sdks")
        .join(format!("{name}-{key:016x}"));
    let done = venv.join(".installed");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&venv);
        std::fs::create_dir_all(venv.parent().unwrap()).unwrap();
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is needed for the Dapr SDK and OpenAPI tests");
        assert!(made.success(), "python3 -m venv {} failed", venv.display());
        let file = venv.join("requirements.txt");
        std::fs::write(&file, requirements).unwrap();
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&file)
            .status()
            .unwrap();
        assert!(
            installed.success(),
            "pip install -r {} failed",
            file.display()
        );
        std::fs::write(&done, b"").unwrap();
    }
    venv
}
