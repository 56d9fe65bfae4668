//! Activity components with WASI see what their tenant is granted and nothing else. The
//! example `check_service_status` (a `wasm32-wasip2` component using `wasi:http`) checks a
//! real endpoint on loopback when the tenant's `http_allow` list names it, and is refused
//! — without a connection being made — when it does not; environment variables and
//! directories appear only when granted; a component importing sockets is not deployed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::json;
use steadfast::{Engine, RuntimeStatus, StartOptions, examples};
use steadfast_tests::{
    LogCapture, TESTING_V1_WASM, WASI_PROBE_WASM, WASI_SOCKETS_WASM, clock, config, output,
};

/// A `GET /health` endpoint on loopback that counts its requests.
struct Endpoint {
    url: String,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

async fn serve_health() -> Endpoint {
    use axum::http::StatusCode;
    let healthy = Arc::new(AtomicBool::new(true));
    let hits = Arc::new(AtomicUsize::new(0));
    let (up, count) = (Arc::clone(&healthy), Arc::clone(&hits));
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let (up, count) = (Arc::clone(&up), Arc::clone(&count));
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                if up.load(Ordering::SeqCst) {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Endpoint {
        url: format!("http://{addr}/health"),
        healthy,
        hits,
    }
}

async fn engine(dir: &std::path::Path, http_allow: Vec<String>) -> Engine {
    let mut config = config(dir, &clock());
    config.limits.http_allow = http_allow;
    let engine = Engine::open(config).await.unwrap();
    examples::install(&engine).await.unwrap();
    engine
}

fn monitor(url: &str) -> String {
    json!({"job_id": "task-service", "health_url": url}).to_string()
}

fn named(id: &str) -> StartOptions {
    StartOptions {
        instance_id: Some(id.to_owned()),
        ..StartOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_checks_an_allow_listed_endpoint_through_wasi_http() {
    let endpoint = serve_health().await;
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), vec![format!("GET {}", endpoint.url)]).await;

    let id = engine
        .start(
            "health_monitor_workflow",
            &monitor(&endpoint.url),
            named("m"),
        )
        .await
        .unwrap();
    engine.settle().await;
    assert_eq!(endpoint.hits.load(Ordering::SeqCst), 1, "first check");
    assert_eq!(
        engine.kept_activity_memory().stores,
        0,
        "an instance that made a request is not kept"
    );

    // Each generation checks once, sleeps, and carries its state into the next.
    endpoint.healthy.store(false, Ordering::SeqCst);
    engine.advance_to_next_timer().await.unwrap().unwrap();
    assert_eq!(endpoint.hits.load(Ordering::SeqCst), 2, "second check");
    let state = |engine: &Engine| -> serde_json::Value {
        serde_json::from_str(&engine.status(&id).unwrap().input).unwrap()
    };
    assert_eq!(state(&engine)["check_count"], 1);
    assert_eq!(state(&engine)["is_healthy"], true, "a 200 is healthy");

    engine.advance_to_next_timer().await.unwrap().unwrap();
    assert_eq!(endpoint.hits.load(Ordering::SeqCst), 3, "third check");
    let status = engine.status(&id).unwrap();
    assert_eq!(status.status, RuntimeStatus::Running);
    assert_eq!(status.generation, 2);
    assert_eq!(state(&engine)["check_count"], 2);
    assert_eq!(state(&engine)["is_healthy"], false, "a 503 is unhealthy");
    assert_eq!(state(&engine)["consecutive_failures"], 1);
    assert_eq!(
        engine.now().millis_since(steadfast_tests::START),
        (60 + 5) * 60_000,
        "60 minutes after a healthy check, 5 after an unhealthy one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_host_off_the_allow_list_is_refused_with_a_clear_reason() {
    let allowed = serve_health().await;
    let other = serve_health().await;
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), vec![format!("GET {}", allowed.url)]).await;

    // The same service, but a port the tenant was not granted.
    let id = engine
        .start("health_monitor_workflow", &monitor(&other.url), named("m"))
        .await
        .unwrap();
    engine.settle().await;
    let status = engine.status(&id).unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed, "{status:?}");
    let error = status.error.expect("a failed instance says why");
    assert_eq!(error.kind, "http_denied", "{error:?}");
    let port = other
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .trim_end_matches("/health");
    assert!(
        error.message.contains(&format!(
            "outgoing HTTP GET http://127.0.0.1:{port}/health is not on tenant 'default's http_allow list"
        )),
        "{}",
        error.message
    );
    assert!(
        error.message.contains(&format!("\"GET {}\"", allowed.url)),
        "names what is allowed: {}",
        error.message
    );
    assert_eq!(
        other.hits.load(Ordering::SeqCst),
        0,
        "no request reached it"
    );
    assert_eq!(
        engine.kept_activity_memory().stores,
        0,
        "an instance that made a request is not kept"
    );

