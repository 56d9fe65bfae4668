//! `/metrics` after the tutorial's saga: every counter checked against what the journal
//! says happened, and who may scrape.

mod support;

use serde_json::{Value, json};
use steadfast::api::ApiConfig;

/// The value of the sample of `name` whose labels include every pair of `labels`
/// (summed, if several match).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(rest) => match rest.split_once("} ") {
                Some(split) => split,
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(value) => ("", value),
                None => continue,
            },
        };
        let matches = labels.iter().all(|(k, v)| {
            label_text
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        });
        if matches {
            let value: f64 = value.split(' ').next().unwrap().parse().unwrap();
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_journal_says_happened() {
    let server = support::server(ApiConfig::default()).await;
    steadfast::examples::install(&server.engine).await.unwrap();
    let admin = server.admin.clone();
    let order = |id: &str, fail: bool| {
        json!({
            "instance_id": id,
            "input": {"task_id": id, "title": "Prepare quarterly report", "assignee": "alice@example.com",
                      "priority": "high", "simulate_dashboard_failure": fail}
        })
    };
    for (id, fail) in [("saga-ok", false), ("saga-fail", true)] {
        let (code, body) = server
            .http(
                Some(&admin),
                "POST",
                "/v1/workflows/task_processing_saga/start",
                Some(order(id, fail).to_string().into_bytes()),
            )
            .await;
        assert_eq!(code, 201, "{body}");
    }
    let mut ended = Vec::new();
    for id in ["saga-ok", "saga-fail"] {
        let (code, body) = server
            .http(
                Some(&admin),
                "GET",
                &format!("/v1/instances/{id}/wait?timeout_ms=60000"),
                None,
            )
            .await;
        assert_eq!(code, 200, "{body}");
        ended.push(body["runtime_status"].as_str().unwrap().to_owned());
    }
    // The tutorial's saga completes in both cases (the failure case with its compensation
    // done and `"status": "failed"` in its output). Counted below against these, so a wait
    // that timed out fails here.
    assert_eq!(ended, ["COMPLETED", "COMPLETED"], "how the sagas ended");
    // An approval that is terminated while it waits to start (so none of its activities
    // runs, and every attempt counted below is one the sagas' journals show).
    let (code, body) = server
        .http(
            Some(&admin),
            "POST",
            "/v1/workflows/approval_workflow/start",
            Some(
                json!({"instance_id": "req-stop", "start_delay_ms": 3_600_000,
                       "input": serde_json::from_str::<Value>(&support::approval("req-stop", 5000)).unwrap()})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = server
        .http(
            Some(&admin),
            "POST",
            "/v1/instances/req-stop/terminate",
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    // A workflow that calls an activity nobody registered, by a name of its choosing,
    // and one that starts a child.
    server
        .engine
        .deploy(steadfast_tests::TESTING_V1_WASM.to_vec())
        .await
        .unwrap();
    for (workflow, id, input) in [
        (
            "call",
            "guest-named",
            json!({"activity": "made_up_by_the_guest_0x5eed", "input": 1}),
        ),
        ("parent", "with-child", json!({"x": 1})),
    ] {
        let (code, body) = server
            .http(
                Some(&admin),
                "POST",
                &format!("/v1/workflows/{workflow}/start"),
                Some(
                    json!({"instance_id": id, "input": input})
                        .to_string()
                        .into_bytes(),
                ),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        let (code, body) = server
            .http(
                Some(&admin),
                "GET",
                &format!("/v1/instances/{id}/wait?timeout_ms=60000"),
                None,
            )
            .await;
        assert_eq!(code, 200, "{body}");
        assert_ne!(body["runtime_status"], "RUNNING", "{body}");
    }
    // A path no route has: counted, but never as a label of its own.
    let (code, _) = server
        .http(Some(&admin), "GET", "/no-such-route-4711", None)
        .await;
    assert_eq!(code, 404);

    // What the journal says: activity attempts and their outcomes.
    let (mut ok_attempts, mut failed_attempts) = (0.0, 0.0);
    for id in ["saga-ok", "saga-fail"] {
        let (code, page) = server
            .http(
                Some(&admin),
                "GET",
                &format!("/v1/instances/{id}/history?limit=1000"),
                None,
            )
            .await;
        assert_eq!(code, 200, "{page}");
        for entry in page["history"].as_array().unwrap() {
            match entry["type"].as_str().unwrap() {
                "activity_attempt_failed" => failed_attempts += 1.0,
                "activity_completed" => {
                    let attempts = entry["attempts"].as_f64().unwrap();
                    // Earlier attempts of a completed activity failed and were journaled
                    // as activity_attempt_failed above; the last one is counted here.
                    if entry["result"].get("ok").is_some() || entry["result"].get("Ok").is_some() {
                        ok_attempts += 1.0;
                    } else {
                        failed_attempts += 1.0;
                    }
                    assert!(attempts >= 1.0);
                }
                _ => {}
            }
        }
    }
    assert!(
        ok_attempts >= 4.0,
        "the saga ran its steps: {ok_attempts} successful attempts"
    );

    let (code, text) = server.text(Some(&admin), "/metrics").await;
    assert_eq!(code, 200, "{text}");
    let saga = [("tenant", "default"), ("workflow", "task_processing_saga")];
    assert_eq!(
        sample(&text, "steadfast_workflow_starts_total", &saga),
        Some(2.0),
        "{text}"
    );
    let completed = ended.iter().filter(|s| *s == "COMPLETED").count() as f64;
    let failed = ended.iter().filter(|s| *s == "FAILED").count() as f64;
    let ends = |outcome| {
        sample(
            &text,
            "steadfast_workflow_ends_total",
            &[saga[0], saga[1], ("outcome", outcome)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(ends("completed"), completed, "{text}");
    assert_eq!(ends("failed"), failed, "{text}");
    assert_eq!(
        sample(
            &text,
            "steadfast_workflow_ends_total",
            &[("workflow", "approval_workflow"), ("outcome", "terminated")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "steadfast_activity_attempts_total",
            &[("tenant", "default"), ("outcome", "ok")]
        )
        .unwrap_or(0.0),
        ok_attempts,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "steadfast_activity_attempts_total",
            &[("tenant", "default"), ("outcome", "error")]
        )
        .unwrap_or(0.0),
        failed_attempts + 1.0, // the guest's call of an activity nobody registered
        "{text}"
    );
    // Every attempt was timed.
    assert_eq!(
        sample(&text, "steadfast_activity_duration_seconds_count", &[]),
        Some(ok_attempts + failed_attempts + 1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "steadfast_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/v1/workflows/{name}/start"),
                ("status", "201")
            ]
        ),
        Some(5.0), // two sagas, the approval, `call` and `parent`
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "steadfast_http_requests_total",
            &[("route", "<unmatched>"), ("status", "404")]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("no-such-route-4711"), "{text}");
    // The guest's made-up activity name is no label; its attempt is counted all the same.
    assert!(!text.contains("made_up_by_the_guest"), "{text}");
    assert_eq!(
        sample(
            &text,
            "steadfast_activity_attempts_total",
            &[("activity", "<unregistered>"), ("outcome", "error")]
        ),
        Some(1.0),
        "{text}"
    );
    // A child's start counts as a start, as its end counts as an end.
    let child = [("tenant", "default"), ("workflow", "echo")];
    assert_eq!(
        sample(&text, "steadfast_workflow_starts_total", &child),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "steadfast_workflow_ends_total", &child),
        Some(1.0),
        "{text}"
    );
    for histogram in [
        "steadfast_journal_commit_duration_seconds_count",
        "steadfast_journal_writes_per_commit_count",
        "steadfast_step_duration_seconds_count",
    ] {
        assert!(
            sample(&text, histogram, &[]).unwrap_or(0.0) >= 1.0,
            "{histogram}: {text}"
        );
    }
    // The three example components and the testing one were compiled once each (a fresh
    // data directory: no compiled-code cache to load from).
    assert_eq!(
        sample(&text, "steadfast_compile_duration_seconds_count", &[]),
        Some(4.0),
        "{text}"
    );
    assert!(
        sample(&text, "steadfast_resident_instances", &[]).is_some(),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );

    // Metrics name every tenant: a tenant's token may not read them, nor may no token.
    let (code, body) = server
        .http(
            Some(&admin),
            "POST",
            "/v1/tokens",
            Some(
                json!({"scopes": ["read", "signal", "deploy", "start"]})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let tenant_token = body["token"].as_str().unwrap().to_owned();
    let (code, _) = server.text(Some(&tenant_token), "/metrics").await;
    assert_eq!(code, 403);
    let (code, _) = server.text(None, "/metrics").await;
    assert_eq!(code, 401);
    // A token with just the metrics scope may.
    let (code, body) = server
        .http(
            Some(&admin),
            "POST",
            "/v1/tokens",
            Some(
                json!({"scopes": ["metrics"], "label": "prometheus"})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let scraper = body["token"].as_str().unwrap().to_owned();
    let (code, text) = server.text(Some(&scraper), "/metrics").await;
    assert_eq!(code, 200);
    assert!(text.contains("steadfast_workflow_starts_total"));
    let (code, _) = server
        .http(Some(&scraper), "GET", "/v1/instances", None)
        .await;
    assert_eq!(code, 403, "the metrics scope reads no instance");
}
