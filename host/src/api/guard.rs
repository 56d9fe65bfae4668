//! What stands between a request and the engine: the token cache, the request and deploy
//! rates, and the browser checks of an unauthenticated dev server.
//!
//! **Invariant:** every rate and count is kept per token (requests per second) or per
//! tenant (deploys per minute, requests in progress), never globally, so one tenant
//! spending its budget cannot spend another's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::Semaphore;

use super::{ApiError, AppState};
use crate::journal::TokenRecord;

/// How long a token lookup is trusted before the journal is asked again.
const TOKEN_TTL: Duration = Duration::from_secs(30);
/// How long a token that matched nothing is remembered as such.
const UNKNOWN_TTL: Duration = Duration::from_secs(5);
/// Most tokens remembered (by hash) for lookups and rates; the tables are cleared
/// when full, which only costs a journal read each.
const MAX_REMEMBERED: usize = 100_000;

#[derive(Default)]
pub(crate) struct Guard {
    tokens: Mutex<HashMap<String, (TokenRecord, Instant)>>,
    /// Hashes of tokens that matched nothing, briefly, so guessing costs no journal read.
    unknown: Mutex<HashMap<String, Instant>>,
    requests: Mutex<HashMap<String, Bucket>>,
    deploys: Mutex<HashMap<String, Bucket>>,
    in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A request of a tenant in progress; its slot is given back when the last clone drops.
pub(crate) type InFlight = Arc<tokio::sync::OwnedSemaphorePermit>;

impl Guard {
    /// The token with hash `hash` if it is in the cache: `Some(None)` if it is known to
    /// match nothing, `None` if the journal must be asked.
    pub(crate) fn cached_token(&self, hash: &str) -> Option<Option<TokenRecord>> {
        if let Some((record, at)) = lock(&self.tokens).get(hash)
            && at.elapsed() < TOKEN_TTL
        {
            return Some(Some(record.clone()));
        }
        if let Some(at) = lock(&self.unknown).get(hash)
            && at.elapsed() < UNKNOWN_TTL
        {
            return Some(None);
        }
        None
    }

    /// Remembers what the journal said of the token with hash `hash`.
    pub(crate) fn remember_token(&self, hash: &str, record: Option<&TokenRecord>) {
        match record {
            Some(record) => {
                let mut tokens = lock(&self.tokens);
                if tokens.len() >= MAX_REMEMBERED {
                    tokens.clear();
                }
                tokens.insert(hash.to_owned(), (record.clone(), Instant::now()));
            }
            None => {
                let mut unknown = lock(&self.unknown);
                if unknown.len() >= MAX_REMEMBERED {
                    unknown.clear();
                }
                unknown.insert(hash.to_owned(), Instant::now());
            }
        }
    }

    /// A slot among the tenant's `max` requests in progress, or 429 if all are taken.
    pub(crate) fn enter(&self, tenant: &str, max: u32) -> Result<InFlight, ApiError> {
        let slots = Arc::clone(
            lock(&self.in_flight)
                .entry(tenant.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(max.max(1) as usize))),
        );
        slots.try_acquire_owned().map(Arc::new).map_err(|_| {
            too_many(
                "too_many_requests_in_flight",
                format!(
                    "tenant '{tenant}' has {max} requests in progress (limits.max_requests_in_flight); \
                     wait for some to finish"
                ),
                Duration::from_secs(1),
            )
        })
    }

    /// Takes one request from the token's budget of `per_second` (bursts of twice that).
    pub(crate) fn request(&self, hash: &str, per_second: u32) -> Result<(), ApiError> {
        let rate = f64::from(per_second.max(1));
        take(&self.requests, hash, rate * 2.0, rate).map_err(|wait| {
            too_many(
                "rate_limited",
                format!(
                    "this token sent more than {per_second} requests per second \
                     (limits.requests_per_second); slow down and retry after the Retry-After delay"
                ),
                wait,
            )
        })
    }

    /// Takes one upload from the tenant's budget of `per_minute`.
    pub(crate) fn deploy(&self, tenant: &str, per_minute: u32) -> Result<(), ApiError> {
        let burst = f64::from(per_minute.max(1));
        take(&self.deploys, tenant, burst, burst / 60.0).map_err(|wait| {
            too_many(
                "deploy_rate_limited",
                format!(
                    "tenant '{tenant}' uploaded {per_minute} components in the last minute \
                     (limits.deploys_per_minute); retry after the Retry-After delay"
                ),
                wait,
            )
        })
    }
}