    // A method the rule does not name is refused too; an empty list refuses everything.
    let dir = tempfile::tempdir().unwrap();
    let engine = self::engine(dir.path(), Vec::new()).await;
    let id = engine
        .start(
            "health_monitor_workflow",
            &monitor(&allowed.url),
            named("m"),
        )
        .await
        .unwrap();
    engine.settle().await;
    let error = engine.status(&id).unwrap().error.unwrap();
    assert_eq!(error.kind, "http_denied");
    assert!(
        error.message.contains("it allows no outgoing HTTP"),
        "{}",
        error.message
    );
    assert_eq!(allowed.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_allow_list_rules_stop_the_engine_from_opening() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &clock());
    config.limits.http_allow = vec!["GET ftp://files.example".into()];
    let error = Engine::open(config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("http_allow rule 'GET ftp://files.example'")
            && error.contains("must start with http:// or https://"),
        "{error}"
    );
}

/// Opens an engine on `config` with the testing workflows and the WASI probe.
async fn probe_engine(config: steadfast::EngineConfig) -> Engine {
    let engine = Engine::open(config).await.unwrap();
    engine.deploy(TESTING_V1_WASM.to_vec()).await.unwrap();
    engine.deploy(WASI_PROBE_WASM.to_vec()).await.unwrap();
    engine
}

/// Runs the probe activity on `path` as instance `id`; returns what it saw.
async fn probe(engine: &Engine, path: &str, id: &str) -> serde_json::Value {
    let input = json!({"activity": "probe", "input": {"path": path}}).to_string();
    let id = engine.start("call", &input, named(id)).await.unwrap();
    engine.settle().await;
    output(engine, &id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_components_see_only_the_environment_and_directories_they_are_granted() {
    // Nothing granted: no variables (not even the host's), no files.
    let dir = tempfile::tempdir().unwrap();
    let engine = probe_engine(config(dir.path(), &clock())).await;
    let seen = probe(&engine, "/data/hello.txt", "bare").await;
    assert_eq!(seen["env"], json!({}), "{seen}");
    assert_eq!(seen["file"], json!(null), "{seen}");
    assert_eq!(seen["wrote"], json!(false), "{seen}");

    // A variable and a read-only directory granted: exactly those.
    let granted = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("hello.txt"), "hi from the host").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &clock());
    config.limits.activity_env = [("REGION".to_owned(), "eu-west-1".to_owned())].into();
    config.limits.activity_dirs = [("/data".to_owned(), granted.path().to_path_buf())].into();
    let engine = probe_engine(config).await;
    let seen = probe(&engine, "/data/hello.txt", "granted").await;
    assert_eq!(seen["env"], json!({"REGION": "eu-west-1"}), "{seen}");
    assert_eq!(seen["file"], json!("hi from the host"), "{seen}");
    assert_eq!(seen["wrote"], json!(false), "read-only: {seen}");
    assert_eq!(
        std::fs::read_to_string(granted.path().join("hello.txt")).unwrap(),
        "hi from the host"
    );
    // Outside the granted directory there is nothing.
    let seen = probe(&engine, "/etc/hostname", "escape").await;
    assert_eq!(seen["file"], json!(null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_component_that_imports_sockets_is_refused_at_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), &clock())).await.unwrap();
    let refused = engine
        .deploy(WASI_SOCKETS_WASM.to_vec())
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.starts_with("the component imports "), "{refused}");
    assert!(refused.contains("wasi:sockets/"), "{refused}");
    assert!(
        refused.contains("which activity components may not use: they get WASI without sockets"),
        "{refused}"
    );
}

