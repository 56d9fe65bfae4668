//! `steadfast dev`, started as a user starts it, and a few calls against it.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Dev {
    pub url: String,
    /// Where the Durable Task sidecar protocol (gRPC) is served.
    pub grpc_port: u16,
    /// The link `steadfast dev` prints, with the admin token in its fragment.
    pub console_link: String,
    pub admin: String,
    _process: tokio::process::Child,
    _dir: tempfile::TempDir,
}

/// `steadfast dev` as a user starts it, on a free loopback port.
pub async fn start_dev() -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let grpc_port = free_port();
    let mut process = tokio::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args([
            "dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--grpc-listen",
            &format!("127.0.0.1:{grpc_port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
    let link = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(link) = line.strip_prefix("console: ") {
                return link.to_owned();
            }
        }
        panic!("steadfast dev stopped before printing the console's link");
    })
    .await
    .expect("steadfast dev printed no console link");
    // Keep reading its output so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let admin = link
        .split_once("#token=")
        .expect("dev on loopback offers its admin token")
        .1
        .to_owned();
    Dev {
        url: format!("http://127.0.0.1:{port}"),
        grpc_port,
        console_link: link,
        admin,
        _process: process,
        _dir: dir,
    }
}

impl Dev {
    pub async fn api(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let client = reqwest::Client::new();
        let mut request = client
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn start_approval(&self, id: &str) {
        let input = json!({"request_id": id, "requester": "bob@company.com", "amount": 5000, "description": "Team offsite"});
        let (code, body) = self
            .api(
                &self.admin,
                "POST",
                "/v1/workflows/approval_workflow/start",
                Some(json!({"instance_id": id, "input": input})),
            )
            .await;
        assert_eq!(code, 201, "{body}");
    }

    pub async fn status(&self, id: &str) -> Value {
        let (code, body) = self
            .api(&self.admin, "GET", &format!("/v1/instances/{id}"), None)
            .await;
        assert_eq!(code, 200, "{body}");
        body
    }
}
