//! The control plane end to end: a real server on 127.0.0.1:0 with a real SQLite file,
//! driven over HTTP and through the `steadfast` binary, as a user would.

use serde_json::{Value, json};
use steadfast::api::ApiConfig;
use steadfast::engine::Scope;
use steadfast::examples;
use steadfast::model::Tenant;
use steadfast_tests::{TESTING_V1_WASM, TESTING_V2_WASM};

mod support;
use support::{approval, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_scenario_through_the_cli() {
    let s = server(ApiConfig::default()).await;
    let workflows = s.write("examples.wasm", examples::WORKFLOWS_WASM);
    let activities = s.write("activities.wasm", examples::ACTIVITIES_WASM);
    let (ok, out, err) = s
        .cli(&s.admin, &["deploy", workflows.to_str().unwrap()])
        .await;
    assert!(ok, "{err}");
    assert!(out.contains("approval_workflow v1"), "{out}");
    assert!(
        s.cli(&s.admin, &["deploy", activities.to_str().unwrap()])
            .await
            .0
    );

    let started = s
        .cli_json(
            &s.admin,
            &[
                "workflow",
                "start",
                "approval_workflow",
                "--id",
                "request-002",
                "--input",
                &approval("req-002", 5000),
            ],
        )
        .await;
    assert_eq!(started["instance_id"], "request-002");
    s.engine.settle().await;
    let status = s
        .cli_json(&s.admin, &["workflow", "status", "request-002"])
        .await;
    assert_eq!(status["runtime_status"], "RUNNING");
    assert_eq!(
        status["custom_status"],
        json!({"stage": "waiting_for_approval"})
    );

    // A start for tomorrow: the instance exists now, its code runs then.
    let later = s
        .cli_json(
            &s.admin,
            &[
                "workflow",
                "start",
                "approval_workflow",
                "--id",
                "request-later",
                "--delay-secs",
                "86400",
                "--input",
                &approval("req-later", 5000),
            ],
        )
        .await;
    assert_eq!(later["instance_id"], "request-later");
    s.engine.settle().await;
    let waiting = s
        .cli_json(&s.admin, &["workflow", "status", "request-later"])
        .await;
    assert_eq!(waiting["runtime_status"], "PENDING");
    assert_eq!(waiting["custom_status"], Value::Null, "{waiting}");
    let created = s
        .engine
        .status(&steadfast::InstanceId::new("request-later").unwrap())
        .unwrap();
    // A day after the server read its clock for the start, just before it wrote the row.
    let delay = created.start_at.unwrap().millis_since(created.created_at);
    assert!((86_390_000..=86_400_000).contains(&delay), "{created:?}");
    let (ok, text, _) = s
        .cli(&s.admin, &["workflow", "status", "request-later"])
        .await;
    assert!(ok && text.contains("starts at"), "{text}");

    let (ok, out, err) = s
        .cli(
            &s.admin,
            &[
                "workflow",
                "raise-event",
                "request-002/approval_received",
                "--input",
                r#"{"approved": true, "approver": "manager@company.com"}"#,
            ],
        )
        .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "raised approval_received on request-002");
    let done = s
        .cli_json(
            &s.admin,
            &["workflow", "wait", "request-002", "--timeout", "30"],
        )
        .await;
    assert_eq!(done["runtime_status"], "COMPLETED");
    assert_eq!(
        done["output"],
        json!({"status": "approved", "request_id": "req-002", "approver": "manager@company.com"})
    );

    let (ok, text, _) = s
        .cli(&s.admin, &["workflow", "status", "request-002"])
        .await;
    assert!(ok && text.contains("status          COMPLETED"), "{text}");
    let listed = s
        .cli_json(&s.admin, &["workflow", "list", "--status", "COMPLETED"])
        .await;
    assert_eq!(listed["instances"].as_array().unwrap().len(), 1);
    let history = s
        .cli_json(&s.admin, &["workflow", "history", "request-002"])
        .await;
    let kinds: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(
        kinds.contains(&"event_raised") && kinds.contains(&"workflow_completed"),
        "{kinds:?}"
    );

    let (ok, _, err) = s
        .cli(&s.admin, &["workflow", "status", "no-such-instance"])
        .await;
    assert!(!ok);
    assert!(
        err.contains("no instance 'no-such-instance' (HTTP 404)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_scenario_through_the_dapr_compatible_paths() {
    let s = server(ApiConfig::default()).await;
    s.deploy(&s.admin, examples::WORKFLOWS_WASM).await;
    s.deploy(&s.admin, examples::ACTIVITIES_WASM).await;

    let (code, body) = s
        .http(
            Some(&s.admin),
            "POST",
            "/v1.0/workflows/dapr/approval_workflow/start?instanceID=request-002",
            Some(approval("req-002", 5000).into_bytes()),
        )
        .await;
    assert_eq!((code, body), (202, json!({"instanceID": "request-002"})));
    s.engine.settle().await;
    let (code, body) = s
        .http(
            Some(&s.admin),
            "GET",
            "/v1.0/workflows/dapr/request-002",
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(body["runtimeStatus"], "RUNNING");
    assert_eq!(body["workflowName"], "approval_workflow");

    let decision =
        br#"{"approved": false, "approver": "cfo@company.com", "reason": "Over budget"}"#.to_vec();
    let (code, _) = s
        .http(
            Some(&s.admin),
            "POST",
            "/v1.0/workflows/dapr/request-002/raiseEvent/approval_received",
            Some(decision),
        )
        .await;
    assert_eq!(code, 202);
    s.http(
        Some(&s.admin),
        "GET",
        "/v1/instances/request-002/wait?timeout_ms=30000",
        None,
    )
    .await;
    let (_, body) = s
        .http(
            Some(&s.admin),
            "GET",
            "/v1.0/workflows/dapr/request-002",
            None,
        )
        .await;
    assert_eq!(body["runtimeStatus"], "COMPLETED");
    let output: Value =
        serde_json::from_str(body["properties"]["dapr.workflow.output"].as_str().unwrap()).unwrap();
    assert_eq!(
        output,
        json!({"status": "rejected", "request_id": "req-002", "approver": "cfo@company.com", "reason": "Over budget"})
    );

    // Pause, raise while paused (kept), resume: the event is delivered.
    s.http(
        Some(&s.admin),
        "POST",
        "/v1.0/workflows/dapr/approval_workflow/start?instanceID=request-003",
        Some(approval("req-003", 5000).into_bytes()),
    )
    .await;
    s.engine.settle().await;
    assert_eq!(
        s.http(
            Some(&s.admin),
            "POST",
            "/v1.0/workflows/dapr/request-003/pause",
            None
        )
        .await
        .0,
        202
    );
    let approve = br#"{"approved": true, "approver": "m"}"#.to_vec();
    assert_eq!(
        s.http(
            Some(&s.admin),
            "POST",
            "/v1.0/workflows/dapr/request-003/raiseEvent/approval_received",
            Some(approve)
        )
        .await
        .0,
        202
    );
    s.engine.settle().await;
    assert_eq!(
        s.http(
            Some(&s.admin),
            "GET",
            "/v1.0/workflows/dapr/request-003",
            None
        )
        .await
        .1["runtimeStatus"],
        "SUSPENDED"
    );
    assert_eq!(
        s.http(
            Some(&s.admin),
            "POST",
            "/v1.0/workflows/dapr/request-003/resume",
            None
        )
        .await
        .0,
        202
    );
    let (_, done) = s
        .http(
            Some(&s.admin),
            "GET",
            "/v1/instances/request-003/wait?timeout_ms=30000",
            None,
        )
        .await;
    assert_eq!(done["output"]["status"], "approved");

    // Terminate and purge.
    s.http(
        Some(&s.admin),
        "POST",
        "/v1.0/workflows/dapr/approval_workflow/start?instanceID=request-004",
        Some(approval("req-004", 5000).into_bytes()),
    )
    .await;
    assert_eq!(
        s.http(
            Some(&s.admin),
            "POST",
            "/v1.0/workflows/dapr/request-004/terminate",
            None
        )
        .await
        .0,
        202
    );
    assert_eq!(
        s.http(
            Some(&s.admin),
            "GET",
            "/v1.0/workflows/dapr/request-004",
            None
        )
        .await
        .1["runtimeStatus"],
        "TERMINATED"
    );
    assert_eq!(
        s.http(
            Some(&s.admin),
            "POST",
            "/v1.0/workflows/dapr/request-004/purge",
            None
        )
        .await
        .0,
        202
    );
    let (code, body) = s
        .http(
            Some(&s.admin),
            "GET",
            "/v1.0/workflows/dapr/request-004",
            None,
        )
        .await;
    assert_eq!(code, 404);
    assert_eq!(body["errorCode"], "ERR_INSTANCE_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_keeps_running_instances_on_their_version() {
    let s = server(ApiConfig::default()).await;
    let v1 = s.deploy(&s.admin, TESTING_V1_WASM).await;
    assert!(
        v1["versions"]
            .as_array()
            .unwrap()
            .contains(&json!({"workflow": "changing", "version": 1}))
    );
    let start = |id: &'static str, workflow: &'static str| {
        let s = &s;
        async move {
            let body = json!({ "instance_id": id }).to_string().into_bytes();
            let (code, body) = s
                .http(
                    Some(&s.admin),
                    "POST",
                    &format!("/v1/workflows/{workflow}/start"),
                    Some(body),
                )
                .await;
            assert_eq!(code, 201, "{body}");
        }
    };
    start("old", "changing").await;
    start("sleepy", "buffered_events").await;
    s.engine.settle().await;

    // `--check` before deploying v2: the changed workflow diverges, the unchanged one replays.
    let v2_path = s.write("testing_v2.wasm", TESTING_V2_WASM);
    let (ok, out, err) = s
        .cli(&s.admin, &["deploy", "--check", v2_path.to_str().unwrap()])
        .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("old: INCOMPATIBLE: journal position 1: the journal recorded wait-for-external-event 'go', but the workflow now asks for call-activity 'step_c'"),
        "{out}"
    );
    assert!(out.contains("sleepy: compatible"), "{out}");
    let versions = s.http(Some(&s.admin), "GET", "/v1/workflows", None).await.1;
    let changing = versions["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "changing")
        .unwrap()
        .clone();
    assert_eq!(
        changing["versions"].as_array().unwrap().len(),
        1,
        "--check deployed nothing"
    );

    // Deploy v2 with --migrate: the compatible instance moves, the other stays on v1.
    let report = s
        .cli_json(
            &s.admin,
            &["deploy", "--migrate", v2_path.to_str().unwrap()],
        )
        .await;
    let migrated: Vec<(String, bool)> = report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["instance_id"].as_str().unwrap().to_owned(),
                i["migrated"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(
        migrated.contains(&("old".into(), false)) && migrated.contains(&("sleepy".into(), true)),
        "{migrated:?}"
    );
    start("new", "changing").await;
    s.engine.settle().await;

    let version = |id: &'static str| {
        let s = &s;
        async move {
            s.http(Some(&s.admin), "GET", &format!("/v1/instances/{id}"), None)
                .await
                .1["version"]
                .clone()
        }
    };
    assert_eq!(version("old").await, json!(1));
    assert_eq!(version("new").await, json!(2));
    assert_eq!(version("sleepy").await, json!(2));

    for id in ["old", "new"] {
        let (code, _) = s
            .http(
                Some(&s.admin),
                "POST",
                &format!("/v1/instances/{id}/events/go"),
                Some(b"null".to_vec()),
            )
            .await;
        assert_eq!(code, 202);
    }
    for id in ["old", "new"] {
        let (_, done) = s
            .http(
                Some(&s.admin),
                "GET",
                &format!("/v1/instances/{id}/wait?timeout_ms=30000"),
                None,
            )
            .await;
        assert_eq!(done["runtime_status"], "COMPLETED", "{done}");
    }
    let activities = |id: &'static str| {
        let s = &s;
        async move {
            let history = s
                .http(
                    Some(&s.admin),
                    "GET",
                    &format!("/v1/instances/{id}/history"),
                    None,
                )
                .await
                .1;
            history["history"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "activity_scheduled")
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        activities("old").await,
        ["step_a", "step_b"],
        "the old instance finished on v1"
    );
    assert_eq!(
        activities("new").await,
        ["step_a", "step_c", "step_b"],
        "the new instance ran v2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_see_or_touch_each_other() {
    let s = server(ApiConfig::default()).await;
    let acme = s.cli_json(&s.admin, &["tenant", "create", "acme"]).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let globex = s.cli_json(&s.admin, &["tenant", "create", "globex"]).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    s.deploy(&acme, examples::WORKFLOWS_WASM).await;
    s.deploy(&acme, examples::ACTIVITIES_WASM).await;
    let body = json!({"instance_id": "req-1", "input": serde_json::from_str::<Value>(&approval("req-1", 5000)).unwrap()}).to_string().into_bytes();
    assert_eq!(
        s.http(
            Some(&acme),
            "POST",
            "/v1/workflows/approval_workflow/start",
            Some(body.clone())
        )
        .await
        .0,
        201
    );
    s.engine.settle().await;

    // Every verb on acme's instance answers 404 to globex, exactly as for a missing one.
    let approve = br#"{"approved": true, "approver": "mallory"}"#.to_vec();
    for (method, path, body) in [
        ("GET", "/v1/instances/req-1", None),
        ("GET", "/v1/instances/req-1/wait?timeout_ms=10", None),
        ("GET", "/v1/instances/req-1/history", None),
        (
            "POST",
            "/v1/instances/req-1/events/approval_received",
            Some(approve.clone()),
        ),
        ("POST", "/v1/instances/req-1/terminate", None),
        ("POST", "/v1/instances/req-1/suspend", None),
        ("POST", "/v1/instances/req-1/resume", None),
        ("DELETE", "/v1/instances/req-1?force=true", None),
        ("GET", "/v1.0/workflows/dapr/req-1", None),
        (
            "POST",
            "/v1.0/workflows/dapr/req-1/raiseEvent/approval_received",
            Some(approve.clone()),
        ),
    ] {
        let (code, answer) = s.http(Some(&globex), method, path, body).await;
        assert_eq!(code, 404, "{method} {path}: {answer}");
    }
    assert_eq!(
        s.http(Some(&globex), "GET", "/v1/instances", None).await.1["instances"],
        json!([])
    );
    assert_eq!(
        s.http(Some(&globex), "GET", "/v1/workflows", None).await.1["workflows"],
        json!([])
    );
    // globex cannot start acme's workflows, and deploying the same names gives it its own.
    assert_eq!(
        s.http(
            Some(&globex),
            "POST",
            "/v1/workflows/approval_workflow/start",
            Some(body.clone())
        )
        .await
        .0,
        404
    );
    s.deploy(&globex, examples::WORKFLOWS_WASM).await;
    assert_eq!(
        s.http(
            Some(&globex),
            "POST",
            "/v1/workflows/approval_workflow/start",
            Some(body)
        )
        .await
        .0,
        201,
        "same local id, other tenant"
    );
    let acme_versions = s.http(Some(&acme), "GET", "/v1/workflows", None).await.1;
    assert!(
        acme_versions["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["versions"].as_array().unwrap().len() == 1)
    );

    // acme's instance is untouched, still waiting for its own approver.
    let (_, status) = s
        .http(Some(&acme), "GET", "/v1/instances/req-1", None)
        .await;
    assert_eq!(status["runtime_status"], "RUNNING");

    // Scopes and missing tokens.
    let reader = s
        .engine
        .issue_token(&Tenant::new("acme").unwrap(), &[Scope::Read], "reader")
        .await
        .unwrap();
    let (code, body) = s
        .http(
            Some(&reader),
            "POST",
            "/v1/instances/req-1/events/approval_received",
            Some(approve),
        )
        .await;
    assert_eq!(
        (code, body["error"]["message"].as_str().unwrap()),
        (403, "this token lacks the 'signal' scope")
    );
    assert_eq!(
        s.http(Some(&reader), "GET", "/v1/instances/req-1", None)
            .await
            .0,
        200
    );
    assert_eq!(
        s.http(None, "GET", "/v1/instances/req-1", None).await.0,
        401
    );
    assert_eq!(
        s.http(Some("sf_forged"), "GET", "/v1/instances/req-1", None)
            .await
            .0,
        401
    );
    let (ok, _, err) = s.cli(&acme, &["tenant", "create", "evil"]).await;
    assert!(!ok && err.contains("lacks the 'admin' scope"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_writes_nothing() {
    let s = server(ApiConfig {
        max_payload_bytes: 2048,
        ..ApiConfig::default()
    })
    .await;
    s.deploy(&s.admin, examples::WORKFLOWS_WASM).await;
    let post = |path: &'static str, body: Vec<u8>| {
        let s = &s;
        async move { s.http(Some(&s.admin), "POST", path, Some(body)).await }
    };
    let expect = |(code, body): (u16, Value), want: u16, error: &str, fragment: &str| {
        assert_eq!(code, want, "{body}");
        assert_eq!(body["error"]["code"], error, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(fragment), "{message}");
    };

    expect(
        post("/v1/workflows/approval_workflow/start", b"{oops".to_vec()).await,
        400,
        "invalid_json",
        "the start request is not valid JSON",
    );
    expect(
        post("/v1/workflows/no_such/start", b"{}".to_vec()).await,
        404,
        "unknown_workflow",
        "deployed workflows: approval_workflow, health_monitor_workflow, task_processing_saga",
    );
    expect(
        post("/v1/components", b"MZ\x90\x00 not wasm".to_vec()).await,
        400,
        "not_a_component",
        "not a WebAssembly component",
    );
    expect(
        post("/v1/components", b"\0asm\x01\0\0\0".to_vec()).await,
        400,
        "not_a_component",
        "core wasm module",
    );
    // A valid, empty component: wasm, but not our world.
    expect(
        post("/v1/components", b"\0asm\x0d\0\x01\0".to_vec()).await,
        422,
        "wrong_world",
        "neither the steadfast:workflow orchestrator world",
    );
    let start = json!({"instance_id": "dup", "input": serde_json::from_str::<Value>(&approval("r", 10)).unwrap()}).to_string().into_bytes();
    assert_eq!(
        post("/v1/workflows/approval_workflow/start", start.clone())
            .await
            .0,
        201
    );
    expect(
        post("/v1/workflows/approval_workflow/start", start).await,
        409,
        "instance_exists",
        "instance 'dup' already exists",
    );
    let huge = json!({"input": "x".repeat(4096)}).to_string().into_bytes();
    expect(
        post("/v1/workflows/approval_workflow/start", huge).await,
        413,
        "payload_too_large",
        "over the limit of 2048 bytes",
    );
    expect(
        post(
            "/v1/instances/ghost/events/approval_received",
            b"{}".to_vec(),
        )
        .await,
        404,
        "instance_not_found",
        "no instance 'ghost'",
    );
    expect(
        post("/v1/instances/dup/events/x", b"[1,".to_vec()).await,
        400,
        "invalid_json",
        "the event payload is not valid JSON",
    );
    expect(
        post(
            "/v1/workflows/approval_workflow/start",
            br#"{"instance_id": "a/b"}"#.to_vec(),
        )
        .await,
        400,
        "invalid_instance_id",
        "contains '/'",
    );

    // Nothing half-written: only the one good start exists.
    let listed = s.http(Some(&s.admin), "GET", "/v1/instances", None).await.1;
    let ids: Vec<&str> = listed["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["dup"]);
    let (code, spec) = s.http(None, "GET", "/v1/openapi.json", None).await;
    assert_eq!(code, 200);
    assert_eq!(spec["openapi"], "3.1.0");
    assert!(spec["paths"]["/v1/instances/{id}/events/{event}"]["post"].is_object());
}

/// A wait registers a waiter only while it waits: a wait on an id that does not exist
/// answers 404 and leaves nothing, and a wait that times out, or whose client goes away,
/// is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_leave_no_waiter_behind() {
    let s = server(ApiConfig::default()).await;
    s.deploy(&s.admin, examples::WORKFLOWS_WASM).await;
    s.deploy(&s.admin, examples::ACTIVITIES_WASM).await;
    let (status, body) = s
        .http(
            Some(&s.admin),
            "POST",
            "/v1/workflows/approval_workflow/start",
            Some(
                json!({"instance_id": "waiting", "input": serde_json::from_str::<Value>(&approval("r", 5000)).unwrap()})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for i in 0..200 {
        let (status, _) = s
            .http(
                Some(&s.admin),
                "GET",
                &format!("/v1/instances/ghost-{i}/wait"),
                None,
            )
            .await;
        assert_eq!(status, 404);
    }
    assert_eq!(s.engine.waiter_count(), 0, "404 waits leave nothing");
    for _ in 0..50 {
        let (status, body) = s
            .http(
                Some(&s.admin),
                "GET",
                "/v1/instances/waiting/wait?timeout_ms=5",
                None,
            )
            .await;
        assert_eq!((status, &body["runtime_status"]), (200, &json!("RUNNING")));
    }
    assert_eq!(s.engine.waiter_count(), 0, "timed-out waits leave nothing");
    // A client that gives up long before the server's timeout.
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let gave_up = client
            .get(format!(
                "{}/v1/instances/waiting/wait?timeout_ms=300000",
                s.url
            ))
            .bearer_auth(&s.admin)
            .timeout(std::time::Duration::from_millis(50))
            .send()
            .await;
        assert!(gave_up.is_err());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.engine.waiter_count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} waiters outlived their clients",
            s.engine.waiter_count()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