// A current-thread runtime, so the log subscriber set on this thread sees the activity.
#[tokio::test]
async fn an_activitys_stdout_and_stderr_reach_the_host_log_within_its_budget() {
    let (capture, _guard) = LogCapture::start("steadfast::activity=info");
    let dir = tempfile::tempdir().unwrap();
    let engine = probe_engine(config(dir.path(), &clock())).await;

    // 200 lines of a kilobyte: far more than one call may log.
    let input = json!({"activity": "chatty", "input": 200}).to_string();
    let id = engine.start("call", &input, named("chatty")).await.unwrap();
    engine.settle().await;
    assert_eq!(
        output(&engine, &id),
        json!({"failed_writes": 0}),
        "the guest's writes all succeed"
    );

    let log = capture.text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(r#"activity="chatty""#) && l.contains(r#"instance="chatty""#))
        .collect();
    let has = |level: &str, stream: &str, text: &str| {
        lines.iter().any(|l| {
            l.contains(level) && l.contains(&format!(r#"stream="{stream}""#)) && l.contains(text)
        })
    };
    assert!(has("INFO", "stdout", "hello from stdout"), "{log}");
    assert!(has("WARN", "stderr", "oops on stderr"), "{log}");
    assert!(
        has("WARN", "stderr", "no newline at the end"),
        "an unfinished line is written when the call ends: {log}"
    );
    // 64 KiB of budget: the two short lines (31 bytes) and 64 of the 1,023-byte lines.
    let kilobyte = "x".repeat(1023);
    assert_eq!(lines.iter().filter(|l| l.contains(&kilobyte)).count(), 64);
    assert!(
        lines.iter().any(|l| l.contains("WARN")
            && l.contains(
                "139128 bytes of log output dropped: a guest may log 65536 bytes per activity call or workflow step"
            )),
        "{log}"
    );
}

/// An activity stuck on a server that accepts the connection and never answers fails with
/// `time_limit` after `limits.activity_timeout_ms` of wall-clock time, instead of holding
/// its instance forever (epoch ticks never reach a guest waiting inside a host call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_waiting_on_a_silent_server_fails_with_time_limit() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slow", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &clock());
    config.limits.http_allow = vec![format!("GET {url}")];
    config.limits.activity_timeout_ms = 300;
    let engine = Engine::open(config).await.unwrap();
    examples::install(&engine).await.unwrap();
    engine
        .deploy(steadfast_tests::TESTING_V1_WASM.to_vec())
        .await
        .unwrap();
    let input = json!({"activity": "http_get", "input": {"url": url}});
    let id = engine
        .start("call", &input.to_string(), named("stuck"))
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), engine.settle())
        .await
        .expect("the timeout ends the activity");
    let status = engine.status(&id).unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed, "{status:?}");
    let error = status.error.unwrap();
    assert_eq!(error.kind, "time_limit", "{error:?}");
    assert!(
        error
            .message
            .contains("ran longer than 300 ms of wall-clock time (limits.activity_timeout_ms)"),
        "{}",
        error.message
    );
    held.abort();
}

