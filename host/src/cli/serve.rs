//! `steadfast serve` and `steadfast dev`: the engine behind the HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Deserialize;

use crate::api::{self, ApiConfig};
use crate::engine::{Engine, EngineConfig, Scope};
use crate::model::Tenant;

/// Flags shared by `serve` and `dev`; each overrides the config file.
#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:7878].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where the journal and compiled components live [default: ./steadfast-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A TOML file with any of: listen, grpc_listen, data_dir, max_payload_bytes,
    /// max_component_bytes, max_resident, header_read_timeout_ms, max_connections,
    /// write_timeout_ms, [compile], [traces], [limits],
    /// [tenant_limits.NAME] (a tenant's section overrides only the limits it names; see
    /// `GET /v1/limits` for every limit).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serve without authentication: only with `dev`, and only on a loopback address.
    #[arg(long)]
    no_auth: bool,
    /// Also serve the Durable Task sidecar protocol (gRPC, what the Dapr workflow SDKs
    /// speak) here [`serve`: off unless set here or as `grpc_listen`; `dev`:
    /// 127.0.0.1:50001, Dapr's gRPC port]. `off` turns it off.
    #[arg(long)]
    grpc_listen: Option<GrpcListen>,
    /// Keep the journal in this PostgreSQL database (`postgres://user:pass@host/db`),
    /// shared with other hosts, instead of `steadfast.db` in the data directory. Hosts
    /// on one database share its instances' partitions by lease.
    #[arg(long, env = "STEADFAST_JOURNAL")]
    journal: Option<String>,
    /// This host's name among the hosts of a shared journal [default: machine-pid-random].
    #[arg(long)]
    host_id: Option<String>,
    /// How long a host's lease on its partitions lasts unrenewed, in ms: how soon the
    /// others take over after it dies [default: 10000].
    #[arg(long)]
    lease_ms: Option<u64>,
}

/// `--grpc-listen ADDRESS` or `--grpc-listen off`.
#[derive(Debug, Clone, Copy)]
enum GrpcListen {
    Off,
    At(SocketAddr),
}

impl std::str::FromStr for GrpcListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(GrpcListen::Off);
        }
        s.parse()
            .map(GrpcListen::At)
            .map_err(|e| format!("'{s}' is not an address like 127.0.0.1:50001, nor 'off': {e}"))
    }
}

/// The server's configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Journal (`steadfast.db`), compiled-code cache and `admin.token`.
    pub data_dir: PathBuf,
    /// Largest JSON body (workflow inputs, event payloads).
    pub max_payload_bytes: usize,
    /// Largest `.wasm` upload.
    pub max_component_bytes: usize,
    /// Most instances kept in memory.
    pub max_resident: usize,
    /// Limits for every tenant's guests (`[limits]`).
    pub limits: crate::engine::Limits,
    /// Per-tenant limits (`[tenant_limits.acme]`): each field named there replaces that
    /// field of `[limits]` for the tenant; the others stay as `[limits]` sets them.
    pub tenant_limits:
        std::collections::HashMap<String, serde_json::Map<String, serde_json::Value>>,
    /// How long a client may take to send a request's headers, in ms; also how long a
    /// keep-alive connection may sit idle, a body may pause, and a response may wait for
    /// the client to read it.
    pub header_read_timeout_ms: u64,
    /// Most client connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long a response may wait for the client to read any of it, in ms.
    pub write_timeout_ms: u64,
    /// What an uploaded component may be, checked before it is compiled (`[compile]`).
    pub compile: crate::sandbox::CompileLimits,
    /// Where OpenTelemetry spans go (`[traces]`); the `OTEL_EXPORTER_OTLP_*` variables
    /// apply when it names no collector.
    pub traces: crate::traces::TracesConfig,
    /// Where the Durable Task sidecar protocol (gRPC) is served; not at all when unset.
    pub grpc_listen: Option<SocketAddr>,
    /// A PostgreSQL URL: the journal shared with other hosts (SQLite in `data_dir` when
    /// unset).
    pub journal: Option<String>,
    /// How long a lease on partitions lasts unrenewed, in ms (shared journal only).
    pub lease_ms: u64,
}

