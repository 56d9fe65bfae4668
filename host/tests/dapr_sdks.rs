//! The official Dapr SDKs against a real `steadfast dev`, installed from their registries
//! at pinned versions into `target/dapr-sdks/` (reused between runs).
//!
//! - JavaScript `@dapr/dapr` (HTTP protocol): its sidecar check (`GET /v1.0/metadata`),
//!   then start, get, pause, resume, raise event, terminate and purge on the `v1.0-beta1`
//!   paths it calls.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod support;
use support::dev::start_dev;

/// The JavaScript SDK's version, pinned.
const DAPR_JS: &str = "3.6.1";

fn sdk_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("dapr-sdks").join(name)
}

/// `@dapr/dapr` at [`DAPR_JS`] in `target/dapr-sdks/js`, installed once with npm.
fn dapr_js() -> PathBuf {
    let dir = sdk_dir(&format!("js-{DAPR_JS}"));
    let installed = dir.join("node_modules/@dapr/dapr/package.json");
    if !installed.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("package.json"),
            r#"{"name": "steadfast-dapr-js-test", "private": true}"#,
        )
        .unwrap();
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--ignore-scripts"])
            .arg(format!("@dapr/dapr@{DAPR_JS}"))
            .current_dir(&dir)
            .status()
            .expect("npm (Node.js) is needed for the Dapr JavaScript SDK test");
        assert!(
            status.success() && installed.exists(),
            "npm install @dapr/dapr@{DAPR_JS} failed"
        );
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dapr_javascript_sdk_drives_the_tutorials_approval() {
    let dir = dapr_js();
    let script = dir.join("js_client.cjs");
    std::fs::write(&script, include_str!("dapr/js_client.cjs")).unwrap();
    let dev = start_dev().await;
    let port = dev.url.rsplit(':').next().unwrap().to_owned();
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .current_dir(&dir)
        .env("DAPR_HOST", "127.0.0.1")
        .env("DAPR_HTTP_PORT", &port)
        .env("DAPR_API_TOKEN", &dev.admin)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the JS client failed:\n{stdout}\n{stderr}"
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(seen["started"], "js-approval");
    assert_eq!(seen["running"], "RUNNING");
    assert_eq!(seen["paused"], "SUSPENDED");
    assert_eq!(seen["resumed"], "RUNNING");
    assert_eq!(seen["completed"]["status"], "COMPLETED");
    assert_eq!(seen["completed"]["workflow"], "approval_workflow");
    let output: Value =
        serde_json::from_str(seen["completed"]["output"].as_str().unwrap()).unwrap();
    assert_eq!(output["status"], "approved");
    assert_eq!(output["approver"], "manager@company.com");
    assert_eq!(seen["terminated"], "TERMINATED");
    assert_eq!(seen["after_purge"], 404);
    // And the instance is gone from the API too.
    let (code, _) = dev
        .api(&dev.admin, "GET", "/v1/instances/js-doomed", None)
        .await;
    assert_eq!(code, 404);
}
