//! Outgoing HTTP from activity components: the per-tenant allow-list and the
//! `wasi:http` hook that enforces it.
//!
//! An activity component's only way to the network is `wasi:http` (sockets are not
//! linked). Each request is checked against the tenant's `http_allow` rules before a
//! connection is made; a refused request fails in the guest with `HTTP-request-denied`
//! and the host fails the activity call with a message naming the request and the rules.
//!
//! A rule is `[METHODS ]SCHEME://HOST[:PORT][/PATH-PREFIX]`:
//!
//! - `GET https://status.example.com` — GET to that host on port 443, any path;
//! - `GET,POST http://127.0.0.1:8080/hooks/` — GET or POST under `/hooks/` on that port;
//! - `https://*.example.com` — any method to any subdomain of `example.com`.
//!
//! Without methods a rule allows every method. A port defaults to the scheme's.
//!
//! - **Paths** are compared after percent-decoding and removing dot segments, and a prefix
//!   matches on segment boundaries: `/hooks` allows `/hooks` and `/hooks/x`, not `/hooksX`;
//!   `/hooks/../admin` and `/hooks/%2e%2e/admin` are `/admin`.
//! - **Internal addresses** (loopback, private, link-local, unique-local, unspecified) are
//!   refused unless the rule that allows the request names that address itself (as an IP,
//!   or `localhost` for loopback): a rule for a public name does not reach the host's
//!   neighbours when the name resolves, or is made to resolve, inside.

use std::fmt;

use http::uri::Scheme;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// One parsed `http_allow` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    text: String,
    /// Upper-case method names; empty means any.
    methods: Vec<String>,
    https: bool,
    /// Lower-case; `*.example.com` matches subdomains of `example.com`.
    host: String,
    port: u16,
    path_prefix: String,
}

impl Rule {
    pub(crate) fn parse(text: &str) -> Result<Rule, String> {
        let bad = |why: &str| format!("http_allow rule '{text}': {why}");
        let trimmed = text.trim();
        let (methods, url) = match trimmed.split_once(char::is_whitespace) {
            Some((methods, url)) => (methods, url.trim()),
            None => ("", trimmed),
        };
        let methods: Vec<String> = methods
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty() && *m != "*")
            .map(str::to_ascii_uppercase)
            .collect();
        if methods
            .iter()
            .any(|m| !m.bytes().all(|b| b.is_ascii_alphabetic()))
        {
            return Err(bad("methods are names like GET or GET,POST"));
        }
        let (https, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(bad("the URL must start with http:// or https://"));
        };
        let split = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        // `[::1]:8080` keeps its brackets, as `http::Uri::host` does.
        let port_at = match authority.rfind(']') {
            Some(end) => authority[end..].find(':').map(|i| end + i),
            None => authority.rfind(':'),
        };
        let (host, port) = match port_at {
            Some(at) => {
                let port = authority[at + 1..]
                    .parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?;
                (&authority[..at], port)
            }
            None => (authority, if https { 443 } else { 80 }),
        };
        if host.is_empty() || host.contains(['@', '?', '#']) {
            return Err(bad("the host is missing or malformed"));
        }
        Ok(Rule {
            text: text.trim().to_owned(),
            methods,
            https,
            host: host.to_ascii_lowercase(),
            port,
            path_prefix: normalize_path(if path.is_empty() { "/" } else { path }).ok_or_else(
                || bad("the path has dot or empty segments, or encoded slashes; write it plainly"),
            )?,
        })
    }

    /// Whether the rule names `ip` itself, which it must for an internal address.
    fn names(&self, ip: std::net::IpAddr) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<std::net::IpAddr>() {
            Ok(named) => named == ip,
            Err(_) => host == "localhost" && ip.is_loopback(),
        }
    }

    fn allows(&self, method: &str, https: bool, host: &str, port: u16, path: &str) -> bool {
        let host_ok = match self.host.strip_prefix("*.") {
            Some(parent) => host
                .strip_suffix(parent)
                .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
            None => self.host == host,
        };
        host_ok
            && self.https == https
            && self.port == port
            && under_prefix(path, &self.path_prefix)
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
    }
}