impl ServerConfig {
    /// Each tenant's limits: its section layered over `[limits]`.
    pub fn tenant_limits(
        &self,
    ) -> anyhow::Result<std::collections::HashMap<String, crate::engine::Limits>> {
        self.tenant_limits
            .iter()
            .map(|(tenant, overrides)| {
                let limits = self.limits.layered(overrides).map_err(|why| {
                    anyhow::anyhow!("[tenant_limits.{tenant}] is not valid: {why}")
                })?;
                Ok((tenant.clone(), limits))
            })
            .collect()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        let api = ApiConfig::default();
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            data_dir: PathBuf::from("steadfast-data"),
            max_payload_bytes: api.max_payload_bytes,
            max_component_bytes: api.max_component_bytes,
            max_resident: crate::engine::DEFAULT_MAX_RESIDENT,
            limits: crate::engine::Limits::default(),
            tenant_limits: std::collections::HashMap::new(),
            header_read_timeout_ms: api.header_read_timeout.as_millis() as u64,
            max_connections: api.max_connections,
            write_timeout_ms: api.write_timeout.as_millis() as u64,
            compile: crate::sandbox::CompileLimits::default(),
            traces: crate::traces::TracesConfig::default(),
            grpc_listen: None,
            journal: None,
            lease_ms: 10_000,
        }
    }
}

