//! OpenTelemetry spans, received by a real OTLP/HTTP (JSON) endpoint: a run span per
//! generation in the caller's trace, steps, activity attempts and fired timers under it,
//! a raised event in its sender's trace linked to the run, and the activity attempt's
//! `traceparent` on the activity's outgoing HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use steadfast::Engine;
use steadfast::api::{self, ApiConfig};
use steadfast::engine::{Limits, Scope};
use steadfast::model::Tenant;
use steadfast::traces::{Traces, TracesConfig};

#[derive(Clone, Default)]
struct Collector {
    /// Every span received, flattened out of resourceSpans/scopeSpans.
    spans: Arc<Mutex<Vec<Value>>>,
    /// The `traceparent` of each health check the monitor's activity sent.
    health_checks: Arc<Mutex<Vec<Option<String>>>>,
}

/// A collector (`POST /v1/traces`, OTLP JSON) and a health endpoint on one loopback port.
async fn collector() -> (String, Collector) {
    let seen = Collector::default();
    let (spans, checks) = (seen.spans.clone(), seen.health_checks.clone());
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let spans = spans.clone();
                async move {
                    let export: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                    let mut spans = spans.lock().unwrap();
                    for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                            spans.extend(scope["spans"].as_array().cloned().unwrap_or_default());
                        }
                    }
                    axum::Json(json!({}))
                }
            }),
        )
        .route(
            "/health",
            axum::routing::get(move |headers: HeaderMap| {
                let checks = checks.clone();
                async move {
                    let parent = headers
                        .get("traceparent")
                        .map(|v| v.to_str().unwrap().to_owned());
                    checks.lock().unwrap().push(parent);
                    "ok"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

fn text_attribute(span: &Value, key: &str) -> Option<String> {
    attribute(span, key)?["stringValue"]
        .as_str()
        .map(str::to_owned)
}

fn int_attribute(span: &Value, key: &str) -> Option<i64> {
    let value = &attribute(span, key)?["intValue"];
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_join_the_callers_trace_and_follow_the_run() {
    let (collector_url, seen) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = steadfast_tests::clock();
    let traces = Traces::from_config(&TracesConfig {
        otlp_endpoint: Some(collector_url.clone()),
        otlp_protocol: Some("http/json".into()),
    })
    .unwrap();
    assert!(traces.is_on());
    let mut config = steadfast_tests::config(dir.path(), &clock);
    config.traces = Arc::new(traces);
    config.limits = Limits {
        http_allow: vec![format!("GET {collector_url}/health")],
        ..Limits::default()
    };
    let engine = Engine::open(config).await.unwrap();
    steadfast::examples::install(&engine).await.unwrap();
    engine
        .deploy(steadfast_tests::TESTING_V1_WASM.to_vec())
        .await
        .unwrap();
    let admin = engine
        .issue_token(&Tenant::default_tenant(), &Scope::ALL, "test")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(api::serve(
        listener,
        engine.clone(),
        ApiConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let post = |path: String, traceparent: &'static str, body: Value| {
        client
            .post(format!("{url}{path}"))
            .bearer_auth(&admin)
            .header("traceparent", traceparent)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };

    // The saga, started inside the caller's trace.
    const SAGA_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const SAGA_CALLER: &str = "b7ad6b7169203331";
    let saga_parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let order = json!({"instance_id": "saga-traced", "input": {"task_id": "t-1", "title": "Report",
        "assignee": "alice@example.com", "priority": "high", "simulate_dashboard_failure": false}});
    let response = post(
        "/v1/workflows/task_processing_saga/start".into(),
        saga_parent,
        order,
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 201);

    // An approval: started in one trace, approved from another.
    let approval_parent = "00-11111111111111111111111111111111-2222222222222222-01";
    let approver_parent = "00-33333333333333333333333333333333-4444444444444444-01";
    let request = json!({"request_id": "req-traced", "requester": "bob@company.com", "amount": 5000, "description": "Offsite"});
    let response = post(
        "/v1/workflows/approval_workflow/start".into(),
        approval_parent,
        json!({"instance_id": "req-traced", "input": request}),
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    engine.settle().await;
    let response = post(
        "/v1/instances/req-traced/events/approval_received".into(),
        approver_parent,
        json!({"approved": true, "approver": "manager@company.com"}),
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 202);

    // A timer that fires (virtual time), with no traceparent: a trace of its own.
    let response = client
        .post(format!("{url}/v1/workflows/sleeper/start"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(json!({"instance_id": "sleepy", "input": 60}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    engine.settle().await;
    engine.advance_by(Duration::from_secs(61)).await.unwrap();

    // A parent and its child: the child's run nests under the parent's.
    let response = post(
        "/v1/workflows/parent/start".into(),
        "00-77777777777777777777777777777777-8888888888888888-01",
        json!({"instance_id": "family", "input": {"x": 1}}),
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    engine.settle().await;

    // The monitor's health check: its HTTP request carries the attempt's traceparent.
    let monitor_parent = "00-55555555555555555555555555555555-6666666666666666-01";
    let response = post(
        "/v1/workflows/health_monitor_workflow/start".into(),
        monitor_parent,
        json!({"instance_id": "monitor", "input": {"job_id": "svc", "health_url": format!("{collector_url}/health")}}),
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    engine.settle().await;
    engine
        .terminate(&steadfast_tests::id("monitor"), "test over")
        .await
        .unwrap();
    engine.settle().await;
    for id in ["saga-traced", "req-traced", "sleepy", "family"] {
        let status = engine.status(&steadfast_tests::id(id)).unwrap().status;
        assert_eq!(status.as_str(), "COMPLETED", "{id}");
    }
    let flushing = engine.clone();
    tokio::task::spawn_blocking(move || flushing.flush_traces())
        .await
        .unwrap();

    let spans = seen.spans.lock().unwrap().clone();
    let find = |pred: &dyn Fn(&Value) -> bool| -> Vec<Value> {
        spans.iter().filter(|s| pred(s)).cloned().collect()
    };

    // The saga's run: in the caller's trace, under the caller's span, described.
    let runs = find(&|s| {
        s["name"] == "workflow task_processing_saga"
            && text_attribute(s, "steadfast.instance_id").as_deref() == Some("default/saga-traced")
    });
    assert_eq!(runs.len(), 1, "one run span: {spans:#?}");
    let run = &runs[0];
    assert_eq!(run["traceId"], SAGA_TRACE);
    assert_eq!(run["parentSpanId"], SAGA_CALLER);
    assert_eq!(
        text_attribute(run, "steadfast.tenant").as_deref(),
        Some("default")
    );
    assert_eq!(int_attribute(run, "steadfast.version"), Some(1));
    assert_eq!(
        text_attribute(run, "steadfast.outcome").as_deref(),
        Some("completed")
    );
    let run_id = run["spanId"].as_str().unwrap().to_owned();
    // Its activity attempts and steps hang under it.
    let activities = find(&|s| {
        s["traceId"] == SAGA_TRACE
            && s["parentSpanId"] == run_id.as_str()
            && s["name"].as_str().unwrap().starts_with("activity ")
    });
    let journal_activities = engine
        .history(&steadfast_tests::id("saga-traced"))
        .unwrap()
        .iter()
        .filter(|e| matches!(e.event, steadfast::model::Event::ActivityCompleted { .. }))
        .count();
    assert!(journal_activities >= 4);
    assert_eq!(activities.len(), journal_activities, "{activities:#?}");
    for span in &activities {
        assert!(int_attribute(span, "steadfast.attempt").is_some(), "{span}");
    }
    let steps = find(&|s| s["name"] == "step" && s["parentSpanId"] == run_id.as_str());
    assert!(!steps.is_empty(), "steps under the run");

    // The approval: the event is in the approver's trace, linked to the run it reached.
    let approval_run = find(&|s| {
        s["name"] == "workflow approval_workflow"
            && text_attribute(s, "steadfast.instance_id").as_deref() == Some("default/req-traced")
    });
    assert_eq!(approval_run.len(), 1, "{spans:#?}");
    assert_eq!(
        approval_run[0]["traceId"],
        "11111111111111111111111111111111"
    );
    let raised = find(&|s| s["name"] == "raise event approval_received");
    assert_eq!(raised.len(), 1, "{spans:#?}");
    assert_eq!(raised[0]["traceId"], "33333333333333333333333333333333");
    assert_eq!(raised[0]["parentSpanId"], "4444444444444444");
    assert_eq!(
        raised[0]["links"][0]["spanId"], approval_run[0]["spanId"],
        "the event links to the run it reached"
    );

    // The fired timer: under the sleeper's run, in a trace of its own.
    let sleeper_run = find(&|s| {
        s["name"] == "workflow sleeper"
            && text_attribute(s, "steadfast.instance_id").as_deref() == Some("default/sleepy")
    });
    assert_eq!(sleeper_run.len(), 1, "{spans:#?}");
    assert_eq!(sleeper_run[0]["parentSpanId"].as_str().unwrap_or(""), "");
    let fired =
        find(&|s| s["name"] == "timer fired" && s["parentSpanId"] == sleeper_run[0]["spanId"]);
    assert_eq!(fired.len(), 1, "{spans:#?}");

    // The child's run: in the parent's trace, under the parent's run.
    let parent_run = find(&|s| s["name"] == "workflow parent");
    let child_run = find(&|s| s["name"] == "workflow echo");
    assert_eq!((parent_run.len(), child_run.len()), (1, 1), "{spans:#?}");
    assert_eq!(parent_run[0]["traceId"], "77777777777777777777777777777777");
    assert_eq!(parent_run[0]["parentSpanId"], "8888888888888888");
    assert_eq!(child_run[0]["traceId"], "77777777777777777777777777777777");
    assert_eq!(child_run[0]["parentSpanId"], parent_run[0]["spanId"]);

    // The health check's request carried its attempt's span as traceparent.
    let checks = seen.health_checks.lock().unwrap().clone();
    assert!(!checks.is_empty(), "the monitor checked health");
    let sent = checks[0]
        .clone()
        .expect("a traceparent on the activity's request");
    let check_spans = find(&|s| s["name"] == "activity check_service_status");
    assert_eq!(check_spans.len(), checks.len(), "{spans:#?}");
    let span = &check_spans[0];
    assert_eq!(
        sent,
        format!(
            "00-{}-{}-01",
            span["traceId"].as_str().unwrap(),
            span["spanId"].as_str().unwrap()
        )
    );
    assert_eq!(span["traceId"], "55555555555555555555555555555555");
    // The terminated monitor's run was emitted too.
    let monitor_run = find(&|s| {
        s["name"] == "workflow health_monitor_workflow"
            && text_attribute(s, "steadfast.outcome").as_deref() == Some("terminated")
    });
    assert_eq!(monitor_run.len(), 1, "{spans:#?}");
    assert_eq!(span["parentSpanId"], monitor_run[0]["spanId"]);
}

#[test]
fn a_collector_config_that_cannot_work_is_refused_with_the_reason() {
    let refused = Traces::from_config(&TracesConfig {
        otlp_endpoint: Some("collector:4318".into()),
        otlp_protocol: None,
    })
    .unwrap_err();
    assert!(
        refused.contains("not an http:// or https:// URL"),
        "{refused}"
    );
    let refused = Traces::from_config(&TracesConfig {
        otlp_endpoint: Some("http://127.0.0.1:4318".into()),
        otlp_protocol: Some("grpc".into()),
    })
    .unwrap_err();
    assert!(refused.contains("http/protobuf, http/json"), "{refused}");
    // Nothing named: off, and nothing is sent anywhere.
    let named_by_environment = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some());
    if !named_by_environment {
        assert!(
            !Traces::from_config(&TracesConfig::default())
                .unwrap()
                .is_on()
        );
    }
}