/// `path` (normalised) is `prefix` or below it, on a segment boundary.
fn under_prefix(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A request path as every server reads it, or `None` for one that servers read
/// differently, which is refused outright: dot segments (`.`, `..`, also encoded or with
/// `;` parameters), an encoded `/` or `\`, a raw `\`, an empty segment (`//`) before the
/// end, or percent-encoding left after one decoding (double encoding). What remains is
/// percent-decoded once, so a rule compares with what the server will route.
pub(crate) fn normalize_path(raw: &str) -> Option<String> {
    let lower = raw.to_ascii_lowercase();
    if raw.contains('\\') || lower.contains("%2f") || lower.contains("%5c") {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    if percent_encoding::percent_decode_str(&decoded).decode_utf8_lossy() != decoded {
        return None;
    }
    let body = decoded.strip_prefix('/').unwrap_or(&decoded);
    let body = body.strip_suffix('/').unwrap_or(body);
    if !body.is_empty() {
        for segment in body.split('/') {
            let bare = segment.split(';').next().unwrap_or("");
            if segment.is_empty() || bare == "." || bare == ".." {
                return None;
            }
        }
    }
    Some(if decoded.starts_with('/') {
        decoded.into_owned()
    } else {
        format!("/{decoded}")
    })
}

/// Addresses no tenant reaches unless a rule names them.
fn is_internal(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                // 100.64.0.0/10, carrier-grade NAT (cloud metadata lives near here too).
                || (a == 100 && (b & 0xc0) == 64)
                // 192.0.0.0/24 (protocol assignments), 198.18.0.0/15 (benchmarking),
                // 240.0.0.0/4 (reserved).
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (b & 0xfe) == 18)
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // IPv4 embedded by NAT64 (64:ff9b::/96) or 6to4 (2002::/16).
            let embedded = |hi: u16, lo: u16| {
                std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return is_internal(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[0] == 0x2002 {
                return is_internal(IpAddr::V4(embedded(s[1], s[2])));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated, still routed by some)
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses every rule, or names the first bad one.
pub(crate) fn parse_rules(rules: &[String]) -> Result<Vec<Rule>, String> {
    rules.iter().map(|r| Rule::parse(r)).collect()
}

/// The `wasi:http` hooks of one activity call: the tenant's rules and, after the call,
/// the first request they refused.
pub(crate) struct Egress {
    tenant: String,
    rules: Vec<Rule>,
    /// The first request refused, also when refused after resolving its host.
    denied: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// The guest asked for an outgoing request during this call (allowed or not).
    pub(crate) sent: bool,
    /// The activity attempt's span, sent as `traceparent` on every request (replacing
    /// one the guest set) when traces are on.
    pub(crate) traceparent: Option<http::HeaderValue>,
}

impl Egress {
    pub(crate) fn new(tenant: &str, rules: Vec<Rule>) -> Egress {
        Egress {
            tenant: tenant.to_owned(),
            rules,
            denied: std::sync::Arc::default(),
            sent: false,
            traceparent: None,
        }
    }

    /// Readies the hooks for another call of a kept instance (which made no request in
    /// the last one): nothing refused, nothing sent, no span.
    pub(crate) fn next_call(&mut self) {
        self.denied = std::sync::Arc::default();
        self.sent = false;
        self.traceparent = None;
    }

    /// Why the first refused request was refused, if one was.
    pub(crate) fn take_denied(&self) -> Option<String> {
        self.denied.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The rules that allow the request, or why none does.
    fn check(&self, request: &http::Request<WasiBody>) -> Result<Vec<Rule>, String> {
        let uri = request.uri();
        let method = request.method().as_str();
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let host = uri.host().unwrap_or("").to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let raw_path = uri.path();
        let allowing: Vec<Rule> = match normalize_path(raw_path) {
            Some(path) => self
                .rules
                .iter()
                .filter(|rule| rule.allows(method, https, &host, port, &path))
                .cloned()
                .collect(),
            // A path servers disagree about (double encoding, `..;`): refused outright.
            None => Vec::new(),
        };
        if !allowing.is_empty() {
            return Ok(allowing);
        }
        if normalize_path(raw_path).is_none() {
            return Err(format!(
                "outgoing HTTP {method} to {host}:{port} has a path servers read in different \
                 ways (dot or empty segments, encoded slashes, double encoding); it is refused \
                 whatever the rules say: send the plain path"
            ));
        }
        let scheme = if https { "https" } else { "http" };
        let allowed = if self.rules.is_empty() {
            "it allows no outgoing HTTP".to_owned()
        } else {
            let rules: Vec<String> = self.rules.iter().map(|r| format!("\"{r}\"")).collect();
            format!("it allows only {}", rules.join(", "))
        };
        Err(format!(
            "outgoing HTTP {method} {scheme}://{host}:{port}{raw_path} is not on tenant '{}'s \
             http_allow list ({allowed}); add a rule such as \"{method} {scheme}://{host}:{port}\" \
             to [tenant_limits.{}] in the server config",
            self.tenant, self.tenant
        ))
    }
}

/// Resolves the request's host and refuses it if an address is internal and no allowing
/// rule names that address.
async fn check_addresses(uri: &http::Uri, allowing: &[Rule]) -> Result<(), String> {
    let host = uri.host().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let https = uri.scheme() == Some(&Scheme::HTTPS);
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addresses: Vec<std::net::IpAddr> = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    for ip in addresses {
        if is_internal(ip) && !allowing.iter().any(|rule| rule.names(ip)) {
            return Err(format!(
                "outgoing HTTP to {host} resolves to {ip}, an internal address; only a rule that \
                 names {ip} itself (or localhost, for loopback) reaches it"
            ));
        }
    }
    Ok(())
}

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                    ),
                    HttpError,
                >,
            > + Send,
    > {
        self.sent = true;
        let allowing = match self.check(&request) {
            Ok(allowing) => allowing,
            Err(why) => {
                tracing::warn!(target: "steadfast::activity", tenant = %self.tenant, "{}", super::guest_log::escape(&why));
                self.denied
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(why);
                return Box::new(async { Err(HttpError::HttpRequestDenied) });
            }
        };
        drop(fut);
        if let Some(traceparent) = &self.traceparent {
            request
                .headers_mut()
                .insert("traceparent", traceparent.clone());
        }
        let denied = std::sync::Arc::clone(&self.denied);
        let tenant = self.tenant.clone();
        Box::new(async move {
            use http_body_util::BodyExt;
            if let Err(why) = check_addresses(request.uri(), &allowing).await {
                tracing::warn!(target: "steadfast::activity", tenant = %tenant, "{}", super::guest_log::escape(&why));
                denied
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(why);
                return Err(HttpError::HttpRequestDenied);
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Rule, check_addresses, is_internal, normalize_path};

    #[tokio::test]
    async fn an_internal_address_needs_a_rule_that_names_it() {
        let metadata: http::Uri = "http://169.254.169.254/latest/meta-data/".parse().unwrap();
        let broad = [
            Rule::parse("http://*.example.com").unwrap(),
            Rule::parse("http://169.254.169.254.nip.example").unwrap(),
        ];
        assert!(check_addresses(&metadata, &broad).await.is_err());
        let named = [Rule::parse("GET http://169.254.169.254/latest/").unwrap()];
        assert!(check_addresses(&metadata, &named).await.is_ok());
        let loopback: http::Uri = "http://localhost:8080/health".parse().unwrap();
        let by_name = [Rule::parse("http://localhost:8080").unwrap()];
        assert!(check_addresses(&loopback, &by_name).await.is_ok());
        let public: http::Uri = "http://93.184.216.34/".parse().unwrap();
        assert!(check_addresses(&public, &broad).await.is_ok());
    }

    fn allows(rule: &str, method: &str, url: &str) -> bool {
        let rule = Rule::parse(rule).unwrap();
        let uri: http::Uri = url.parse().unwrap();
        let https = uri.scheme_str() == Some("https");
        rule.allows(
            method,
            https,
            uri.host().unwrap(),
            uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
            &normalize_path(uri.path()).unwrap_or_default(),
        ) && normalize_path(uri.path()).is_some()
    }

    #[test]
    fn rules_match_method_scheme_host_port_and_path() {
        assert!(allows(
            "GET https://a.example",
            "GET",
            "https://a.example/x"
        ));
        assert!(!allows(
            "GET https://a.example",
            "POST",
            "https://a.example/x"
        ));
        assert!(!allows(
            "GET https://a.example",
            "GET",
            "http://a.example/x"
        ));
        assert!(!allows(
            "GET https://a.example",
            "GET",
            "https://a.example:8443/x"
        ));
        assert!(!allows(
            "GET https://a.example",
            "GET",
            "https://b.example/x"
        ));
        assert!(allows(
            "get,post http://127.0.0.1:8080/hooks/",
            "POST",
            "http://127.0.0.1:8080/hooks/1"
        ));
        assert!(!allows(
            "GET,POST http://127.0.0.1:8080/hooks/",
            "POST",
            "http://127.0.0.1:8080/admin"
        ));
        assert!(allows(
            "http://127.0.0.1:8080",
            "DELETE",
            "http://127.0.0.1:8080/"
        ));
        assert!(allows(
            "https://*.example.com",
            "GET",
            "https://api.example.com/"
        ));
        assert!(!allows(
            "https://*.example.com",
            "GET",
            "https://example.com/"
        ));
        assert!(!allows(
            "https://*.example.com",
            "GET",
            "https://evilexample.com/"
        ));
    }

    #[test]
    fn paths_are_normalised_and_matched_on_segment_boundaries() {
        let n = |p: &str| normalize_path(p);
        assert_eq!(n("/hooks/1").as_deref(), Some("/hooks/1"));
        assert_eq!(n("/hooks/").as_deref(), Some("/hooks/"));
        assert_eq!(n("/").as_deref(), Some("/"));
        assert_eq!(n("/a%20b").as_deref(), Some("/a b"));
        for ambiguous in [
            "/hooks/../admin",
            "/hooks/%2e%2e/admin",
            "/hooks/%2E%2E%2Fadmin",
            "/hooks/a/./b",
            "/hooks\\..\\admin",
            "/hooks//../admin",
            "/admin//../hooks",
            "/admin%2F..%2Fhooks",
            "/hooks/..;/admin",
            "/hooks/%252e%252e/admin",
            "//hooks",
        ] {
            assert_eq!(n(ambiguous), None, "{ambiguous}");
        }
        let rule = "GET http://h.example/hooks/";
        assert!(allows(rule, "GET", "http://h.example/hooks/1"));
        assert!(!allows(rule, "GET", "http://h.example/hooks/../admin"));
        assert!(!allows(rule, "GET", "http://h.example/hooks/%2e%2e/admin"));
        assert!(!allows(rule, "GET", "http://h.example/hooks/..%2fadmin"));
        assert!(!allows(rule, "GET", "http://h.example/hooks//../admin"));
        let rule = "GET http://h.example/hooks";
        assert!(allows(rule, "GET", "http://h.example/hooks"));
        assert!(allows(rule, "GET", "http://h.example/hooks/x"));
        assert!(!allows(rule, "GET", "http://h.example/hooksX"));
    }

    #[test]
    fn internal_addresses_are_known() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "64:ff9b::808:808",
        ] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
        let rule = Rule::parse("http://127.0.0.1:8080").unwrap();
        assert!(rule.names("127.0.0.1".parse().unwrap()));
        assert!(!rule.names("10.0.0.1".parse().unwrap()));
        let rule = Rule::parse("http://localhost:8080").unwrap();
        assert!(rule.names("::1".parse().unwrap()));
        let rule = Rule::parse("https://*.example.com").unwrap();
        assert!(!rule.names("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bad_rules_are_named() {
        for bad in [
            "ftp://x",
            "GET",
            "GET http://:80",
            "G3T http://x",
            "http://x:port",
        ] {
            let err = Rule::parse(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}
