//! OpenTelemetry traces: a span per workflow run, step, activity attempt and fired timer,
//! exported over OTLP/HTTP. Off unless a collector is named (the standard
//! `OTEL_EXPORTER_OTLP_*` variables, or `[traces] otlp_endpoint` in the server config).
//!
//! A workflow outlives any process that runs it, so no span is held open across steps:
//! each is emitted with its own start and end times once it is over, and they find each
//! other through ids derived from what the journal keeps.
//!
//! - An instance's **trace** is the caller's, when its start carried a W3C `traceparent`
//!   (kept in the journal with the instance); otherwise one derived from its id.
//! - A **run** (one generation) has a span id derived from the instance id and generation,
//!   so steps, activity attempts and timers name it as their parent before it is emitted,
//!   and in any process, after any number of restarts.
//! - An activity attempt's span context travels as `traceparent` on the activity's
//!   outgoing HTTP requests.
//!
//! **Invariant:** with traces off, nothing here reads the journal or allocates.

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _,
    TraceFlags, TraceId, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use sha2::{Digest as _, Sha256};

use crate::model::{InstanceId, Timestamp};

/// Where traces go, when they go anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// The collector's OTLP/HTTP base URL (`http://127.0.0.1:4318`); spans are sent to
    /// `/v1/traces` under it. The `OTEL_EXPORTER_OTLP_*` variables apply when unset.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` (the default) or `http/json`; `OTEL_EXPORTER_OTLP_PROTOCOL`
    /// applies when unset.
    #[serde(default)]
    pub otlp_protocol: Option<String>,
}

/// The host's tracer; cheap to share.
pub struct Traces {
    inner: Option<(SdkTracerProvider, SdkTracer)>,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces")
            .field("on", &self.inner.is_some())
            .finish()
    }
}

/// The trace an instance's spans belong to.
#[derive(Debug, Clone)]
pub struct InstanceTrace {
    trace_id: TraceId,
    /// The caller's span that started the instance, if it said.
    caller: Option<SpanContext>,
    flags: TraceFlags,
    instance: String,
    /// The life of the instance id: a purged id started again is another trace.
    incarnation: i64,
}

impl InstanceTrace {
    /// The span context of the run of `generation`, as a remote parent.
    fn run_context(&self, generation: u32) -> SpanContext {
        SpanContext::new(
            self.trace_id,
            run_span_id(&self.instance, self.incarnation, generation),
            self.flags,
            true,
            TraceState::default(),
        )
    }

    /// The `traceparent` naming the run of `generation`: what its children are started
    /// with, so their runs nest under it.
    pub fn run_traceparent(&self, generation: u32) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            run_span_id(&self.instance, self.incarnation, generation),
            self.flags.to_u8()
        )
    }
}

/// What a run span says about its workflow.
#[derive(Debug, Clone)]
pub struct RunInfo<'a> {
    pub tenant: &'a str,
    pub workflow: &'a str,
    pub version: Option<u32>,
    pub generation: u32,
}

