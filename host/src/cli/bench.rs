//! `steadfast bench`: the performance scenarios, run on the real engine — real
//! components, a real SQLite file with `synchronous=FULL` — with figures printed as a
//! table and optionally written as JSON.
//!
//! Each scenario gets a fresh data directory. The raw-SQLite baseline runs in the same
//! process, so the engine's journal throughput is reported as a share of what the store
//! itself can do on this machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The spinner shown while a scenario runs (on a terminal only).
pub(super) static PROGRESS: std::sync::OnceLock<super::progress::Progress> =
    std::sync::OnceLock::new();

/// Prints a line of the report, above the spinner if there is one.
macro_rules! say {
    ($($arg:tt)*) => {
        match $crate::cli::bench::PROGRESS.get() {
            Some(progress) => progress.println(format!($($arg)*)),
            None => println!($($arg)*),
        }
    };
}

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::{Value, json};

mod baseline;
mod shared;

use crate::api::{self, ApiConfig};
use crate::engine::{Engine, EngineConfig, Scope, StartOptions};
use crate::model::{InstanceId, RuntimeStatus, Tenant, Timestamp, VirtualClock};

/// The engine default: each resident instance costs a few memory mappings, and Linux
/// allows 65,530 per process by default.
const DEFAULT_RESIDENT: usize = crate::engine::DEFAULT_MAX_RESIDENT;

const BENCH_WASM: &[u8] = include_bytes!(env!("STEADFAST_BENCH_WASM"));

#[derive(Debug, Args)]
pub(super) struct BenchArgs {
    /// Write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A tiny configuration that runs in seconds (what CI runs so the bench never rots).
    #[arg(long)]
    smoke: bool,
    /// Where the scenarios' data directories go [default: a temporary directory].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run only these scenarios (comma-separated: s1,s2,s3,s4,s5,s6), e.g. to profile one.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Run the saga scenario on this PostgreSQL database instead (in a schema of its own,
    /// dropped afterwards), with `--hosts` engines sharing it.
    #[arg(long)]
    journal: Option<String>,
    /// Engines on the shared journal, each with its own leases (with `--journal`).
    #[arg(long, default_value_t = 1)]
    hosts: usize,
    /// Run the scenarios this many times, each in fresh directories, and report each
    /// figure's median and spread [default: 3, or 1 with --smoke].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    runs: Option<u16>,
    /// Run even when the data directory is on a filesystem kept in memory (tmpfs), where
    /// fsync costs nothing and the figures say nothing about a durable store.
    #[arg(long)]
    allow_memory_fs: bool,
}

/// Sizes of the scenarios.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    sagas: usize,
    in_flight: usize,
    events: usize,
    generations: u64,
    resume_activities: u64,
    waiting: usize,
    components: usize,
    running: usize,
}

const FULL: Sizes = Sizes {
    sagas: 2_000,
    in_flight: 200,
    events: 1_000,
    generations: 100_000,
    resume_activities: 500,
    waiting: 100_000,
    components: 20,
    running: 10_000,
};

const SMOKE: Sizes = Sizes {
    sagas: 20,
    in_flight: 5,
    events: 10,
    generations: 1_100,
    resume_activities: 20,
    waiting: 50,
    components: 3,
    running: 50,
};

/// Figures in the order they are printed: (key, value, unit).
#[derive(Default)]
struct Figures(Vec<(&'static str, f64, &'static str)>);

impl Figures {
    fn add(&mut self, key: &'static str, value: f64, unit: &'static str) {
        say!("  {key:<28} {value:>12.2} {unit}");
        self.0.push((key, value, unit));
    }
}

