//! The control-plane tests' harness: a real server on 127.0.0.1:0 with a real SQLite
//! file, and ways to drive it over HTTP and through the `steadfast` binary.
//! Shared by several test files; each uses only part of it.
#![allow(dead_code)]

pub mod dev;
pub mod postgres;
pub mod python;

use std::path::PathBuf;

use serde_json::{Value, json};
use steadfast::api::{self, ApiConfig};
use steadfast::engine::Scope;
use steadfast::model::Tenant;
use steadfast::{Engine, EngineConfig};
use tokio::sync::oneshot;

/// A running server and what a client needs to reach it.
pub struct Server {
    pub url: String,
    pub admin: String,
    pub engine: Engine,
    pub dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

pub async fn server(config: ApiConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut engine_config = EngineConfig::new(dir.path());
    for name in ["step_a", "step_b", "step_c"] {
        engine_config =
            engine_config.with_activity(name, |ctx, _| async move { Ok(json!(ctx.activity)) });
    }
    let engine = Engine::open(engine_config).await.unwrap();
    let admin = engine
        .issue_token(&Tenant::default_tenant(), &Scope::ALL, "test admin")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(api::serve(listener, engine.clone(), config, async {
        let _ = stopped.await;
    }));
    Server {
        url,
        admin,
        engine,
        dir,
        _stop: stop,
    }
}

impl Server {
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Runs the `steadfast` binary against this server with `token`.
    pub async fn cli(&self, token: &str, args: &[&str]) -> (bool, String, String) {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
            .args(args)
            .env("STEADFAST_SERVER", &self.url)
            .env("STEADFAST_TOKEN", token)
            .current_dir(self.dir.path())
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub async fn cli_json(&self, token: &str, args: &[&str]) -> Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let (ok, stdout, stderr) = self.cli(token, &all).await;
        assert!(ok, "steadfast {args:?} failed: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }

    /// A GET; returns the status and the body as text.
    pub async fn text(&self, token: Option<&str>, path: &str) -> (u16, String) {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// An HTTP call; returns the status and the JSON body.
    pub async fn http(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let client = reqwest::Client::new();
        let mut request = client.request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn deploy(&self, token: &str, bytes: &[u8]) -> Value {
        let (status, body) = self
            .http(Some(token), "POST", "/v1/components", Some(bytes.to_vec()))
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }
}

pub fn approval(id: &str, amount: u32) -> String {
    json!({"request_id": id, "requester": "bob@company.com", "amount": amount, "description": "laptops"}).to_string()
}
