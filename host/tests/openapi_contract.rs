//! The OpenAPI document holds: schemathesis (pinned, from PyPI, in a venv under
//! `target/dapr-sdks/`) runs every check it has against a real `steadfast dev`, and finds
//! no server error, no undocumented status, no schema-valid request refused and no
//! schema-violating request accepted.

use serde_json::json;

mod support;
use support::dev::start_dev;

/// What the venv is made from: schemathesis and its dependencies, each pinned.
const REQUIREMENTS: &str = include_str!("dapr/schemathesis-requirements.txt");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_against_a_live_server() {
    let st = support::python::venv("schemathesis", REQUIREMENTS).join("bin/st");
    let dev = start_dev().await;
    // An instance for the operations that take an id, so they reach more than 404.
    let input = json!({"request_id": "contract", "requester": "bob@company.com", "amount": 5000, "description": "x"});
    let (code, body) = dev
        .api(
            &dev.admin,
            "POST",
            "/v1/workflows/approval_workflow/start",
            Some(json!({"instance_id": "contract-1", "input": input})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        r#"
[parameters]
"path.id" = "contract-1"
"path.name" = "approval_workflow"

# A deploy takes a WebAssembly component: no schema can say which bytes are one, so
# random bytes are refused (400 not_a_component, 422 for a component of another world)
# although the schema allows them.
[[operations]]
include-path = "/v1/components"
checks.positive_data_acceptance.expected-statuses = ["2XX", 400, 401, 403, 404, 409, 413, 422, 429]
"#,
    )
    .unwrap();
    let out = tokio::process::Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .args([
            "run",
            "--checks",
            "all",
            "--max-examples",
            "40",
            "--seed",
            "1",
        ])
        .args(["--url", &dev.url])
        .args(["-H", &format!("Authorization: Bearer {}", dev.admin)])
        .arg(format!("{}/v1/openapi.json", dev.url))
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    // It really ran: every operation was tested, and cases were generated.
    assert!(stdout.contains("generated"), "{stdout}");
    assert!(!stdout.contains("Tested: 0"), "{stdout}");
}