pub(super) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let sizes = if args.smoke { SMOKE } else { FULL };
    let base = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("steadfast-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let runs = usize::from(args.runs.unwrap_or(if args.smoke { 1 } else { 3 }));
    let started = Instant::now();
    let mut all = Vec::with_capacity(runs);
    if let Some(url) = &args.journal {
        let machine = Machine {
            cores: cores(),
            filesystem: "postgresql",
            fsync_ms: f64::NAN,
        };
        say!(
            "steadfast bench ({}), {} cores, {runs} run(s), journal on PostgreSQL ({} host(s))",
            if args.smoke { "smoke" } else { "full" },
            machine.cores,
            args.hosts.max(1),
        );
        let mut outcome = Ok(());
        for _ in 0..runs {
            let mut figures = Figures::default();
            outcome = shared::saga_throughput(url, args.hosts.max(1), sizes, &mut figures).await;
            if outcome.is_err() {
                break;
            }
            all.push(figures);
        }
        if args.dir.is_none() {
            let _ = std::fs::remove_dir_all(&base);
        }
        outcome?;
        return finish(&args, &all, &machine, started);
    }
    let machine = match check_disk(&args, &base, runs) {
        Ok(machine) => machine,
        Err(e) => {
            if args.dir.is_none() {
                let _ = std::fs::remove_dir_all(&base);
            }
            return Err(e);
        }
    };
    let wanted =
        |s: &str| args.only.is_empty() || args.only.iter().any(|o| o.eq_ignore_ascii_case(s));
    let progress = PROGRESS.get_or_init(|| super::progress::Progress::spinner(false, "starting"));
    let outcome = async {
        for round in 1..=runs {
            if runs > 1 {
                say!("run {round} of {runs}");
            }
            let step = |name: &str| progress.set_message(format!("run {round}: {name} running"));
            let dir = base.join(format!("run-{round}"));
            // Fresh, also when `--dir` names a directory an earlier bench used.
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("clearing {}", dir.display()))?;
            }
            let mut figures = Figures::default();
            if wanted("s6") {
                step("S6 restart");
                restart(&dir.join("s6"), sizes, &mut figures).await?;
            }
            if wanted("s5") {
                step("S5 many waiting");
                many_waiting(&dir.join("s5"), sizes, &mut figures).await?;
            }
            if wanted("s1") {
                step("S1 saga throughput");
                saga_throughput(&dir.join("s1"), sizes, &mut figures).await?;
            }
            if wanted("s2") {
                step("S2 event latency");
                event_latency(&dir.join("s2"), sizes, &mut figures).await?;
            }
            if wanted("s4") {
                step("S4 cold resume");
                cold_resume(&dir.join("s4"), sizes, &mut figures).await?;
            }
            if wanted("s3") {
                step("S3 eternal monitor");
                eternal_monitor(&dir.join("s3"), sizes, &mut figures).await?;
            }
            all.push(figures);
            // Each run's journals go once measured (100,000 waiting instances take room),
            // unless the caller chose the directory, e.g. to look at them.
            if args.dir.is_none() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        anyhow::Ok(())
    }
    .await;
    progress.clear();
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&base);
    }
    outcome?;
    finish(&args, &all, &machine, started)
}

/// The data directory's filesystem and fsync time; refused when the filesystem keeps data
/// only in memory (unless allowed), since every figure would flatter a durable journal.
fn check_disk(args: &BenchArgs, base: &Path, runs: usize) -> anyhow::Result<Machine> {
    let (filesystem, in_memory) = baseline::filesystem(base);
    let fsync = baseline::fsync_time(base, 50)
        .with_context(|| format!("timing fsync in {}", base.display()))?;
    let machine = Machine {
        cores: cores(),
        filesystem,
        fsync_ms: fsync.as_secs_f64() * 1000.0,
    };
    say!(
        "steadfast bench ({}), {} cores, {runs} run(s), data in {} ({filesystem}, fsync {:.3} ms)",
        if args.smoke { "smoke" } else { "full" },
        machine.cores,
        base.display(),
        machine.fsync_ms,
    );
    if in_memory || machine.fsync_ms < 0.005 {
        let why = if in_memory {
            format!("{} is on {filesystem}, kept in memory", base.display())
        } else {
            format!(
                "an fsync in {} takes {:.4} ms",
                base.display(),
                machine.fsync_ms
            )
        };
        if !args.allow_memory_fs {
            bail!(
                "{why}: fsync costs nothing there, so the figures would not measure a \
                 durable journal. Pass --dir with a directory on a real disk, or \
                 --allow-memory-fs to run anyway"
            );
        }
        say!("WARNING: {why}; the figures do not measure a durable journal");
    }
    Ok(machine)
}

/// What the figures were measured on.
struct Machine {
    cores: usize,
    filesystem: &'static str,
    fsync_ms: f64,
}

