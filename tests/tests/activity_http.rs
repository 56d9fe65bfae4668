//! Activity components with WASI and outgoing HTTP: the example `check_service_status`
//! (a `wasm32-wasip2` component using `wasi:http`) checks a real endpoint on loopback when
//! the tenant's `http_allow` list names it, and is refused — without a connection being
//! made — when it does not.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::json;
use steadfast::{Engine, RuntimeStatus, StartOptions, examples};
use steadfast_tests::{clock, config};

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
