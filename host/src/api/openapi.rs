//! The OpenAPI 3.1 description of the HTTP API, served at `/v1/openapi.json`.
//!
//! **Invariant:** every rule the server checks on a request is in the schema, so a request
//! the schema allows is never refused as malformed (400), and one it forbids is. The
//! contract test (`host/tests/openapi_contract.rs`) runs schemathesis against a live server
//! to hold both directions. Error bodies are described in words only: `/v1` answers
//! `{"error": {"code", "message"}}`, the Dapr paths `{"errorCode", "message"}`, and a
//! query string that does not parse gets the router's plain-text 400.

use axum::Json;
use serde_json::{Map, Value, json};

use crate::engine::MAX_EVENT_NAME_CHARS;
use crate::model::InstanceId;

pub(super) async fn document() -> Json<Value> {
    Json(spec())
}

/// The longest start delay, in ms: 100 years.
pub(crate) const MAX_START_DELAY_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
/// The longest `/wait`, in ms.
pub(crate) const MAX_WAIT_MS: u64 = 300_000;
/// The longest id search, in characters.
pub(crate) const MAX_SEARCH_CHARS: usize = 200;
/// The longest token label, in characters.
pub(crate) const MAX_LABEL_CHARS: usize = 200;

/// What each error status means, wherever it is listed.
fn error_description(code: &str) -> &'static str {
    match code {
        "400" => "malformed request: the message says what was wrong",
        "401" => "no token, or one the server does not know",
        "403" => "the token lacks the scope this needs",
        "404" => "no such instance, workflow or tenant (another tenant's are not found either)",
        "408" => "the upload did not arrive in time",
        "409" => "the instance is in the wrong state, or the id is taken",
        "413" => "the body is over the server's limit",
        "422" => {
            "not a component this server can run: wrong world, forbidden imports, over the compile limits"
        }
        "429" => "a rate or quota is spent (see Retry-After where given)",
        _ => "error",
    }
}

/// An operation: `scope` is the token scope it needs (`None`: any valid token, or none at
/// all when `security` is off); `ok` its success responses; `errors` the error statuses
/// it can answer besides 400, 401 and 429, which every authenticated operation can.
struct Op<'a> {
    summary: &'a str,
    scope: Option<&'a str>,
    parameters: Vec<Value>,
    body: Option<Value>,
    ok: Vec<(&'a str, &'a str, Option<Value>)>,
    errors: &'a [&'a str],
    public: bool,
}

impl Op<'_> {
    fn build(self) -> Value {
        let mut responses = Map::new();
        for (code, description, schema) in self.ok {
            let mut response = json!({ "description": description });
            if let Some(schema) = schema {
                response["content"] = json!({ "application/json": { "schema": schema } });
            }
            responses.insert(code.to_owned(), response);
        }
        let mut errors: Vec<&str> = self.errors.to_vec();
        if !self.public {
            // Any request can carry a malformed parameter or body (400), and every
            // authenticated one can be refused for its token (401) or its rates (429).
            errors.extend(["400", "401", "429"]);
            if self.scope.is_some() {
                errors.push("403");
            }
        }
        for code in errors {
            responses.insert(
                code.to_owned(),
                json!({ "description": error_description(code) }),
            );
        }
        let mut op = json!({ "summary": self.summary, "responses": responses });
        op["description"] = json!(match (self.public, self.scope) {
            (true, _) => "No token needed.".to_owned(),
            (false, Some(scope)) => format!("Requires the '{scope}' scope (or 'admin')."),
            (false, None) => "Any valid token.".to_owned(),
        });
        if self.public {
            op["security"] = json!([]);
        }
        if !self.parameters.is_empty() {
            op["parameters"] = Value::Array(self.parameters);
        }
        if let Some(body) = self.body {
            op["requestBody"] = body;
        }
        op
    }
}

fn path(name: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": schema })
}

fn query(name: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "schema": schema })
}

/// An instance id: 1 to 256 characters without '/' or control characters, and not `.` or
/// `..` (a URL path would lose them).
fn instance_id() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": InstanceId::MAX_LEN,
            "pattern": r"^(?!\.\.?$)[^/\u0000-\u001F\u007F-\u009F]+$" })
}

/// An event name: 1 to 256 characters without control characters.
fn event_name() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": MAX_EVENT_NAME_CHARS,
            "pattern": r"^[^\u0000-\u001F\u007F-\u009F]+$" })
}