/// One figure over every run: its median and spread.
struct Summary {
    key: &'static str,
    unit: &'static str,
    samples: Vec<f64>,
}

impl Summary {
    fn median(&self) -> f64 {
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        }
    }

    fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.samples
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// Each figure's samples, in the order the first run printed them.
fn summarize(runs: &[Figures]) -> Vec<Summary> {
    let mut summaries: Vec<Summary> = Vec::new();
    for figures in runs {
        for (key, value, unit) in &figures.0 {
            match summaries.iter_mut().find(|s| s.key == *key) {
                Some(summary) => summary.samples.push(*value),
                None => summaries.push(Summary {
                    key,
                    unit,
                    samples: vec![*value],
                }),
            }
        }
    }
    summaries
}

/// The medians with their spread, and the figures as JSON if asked.
fn finish(
    args: &BenchArgs,
    runs: &[Figures],
    machine: &Machine,
    started: Instant,
) -> anyhow::Result<()> {
    let summaries = summarize(runs);
    if runs.len() > 1 {
        say!("medians of {} runs (min - max):", runs.len());
        for s in &summaries {
            say!(
                "  {:<28} {:>12.2} {:<14} ({:.2} - {:.2})",
                s.key,
                s.median(),
                s.unit,
                s.min(),
                s.max()
            );
        }
    }
    say!("done in {:.1} s", started.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        let mut map = serde_json::Map::new();
        let mut samples = serde_json::Map::new();
        for s in &summaries {
            map.insert(s.key.to_owned(), json!(s.median()));
            samples.insert(s.key.to_owned(), json!(s.samples));
        }
        map.insert("runs".into(), Value::Object(samples));
        map.insert("machine_cores".into(), json!(machine.cores));
        map.insert("filesystem".into(), json!(machine.filesystem));
        map.insert("fsync_ms".into(), json!(machine.fsync_ms));
        map.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        map.insert("smoke".into(), json!(args.smoke));
        std::fs::write(path, serde_json::to_string_pretty(&Value::Object(map))?)
            .with_context(|| format!("writing {}", path.display()))?;
        say!("figures written to {}", path.display());
    }
    Ok(())
}

async fn open(dir: &Path, max_resident: usize) -> anyhow::Result<Engine> {
    let mut config = EngineConfig::new(dir)
        .with_max_resident(max_resident)
        .with_activity("noop", |_, input| async move { Ok(input) });
    config.limits = bench_limits();
    Ok(Engine::open(config).await?)
}

/// One trusted tenant measuring the engine: the per-tenant quotas that protect a shared
/// host (live and resident instances, request rates) are lifted, the guest limits kept.
fn bench_limits() -> crate::engine::Limits {
    crate::engine::Limits {
        max_live_instances: u64::MAX / 2,
        max_resident_instances: usize::MAX,
        max_activities_in_flight: usize::MAX >> 4,
        requests_per_second: u32::MAX / 4,
        max_requests_in_flight: u32::MAX / 4,
        ..crate::engine::Limits::default()
    }
}

fn options(id: String) -> StartOptions {
    StartOptions {
        instance_id: Some(id),
        ..StartOptions::default()
    }
}

fn order(i: usize) -> String {
    json!({"task_id": format!("task-{i}"), "title": "bench", "assignee": "alice@example.com", "priority": "high"}).to_string()
}

fn approval(i: usize) -> String {
    json!({"request_id": format!("req-{i}"), "requester": "bob", "amount": 5000, "description": "bench"}).to_string()
}

fn per_second(count: f64, elapsed: Duration) -> f64 {
    count / elapsed.as_secs_f64().max(1e-9)
}