/// Runs the probe's `activity` with `input` for `tenant` (the default one when `None`) as
/// instance `id`, and returns the instance's status and output once it has ended.
async fn call_probe(
    engine: &Engine,
    tenant: Option<&steadfast::model::Tenant>,
    (activity, input): (&str, serde_json::Value),
    id: &str,
) -> (RuntimeStatus, Option<serde_json::Value>) {
    let input = json!({"activity": activity, "input": input}).to_string();
    let options = StartOptions {
        tenant: tenant.cloned(),
        ..named(id)
    };
    let id = engine.start("call", &input, options).await.unwrap();
    engine.settle().await;
    let record = engine.status(&id).unwrap();
    let output = record
        .output
        .as_deref()
        .map(|o| serde_json::from_str(o).unwrap());
    (record.status, output)
}

/// The bytes of `component` with a custom section added: another component to the host,
/// the same code.
fn variant(component: &[u8]) -> Vec<u8> {
    let name = b"steadfast-test-variant";
    let mut out = component.to_vec();
    out.push(0); // a custom section, its size and name fit one LEB128 byte each
    out.push(1 + name.len() as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out
}

/// An activity instance is kept after a call that returned and serves the later calls of
/// the same tenant's same component; another tenant's calls of the same bytes, and calls
/// of a new deploy of the component, get an instance of their own; an instance whose call
/// trapped or wrote to stdout is never used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_activity_instance_serves_only_its_own_tenants_later_calls() {
    let dir = tempfile::tempdir().unwrap();
    let engine = probe_engine(config(dir.path(), &clock())).await;
    let other = steadfast::model::Tenant::new("other").unwrap();
    engine.create_tenant(&other).await.unwrap();
    engine
        .deploy_to(&other, TESTING_V1_WASM.to_vec())
        .await
        .unwrap();
    engine
        .deploy_to(&other, WASI_PROBE_WASM.to_vec())
        .await
        .unwrap();
    let completed = |n: u32| (RuntimeStatus::Completed, Some(json!(n)));
    let calls = || ("calls", json!(null));

    // One after another, the same instance serves the default tenant's calls.
    assert_eq!(call_probe(&engine, None, calls(), "a1").await, completed(1));
    assert_eq!(call_probe(&engine, None, calls(), "a2").await, completed(2));
    assert_eq!(call_probe(&engine, None, calls(), "a3").await, completed(3));
    assert_eq!(engine.kept_activity_memory().stores, 1);

    // The other tenant deployed the very same bytes: its calls start from nothing.
    let tenant = Some(&other);
    assert_eq!(
        call_probe(&engine, tenant, calls(), "b1").await,
        completed(1)
    );
    assert_eq!(call_probe(&engine, None, calls(), "a4").await, completed(4));
    assert_eq!(
        call_probe(&engine, tenant, calls(), "b2").await,
        completed(2)
    );
    assert_eq!(engine.kept_activity_memory().stores, 2);

    // The default tenant's instance traps in its fifth call: it is dropped, and the next
    // call gets a fresh instance.
    let (status, _) = call_probe(&engine, None, ("trap", json!(null)), "a5").await;
    assert_eq!(status, RuntimeStatus::Failed);
    assert_eq!(call_probe(&engine, None, calls(), "a6").await, completed(1));
    assert_eq!(call_probe(&engine, None, calls(), "a7").await, completed(2));

    // A call that writes to stdout drops its instance too.
    let (status, _) = call_probe(&engine, None, ("chatty", json!(1)), "a8").await;
    assert_eq!(status, RuntimeStatus::Completed);
    assert_eq!(call_probe(&engine, None, calls(), "a9").await, completed(1));
    assert_eq!(
        call_probe(&engine, None, calls(), "a10").await,
        completed(2)
    );

    // A new deploy of the component (other bytes, the same names): its calls get an
    // instance of their own, not the old component's.
    engine.deploy(variant(WASI_PROBE_WASM)).await.unwrap();
    assert_eq!(
        call_probe(&engine, None, calls(), "a11").await,
        completed(1)
    );

    // Nothing else is left in memory: kept instances are booked apart.
    assert_eq!(engine.guest_memory().stores, 0);
    assert!(engine.kept_activity_memory().stores <= 3);
}