fn tenant_name() -> Value {
    json!({ "type": "string", "pattern": "^[a-z0-9_-]{1,64}$" })
}

/// `schema`, or `null` (an optional field the server also takes as null).
fn or_null(schema: Value) -> Value {
    json!({ "anyOf": [schema, { "type": "null" }] })
}

fn json_body(schema: Value, required: bool) -> Value {
    json!({ "required": required, "content": { "application/json": { "schema": schema } } })
}

/// `{reason?}` for terminate, suspend and resume; the body may be left out.
fn reason_body() -> Value {
    json_body(
        json!({ "type": "object", "additionalProperties": false,
                "properties": { "reason": or_null(json!({ "type": "string" })) } }),
        false,
    )
}

fn instance_status() -> Value {
    json!({
        "type": "object",
        "required": ["instance_id", "workflow", "runtime_status", "generation", "input", "created_at", "updated_at"],
        "properties": {
            "instance_id": { "type": "string" },
            "workflow": { "type": "string" },
            "runtime_status": { "type": "string", "enum": statuses() },
            "version": { "type": ["integer", "null"] },
            "generation": { "type": "integer", "minimum": 0 },
            "input": {},
            "output": {},
            "error": { "type": ["object", "null"] },
            "custom_status": {},
            "parent_instance_id": { "type": ["string", "null"] },
            "created_at": { "type": "string" },
            "updated_at": { "type": "string" },
            "start_at": { "type": "string" }
        }
    })
}

fn statuses() -> Value {
    json!([
        "PENDING",
        "RUNNING",
        "SUSPENDED",
        "COMPLETED",
        "FAILED",
        "TERMINATED",
        "STALLED",
        "CONTINUED_AS_NEW"
    ])
}

fn token_answer() -> Value {
    json!({ "type": "object", "required": ["tenant", "token", "scopes"],
            "properties": { "tenant": { "type": "string" }, "token": { "type": "string" },
                            "scopes": { "type": "array", "items": { "type": "string" } } } })
}

