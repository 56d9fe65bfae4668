//! Outgoing HTTP for activity components, through `wasi:http`.
//!
//! Activities run with WASI; their one way out to the network is `wasi:http`, and the host
//! sends a request only if the tenant's allow-list names its method and destination.
//! A request the host refuses fails with an [`Error`] of kind `http_denied`, and the host
//! fails the activity call with a message naming the request and the allow-list, so a
//! missing grant is a configuration error to fix, never a silent "service down".
//!
//! Build the activity component for `wasm32-wasip2` and enable the SDK's `http` feature.
//!
//! ```no_run
//! use steadfast_sdk::{Error, http};
//!
//! fn check(url: String) -> Result<String, Error> {
//!     let response = http::get(&url)?;
//!     Ok(if response.status == 200 { "healthy" } else { "unhealthy" }.into())
//! }
//! ```

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

use crate::Error;

/// Largest response body read into memory, in bytes; a longer body is an error.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// What came back: the status code and the whole body.
///
/// ```no_run
/// let response = steadfast_sdk::http::get("http://127.0.0.1:8000/health").unwrap();
/// println!("{} ({} bytes)", response.status, response.body.len());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The response body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as UTF-8 text (invalid sequences replaced).
    ///
    /// ```
    /// let r = steadfast_sdk::http::Response { status: 200, body: b"ok".to_vec() };
    /// assert_eq!(r.text(), "ok");
    /// ```
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET url`.
///
/// ```no_run
/// let status = steadfast_sdk::http::get("https://status.example.com/health")?.status;
/// # Ok::<(), steadfast_sdk::Error>(())
/// ```
pub fn get(url: &str) -> Result<Response, Error> {
    request("GET", url, &[], None)
}

/// Sends one request and reads the whole response.
///
/// `method` is an HTTP method (`"GET"`, `"POST"`, ...), `headers` are `(name, value)`
/// pairs, `body` is sent as is. Errors have kind `http_denied` (the host's allow-list
/// refused it), `invalid_url`, or `http_error` (anything the network or server did).
///
/// ```no_run
/// let body = br#"{"text": "disk almost full"}"#;
/// let r = steadfast_sdk::http::request(
///     "POST",
///     "https://hooks.example.com/alerts",
///     &[("content-type", "application/json")],
///     Some(body),
/// )?;
/// # Ok::<(), steadfast_sdk::Error>(())
/// ```
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, Error> {
    let target = Target::parse(url)?;
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|e| Error::new("http_error", format!("header '{name}': {e:?}")))?;
    }
    let outgoing = OutgoingRequest::new(fields);
    let method = match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    };
    let refused = |what: &str| Error::new("invalid_url", format!("{url}: bad {what}"));
    outgoing
        .set_method(&method)
        .map_err(|()| refused("method"))?;
    outgoing
        .set_scheme(Some(&target.scheme))
        .map_err(|()| refused("scheme"))?;
    outgoing
        .set_authority(Some(target.authority))
        .map_err(|()| refused("host"))?;
    outgoing
        .set_path_with_query(Some(target.path))
        .map_err(|()| refused("path"))?;
    let outgoing_body = outgoing
        .body()
        .map_err(|()| Error::new("http_error", "the request body was already taken"))?;
    let future = outgoing_handler::handle(outgoing, None).map_err(|e| from_code(url, e))?;
    if let Some(bytes) = body {
        let stream = outgoing_body
            .write()
            .map_err(|()| Error::new("http_error", "cannot write the request body"))?;
        // `blocking-write-and-flush` takes at most 4096 bytes at a time.
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| Error::new("http_error", format!("writing the body: {e:?}")))?;
        }
    }
    OutgoingBody::finish(outgoing_body, None).map_err(|e| from_code(url, e))?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(from_code(url, code)),
        Some(Err(())) | None => {
            return Err(Error::new("http_error", "the response was lost"));
        }
    };
    let status = response.status();
    let incoming = response
        .consume()
        .map_err(|()| Error::new("http_error", "the response body was already taken"))?;
    let body = read_body(&incoming, url)?;
    drop(IncomingBody::finish(incoming));
    Ok(Response { status, body })
}

fn read_body(incoming: &IncomingBody, url: &str) -> Result<Vec<u8>, Error> {
    let stream = incoming
        .stream()
        .map_err(|()| Error::new("http_error", "the response stream was already taken"))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(Error::new(
                        "http_error",
                        format!("{url}: the response is larger than {MAX_RESPONSE_BYTES} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok(body),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(Error::new(
                    "http_error",
                    format!("{url}: reading the body: {}", e.to_debug_string()),
                ));
            }
        }
    }
}

fn from_code(url: &str, code: ErrorCode) -> Error {
    match code {
        ErrorCode::HttpRequestDenied => Error::new(
            "http_denied",
            format!("the host refused the request to {url}: it is not on the tenant's allow-list"),
        ),
        other => Error::new("http_error", format!("{url}: {other:?}")),
    }
}

/// The parts of an `http://` or `https://` URL that a request needs.
struct Target<'a> {
    scheme: Scheme,
    authority: &'a str,
    path: &'a str,
}

impl<'a> Target<'a> {
    fn parse(url: &'a str) -> Result<Target<'a>, Error> {
        let invalid = |why: &str| Error::new("invalid_url", format!("'{url}' {why}"));
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else {
            return Err(invalid("does not start with http:// or https://"));
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() {
            return Err(invalid("has no host"));
        }
        if path.starts_with('?') {
            return Err(invalid("needs a path before its query, e.g. '/?...'"));
        }
        let path = if path.is_empty() { "/" } else { path };
        Ok(Target {
            scheme,
            authority,
            path,
        })
    }
}