pub(super) async fn run(args: ServeArgs, dev: bool) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("{} is not a valid steadfast config", path.display()))?
        }
        None => ServerConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(journal) = args.journal {
        config.journal = Some(journal);
    }
    if let Some(ms) = args.lease_ms {
        config.lease_ms = ms;
    }
    let mut grpc_default = false;
    match args.grpc_listen {
        Some(GrpcListen::Off) => config.grpc_listen = None,
        Some(GrpcListen::At(address)) => config.grpc_listen = Some(address),
        None if dev && config.grpc_listen.is_none() => {
            config.grpc_listen = Some(SocketAddr::from(([127, 0, 0, 1], 50001)));
            grpc_default = true;
        }
        None => {}
    }
    let grpc_on_loopback = config.grpc_listen.is_none_or(|a| a.ip().is_loopback());
    if args.no_auth && !grpc_on_loopback {
        bail!(
            "refusing to serve gRPC without authentication off loopback: --no-auth needs \
             --grpc-listen on a loopback address (or --grpc-listen off)"
        );
    }
    if args.no_auth && !(dev && config.listen.ip().is_loopback()) {
        bail!(
            "refusing to serve without authentication: --no-auth needs `steadfast dev` on a loopback address"
        );
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();

    let mut engine_config =
        EngineConfig::new(&config.data_dir).with_max_resident(config.max_resident);
    engine_config.limits = config.limits.clone();
    engine_config.tenant_limits = config.tenant_limits()?;
    engine_config.compile_limits = config.compile;
    if let Some(url) = &config.journal {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!(
                "--journal takes a PostgreSQL URL like postgres://user:password@host/db; \
                 leave it out to keep the journal in SQLite in the data directory"
            );
        }
        if config.lease_ms < 1_000 {
            bail!("lease_ms must be at least 1000 (a lease is renewed every third of it)");
        }
        let host = args
            .host_id
            .clone()
            .unwrap_or_else(crate::journal::leases::LeaseConfig::unique_host);
        crate::journal::leases::check_host_name(&host)
            .map_err(|why| anyhow::anyhow!("--host-id: {why}"))?;
        println!("journal: PostgreSQL, shared; this host is {host}");
        engine_config.journal = crate::engine::JournalBackend::Postgres {
            url: url.clone(),
            lease: crate::journal::leases::LeaseConfig {
                host,
                ttl: std::time::Duration::from_millis(config.lease_ms),
            },
        };
    }
    let traces = crate::traces::Traces::from_config(&config.traces)
        .map_err(|why| anyhow::anyhow!("[traces]: {why}"))?;
    if traces.is_on() {
        println!("exporting OpenTelemetry traces over OTLP/HTTP");
    }
    engine_config.traces = std::sync::Arc::new(traces);
    let engine = Engine::open(engine_config)
        .await
        .context("opening the journal")?;
    if dev {
        let examples = crate::examples::install(&engine).await?;
        println!(
            "deployed example workflows: {}",
            examples.workflows.names.join(", ")
        );
        println!(
            "deployed example activities: {}",
            examples.activities.names.len() + examples.http_activities.names.len()
        );
    }
    let auth = !args.no_auth;
    let mut console_token = None;
    if auth {
        let (token, path, fresh) = admin_token(&engine, &config.data_dir).await?;
        if fresh || dev {
            println!("admin token (also in {}):\n  {token}", path.display());
        }
        // `dev` on loopback hands the console its admin token in the link's fragment,
        // which the browser never sends to a server; the console moves it to the tab's
        // session storage and clears it from the address bar.
        if dev && config.listen.ip().is_loopback() {
            console_token = Some(token);
        }
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    println!("steadfast listening on http://{local}");
    match console_token {
        Some(token) => println!("console: http://{local}/ui/#token={token}"),
        None => println!("console: http://{local}/ui/"),
    }
    let api = ApiConfig {
        max_payload_bytes: config.max_payload_bytes,
        max_component_bytes: config.max_component_bytes,
        auth,
        header_read_timeout: std::time::Duration::from_millis(config.header_read_timeout_ms),
        max_connections: config.max_connections.max(1),
        write_timeout: std::time::Duration::from_millis(config.write_timeout_ms),
    };
    let grpc = match config.grpc_listen {
        // dev's default port may be daprd's: go on without gRPC, and say so.
        Some(address) if grpc_default => match tokio::net::TcpListener::bind(address).await {
            Ok(grpc) => {
                println!(
                    "Durable Task gRPC (Dapr workflow SDKs) on {}",
                    grpc.local_addr()?
                );
                Some(grpc)
            }
            Err(e) => {
                eprintln!(
                    "warning: not serving gRPC: {address} is taken ({e}); choose a port with \
                     --grpc-listen"
                );
                None
            }
        },
        Some(address) => {
            let grpc = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| {
                    format!(
                        "cannot serve gRPC on {address}; choose another with --grpc-listen, or \
                     --grpc-listen off"
                    )
                })?;
            println!(
                "Durable Task gRPC (Dapr workflow SDKs) on {}",
                grpc.local_addr()?
            );
            Some(grpc)
        }
        None => None,
    };
    let served = api::serve_with_grpc(listener, grpc, engine.clone(), api, shutdown_signal()).await;
    // The exporter's last batch, on its own thread: it may wait on the collector. Spans
    // of activations still finishing after this are dropped, not sent late.
    let flushing = engine.clone();
    let _ = tokio::task::spawn_blocking(move || flushing.flush_traces()).await;
    // On a shared journal: the leases given back, so the other hosts take over now (a
    // host on SQLite leaves as it always did; its instances resume from the journal).
    if engine.journal_is_shared() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), engine.shutdown()).await;
    }
    served.context("serving HTTP")?;
    println!("steadfast stopped; running instances resume from the journal on the next start");
    Ok(())
}

/// The admin token in `DIR/admin.token` (mode 0600), issued on first start.
async fn admin_token(engine: &Engine, dir: &Path) -> anyhow::Result<(String, PathBuf, bool)> {
    let path = dir.join("admin.token");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_owned();
        if engine.authenticate(&existing)?.is_some() {
            return Ok((existing, path, false));
        }
    }
    let token = engine
        .issue_token(&Tenant::default_tenant(), &Scope::ALL, "admin (bootstrap)")
        .await?;
    crate::sandbox::write_private(&path, format!("{token}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((token, path, true))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