/// S1: the four-step saga, one at a time, with many in flight, and through HTTP; and the
/// raw-SQLite baseline with the same batching.
async fn saga_throughput(dir: &Path, sizes: Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    say!(
        "S1 saga throughput ({} sagas, {} in flight)",
        sizes.sagas,
        sizes.in_flight
    );
    let engine = open(dir, DEFAULT_RESIDENT).await?;
    crate::examples::install(&engine).await?;

    let start = Instant::now();
    for i in 0..sizes.sagas {
        let id = engine
            .start(
                "task_processing_saga",
                &order(i),
                options(format!("seq-{i}")),
            )
            .await?;
        expect_completed(&engine.wait_for_completion(&id).await?.status, &id)?;
    }
    let seq = start.elapsed();
    figures.add(
        "saga_seq_wf_per_s",
        per_second(sizes.sagas as f64, seq),
        "workflows/s",
    );

    let before = engine.journal_writer_stats();
    let start = Instant::now();
    run_concurrently(sizes.sagas, sizes.in_flight, |i| {
        let engine = engine.clone();
        async move {
            let id = engine
                .start(
                    "task_processing_saga",
                    &order(i),
                    options(format!("conc-{i}")),
                )
                .await?;
            expect_completed(&engine.wait_for_completion(&id).await?.status, &id)
        }
    })
    .await?;
    let conc = start.elapsed();
    let after = engine.journal_writer_stats();
    figures.add(
        "saga_conc_wf_per_s",
        per_second(sizes.sagas as f64, conc),
        "workflows/s",
    );

    // The same concurrent run, started and awaited through the HTTP API.
    let (url, token, stop) = serve_api(&engine).await?;
    let client = reqwest::Client::new();
    let start = Instant::now();
    run_concurrently(sizes.sagas, sizes.in_flight, |i| {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        async move {
            let body = json!({"instance_id": format!("http-{i}"), "input": serde_json::from_str::<Value>(&order(i))?});
            let started = client
                .post(format!("{url}/v1/workflows/task_processing_saga/start"))
                .bearer_auth(&token)
                .body(body.to_string())
                .send()
                .await?;
            if started.status().as_u16() != 201 {
                bail!("HTTP start answered {}", started.status());
            }
            let done: Value = serde_json::from_slice(
                &client.get(format!("{url}/v1/instances/http-{i}/wait?timeout_ms=60000")).bearer_auth(&token).send().await?.bytes().await?,
            )?;
            if done["runtime_status"] != "COMPLETED" {
                bail!("http-{i} ended {}", done["runtime_status"]);
            }
            Ok(())
        }
    })
    .await?;
    let http = start.elapsed();
    let _ = stop.send(());
    figures.add(
        "saga_http_conc_wf_per_s",
        per_second(sizes.sagas as f64, http),
        "workflows/s",
    );

    let best = seq.min(conc).min(http);
    figures.add(
        "activity_steps_per_s",
        per_second(4.0 * sizes.sagas as f64, best),
        "steps/s",
    );

    // Baseline: as many rows as the journal wrote in the concurrent run (every row it
    // inserted, updated or deleted: history, instance, queue and timer rows, and those its
    // triggers wrote), inserted raw at the same batch size with the same sync setting.
    let rows = (after.rows - before.rows) as f64;
    let commits = (after.commits - before.commits).max(1);
    let batch = ((rows / commits as f64).round() as u64).max(1);
    let baseline = baseline::insert_rows(&dir.join("baseline.db"), rows as u64, batch, 120)?;
    let baseline_rate = per_second(rows, baseline);
    let journal_rate = per_second(rows, conc);
    say!(
        "  (concurrent run: {} rows written in {} transactions, {:.1} writes and {:.1} rows per commit)",
        rows,
        commits,
        (after.writes - before.writes) as f64 / commits as f64,
        rows / commits as f64,
    );
    figures.add("sqlite_baseline_rows_per_s", baseline_rate, "rows/s");
    figures.add("journal_rows_per_s", journal_rate, "rows/s");
    figures.add(
        "journal_vs_sqlite_pct",
        100.0 * journal_rate / baseline_rate,
        "%",
    );
    engine.shutdown().await;
    Ok(())
}

