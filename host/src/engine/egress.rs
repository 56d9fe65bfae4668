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
            path_prefix: if path.is_empty() { "/" } else { path }.to_owned(),
        })
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
            && path.starts_with(&self.path_prefix)
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
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
    pub(crate) denied: Option<String>,
}

impl Egress {
    pub(crate) fn new(tenant: &str, rules: Vec<Rule>) -> Egress {
        Egress {
            tenant: tenant.to_owned(),
            rules,
            denied: None,
        }
    }

    /// `None` if the request may go out, else why not.
    fn check(&self, request: &http::Request<WasiBody>) -> Option<String> {
        let uri = request.uri();
        let method = request.method().as_str();
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let host = uri.host().unwrap_or("").to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri.path();
        if self
            .rules
            .iter()
            .any(|rule| rule.allows(method, https, &host, port, path))
        {
            return None;
        }
        let scheme = if https { "https" } else { "http" };
        let allowed = if self.rules.is_empty() {
            "it allows no outgoing HTTP".to_owned()
        } else {
            let rules: Vec<String> = self.rules.iter().map(|r| format!("\"{r}\"")).collect();
            format!("it allows only {}", rules.join(", "))
        };
        Some(format!(
            "outgoing HTTP {method} {scheme}://{host}:{port}{path} is not on tenant '{}'s \
             http_allow list ({allowed}); add a rule such as \"{method} {scheme}://{host}:{port}\" \
             to [tenant_limits.{}] in the server config",
            self.tenant, self.tenant
        ))
    }
}

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
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
        if let Some(why) = self.check(&request) {
            tracing::warn!(target: "steadfast::activity", tenant = %self.tenant, "{why}");
            self.denied.get_or_insert(why);
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        drop(fut);
        Box::new(async move {
            use http_body_util::BodyExt;
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
    use super::Rule;

    fn allows(rule: &str, method: &str, url: &str) -> bool {
        let rule = Rule::parse(rule).unwrap();
        let uri: http::Uri = url.parse().unwrap();
        let https = uri.scheme_str() == Some("https");
        rule.allows(
            method,
            https,
            uri.host().unwrap(),
            uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
            uri.path(),
        )
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