fn environment(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Traces {
    /// No traces.
    pub fn off() -> Traces {
        Traces { inner: None }
    }

    /// Traces to the collector `config` or the environment names; off if neither does, or
    /// if `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    pub fn from_config(config: &TracesConfig) -> Result<Traces, String> {
        let disabled = environment("OTEL_SDK_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || environment("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let from_env = environment("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || environment("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
        if disabled || (config.otlp_endpoint.is_none() && !from_env) {
            return Ok(Traces::off());
        }
        // The config's protocol, when it names one, wins over the environment's.
        let protocol_names: &[&str] = if config.otlp_protocol.is_some() {
            &[]
        } else {
            &[
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            ]
        };
        for name in protocol_names {
            if let Some(protocol) = environment(name)
                && !matches!(protocol.as_str(), "http/protobuf" | "http/json")
            {
                return Err(format!(
                    "{name}={protocol} is not supported; steadfast exports traces over \
                     OTLP/HTTP: set it to http/protobuf or http/json"
                ));
            }
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
        match config.otlp_protocol.as_deref() {
            None => {}
            Some("http/protobuf") => {
                use opentelemetry_otlp::WithExportConfig as _;
                exporter = exporter.with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            }
            Some("http/json") => {
                use opentelemetry_otlp::WithExportConfig as _;
                exporter = exporter.with_protocol(opentelemetry_otlp::Protocol::HttpJson);
            }
            Some(other) => {
                return Err(format!(
                    "traces.otlp_protocol '{other}' is not one of http/protobuf, http/json"
                ));
            }
        }
        if let Some(base) = &config.otlp_endpoint {
            use opentelemetry_otlp::WithExportConfig as _;
            let base = base.trim_end_matches('/');
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(format!(
                    "traces.otlp_endpoint '{base}' is not an http:// or https:// URL"
                ));
            }
            exporter = exporter.with_endpoint(format!("{base}/v1/traces"));
        }
        let exporter = exporter
            .build()
            .map_err(|e| format!("cannot set up the OTLP trace exporter: {e}"))?;
        let service = environment("OTEL_SERVICE_NAME").unwrap_or_else(|| "steadfast".to_owned());
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("steadfast");
        Ok(Traces {
            inner: Some((provider, tracer)),
        })
    }

    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Sends what is buffered and stops the exporter (at shutdown).
    pub fn shutdown(&self) {
        if let Some((provider, _)) = &self.inner {
            let _ = provider.shutdown();
        }
    }

    /// The trace of instance `id` in its life `incarnation`, started by a caller that
    /// sent `traceparent` (if any). Without one, the trace id is derived from the id and
    /// its incarnation (random, never shown outside the journal), so it is the same in
    /// every process and cannot be guessed from the id.
    pub fn instance(
        &self,
        id: &InstanceId,
        incarnation: i64,
        traceparent: Option<&str>,
    ) -> InstanceTrace {
        let caller = traceparent.and_then(parse_traceparent);
        let trace_id = caller.as_ref().map_or_else(
            || {
                TraceId::from_bytes(derived::<16>(&[
                    "trace",
                    id.as_str(),
                    &incarnation.to_string(),
                ]))
            },
            SpanContext::trace_id,
        );
        InstanceTrace {
            trace_id,
            flags: caller
                .as_ref()
                .map_or(TraceFlags::SAMPLED, SpanContext::trace_flags),
            caller,
            instance: id.as_str().to_owned(),
            incarnation,
        }
    }

    /// Emits the span of a run (a generation) that ended with `outcome`.
    pub fn run(
        &self,
        trace: &InstanceTrace,
        info: &RunInfo<'_>,
        started: Timestamp,
        outcome: &str,
        error: Option<&str>,
    ) {
        let Some((_, tracer)) = &self.inner else {
            return;
        };
        let parent = match &trace.caller {
            Some(caller) => Context::new().with_remote_span_context(caller.clone()),
            None => Context::new(),
        };
        let mut builder = SpanBuilder::from_name(format!("workflow {}", info.workflow))
            .with_kind(SpanKind::Internal)
            .with_start_time(system_time(started))
            .with_attributes(vec![
                KeyValue::new("steadfast.instance_id", trace.instance.clone()),
                KeyValue::new("steadfast.workflow", info.workflow.to_owned()),
                KeyValue::new("steadfast.tenant", info.tenant.to_owned()),
                KeyValue::new("steadfast.version", i64::from(info.version.unwrap_or(0))),
                KeyValue::new("steadfast.generation", i64::from(info.generation)),
                KeyValue::new("steadfast.outcome", outcome.to_owned()),
            ]);
        builder.trace_id = Some(trace.trace_id);
        builder.span_id = Some(run_span_id(
            &trace.instance,
            trace.incarnation,
            info.generation,
        ));
        let mut span = tracer.build_with_context(builder, &parent);
        if let Some(error) = error {
            span.set_status(Status::error(error.to_owned()));
        }
        span.end();
    }

    /// Emits a span under the run of `generation`, from `began` until now.
    pub fn under_run(
        &self,
        trace: &InstanceTrace,
        generation: u32,
        name: String,
        began: SystemTime,
        attributes: Vec<KeyValue>,
        error: Option<&str>,
    ) {
        if let Some(mut span) = self.start_under_run(trace, generation, name, began, attributes) {
            if let Some(error) = error {
                span.set_status(Status::error(error.to_owned()));
            }
            span.end();
        }
    }

    /// Starts a span under the run of `generation`; the caller ends it.
    pub fn start_under_run(
        &self,
        trace: &InstanceTrace,
        generation: u32,
        name: String,
        began: SystemTime,
        mut attributes: Vec<KeyValue>,
    ) -> Option<opentelemetry_sdk::trace::Span> {
        let (_, tracer) = self.inner.as_ref()?;
        let run = trace.run_context(generation);
        attributes.push(KeyValue::new(
            "steadfast.instance_id",
            trace.instance.clone(),
        ));
        let builder = SpanBuilder::from_name(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(began)
            .with_attributes(attributes);
        Some(tracer.build_with_context(builder, &Context::new().with_remote_span_context(run)))
    }

    /// A span in the caller's trace (when it sent `traceparent`) for a request that
    /// reached instance `trace` — a raised event — linked to the instance's run.
    pub fn request(
        &self,
        traceparent: Option<&str>,
        trace: &InstanceTrace,
        generation: u32,
        name: String,
        attributes: Vec<KeyValue>,
    ) {
        let Some((_, tracer)) = &self.inner else {
            return;
        };
        let Some(caller) = traceparent.and_then(parse_traceparent) else {
            return self.under_run(trace, generation, name, SystemTime::now(), attributes, None);
        };
        let run = trace.run_context(generation);
        let mut builder = SpanBuilder::from_name(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes);
        builder.links = Some(vec![opentelemetry::trace::Link::with_context(run)]);
        tracer
            .build_with_context(builder, &Context::new().with_remote_span_context(caller))
            .end();
    }
}

/// The W3C `traceparent` header value of a span.
pub fn traceparent_of(span: &opentelemetry_sdk::trace::Span) -> String {
    let context = span.span_context();
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// A W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), or `None` if it is not one.
pub fn parse_traceparent(text: &str) -> Option<SpanContext> {
    let mut parts = text.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2)
        || version == "ff"
        || !lower_hex(trace, 32)
        || !lower_hex(span, 16)
        || !lower_hex(flags, 2)
    {
        return None;
    }
    // Version 00 has exactly four fields; a later version may append more.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & 1);
    Some(SpanContext::new(
        trace_id,
        span_id,
        flags,
        true,
        TraceState::default(),
    ))
}

/// The span id of the run of `generation` of instance `key` in its life `incarnation`.
fn run_span_id(key: &str, incarnation: i64, generation: u32) -> SpanId {
    SpanId::from_bytes(derived::<8>(&[
        "run",
        key,
        &incarnation.to_string(),
        &generation.to_string(),
    ]))
}

/// N bytes derived from `parts`, never all zero (an invalid id).
fn derived<const N: usize>(parts: &[&str]) -> [u8; N] {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.len().to_le_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let mut out = [0u8; N];
    out.copy_from_slice(&digest[..N]);
    if out.iter().all(|b| *b == 0) {
        out[N - 1] = 1;
    }
    out
}

fn system_time(at: Timestamp) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(at.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_strictly() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = parse_traceparent(good).unwrap();
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(context.is_sampled());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn run_ids_are_the_same_in_every_process_and_differ_by_generation() {
        assert_eq!(
            run_span_id("default/a", 7, 0),
            run_span_id("default/a", 7, 0)
        );
        assert_ne!(
            run_span_id("default/a", 7, 0),
            run_span_id("default/a", 7, 1)
        );
        assert_ne!(
            run_span_id("default/a", 7, 0),
            run_span_id("default/b", 7, 0)
        );
        // The same id started again after a purge is another life: other spans.
        assert_ne!(
            run_span_id("default/a", 7, 0),
            run_span_id("default/a", 8, 0)
        );
    }
}