pub(crate) fn spec() -> Value {
    let id = || path("id", instance_id());
    let scopes = json!(["admin", "deploy", "start", "signal", "read", "metrics"]);
    let mut paths = Map::new();
    let mut add = |route: &str, method: &str, op: Op<'_>| {
        let entry = paths.entry(route.to_owned()).or_insert_with(|| json!({}));
        entry[method] = op.build();
    };

    add(
        "/healthz",
        "get",
        Op {
            summary: "Liveness: 'ok'",
            scope: None,
            parameters: vec![],
            body: None,
            ok: vec![("200", "the server answers", None)],
            errors: &[],
            public: true,
        },
    );
    add(
        "/v1/openapi.json",
        "get",
        Op {
            summary: "This document",
            scope: None,
            parameters: vec![],
            body: None,
            ok: vec![(
                "200",
                "the OpenAPI document",
                Some(json!({ "type": "object" })),
            )],
            errors: &[],
            public: true,
        },
    );
    add(
        "/metrics",
        "get",
        Op {
            summary: "Prometheus metrics of the whole host (OpenMetrics text); they name every tenant",
            scope: Some("metrics"),
            parameters: vec![],
            body: None,
            ok: vec![("200", "OpenMetrics text", None)],
            errors: &[],
            public: false,
        },
    );
    add(
        "/v1/me",
        "get",
        Op {
            summary: "Who the token is",
            scope: None,
            parameters: vec![],
            body: None,
            ok: vec![(
                "200",
                "{tenant, scopes}",
                Some(json!({ "type": "object", "required": ["tenant", "scopes"],
            "properties": { "tenant": { "type": "string" }, "scopes": { "type": "array", "items": { "type": "string" } } } })),
            )],
            errors: &[],
            public: false,
        },
    );
    add(
        "/v1/workers",
        "get",
        Op {
            summary: "The tenant's worker processes connected over the Durable Task protocol (gRPC), and the activity names they have answered",
            scope: Some("read"),
            parameters: vec![],
            body: None,
            ok: vec![(
                "200",
                "{connected, activities}",
                Some(
                    json!({ "type": "object", "required": ["connected", "activities"],
                "properties": { "connected": { "type": "integer", "minimum": 0 }, "activities": { "type": "array", "items": { "type": "string" } } } }),
                ),
            )],
            errors: &[],
            public: false,
        },
    );
    add(
        "/v1/tenants",
        "post",
        Op {
            summary: "Create a tenant (or find it) and issue a token for it",
            scope: Some("admin"),
            parameters: vec![],
            body: Some(json_body(
                json!({ "type": "object", "required": ["name"], "additionalProperties": false,
                    "properties": { "name": tenant_name() } }),
                true,
            )),
            ok: vec![
                ("201", "created", Some(token_answer())),
                (
                    "200",
                    "it existed; a new token for it",
                    Some(token_answer()),
                ),
            ],
            errors: &["413"],
            public: false,
        },
    );
    add(
        "/v1/tokens",
        "post",
        Op {
            summary: "Issue a token with just the scopes named, for the caller's tenant or the one named",
            scope: Some("admin"),
            parameters: vec![],
            body: Some(json_body(
                json!({ "type": "object", "required": ["scopes"], "additionalProperties": false,
                    "properties": {
                        "tenant": or_null(tenant_name()),
                        "scopes": { "type": "array", "minItems": 1, "items": { "type": "string", "enum": scopes } },
                        "label": or_null(json!({ "type": "string", "maxLength": MAX_LABEL_CHARS })) } }),
                true,
            )),
            ok: vec![("201", "issued", Some(token_answer()))],
            errors: &["404", "413"],
            public: false,
        },
    );
    add(
        "/v1/components",
        "post",
        Op {
            summary: "Deploy a component (the body: its .wasm bytes); ?check=true replays the live instances on it without deploying; ?migrate=true deploys and moves the compatible ones",
            scope: Some("deploy"),
            parameters: vec![
                query("check", json!({ "type": "boolean" })),
                query("migrate", json!({ "type": "boolean" })),
            ],
            body: Some(json!({ "required": true, "content": {
            "application/wasm": { "schema": { "type": "string", "format": "binary" } },
            "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } })),
            ok: vec![
                (
                    "201",
                    "deployed: {digest, kind, names, versions}",
                    Some(json!({ "type": "object" })),
                ),
                (
                    "200",
                    "the check: {deployment, instances: [{instance_id, workflow, compatible, divergence, migrated}]}",
                    Some(json!({ "type": "object" })),
                ),
            ],
            errors: &["408", "413", "422"],
            public: false,
        },
    );
    add(
        "/v1/limits",
        "get",
        Op {
            summary: "The limits that apply to the caller's tenant",
            scope: Some("read"),
            parameters: vec![],
            body: None,
            ok: vec![(
                "200",
                "{tenant, limits}",
                Some(json!({ "type": "object", "required": ["tenant", "limits"] })),
            )],
            errors: &[],
            public: false,
        },
    );
    add(
        "/v1/workflows",
        "get",
        Op {
            summary: "The tenant's workflows, their versions and how many live instances each version holds",
            scope: Some("read"),
            parameters: vec![],
            body: None,
            ok: vec![(
                "200",
                "{workflows: [{name, versions: [{version, digest, live_instances}]}]}",
                Some(json!({
            "type": "object", "required": ["workflows"],
            "properties": { "workflows": { "type": "array", "items": { "type": "object", "required": ["name", "versions"] } } } })),
            )],
            errors: &[],
            public: false,
        },
    );
    add(
        "/v1/workflows/{name}/start",
        "post",
        Op {
            summary: "Start an instance; a W3C traceparent header puts its spans in the caller's trace",
            scope: Some("start"),
            parameters: vec![path("name", json!({ "type": "string", "minLength": 1 }))],
            body: Some(json_body(
                json!({ "type": "object", "additionalProperties": false, "properties": {
                "input": {},
                "instance_id": or_null(instance_id()),
                "reuse": or_null(json!({ "type": "string", "enum": ["error", "ignore", "terminate"] })),
                "start_delay_ms": or_null(json!({ "type": "integer", "minimum": 0, "maximum": MAX_START_DELAY_MS })) } }),
                false,
            )),
            ok: vec![(
                "201",
                "{instance_id}",
                Some(json!({ "type": "object", "required": ["instance_id"] })),
            )],
            errors: &["404", "409", "413"],
            public: false,
        },
    );
    add(
        "/v1/instances",
        "get",
        Op {
            summary: "The tenant's instances by id, a page at a time; next_cursor is where the next page starts",
            scope: Some("read"),
            parameters: vec![
                query("workflow", json!({ "type": "string" })),
                query("status", json!({ "type": "string", "enum": statuses() })),
                query(
                    "created_after",
                    json!({ "type": "integer", "minimum": 0, "maximum": i64::MAX }),
                ),
                query(
                    "created_before",
                    json!({ "type": "integer", "minimum": 0, "maximum": i64::MAX }),
                ),
                query(
                    "search",
                    json!({ "type": "string", "maxLength": MAX_SEARCH_CHARS }),
                ),
                query(
                    "order",
                    json!({ "type": "string", "enum": ["asc", "desc"] }),
                ),
                query("cursor", json!({ "type": "string" })),
                query(
                    "limit",
                    json!({ "type": "integer", "minimum": 1, "maximum": 1000 }),
                ),
            ],
            body: None,
            ok: vec![(
                "200",
                "{instances, next_cursor}",
                Some(json!({
            "type": "object", "required": ["instances", "next_cursor"],
            "properties": { "instances": { "type": "array", "items": instance_status() },
                            "next_cursor": { "type": ["string", "null"] } } })),
            )],
            errors: &[],
            public: false,
        },
    );
    add(
        "/v1/instances/{id}",
        "get",
        Op {
            summary: "An instance's status",
            scope: Some("read"),
            parameters: vec![id()],
            body: None,
            ok: vec![("200", "the status", Some(instance_status()))],
            errors: &["404"],
            public: false,
        },
    );
    add(
        "/v1/instances/{id}",
        "delete",
        Op {
            summary: "Purge an ended instance and its children (?force=true terminates a live one first)",
            scope: Some("signal"),
            parameters: vec![id(), query("force", json!({ "type": "boolean" }))],
            body: None,
            ok: vec![(
                "200",
                "{purged}",
                Some(json!({ "type": "object", "required": ["purged"] })),
            )],
            errors: &["404", "409"],
            public: false,
        },
    );
    add(
        "/v1/instances/{id}/wait",
        "get",
        Op {
            summary: "Long poll: answers when the instance ends, or with its status at the timeout",
            scope: Some("read"),
            parameters: vec![
                id(),
                query(
                    "timeout_ms",
                    json!({ "type": "integer", "minimum": 0, "maximum": MAX_WAIT_MS }),
                ),
            ],
            body: None,
            ok: vec![("200", "the status", Some(instance_status()))],
            errors: &["404"],
            public: false,
        },
    );
    add(
        "/v1/instances/{id}/history",
        "get",
        Op {
            summary: "The instance's journal, a page at a time (about 4 MiB at most); next_after is where the next page starts, null on the last",
            scope: Some("read"),
            parameters: vec![
                id(),
                query(
                    "after",
                    json!({ "type": "integer", "minimum": 0, "maximum": i64::MAX }),
                ),
                query(
                    "limit",
                    json!({ "type": "integer", "minimum": 1, "maximum": 1000 }),
                ),
            ],
            body: None,
            ok: vec![(
                "200",
                "{instance_id, history, next_after}",
                Some(json!({
            "type": "object", "required": ["instance_id", "history", "next_after"],
            "properties": { "history": { "type": "array", "items": { "type": "object", "required": ["position", "generation", "at", "type"] } },
                            "next_after": { "type": ["integer", "null"] } } })),
            )],
            errors: &["404"],
            public: false,
        },
    );
    add(
        "/v1/instances/{id}/events/{event}",
        "post",
        Op {
            summary: "Raise an event (the body: its JSON payload; empty for null); kept until the workflow waits for it",
            scope: Some("signal"),
            parameters: vec![id(), path("event", event_name())],
            body: Some(json_body(json!({}), false)),
            ok: vec![(
                "202",
                "raised and durable",
                Some(json!({ "type": "object" })),
            )],
            errors: &["404", "409", "413"],
            public: false,
        },
    );
    for (verb, summary, ok) in [
        (
            "terminate",
            "Terminate the instance and its unfinished children",
            "{terminated: [ids]}",
        ),
        (
            "suspend",
            "Suspend; events, timers and results arriving meanwhile are kept",
            "suspended",
        ),
        ("resume", "Resume a suspended instance", "resumed"),
    ] {
        let schema =
            (verb == "terminate").then(|| json!({ "type": "object", "required": ["terminated"] }));
        add(
            &format!("/v1/instances/{{id}}/{verb}"),
            "post",
            Op {
                summary,
                scope: Some("signal"),
                parameters: vec![id()],
                body: Some(reason_body()),
                ok: vec![("202", ok, schema)],
                errors: &["404", "409", "413"],
                public: false,
            },
        );
    }

    // Dapr's workflow API: served under v1.0, v1.0-beta1 and v1.0-alpha1 alike.
    add(
        "/v1.0/healthz",
        "get",
        Op {
            summary: "Dapr health check",
            scope: None,
            parameters: vec![],
            body: None,
            ok: vec![("204", "healthy", None)],
            errors: &[],
            public: true,
        },
    );
    add(
        "/v1.0/healthz/outbound",
        "get",
        Op {
            summary: "Dapr outbound health check",
            scope: None,
            parameters: vec![],
            body: None,
            ok: vec![("204", "healthy", None)],
            errors: &[],
            public: true,
        },
    );
    add(
        "/v1.0/metadata",
        "get",
        Op {
            summary: "Dapr sidecar metadata, as far as it applies (the SDKs' readiness check)",
            scope: None,
            parameters: vec![],
            body: None,
            ok: vec![(
                "200",
                "{id, runtimeVersion, components, ...}",
                Some(json!({ "type": "object", "required": ["id", "components"] })),
            )],
            errors: &[],
            public: false,
        },
    );
    for version in super::dapr::VERSIONS {
        let base = format!("/{version}/workflows/dapr");
        add(
            &format!("{base}/{{name}}/start"),
            "post",
            Op {
                summary: "Dapr: start an instance (the body: its input)",
                scope: Some("start"),
                parameters: vec![
                    path("name", json!({ "type": "string", "minLength": 1 })),
                    query("instanceID", instance_id()),
                ],
                body: Some(json_body(json!({}), false)),
                ok: vec![(
                    "202",
                    "{instanceID}",
                    Some(json!({ "type": "object", "required": ["instanceID"] })),
                )],
                errors: &["404", "409", "413"],
                public: false,
            },
        );
        add(
            &format!("{base}/{{id}}"),
            "get",
            Op {
                summary: "Dapr: an instance's status",
                scope: Some("read"),
                parameters: vec![id()],
                body: None,
                ok: vec![(
                    "200",
                    "{instanceID, workflowName, createdAt, lastUpdatedAt, runtimeStatus, properties}",
                    Some(json!({
                "type": "object", "required": ["instanceID", "workflowName", "runtimeStatus", "properties"] })),
                )],
                errors: &["404"],
                public: false,
            },
        );
        add(
            &format!("{base}/{{id}}/raiseEvent/{{event}}"),
            "post",
            Op {
                summary: "Dapr: raise an event (the body: its payload)",
                scope: Some("signal"),
                parameters: vec![id(), path("event", event_name())],
                body: Some(json_body(json!({}), false)),
                ok: vec![("202", "raised and durable", None)],
                errors: &["404", "409", "413"],
                public: false,
            },
        );
        for (verb, summary) in [
            ("terminate", "Dapr: terminate an instance"),
            ("pause", "Dapr: suspend an instance"),
            ("resume", "Dapr: resume an instance"),
            ("purge", "Dapr: purge an ended instance"),
        ] {
            add(
                &format!("{base}/{{id}}/{verb}"),
                "post",
                Op {
                    summary,
                    scope: Some("signal"),
                    parameters: vec![id()],
                    body: None,
                    ok: vec![("202", "done", None)],
                    errors: &["404", "409"],
                    public: false,
                },
            );
        }
    }

    json!({
        "openapi": "3.1.0",
        "info": { "title": "Steadfast", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Durable workflows as sandboxed WebAssembly components. Authenticate with 'Authorization: Bearer <token>' (or Dapr's 'dapr-api-token' header). Errors under /v1 are {\"error\": {\"code\", \"message\"}}; under the Dapr paths {\"errorCode\", \"message\"}." },
        "components": { "securitySchemes": {
            "bearer": { "type": "http", "scheme": "bearer" },
            "dapr": { "type": "apiKey", "in": "header", "name": "dapr-api-token" } } },
        "security": [{ "bearer": [] }, { "dapr": [] }],
        "paths": paths,
    })
}