/// A 429 with a Retry-After of at least a second.
pub(crate) fn too_many(code: &'static str, message: String, wait: Duration) -> ApiError {
    let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message);
    error.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
    error
}

/// A token bucket: `level` tokens now, refilled at `rate` per second up to `burst`.
struct Bucket {
    level: f64,
    at: Instant,
}

/// Takes a token from `key`'s bucket, or says how long until one is there.
fn take(
    buckets: &Mutex<HashMap<String, Bucket>>,
    key: &str,
    burst: f64,
    rate: f64,
) -> Result<(), Duration> {
    let now = Instant::now();
    let mut buckets = lock(buckets);
    if buckets.len() >= MAX_REMEMBERED && !buckets.contains_key(key) {
        buckets.clear();
    }
    let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
        level: burst,
        at: now,
    });
    bucket.level = (bucket.level + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
    bucket.at = now;
    if bucket.level >= 1.0 {
        bucket.level -= 1.0;
        Ok(())
    } else {
        Err(Duration::from_secs_f64((1.0 - bucket.level) / rate))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// For `steadfast dev --no-auth`: any web page the developer opens could otherwise drive
/// the server. Requests must name a loopback Host, come from no other Origin, and send
/// their body as `application/json` or `application/wasm` — types a page cannot send
/// across origins without the preflight this server never answers.
pub(crate) async fn loopback_only(
    State(_state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check_loopback(request.method(), request.headers())?;
    Ok(next.run(request).await)
}

pub(crate) fn check_loopback(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    let refuse = |why: String| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "not_loopback",
            format!(
                "{why}; a server started with --no-auth answers only local tools, not web pages \
                 (start it with authentication to serve others)"
            ),
        )
    };
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<not text>"))
    };
    let host = text(header::HOST).unwrap_or("");
    if !is_loopback_authority(host) {
        return Err(refuse(format!(
            "the Host header is '{host}', not a loopback address"
        )));
    }
    if let Some(origin) = text(header::ORIGIN) {
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        if !is_loopback_authority(authority) {
            return Err(refuse(format!("the request comes from origin '{origin}'")));
        }
    }
    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let kind = text(header::CONTENT_TYPE).unwrap_or("");
        let essence = kind.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json")
            && !essence.eq_ignore_ascii_case("application/wasm")
        {
            return Err(refuse(format!(
                "a {method} must send Content-Type application/json (or application/wasm for a \
                 component), not '{kind}'"
            )));
        }
    }
    Ok(())
}

/// `localhost`, `127.x.x.x` or `[::1]`, with an optional port.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn a_foreign_page_cannot_drive_a_no_auth_server() {
        let json = ("content-type", "application/json");
        let ok = headers(&[("host", "127.0.0.1:7878"), json]);
        assert!(check_loopback(&Method::POST, &ok).is_ok());
        let ok = headers(&[
            ("host", "localhost:7878"),
            ("origin", "http://localhost:7878"),
            json,
        ]);
        assert!(check_loopback(&Method::POST, &ok).is_ok());
        let ok = headers(&[("host", "[::1]:7878")]);
        assert!(check_loopback(&Method::GET, &ok).is_ok());

        // DNS rebinding: a foreign name that resolves to loopback.
        let bad = headers(&[("host", "evil.example:7878"), json]);
        assert!(check_loopback(&Method::POST, &bad).is_err());
        let bad = headers(&[
            ("host", "127.0.0.1:7878"),
            ("origin", "https://evil.example"),
            json,
        ]);
        assert!(check_loopback(&Method::POST, &bad).is_err());
        // The simple request a page may send without a preflight.
        let bad = headers(&[("host", "127.0.0.1:7878"), ("content-type", "text/plain")]);
        assert!(check_loopback(&Method::POST, &bad).is_err());
        let bad = headers(&[("host", "127.0.0.1:7878")]);
        assert!(check_loopback(&Method::POST, &bad).is_err());
        let bad = headers(&[("host", "127.0.0.1.evil.example"), json]);
        assert!(check_loopback(&Method::POST, &bad).is_err());
    }

    #[test]
    fn a_bucket_refills_at_its_rate_and_says_how_long_to_wait() {
        let buckets = Mutex::new(HashMap::new());
        for _ in 0..4 {
            assert!(take(&buckets, "t", 4.0, 2.0).is_ok());
        }
        let wait = take(&buckets, "t", 4.0, 2.0).unwrap_err();
        assert!(
            wait > Duration::from_millis(100) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Another key has its own budget.
        assert!(take(&buckets, "u", 4.0, 2.0).is_ok());
    }
}
