//! An activity component (built for `wasm32-wasip2`) that reports what WASI shows it: its
//! environment and the files it can read. With the `sockets` feature it also opens a raw
//! TCP connection, which makes the component import `wasi:sockets`. `chatty` writes to
//! stdout and stderr, `input` kilobytes of it, to show where an activity's output goes.
//! `calls` counts the calls its instance has served, to show when the host reuses an
//! instance; `trap` panics after counting.

use serde_json::{Value, json};
use steadfast_sdk::Error;

#[cfg(not(any(feature = "sockets", feature = "sleepy_names")))]
steadfast_sdk::activities! {
    "probe" => probe,
    "chatty" => chatty,
    "calls" => calls,
    "trap" => trap,
}

/// Calls of `calls` and `trap` this instance has served.
#[cfg_attr(any(feature = "sockets", feature = "sleepy_names"), allow(dead_code))]
static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// How many calls of `calls` and `trap` this instance has served, this one included.
#[cfg_attr(any(feature = "sockets", feature = "sleepy_names"), allow(dead_code))]
fn calls(_: Value) -> Result<Value, Error> {
    Ok(json!(
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    ))
}

/// Counts, then traps.
#[cfg_attr(any(feature = "sockets", feature = "sleepy_names"), allow(dead_code))]
fn trap(_: Value) -> Result<Value, Error> {
    CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    panic!("trapped on purpose");
}

/// With `sleepy_names`, `names` blocks in a WASI sleep for an hour: the host must bound
/// deploy-time inspection in wall-clock time, not only in fuel.
#[cfg(feature = "sleepy_names")]
mod sleepy_names {
    use steadfast_sdk::activity_bindings::exports::steadfast::workflow::activities::Guest;
    use steadfast_sdk::activity_bindings::steadfast::workflow::types::ErrorInfo;

    struct Sleepy;

    impl Guest for Sleepy {
        fn names() -> Vec<String> {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            vec!["never".to_owned()]
        }

        fn run(_: String, _: String) -> Result<String, ErrorInfo> {
            Ok("null".to_owned())
        }
    }

    steadfast_sdk::activity_bindings::export_activity_worker!(
        Sleepy with_types_in steadfast_sdk::activity_bindings
    );
}

#[cfg(feature = "sockets")]
steadfast_sdk::activities! {
    "probe" => probe,
    "chatty" => chatty,
    "raw_socket" => raw_socket,
}

/// `{"env": {...}, "file": <contents of input.path, or null>, "file_error": ...}`.
#[cfg_attr(feature = "sleepy_names", allow(dead_code))]
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

/// Says hello on stdout, complains on stderr, floods stdout with `kilobytes` lines of a
/// kilobyte each, and leaves a line without its newline on stderr. Returns how many
/// writes failed (none should: the host accepts everything and logs what fits).
#[cfg_attr(feature = "sleepy_names", allow(dead_code))]
fn chatty(kilobytes: u32) -> Result<Value, Error> {
    use std::io::Write as _;
    let mut failed = 0;
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    failed += usize::from(writeln!(out, "hello from stdout").is_err());
    failed += usize::from(writeln!(err, "oops on stderr").is_err());
    let line = format!("{}\n", "x".repeat(1023));
    for _ in 0..kilobytes {
        failed += usize::from(out.write_all(line.as_bytes()).is_err());
    }
    failed += usize::from(out.flush().is_err());
    failed += usize::from(write!(err, "no newline at the end").is_err());
    failed += usize::from(err.flush().is_err());
    Ok(json!({ "failed_writes": failed }))
}

#[cfg(feature = "sockets")]
fn raw_socket(address: String) -> Result<Value, Error> {
    std::net::TcpStream::connect(address.as_str())
        .map(|_| json!("connected"))
        .map_err(|e| Error::new("io", e.to_string()))
}