/// S2: approvals waiting; raise each event and time it until the instance completes.
async fn event_latency(dir: &Path, sizes: Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    say!("S2 event latency ({} waiting approvals)", sizes.events);
    let engine = open(dir, DEFAULT_RESIDENT).await?;
    crate::examples::install(&engine).await?;
    let ids = start_many(
        &engine,
        "approval_workflow",
        sizes.events,
        200,
        "ev",
        approval,
    )
    .await?;
    let http_ids = start_many(
        &engine,
        "approval_workflow",
        sizes.events.div_ceil(4),
        200,
        "hev",
        approval,
    )
    .await?;
    engine.settle().await;

    let decision = r#"{"approved": true, "approver": "manager@company.com"}"#;
    let mut latencies = Vec::with_capacity(ids.len());
    for id in &ids {
        let start = Instant::now();
        engine
            .raise_event(id, "approval_received", decision)
            .await?;
        expect_completed(&engine.wait_for_completion(id).await?.status, id)?;
        latencies.push(start.elapsed());
    }
    figures.add(
        "event_latency_p50_ms",
        percentile(&mut latencies, 50.0),
        "ms",
    );
    figures.add(
        "event_latency_p99_ms",
        percentile(&mut latencies, 99.0),
        "ms",
    );

    let (url, token, stop) = serve_api(&engine).await?;
    let client = reqwest::Client::new();
    let mut http_latencies = Vec::with_capacity(http_ids.len());
    for id in &http_ids {
        let start = Instant::now();
        let answer = client
            .post(format!(
                "{url}/v1/instances/{}/events/approval_received",
                id.local()
            ))
            .bearer_auth(&token)
            .body(decision)
            .send()
            .await?;
        if answer.status().as_u16() != 202 {
            bail!("raising over HTTP answered {}", answer.status());
        }
        expect_completed(&engine.wait_for_completion(id).await?.status, id)?;
        http_latencies.push(start.elapsed());
    }
    let _ = stop.send(());
    figures.add(
        "event_http_latency_p50_ms",
        percentile(&mut http_latencies, 50.0),
        "ms",
    );
    engine.shutdown().await;
    Ok(())
}

/// S3: one monitor for many continue-as-new generations on the virtual clock. Each
/// generation's check is the demo's: the real HTTP activity component, through
/// `wasi:http` and the egress check, GETting a health endpoint served on loopback.
async fn eternal_monitor(dir: &Path, sizes: Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    say!("S3 eternal monitor ({} generations)", sizes.generations);
    let health = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let health_url = format!("http://{}/health", health.local_addr()?);
    let (stop_health, health_stopped) = tokio::sync::oneshot::channel::<()>();
    let checks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = Arc::clone(&checks);
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/health",
            axum::routing::get(move || async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                "ok"
            }),
        );
        let _ = axum::serve(health, app)
            .with_graceful_shutdown(async {
                let _ = health_stopped.await;
            })
            .await;
    });
    let clock = VirtualClock::new(Timestamp(1_795_597_200_000));
    let mut config = EngineConfig::new(dir).with_clock(Arc::new(clock));
    config.limits = bench_limits();
    config.limits.http_allow = vec![format!("GET {health_url}")];
    let engine = Engine::open(config).await?;
    crate::examples::install(&engine).await?;
    let id = engine
        .start(
            "health_monitor_workflow",
            &json!({"job_id": "bench", "health_url": health_url}).to_string(),
            options("monitor".into()),
        )
        .await?;
    engine.settle().await;
    let start = Instant::now();
    let (mut rss_1k, mut db_1k) = (0.0, 0.0);
    for generation in 1..=sizes.generations {
        if engine.advance_to_next_timer().await?.is_none() {
            bail!("the monitor has no timer at generation {generation}");
        }
        if generation == 1_000 {
            rss_1k = rss_mb();
            db_1k = engine.journal_bytes() as f64;
        }
    }
    let elapsed = start.elapsed();
    let status = engine.status(&id)?;
    if status.generation as u64 != sizes.generations {
        bail!(
            "the monitor is at generation {}, not {}",
            status.generation,
            sizes.generations
        );
    }
    figures.add(
        "monitor_gen_per_s",
        per_second(sizes.generations as f64, elapsed),
        "generations/s",
    );
    figures.add(
        "monitor_rss_growth_pct",
        100.0 * (rss_mb() - rss_1k) / rss_1k.max(1e-9),
        "%",
    );
    figures.add(
        "monitor_db_growth_pct",
        100.0 * (engine.journal_bytes() as f64 - db_1k) / db_1k.max(1.0),
        "%",
    );
    figures.add(
        "monitor_journal_rows",
        engine.journal_rows(&id)? as f64,
        "rows",
    );
    // Every generation's check reached the endpoint and every one saw it healthy.
    let served = checks.load(std::sync::atomic::Ordering::Relaxed);
    let state: Value = serde_json::from_str(&engine.status(&id)?.input)?;
    // The first generation checks too: one check more than the generations advanced.
    if served != sizes.generations + 1 || state["check_count"] != json!(sizes.generations) {
        bail!(
            "{served} health checks served and the state counts {}, for {} generations \
             after the first",
            state["check_count"],
            sizes.generations
        );
    }
    if state["is_healthy"] != json!(true) {
        bail!("the monitor did not see the service healthy: {state}");
    }
    engine.shutdown().await;
    let _ = stop_health.send(());
    Ok(())
}

