//! `steadfast demo`: the tutorial's three patterns, end to end, on the real engine.
//!
//! Everything is real but time: the journal is a SQLite file in a temporary directory,
//! the workflows and activities are the embedded `.wasm` components, and the monitor's
//! health check makes real HTTP requests to a server the demo runs on loopback and flips
//! between healthy and unhealthy. Time is a virtual clock, so three days pass at once.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::SubscriberExt as _;

use crate::engine::{Engine, EngineConfig, StartOptions};
use crate::model::{Clock, InstanceId, Timestamp, VirtualClock};

/// 2026-11-25 09:00:00 UTC: where the demo's clock starts.
const START: Timestamp = Timestamp(1_795_597_200_000);

pub(super) async fn run(keep: bool) -> anyhow::Result<()> {
    let clock = VirtualClock::new(START);
    let subscriber = tracing_subscriber::registry().with(DemoLog {
        clock: clock.clone(),
    });
    tracing::subscriber::set_global_default(subscriber)
        .context("installing the demo's log printer")?;

    // The monitor's health endpoint; activity components may call it and nothing else.
    let healthy = Arc::new(AtomicBool::new(true));
    let health_url = serve_health(Arc::clone(&healthy)).await?;

    let dir = std::env::temp_dir().join(format!("steadfast-demo-{}", std::process::id()));
    let mut config = EngineConfig::new(&dir).with_clock(Arc::new(clock.clone()));
    config.limits.http_allow = vec![format!("GET {health_url}")];
    let engine = Engine::open(config)
        .await
        .context("opening the demo's journal")?;
    crate::examples::install(&engine)
        .await
        .context("deploying the example components")?;
    let demo = Demo {
        engine,
        clock,
        healthy,
        health_url,
    };

    let outcome = async {
        demo.saga().await?;
        demo.approval().await?;
        demo.monitor().await
    }
    .await;

    println!();
    if keep {
        println!("journal kept at {}", demo.engine.journal_location());
    } else {
        drop(demo);
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}

struct Demo {
    engine: Engine,
    clock: VirtualClock,
    /// What the health endpoint answers: 200 while true, 503 otherwise.
    healthy: Arc<AtomicBool>,
    health_url: String,
}

impl Demo {
    fn say(&self, line: &str) {
        println!("[{}] {line}", self.clock.now());
    }

    fn heading(&self, title: &str) {
        println!("\n=== {title} ===");
    }

    async fn start(
        &self,
        workflow: &str,
        id: &str,
        input: serde_json::Value,
    ) -> anyhow::Result<InstanceId> {
        let options = StartOptions {
            instance_id: Some(id.to_owned()),
            ..StartOptions::default()
        };
        Ok(self
            .engine
            .start(workflow, &input.to_string(), options)
            .await?)
    }

    fn result(&self, id: &InstanceId) -> anyhow::Result<()> {
        let status = self.engine.status(id)?;
        match (&status.output, &status.error) {
            (Some(output), _) => self.say(&format!("{id} {}: {output}", status.status)),
            (None, Some(error)) => self.say(&format!("{id} {}: {}", status.status, error.message)),
            (None, None) => self.say(&format!("{id} {}", status.status)),
        }
        Ok(())
    }

    async fn saga(&self) -> anyhow::Result<()> {
        self.heading("Saga: task_processing_saga");
        let order = |fail: bool| {
            json!({
                "task_id": "task-123",
                "title": "Prepare quarterly report",
                "assignee": "alice@example.com",
                "priority": "high",
                "simulate_dashboard_failure": fail,
            })
        };
        self.say("# Success case:");
        let ok = self
            .start("task_processing_saga", "saga-success", order(false))
            .await?;
        self.engine.settle().await;
        self.result(&ok)?;

        self.say("# Failure case (dashboard update failed):");
        let failed = self
            .start("task_processing_saga", "saga-failure", order(true))
            .await?;
        self.engine.settle().await;
        self.result(&failed)
    }

    async fn approval(&self) -> anyhow::Result<()> {
        self.heading("Human interaction: approval_workflow");
        let request = |id: &str, amount: f64| json!({"request_id": id, "requester": "bob@company.com", "amount": amount, "description": "Team offsite"});
        self.say("# Scenario 1: small amount (auto-approved)");
        let small = self
            .start("approval_workflow", "req-001", request("req-001", 500.0))
            .await?;
        self.engine.settle().await;
        self.result(&small)?;

        self.say("# Scenario 2: approved by manager");
        let approved = self
            .start("approval_workflow", "req-002", request("req-002", 5000.0))
            .await?;
        self.engine.settle().await;
        self.engine
            .advance_by(Duration::from_secs(3 * 3600))
            .await?;
        self.say("[3 hours later, manager approves via the client API: raise_event(req-002, approval_received)]");
        let decision = json!({"approved": true, "approver": "manager@company.com"});
        self.engine
            .raise_event(&approved, "approval_received", &decision.to_string())
            .await?;
        self.engine.settle().await;
        self.result(&approved)?;

        self.say("# Scenario 3: timeout (no response)");
        let timeout = self
            .start("approval_workflow", "req-003", request("req-003", 5000.0))
            .await?;
        self.engine.settle().await;
        while !self.engine.status(&timeout)?.status.is_terminal() {
            if self.engine.advance_to_next_timer().await?.is_none() {
                anyhow::bail!("req-003 is waiting with no timer left");
            }
        }
        self.result(&timeout)
    }

    async fn monitor(&self) -> anyhow::Result<()> {
        self.heading("Monitor: health_monitor_workflow (continue-as-new after every check)");
        let (healthy, url) = (&self.healthy, &self.health_url);
        self.say(&format!(
            "health endpoint for task-service at {url} (the tenant's http_allow: \"GET {url}\")"
        ));

        // Checks 1-2 healthy, 3-5 unhealthy (warning, then critical at 3 failures), 6 healthy.
        let plan = [true, true, false, false, false, true];
        healthy.store(plan[0], Ordering::SeqCst);
        let state = json!({"job_id": "task-service", "health_url": url});
        let monitor = self
            .start("health_monitor_workflow", "monitor-task-service", state)
            .await?;
        self.engine.settle().await;
        for up in &plan[1..] {
            healthy.store(*up, Ordering::SeqCst);
            self.engine.advance_to_next_timer().await?;
        }
        let status = self.engine.status(&monitor)?;
        self.say(&format!(
            "...continues forever: {} is {}, generation {}, {} journal rows",
            monitor,
            status.status,
            status.generation,
            self.engine.journal_rows(&monitor)?
        ));
        Ok(())
    }
}

/// Serves `GET /health` on loopback: 200 while `healthy`, 503 otherwise.
async fn serve_health(healthy: Arc<AtomicBool>) -> anyhow::Result<String> {
    use axum::http::StatusCode;
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let healthy = Arc::clone(&healthy);
            async move {
                if healthy.load(Ordering::SeqCst) {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the health endpoint")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("health endpoint stopped: {e}");
        }
    });
    Ok(format!("http://{addr}/health"))
}

/// Prints workflow and activity log lines (and warnings from anywhere) with the
/// simulated time.
struct DemoLog {
    clock: VirtualClock,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for DemoLog {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        let ours = meta.target().starts_with("steadfast::workflow")
            || meta.target().starts_with("steadfast::activity");
        if !ours && *meta.level() > tracing::Level::WARN {
            return;
        }
        if ours && *meta.level() > tracing::Level::INFO {
            return;
        }
        let mut message = Message::default();
        event.record(&mut message);
        let prefix = if ours { "" } else { "warning: " };
        println!("[{}] {prefix}{}", self.clock.now(), message.0);
    }
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else if !matches!(field.name(), "instance" | "workflow" | "activity") {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}
