//! The CLI client: each subcommand is one HTTP call to a running server, printed for
//! people (or as JSON with `-o json`).

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

/// Where the server is and who we are.
#[derive(Debug, Args)]
pub(super) struct ClientArgs {
    /// The server's URL.
    #[arg(
        long,
        global = true,
        env = "STEADFAST_SERVER",
        default_value = "http://127.0.0.1:7878"
    )]
    server: String,
    /// Bearer token [default: the contents of ./steadfast-data/admin.token, if present].
    #[arg(long, global = true, env = "STEADFAST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
}

impl ClientArgs {
    /// Whether `-o json` was asked for.
    pub(super) fn json(&self) -> bool {
        self.output == Output::Json
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(super) enum WorkflowCommand {
    /// Start an instance of workflow NAME.
    Start {
        name: String,
        /// Instance id (generated if omitted).
        #[arg(long)]
        id: Option<String>,
        /// Input as JSON.
        #[arg(long)]
        input: Option<String>,
        /// When the id exists: error, ignore or terminate.
        #[arg(long)]
        reuse: Option<String>,
        /// Run the workflow first this many seconds from now (the server's clock).
        #[arg(long, value_name = "SECONDS")]
        delay_secs: Option<u64>,
    },
    /// Show an instance's status.
    Status { id: String },
    /// Wait until an instance ends (or the timeout passes) and show its status.
    Wait {
        id: String,
        /// Seconds to wait at most.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Show an instance's journal.
    History { id: String },
    /// Terminate an instance and its children.
    Terminate {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Suspend an instance; events raised meanwhile are kept.
    Suspend { id: String },
    /// Resume a suspended instance.
    Resume { id: String },
    /// Delete an ended instance from the journal.
    Purge {
        id: String,
        /// Terminate it first if it is still running.
        #[arg(long)]
        force: bool,
    },
    /// Raise an event: `raise-event ID/EVENT --input JSON`.
    RaiseEvent {
        /// Instance id and event name, as ID/EVENT.
        target: String,
        /// Payload as JSON.
        #[arg(long)]
        input: Option<String>,
    },
    /// List instances.
    List {
        /// Only this workflow.
        #[arg(long)]
        name: Option<String>,
        /// Only this status (PENDING, RUNNING, SUSPENDED, COMPLETED, ...).
        #[arg(long)]
        status: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum TenantCommand {
    /// Create a tenant and print a token for it (admin only).
    Create { name: String },
}

pub(super) struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
    output: Output,
}

impl Client {
    pub(super) fn new(args: ClientArgs) -> anyhow::Result<Client> {
        let token = args.token.or_else(|| {
            std::fs::read_to_string("steadfast-data/admin.token")
                .ok()
                .map(|t| t.trim().to_owned())
        });
        let http = reqwest::Client::builder()
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            http,
            server: args.server.trim_end_matches('/').to_owned(),
            token,
            output: args.output,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.server);
        let writes = method != reqwest::Method::GET;
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", content_type).body(body);
        } else if writes {
            // A dev server without authentication answers writes only with a type a web
            // page cannot send across origins.
            request = request.header("content-type", "application/json");
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.server))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .context("reading the server's answer")?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if !status.is_success() {
            let message = value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            bail!("{message} (HTTP {})", status.as_u16());
        }
        Ok(value)
    }

    async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::POST,
            path,
            Some(body.to_string().into_bytes()),
            "application/json",
        )
        .await
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None, "").await
    }

    fn print(&self, value: &Value, text: impl FnOnce(&Value) -> String) {
        match self.output {
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            ),
            Output::Text => println!("{}", text(value)),
        }
    }

    pub(super) async fn deploy(
        &self,
        bytes: Vec<u8>,
        check: bool,
        migrate: bool,
    ) -> anyhow::Result<()> {
        let query = match (check, migrate) {
            (_, true) => "?migrate=true",
            (true, false) => "?check=true",
            _ => "",
        };
        let progress = super::progress::Progress::spinner(
            self.output == Output::Json,
            format!(
                "uploading {} KiB; the server checks and compiles it",
                bytes.len().div_ceil(1024)
            ),
        );
        let answer = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/components{query}"),
                Some(bytes),
                "application/wasm",
            )
            .await?;
        progress.clear();
        self.print(&answer, |v| {
            let mut out = String::new();
            if let Some(d) = v.get("digest").or_else(|| v.pointer("/deployment/digest")) {
                out.push_str(&format!("deployed {}\n", d.as_str().unwrap_or("?")));
            }
            let versions = v
                .get("versions")
                .or_else(|| v.pointer("/deployment/versions"));
            for version in versions.and_then(Value::as_array).into_iter().flatten() {
                out.push_str(&format!(
                    "  {} v{}\n",
                    version["workflow"].as_str().unwrap_or("?"),
                    version["version"]
                ));
            }
            if let Some(instances) = v.get("instances").and_then(Value::as_array) {
                if instances.is_empty() {
                    out.push_str("no live instances to check\n");
                }
                for i in instances {
                    let id = i["instance_id"].as_str().unwrap_or("?");
                    if i["compatible"] == json!(true) {
                        let moved = if i["migrated"] == json!(true) {
                            " (migrated)"
                        } else {
                            ""
                        };
                        out.push_str(&format!("{id}: compatible{moved}\n"));
                    } else {
                        out.push_str(&format!(
                            "{id}: INCOMPATIBLE: {}\n",
                            i["divergence"].as_str().unwrap_or("?")
                        ));
                    }
                }
            }
            out.trim_end().to_owned()
        });
        Ok(())
    }

    pub(super) async fn workflow(&self, command: WorkflowCommand) -> anyhow::Result<()> {
        match command {
            WorkflowCommand::Start {
                name,
                id,
                input,
                reuse,
                delay_secs,
            } => {
                let input: Value = match input {
                    Some(text) => {
                        serde_json::from_str(&text).context("--input is not valid JSON")?
                    }
                    None => Value::Null,
                };
                let body = json!({
                    "input": input,
                    "instance_id": id,
                    "reuse": reuse,
                    "start_delay_ms": delay_secs.map(|s| s.saturating_mul(1000)),
                });
                let answer = self
                    .post_json(&format!("/v1/workflows/{}/start", seg(&name)), &body)
                    .await?;
                self.print(&answer, |v| {
                    format!("started {}", v["instance_id"].as_str().unwrap_or("?"))
                });
            }
            WorkflowCommand::Status { id } => {
                let answer = self.get(&format!("/v1/instances/{}", seg(&id))).await?;
                self.print(&answer, status_text);
            }
            WorkflowCommand::Wait { id, timeout } => {
                let answer = self.wait(&id, Duration::from_secs(timeout)).await?;
                self.print(&answer, status_text);
            }
            WorkflowCommand::History { id } => {
                // The server answers a page at a time; follow the pages to the end.
                let mut entries = Vec::new();
                let mut after = 0u64;
                loop {
                    let page = self
                        .get(&format!(
                            "/v1/instances/{}/history?after={after}&limit=1000",
                            seg(&id)
                        ))
                        .await?;
                    entries.extend(page["history"].as_array().cloned().unwrap_or_default());
                    match page["next_after"].as_u64() {
                        Some(next) if next > after => after = next,
                        _ => break,
                    }
                }
                let answer = serde_json::json!({ "instance_id": id, "history": entries });
                self.print(&answer, |v| {
                    let mut out = String::new();
                    for e in v["history"].as_array().into_iter().flatten() {
                        let mut rest = e.clone();
                        if let Value::Object(map) = &mut rest {
                            for key in ["position", "generation", "at", "type"] {
                                map.remove(key);
                            }
                        }
                        out.push_str(&format!(
                            "{:>6}  {}  {:<24} {}\n",
                            e["position"],
                            e["at"].as_str().unwrap_or(""),
                            e["type"].as_str().unwrap_or(""),
                            rest
                        ));
                    }
                    out.trim_end().to_owned()
                });
            }
            WorkflowCommand::Terminate { id, reason } => {
                let answer = self
                    .post_json(
                        &format!("/v1/instances/{}/terminate", seg(&id)),
                        &json!({ "reason": reason }),
                    )
                    .await?;
                self.print(&answer, |v| {
                    format!(
                        "terminated {}",
                        v["terminated"]
                            .as_array()
                            .map(|a| a
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", "))
                            .unwrap_or_default()
                    )
                });
            }
            WorkflowCommand::Suspend { id } => {
                let answer = self
                    .post_json(&format!("/v1/instances/{}/suspend", seg(&id)), &json!({}))
                    .await?;
                self.print(&answer, |_| format!("suspended {id}"));
            }
            WorkflowCommand::Resume { id } => {
                let answer = self
                    .post_json(&format!("/v1/instances/{}/resume", seg(&id)), &json!({}))
                    .await?;
                self.print(&answer, |_| format!("resumed {id}"));
            }
            WorkflowCommand::Purge { id, force } => {
                let path = format!(
                    "/v1/instances/{}{}",
                    seg(&id),
                    if force { "?force=true" } else { "" }
                );
                let answer = self.call(reqwest::Method::DELETE, &path, None, "").await?;
                self.print(&answer, |v| format!("purged {} instance(s)", v["purged"]));
            }
            WorkflowCommand::RaiseEvent { target, input } => {
                let Some((id, event)) = target.split_once('/') else {
                    bail!("give the target as ID/EVENT, e.g. request-002/approval_received");
                };
                let payload: Value = match input {
                    Some(text) => {
                        serde_json::from_str(&text).context("--input is not valid JSON")?
                    }
                    None => Value::Null,
                };
                let answer = self
                    .post_json(
                        &format!("/v1/instances/{}/events/{}", seg(id), seg(event)),
                        &payload,
                    )
                    .await?;
                self.print(&answer, |_| format!("raised {event} on {id}"));
            }
            WorkflowCommand::List { name, status } => {
                let mut query = Vec::new();
                if let Some(name) = name {
                    query.push(format!("workflow={}", seg(&name)));
                }
                if let Some(status) = status {
                    query.push(format!("status={}", seg(&status)));
                }
                let answer = self
                    .get(&format!("/v1/instances?{}", query.join("&")))
                    .await?;
                self.print(&answer, |v| {
                    let mut out = format!(
                        "{:<36} {:<26} {:<17} {}\n",
                        "INSTANCE", "WORKFLOW", "STATUS", "CREATED"
                    );
                    for i in v["instances"].as_array().into_iter().flatten() {
                        out.push_str(&format!(
                            "{:<36} {:<26} {:<17} {}\n",
                            i["instance_id"].as_str().unwrap_or("?"),
                            i["workflow"].as_str().unwrap_or("?"),
                            i["runtime_status"].as_str().unwrap_or("?"),
                            i["created_at"].as_str().unwrap_or("?")
                        ));
                    }
                    out.trim_end().to_owned()
                });
            }
        }
        Ok(())
    }

    /// Waits until the instance ends or `timeout` passes. On a terminal the server is
    /// asked in short long-polls, so a spinner can show the status meanwhile; otherwise
    /// in one.
    async fn wait(&self, id: &str, timeout: Duration) -> anyhow::Result<Value> {
        let progress = super::progress::Progress::spinner(
            self.output == Output::Json,
            format!("waiting for {id}"),
        );
        let began = std::time::Instant::now();
        // The server waits at most five minutes per request.
        let poll = if progress.is_shown() {
            Duration::from_secs(2)
        } else {
            timeout.min(Duration::from_secs(300))
        };
        loop {
            let left = timeout.saturating_sub(began.elapsed());
            let answer = self
                .get(&format!(
                    "/v1/instances/{}/wait?timeout_ms={}",
                    seg(id),
                    left.min(poll).as_millis()
                ))
                .await?;
            let status = answer["runtime_status"].as_str().unwrap_or("?");
            // As the server's wait: only these end it (CONTINUED_AS_NEW goes on).
            let live = !matches!(status, "COMPLETED" | "FAILED" | "TERMINATED" | "STALLED");
            if !live || began.elapsed() >= timeout {
                return Ok(answer);
            }
            progress.set_message(format!("waiting for {id}: {status}"));
        }
    }

    pub(super) async fn workers(&self) -> anyhow::Result<()> {
        let answer = self.get("/v1/workers").await?;
        self.print(&answer, |v| {
            let names: Vec<&str> = v["activities"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            format!(
                "{} worker(s) connected; activities they answered: {}",
                v["connected"],
                if names.is_empty() {
                    "none yet".to_owned()
                } else {
                    names.join(", ")
                }
            )
        });
        Ok(())
    }

    pub(super) async fn tenant(&self, command: TenantCommand) -> anyhow::Result<()> {
        match command {
            TenantCommand::Create { name } => {
                let answer = self
                    .post_json("/v1/tenants", &json!({ "name": name }))
                    .await?;
                self.print(&answer, |v| {
                    format!(
                        "tenant {}\ntoken (shown once): {}",
                        v["tenant"].as_str().unwrap_or("?"),
                        v["token"].as_str().unwrap_or("?")
                    )
                });
            }
        }
        Ok(())
    }
}

/// Escapes one URL path segment.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn status_text(v: &Value) -> String {
    let mut out = String::new();
    let line = |out: &mut String, key: &str, value: &Value| {
        if !value.is_null() {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{key:<15} {text}\n"));
        }
    };
    line(&mut out, "instance", &v["instance_id"]);
    line(&mut out, "workflow", &v["workflow"]);
    line(&mut out, "status", &v["runtime_status"]);
    line(&mut out, "version", &v["version"]);
    line(&mut out, "generation", &v["generation"]);
    line(&mut out, "input", &v["input"]);
    line(&mut out, "output", &v["output"]);
    line(
        &mut out,
        "error",
        &v.pointer("/error/message").cloned().unwrap_or(Value::Null),
    );
    line(&mut out, "custom status", &v["custom_status"]);
    line(&mut out, "created", &v["created_at"]);
    line(&mut out, "starts at", &v["start_at"]);
    line(&mut out, "updated", &v["updated_at"]);
    out.trim_end().to_owned()
}