/// S4: an instance with a long journal, evicted; an event brings it back.
async fn cold_resume(dir: &Path, sizes: Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    let engine = open(dir, DEFAULT_RESIDENT).await?;
    engine.deploy(BENCH_WASM.to_vec()).await?;
    let input = json!({"n": sizes.resume_activities}).to_string();
    let first = engine
        .start("steps", &input, options("long-1".into()))
        .await?;
    let second = engine
        .start("steps", &input, options("long-2".into()))
        .await?;
    engine.settle().await;
    let entries = engine.history(&first)?.len();
    say!("S4 cold resume ({entries} journal entries)");

    // Replay rate: evict, then wake it with an event it does not wait for.
    if !engine.evict(&second).await {
        bail!("the instance did not leave memory");
    }
    let start = Instant::now();
    engine.raise_event(&second, "unrelated", "null").await?;
    engine.settle().await;
    let replay = start.elapsed();

    if !engine.evict(&first).await {
        bail!("the instance did not leave memory");
    }
    let start = Instant::now();
    engine.raise_event(&first, "go", "null").await?;
    expect_completed(&engine.wait_for_completion(&first).await?.status, &first)?;
    figures.add(
        "resume_1k_events_ms",
        start.elapsed().as_secs_f64() * 1000.0,
        "ms",
    );
    figures.add(
        "replay_events_per_s",
        per_second(entries as f64, replay),
        "events/s",
    );
    engine.shutdown().await;
    Ok(())
}

/// S5: many approvals waiting for events; memory once they are parked, and start rate.
async fn many_waiting(dir: &Path, sizes: Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    say!("S5 {} waiting instances", sizes.waiting);
    let engine = open(dir, DEFAULT_RESIDENT).await?;
    crate::examples::install(&engine).await?;
    let rss_before = rss_mb();
    let start = Instant::now();
    start_many(
        &engine,
        "approval_workflow",
        sizes.waiting,
        500,
        "idle",
        approval,
    )
    .await?;
    engine.settle().await;
    let elapsed = start.elapsed();
    figures.add(
        "start_wf_per_s",
        per_second(sizes.waiting as f64, elapsed),
        "workflows/s",
    );
    figures.add("idle_100k_rss_mb", rss_mb(), "MB");
    say!(
        "  (RSS grew {:.0} MB; {} instances resident, the rest wait in the journal)",
        rss_mb() - rss_before,
        engine.resident_count()
    );
    engine.shutdown().await;
    Ok(())
}

