//! The official Dapr SDKs against a real `steadfast dev`, installed from their registries
//! at pinned versions into `target/dapr-sdks/` (reused between runs).
//!
//! - JavaScript `@dapr/dapr` (HTTP protocol): its sidecar check (`GET /v1.0/metadata`),
//!   then start, get, pause, resume, raise event, terminate and purge on the `v1.0-beta1`
//!   paths it calls.
//! - Python `dapr-ext-workflow` (the Durable Task gRPC protocol): `DaprWorkflowClient`
//!   schedules the tutorial's approval, waits for its start, pauses, resumes, and waits for
//!   its completion after the tutorial's FastAPI endpoint (a real uvicorn process) raised
//!   `approval_received`; terminate and purge; and the token rules (401, 403, another
//!   tenant's 404) as gRPC statuses.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

mod support;
use support::dev::{free_port, start_dev};

/// The Python SDK, FastAPI and uvicorn, each pinned.
const PYTHON_REQUIREMENTS: &str = include_str!("dapr/python-requirements.txt");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dapr_python_sdk_and_the_tutorials_fastapi_endpoint_drive_an_approval() {
    let venv = support::python::venv("dapr-python", PYTHON_REQUIREMENTS);
    let dev = start_dev().await;
    let grpc = format!("127.0.0.1:{}", dev.grpc_port);
    // A read-only token of the same tenant, and a token of another tenant.
    let (code, body) = dev
        .api(
            &dev.admin,
            "POST",
            "/v1/tokens",
            Some(json!({"scopes": ["read"]})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let viewer = body["token"].as_str().unwrap().to_owned();
    let (code, body) = dev
        .api(
            &dev.admin,
            "POST",
            "/v1/tenants",
            Some(json!({"name": "acme"})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let other_tenant = body["token"].as_str().unwrap().to_owned();

    // The tutorial's endpoint, served by uvicorn as its users run it.
    let scripts = tempfile::tempdir().unwrap();
    std::fs::write(
        scripts.path().join("approval_endpoint.py"),
        include_str!("dapr/approval_endpoint.py"),
    )
    .unwrap();
    std::fs::write(
        scripts.path().join("py_client.py"),
        include_str!("dapr/py_client.py"),
    )
    .unwrap();
    let port = free_port();
    let _endpoint = tokio::process::Command::new(venv.join("bin/uvicorn"))
        .args([
            "approval_endpoint:app",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .current_dir(scripts.path())
        .env("DAPR_GRPC_ENDPOINT", &grpc)
        .env("DAPR_API_TOKEN", &dev.admin)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("uvicorn starts");
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(up, "uvicorn did not come up");

    let out = tokio::process::Command::new(venv.join("bin/python"))
        .arg("py_client.py")
        .arg(&endpoint)
        .current_dir(scripts.path())
        .env("DAPR_GRPC_ENDPOINT", &grpc)
        .env("DAPR_API_TOKEN", &dev.admin)
        .env("VIEWER_TOKEN", &viewer)
        .env("OTHER_TENANT_TOKEN", &other_tenant)
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python client failed:\n{stdout}\n{stderr}"
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
    assert_eq!(seen["scheduled"], "py-approval", "{seen}");
    assert_eq!(seen["started"], "RUNNING", "{seen}");
    assert_eq!(seen["name"], "approval_workflow", "{seen}");
    assert_eq!(
        seen["custom_status"]["stage"], "waiting_for_approval",
        "{seen}"
    );
    assert_eq!(seen["paused"], "SUSPENDED", "{seen}");
    assert_eq!(seen["resumed"], "RUNNING", "{seen}");
    assert_eq!(
        seen["endpoint"],
        json!({"status": "event_raised", "instance_id": "py-approval"}),
        "{seen}"
    );
    assert_eq!(seen["completed"], "COMPLETED", "{seen}");
    assert_eq!(
        seen["output"],
        json!({"status": "approved", "request_id": "req-py", "approver": "manager@company.com"}),
        "{seen}"
    );
    assert_eq!(seen["terminated"], "TERMINATED", "{seen}");
    assert_eq!(seen["after_purge"], true, "{seen}");
    assert_eq!(seen["no_token"], "UNAUTHENTICATED", "{seen}");
    assert_eq!(seen["viewer_reads"], "COMPLETED", "{seen}");
    assert_eq!(seen["viewer_raises"], "PERMISSION_DENIED", "{seen}");
    assert_eq!(seen["other_tenant_reads"], true, "{seen}");
    assert_eq!(seen["other_tenant_raises"], "NOT_FOUND", "{seen}");
    // The approval's journal has the event the endpoint raised, once.
    let (code, page) = dev
        .api(&dev.admin, "GET", "/v1/instances/py-approval/history", None)
        .await;
    assert_eq!(code, 200, "{page}");
    let raised = page["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "event_raised")
        .count();
    assert_eq!(raised, 1, "{page}");
}

/// The tutorial's activities as Python functions in a Dapr SDK worker process, serving an
/// approval whose orchestrator is the Wasm component: the worker is killed in the middle
/// of `send_approval_request`, another starts, and the workflow completes with each
/// activity journaled once. Also times what an external activity adds over a Wasm one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_runs_the_activities_and_a_killed_one_is_replaced() {
    let venv = support::python::venv("dapr-python", PYTHON_REQUIREMENTS);
    let dev = start_dev().await;
    let grpc = format!("127.0.0.1:{}", dev.grpc_port);
    // Tenant acme deploys only the orchestrators (and the testing workflows): no Wasm
    // activity answers its activity calls, so they go to its workers.
    let (code, body) = dev
        .api(
            &dev.admin,
            "POST",
            "/v1/tenants",
            Some(json!({"name": "acme"})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let acme = body["token"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    for component in [
        steadfast::examples::WORKFLOWS_WASM,
        steadfast_tests::TESTING_V1_WASM,
    ] {
        let response = client
            .post(format!("{}/v1/components", dev.url))
            .bearer_auth(&acme)
            .body(component.to_vec())
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
    }
    let scripts = tempfile::tempdir().unwrap();
    let worker_script = scripts.path().join("py_worker.py");
    std::fs::write(&worker_script, include_str!("dapr/py_worker.py")).unwrap();
    let marks = scripts.path().join("marks.jsonl");
    let worker = |slow: &str| {
        tokio::process::Command::new(venv.join("bin/python"))
            .arg(&worker_script)
            .arg(&marks)
            .env("DAPR_GRPC_ENDPOINT", &grpc)
            .env("DAPR_API_TOKEN", &acme)
            .env("SLOW_ACTIVITY", slow)
            .env("PYTHONWARNINGS", "ignore")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the Python worker starts")
    };
    let marked = |event: &str, pid: u32| {
        std::fs::read_to_string(&marks)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|m| m["event"] == event && m["pid"] == pid)
    };
    let wait_for_mark = |event: &'static str, pid: u32| {
        let marked = &marked;
        async move {
            for _ in 0..600 {
                if marked(event, pid) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("worker {pid} never marked '{event}'");
        }
    };

    // The first worker takes send_approval_request and hangs in it.
    let mut first = worker("send_approval_request");
    let first_pid = first.id().unwrap();
    wait_for_mark("worker started", first_pid).await;
    // Its work-item stream is open once the server counts it.
    let mut connected = false;
    for _ in 0..300 {
        let (_, workers) = dev.api(&acme, "GET", "/v1/workers", None).await;
        if workers["connected"] == 1 {
            connected = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(connected, "the worker never opened its work-item stream");
    let request = json!({"request_id": "ext-1", "requester": "bob@company.com", "amount": 5000, "description": "Team offsite"});
    let (code, body) = dev
        .api(
            &acme,
            "POST",
            "/v1/workflows/approval_workflow/start",
            Some(json!({"instance_id": "ext-1", "input": request})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    wait_for_mark("send_approval_request started", first_pid).await;
    let (code, workers) = dev.api(&acme, "GET", "/v1/workers", None).await;
    assert_eq!(code, 200, "{workers}");
    assert_eq!(workers["connected"], 1, "{workers}");
    // Killed mid-activity; a second worker takes over.
    first.kill().await.unwrap();
    let second = worker("");
    let second_pid = second.id().unwrap();
    wait_for_mark("send_approval_request done", second_pid).await;
    let (code, body) = dev
        .api(
            &acme,
            "POST",
            "/v1/instances/ext-1/events/approval_received",
            Some(json!({"approved": true, "approver": "manager@company.com"})),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let (code, done) = dev
        .api(
            &acme,
            "GET",
            "/v1/instances/ext-1/wait?timeout_ms=60000",
            None,
        )
        .await;
    assert_eq!(code, 200, "{done}");
    assert_eq!(done["runtime_status"], "COMPLETED", "{done}");
    assert_eq!(done["output"]["status"], "approved", "{done}");
    // Each activity journaled once, the confirmation by the second worker.
    let (code, page) = dev
        .api(&acme, "GET", "/v1/instances/ext-1/history?limit=1000", None)
        .await;
    assert_eq!(code, 200, "{page}");
    let history = page["history"].as_array().unwrap();
    let scheduled: Vec<&Value> = history
        .iter()
        .filter(|e| e["type"] == "activity_scheduled")
        .collect();
    let completed: Vec<&Value> = history
        .iter()
        .filter(|e| e["type"] == "activity_completed")
        .collect();
    assert_eq!(scheduled.len(), 3, "{page}");
    // Re-delivered after the kill, not retried after a timeout: no attempt failed.
    assert!(
        !history
            .iter()
            .any(|e| e["type"] == "activity_attempt_failed"),
        "{page}"
    );
    assert_eq!(completed.len(), 3, "each activity journaled once: {page}");
    for entry in &completed {
        assert!(entry["result"].get("Ok").is_some(), "{entry}");
    }
    let confirmation: Value =
        serde_json::from_str(completed[2]["result"]["Ok"].as_str().unwrap()).unwrap();
    assert_eq!(confirmation["by_pid"], second_pid, "{confirmation}");
    let (code, workers) = dev.api(&acme, "GET", "/v1/workers", None).await;
    assert_eq!(code, 200, "{workers}");
    assert_eq!(
        workers["connected"], 1,
        "the killed worker is gone: {workers}"
    );
    let names: Vec<&str> = workers["activities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"send_approval_request") && names.contains(&"execute_approved_action"),
        "{workers}"
    );
    // The CLI says the same.
    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["-o", "json", "workers"])
        .env("STEADFAST_SERVER", &dev.url)
        .env("STEADFAST_TOKEN", &acme)
        .output()
        .await
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let shown: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(shown, workers);
    // Another tenant sees none of acme's workers.
    let (_, theirs) = dev.api(&dev.admin, "GET", "/v1/workers", None).await;
    assert_eq!(theirs["connected"], 0, "{theirs}");

    // What an external activity adds: the same one-activity workflow, its activity a Wasm
    // component (default tenant) or this Python worker (acme), timed from start to end.
    let mut timings = Vec::new();
    for (token, label) in [(&dev.admin, "wasm"), (&acme, "external")] {
        if label == "wasm" {
            let response = client
                .post(format!("{}/v1/components", dev.url))
                .bearer_auth(token)
                .body(steadfast_tests::TESTING_V1_WASM.to_vec())
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
        }
        let mut took = Vec::new();
        for i in 0..21 {
            let began = std::time::Instant::now();
            let (code, body) = dev
                .api(
                    token,
                    "POST",
                    "/v1/workflows/call/start",
                    Some(json!({"instance_id": format!("{label}-{i}"),
                                "input": {"activity": "execute_approved_action", "input": request}})),
                )
                .await;
            assert_eq!(code, 201, "{body}");
            let (code, done) = dev
                .api(
                    token,
                    "GET",
                    &format!("/v1/instances/{label}-{i}/wait?timeout_ms=60000"),
                    None,
                )
                .await;
            assert_eq!(code, 200);
            assert_eq!(done["runtime_status"], "COMPLETED", "{done}");
            took.push(began.elapsed());
        }
        took.sort();
        timings.push((label, took[took.len() / 2]));
    }
    eprintln!(
        "p50 start-to-completion of a one-activity workflow (21 runs each): wasm {:?}, external (Python worker over gRPC) {:?}; added {:?}",
        timings[0].1,
        timings[1].1,
        timings[1].1.saturating_sub(timings[0].1)
    );
    drop(second);
}
