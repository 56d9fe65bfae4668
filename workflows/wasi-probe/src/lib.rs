//! An activity component (built for `wasm32-wasip2`) that reports what WASI shows it: its
//! environment and the files it can read. With the `sockets` feature it also opens a raw
//! TCP connection, which makes the component import `wasi:sockets`.

use serde_json::{Value, json};
use steadfast_sdk::Error;

#[cfg(not(feature = "sockets"))]
steadfast_sdk::activities! {
    "probe" => probe,
}

#[cfg(feature = "sockets")]
steadfast_sdk::activities! {
    "probe" => probe,
    "raw_socket" => raw_socket,
}

/// `{"env": {...}, "file": <contents of input.path, or null>, "file_error": ...}`.
fn probe(input: Value) -> Result<Value, Error> {
    let env: serde_json::Map<String, Value> = std::env::vars()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let path = input
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or("/data/hello.txt");
    let (file, error) = match std::fs::read_to_string(path) {
        Ok(text) => (Value::String(text), Value::Null),
        Err(e) => (Value::Null, Value::String(e.to_string())),
    };
    let written = std::fs::write(path, "overwritten").is_ok();
    Ok(json!({ "env": env, "file": file, "file_error": error, "wrote": written }))
}

#[cfg(feature = "sockets")]
fn raw_socket(address: String) -> Result<Value, Error> {
    std::net::TcpStream::connect(address.as_str())
        .map(|_| json!("connected"))
        .map_err(|e| Error::new("io", e.to_string()))
}