/// S6: a host with many deployed components restarts.
async fn restart(dir: &Path, sizes: Sizes, figures: &mut Figures) -> anyhow::Result<()> {
    say!("S6 restart with {} deployed components", sizes.components);
    let engine = open(dir, DEFAULT_RESIDENT).await?;
    let start = Instant::now();
    for i in 0..sizes.components {
        engine
            .deploy(variant(crate::examples::WORKFLOWS_WASM, i))
            .await?;
    }
    let compile = start.elapsed();
    engine.shutdown().await;
    let start = Instant::now();
    let engine = open(dir, DEFAULT_RESIDENT).await?;
    let restart = start.elapsed();
    let workflows = engine.workflows(&Tenant::default_tenant());
    if workflows.iter().map(|w| w.versions.len()).sum::<usize>() != 3 * sizes.components {
        bail!("not every component came back after the restart");
    }
    figures.add("restart_ms", restart.as_secs_f64() * 1000.0, "ms");
    figures.add(
        "first_deploy_ms_per_component",
        compile.as_secs_f64() * 1000.0 / sizes.components as f64,
        "ms",
    );

    // Again with many instances running (approvals waiting for their decision): from
    // the open until the engine is idle and ready. An approval that went back to waiting
    // with nothing new is not replayed at the open but when its decision comes; the
    // decisions below pay for that, and are timed apart.
    crate::examples::install(&engine).await?;
    let ids = start_many(
        &engine,
        "approval_workflow",
        sizes.running,
        500,
        "run",
        approval,
    )
    .await?;
    engine.settle().await;
    engine.shutdown().await;
    let start = Instant::now();
    let engine = open(dir, DEFAULT_RESIDENT).await?;
    engine.settle().await;
    let restart = start.elapsed();
    figures.add(
        "restart_10k_running_ms",
        restart.as_secs_f64() * 1000.0,
        "ms",
    );
    // Ready means an event is answered: about a hundred approvals spread over the ids
    // (the first and last among them) are decided and complete.
    let decision = r#"{"approved": true, "approver": "manager@company.com"}"#;
    let step = (ids.len() / 100).max(1);
    let mut chosen: std::collections::BTreeSet<usize> = (0..ids.len()).step_by(step).collect();
    chosen.insert(ids.len() - 1);
    let decided = chosen.len();
    let start = Instant::now();
    for id in chosen.into_iter().map(|i| &ids[i]) {
        engine
            .raise_event(id, "approval_received", decision)
            .await?;
        expect_completed(&engine.wait_for_completion(id).await?.status, id)?;
    }
    figures.add(
        "restart_first_decision_ms",
        start.elapsed().as_secs_f64() * 1000.0 / decided as f64,
        "ms",
    );
    engine.shutdown().await;
    Ok(())
}

/// Serves the API for `engine` on a loopback port: (base URL, admin token, stop switch).
async fn serve_api(
    engine: &Engine,
) -> anyhow::Result<(String, String, tokio::sync::oneshot::Sender<()>)> {
    let token = engine
        .issue_token(&Tenant::default_tenant(), &Scope::ALL, "bench")
        .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(api::serve(
        listener,
        engine.clone(),
        ApiConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    Ok((url, token, stop))
}

/// The component with a custom section appended: the same code, another digest.
fn variant(component: &[u8], i: usize) -> Vec<u8> {
    let name = b"steadfast-bench-variant";
    let payload = i.to_le_bytes();
    let mut section = Vec::new();
    leb128(&mut section, name.len() as u64);
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = component.to_vec();
    out.push(0); // custom section id
    leb128(&mut out, section.len() as u64);
    out.extend_from_slice(&section);
    out
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

async fn start_many(
    engine: &Engine,
    workflow: &'static str,
    count: usize,
    in_flight: usize,
    prefix: &'static str,
    input: fn(usize) -> String,
) -> anyhow::Result<Vec<InstanceId>> {
    let ids = Arc::new(std::sync::Mutex::new(Vec::with_capacity(count)));
    run_concurrently(count, in_flight, |i| {
        let (engine, ids) = (engine.clone(), Arc::clone(&ids));
        async move {
            let id = engine
                .start(workflow, &input(i), options(format!("{prefix}-{i}")))
                .await?;
            ids.lock().unwrap_or_else(|p| p.into_inner()).push(id);
            Ok(())
        }
    })
    .await?;
    let mut ids = std::mem::take(&mut *ids.lock().unwrap_or_else(|p| p.into_inner()));
    ids.sort();
    Ok(ids)
}

/// Runs `count` tasks made by `task`, at most `in_flight` at a time.
async fn run_concurrently<F, Fut>(count: usize, in_flight: usize, task: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    for i in 0..count {
        if running.len() >= in_flight.max(1)
            && let Some(done) = running.join_next().await
        {
            done??;
        }
        running.spawn(task(i));
    }
    while let Some(done) = running.join_next().await {
        done??;
    }
    Ok(())
}

fn expect_completed(status: &RuntimeStatus, id: &InstanceId) -> anyhow::Result<()> {
    if *status != RuntimeStatus::Completed {
        bail!("{id} ended {status}");
    }
    Ok(())
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort();
    let index = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[index].as_secs_f64() * 1000.0
}

/// Resident set size of this process, in MB (Linux; 0 elsewhere).
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
