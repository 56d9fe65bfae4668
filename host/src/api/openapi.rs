//! The OpenAPI 3.1 description of the `/v1` API, served at `/v1/openapi.json`.

use axum::Json;
use serde_json::{Value, json};

pub(super) async fn document() -> Json<Value> {
    Json(spec())
}

fn op(summary: &str, scope: &str, responses: &[(&str, &str)]) -> Value {
    let mut out = serde_json::Map::new();
    for (code, description) in responses {
        out.insert((*code).to_owned(), json!({ "description": description }));
    }
    json!({ "summary": summary, "description": format!("Requires the '{scope}' scope."), "responses": out })
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } })
}

pub(crate) fn spec() -> Value {
    let errors = [
        ("400", "malformed request"),
        ("401", "no or unknown token"),
        ("403", "token lacks the scope"),
        ("404", "no such instance or workflow in this tenant"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        extra.iter().copied().chain(errors).collect()
    };
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Steadfast", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Durable workflows as sandboxed WebAssembly components. Authenticate with 'Authorization: Bearer <token>'. Errors are {\"error\": {\"code\", \"message\"}}." },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
        "security": [{ "bearer": [] }],
        "paths": {
            // The Dapr workflow paths are served under v1.0, v1.0-beta1 and v1.0-alpha1 alike;
            // they are described once, under v1.0.
            "/v1/tenants": { "post": op("Create a tenant and a token for it ({\"name\"})", "admin", &with(&[("201", "created: {tenant, token, scopes}")])) },
            "/v1/tokens": { "post": op("Issue a token with just the scopes named ({tenant?, scopes: [deploy|start|signal|read|metrics|admin], label?})", "admin", &with(&[("201", "created: {tenant, token, scopes}")])) },
            "/v1/components": { "post": {
                "summary": "Deploy a component (body: the .wasm bytes); ?check=true replays live instances against it without deploying; ?migrate=true deploys and moves the compatible ones",
                "description": "Requires the 'deploy' scope.",
                "parameters": [
                    { "name": "check", "in": "query", "schema": { "type": "boolean" } },
                    { "name": "migrate", "in": "query", "schema": { "type": "boolean" } }
                ],
                "requestBody": { "content": { "application/wasm": { "schema": { "type": "string", "format": "binary" } } } },
                "responses": { "201": { "description": "deployed: {digest, kind, names, versions}" },
                               "200": { "description": "check report: {deployment, instances: [{instance_id, compatible, divergence, migrated}]}" },
                               "400": { "description": "not a component" }, "413": { "description": "over the upload limit" },
                               "422": { "description": "a component that does not implement the steadfast worlds, imports what its role may not, or is over the compile limits" },
                               "429": { "description": "the compile queue is full, the tenant already has a compile running, or its deploys_per_minute is spent (see Retry-After)" } } } },
            "/v1/limits": { "get": op("The limits that apply to the caller's tenant (fuel, wall clock, memory, payloads, history, timers)", "read", &with(&[("200", "{tenant, limits}")])) },
            "/v1/workflows": { "get": op("List workflows and their versions, with how many live instances each version holds", "read", &with(&[("200", "{workflows: [{name, versions: [{version, digest, live_instances}]}]}")])) },
            "/v1/workflows/{name}/start": { "post": {
                "summary": "Start an instance: {input, instance_id?, reuse?: error|ignore|terminate, start_delay_ms?}; a W3C traceparent header puts its spans in the caller's trace",
                "description": "Requires the 'start' scope.",
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": { "201": { "description": "{instance_id}" }, "409": { "description": "the instance id exists" },
                               "413": { "description": "payload over the limit" }, "404": { "description": "unknown workflow" } } } },
            "/v1/instances": { "get": {
                "summary": "List instances by id (filters: workflow, status, created_after, created_before in ms, search = text the id contains; order: asc|desc; paging: limit, cursor)",
                "description": "Requires the 'read' scope.",
                "parameters": [
                    { "name": "workflow", "in": "query", "schema": { "type": "string" } },
                    { "name": "status", "in": "query", "schema": { "type": "string", "enum": ["PENDING", "RUNNING", "SUSPENDED", "COMPLETED", "FAILED", "TERMINATED", "STALLED", "CONTINUED_AS_NEW"] } },
                    { "name": "created_after", "in": "query", "schema": { "type": "integer", "minimum": 0 } },
                    { "name": "created_before", "in": "query", "schema": { "type": "integer", "minimum": 0 } },
                    { "name": "search", "in": "query", "schema": { "type": "string", "maxLength": 200 } },
                    { "name": "order", "in": "query", "schema": { "type": "string", "enum": ["asc", "desc"] } },
                    { "name": "cursor", "in": "query", "schema": { "type": "string" } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }
                ],
                "responses": { "200": { "description": "{instances, next_cursor}" }, "400": { "description": "a filter is not valid" },
                               "401": { "description": "no or unknown token" }, "403": { "description": "token lacks the scope" } } } },
            "/v1/me": { "get": { "summary": "Who the token is: {tenant, scopes}", "description": "Any valid token.",
                                 "responses": { "200": { "description": "{tenant, scopes}" }, "401": { "description": "no or unknown token" } } } },
            "/metrics": { "get": op("Prometheus metrics of the whole host (OpenMetrics text); they name every tenant", "metrics", &with(&[("200", "OpenMetrics text")])) },
            "/v1/instances/{id}": {
                "parameters": [id_param()],
                "get": op("Status of an instance", "read", &with(&[("200", "the status")])),
                "delete": op("Purge an ended instance (?force=true terminates a live one first)", "signal", &with(&[("200", "{purged}"), ("409", "the instance is still running")])) },
            "/v1/instances/{id}/wait": { "parameters": [id_param()], "get": op("Long-poll until the instance ends (?timeout_ms=, default 30000)", "read", &with(&[("200", "the status")])) },
            "/v1/instances/{id}/history": { "parameters": [id_param()], "get": op("The instance's journal, a page at a time: ?after=<pos>&limit=<n> (100 by default, 1000 at most, about 4 MiB); next_after is where the next page starts, null on the last", "read", &with(&[("200", "{history: [...], next_after}")])) },
            "/v1/instances/{id}/events/{event}": { "parameters": [id_param(), { "name": "event", "in": "path", "required": true, "schema": { "type": "string" } }],
                "post": op("Raise an event (body: its JSON payload); buffered if the workflow is not waiting yet", "signal", &with(&[("202", "raised and durable"), ("409", "the instance has ended"), ("429", "the instance holds max_pending_events events its workflow has not waited for, or max_event_bytes_per_generation bytes of events; nothing was raised")])) },
            "/v1/instances/{id}/terminate": { "parameters": [id_param()], "post": op("Terminate the instance and its children ({reason?})", "signal", &with(&[("202", "{terminated}")])) },
            "/v1/instances/{id}/suspend": { "parameters": [id_param()], "post": op("Suspend; events raised meanwhile are kept", "signal", &with(&[("202", "suspended")])) },
            "/v1/instances/{id}/resume": { "parameters": [id_param()], "post": op("Resume a suspended instance", "signal", &with(&[("202", "resumed")])) },
            "/v1.0/metadata": { "get": { "summary": "Dapr sidecar metadata, as far as it applies (the SDKs' readiness check)", "description": "Any valid token.",
                                         "responses": { "200": { "description": "{id, runtimeVersion, components, ...}" }, "401": { "description": "no or unknown token" } } } },
            "/v1.0/healthz": { "get": { "summary": "Dapr health check", "security": [], "responses": { "204": { "description": "healthy" } } } },
            "/v1.0/healthz/outbound": { "get": { "summary": "Dapr outbound health check", "security": [], "responses": { "204": { "description": "healthy" } } } },
            "/v1.0/workflows/dapr/{name}/start": { "post": op("Dapr-compatible start (?instanceID=)", "start", &with(&[("202", "{instanceID}")])) },
            "/v1.0/workflows/dapr/{id}": { "get": op("Dapr-compatible status", "read", &with(&[("200", "{instanceID, workflowName, runtimeStatus, properties}")])) },
            "/v1.0/workflows/dapr/{id}/raiseEvent/{event}": { "post": op("Dapr-compatible raise event", "signal", &with(&[("202", "raised")])) },
            "/v1.0/workflows/dapr/{id}/terminate": { "post": op("Dapr-compatible terminate", "signal", &with(&[("202", "terminated")])) },
            "/v1.0/workflows/dapr/{id}/pause": { "post": op("Dapr-compatible pause", "signal", &with(&[("202", "paused")])) },
            "/v1.0/workflows/dapr/{id}/resume": { "post": op("Dapr-compatible resume", "signal", &with(&[("202", "resumed")])) },
            "/v1.0/workflows/dapr/{id}/purge": { "post": op("Dapr-compatible purge", "signal", &with(&[("202", "purged")])) }
        }
    })
}
