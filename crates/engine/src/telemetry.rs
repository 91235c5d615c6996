//! OpenTelemetry traces of runs: one span per run, per step and per
//! capability call, exported over OTLP (HTTP/protobuf) when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set. Without either, [`Tracing::from_env`] is `None` and a run makes no
//! span, reads no clock and allocates nothing for tracing.
//!
//! - A step's span and its calls' spans are built when the step ends,
//!   from its report: each call's start (the monotonic instant the gate
//!   reads anyway) and duration place it under the step. Nothing on a
//!   step's path waits for tracing, and what a span says is what the
//!   report says.
//! - Attributes name the runbook, step, plugin digest, capability,
//!   operation, resource, read or mutate, and the outcome (an error's
//!   kind, never its text); never a call's arguments or results, which
//!   may hold what a backend answered.
//! - A run joins its caller's trace (`TraceOrigin::parent`: an incoming
//!   `traceparent`, the `TRACEPARENT` variable); a resumed run continues
//!   the trace its `run-start` recorded, under the first run's span.
//! - Export never touches a run: spans go to the SDK's bounded queue and
//!   its own thread sends them (a collector that is down loses spans, not
//!   time); [`Tracing::shutdown`] waits at most [`SHUTDOWN`].

use crate::report::{Report, StepReport};
use anyhow::Result;
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _,
    TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use runbook_core::error::hinted;
use runbook_core::trace::{TraceOrigin, TraceParent};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The longest a process waits at exit for its last spans to be sent.
pub const SHUTDOWN: Duration = Duration::from_secs(5);
/// How long one export may take (unless `OTEL_EXPORTER_OTLP_TIMEOUT`
/// says otherwise): less than [`SHUTDOWN`], so the last one can finish.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// The exporter, when tracing is configured.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Tracing {
    /// Tracing as the standard OpenTelemetry variables configure it;
    /// `None` (off) unless an OTLP endpoint is set.
    pub fn from_env() -> Result<Option<Arc<Self>>> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match var("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(hinted(
                    format!(
                        "`OTEL_TRACES_EXPORTER` is `{other}`: runbook exports traces over OTLP only"
                    ),
                    "set it to `otlp` (or `none`), or unset it",
                ));
            }
        }
        let endpoint = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .into_iter()
        .find_map(|k| Some((k, var(k)?)));
        let Some((endpoint, address)) = endpoint else {
            return Ok(None);
        };
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(p) = var(name)
                && p.trim() != "http/protobuf"
            {
                return Err(hinted(
                    format!(
                        "`{name}` is `{p}`: runbook sends traces as OTLP over HTTP/protobuf only"
                    ),
                    "set it to `http/protobuf` and point the endpoint at the collector's OTLP/HTTP port (4318 by default)",
                ));
            }
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary);
        if var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").is_none()
            && var("OTEL_EXPORTER_OTLP_TIMEOUT").is_none()
        {
            exporter = exporter.with_timeout(EXPORT_TIMEOUT);
        }
        // The error names the variable and what is wrong with it, not its
        // value (a URL may hold `user:token@`), nor the headers.
        let exporter = match exporter.build() {
            Ok(e) => e,
            Err(e) => {
                let why = e.to_string().replace(&address, "…");
                return Err(hinted(
                    format!("tracing: `{endpoint}` cannot be used: {why}"),
                    "set it to the collector's OTLP/HTTP address, e.g. `http://127.0.0.1:4318`, or unset it to trace nothing",
                ));
            }
        };
        let mut resource = Resource::builder();
        if var("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("runbook");
        }
        let resource = resource
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("runbook");
        Ok(Some(Arc::new(Self { provider, tracer })))
    }

    /// Sends what is queued and stops, waiting at most [`SHUTDOWN`]; an
    /// error says spans were lost (the run is not affected).
    pub fn shutdown(&self) -> Result<()> {
        self.provider
            .shutdown_with_timeout(SHUTDOWN)
            .map_err(|e| anyhow::anyhow!("traces could not all be exported: {e}"))
    }

    /// The span of a run, under `continues` (a resumed run's first span)
    /// or else the origin's parent, with the origin's attributes.
    pub fn start_run(
        &self,
        origin: &TraceOrigin,
        continues: Option<TraceParent>,
        run: RunIdentity<'_>,
    ) -> RunTrace {
        let parent = match continues.or(origin.parent) {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(p.trace_id),
                SpanId::from_bytes(p.span_id),
                if p.sampled {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                },
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let mut attributes = vec![
            KeyValue::new("runbook.id", run.runbook_id.to_string()),
            KeyValue::new("runbook.title", run.title.to_string()),
            KeyValue::new("runbook.run_id", run.run_id.to_string()),
            KeyValue::new("runbook.incident", run.incident.to_string()),
            KeyValue::new("runbook.mode", run.mode.to_string()),
        ];
        if continues.is_some() {
            attributes.push(KeyValue::new("runbook.resumed", true));
        }
        // What started the run (an alert's identity); names the host's own
        // (`alert.name`), kept to plain dotted words all the same.
        attributes.extend(
            origin
                .attributes
                .iter()
                .filter(|(k, _)| plain_name(k))
                .map(|(k, v)| KeyValue::new(format!("runbook.{k}"), v.clone())),
        );
        let span = SpanBuilder::from_name(format!("run {}", run.runbook_id))
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        let context = span.span_context().clone();
        RunTrace {
            tracer: self.tracer.clone(),
            cx: parent.with_span(span),
            ended: std::sync::atomic::AtomicBool::new(false),
            ids: TraceParent {
                trace_id: context.trace_id().to_bytes(),
                span_id: context.span_id().to_bytes(),
                sampled: context.is_sampled(),
            },
        }
    }
}

fn plain_name(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
}

/// What a run's span is named by.
#[derive(Clone, Copy)]
pub struct RunIdentity<'a> {
    pub runbook_id: &'a str,
    pub title: &'a str,
    pub run_id: &'a str,
    pub incident: &'a str,
    pub mode: &'a str,
}

/// A run's span, and the tracer its steps' spans come from.
pub struct RunTrace {
    tracer: SdkTracer,
    cx: Context,
    ids: TraceParent,
    ended: std::sync::atomic::AtomicBool,
}

impl Drop for RunTrace {
    /// A run that stopped on an error before its end (a journal line that
    /// could not be written, a backend that could not be set up): its span
    /// says so, rather than ending with no status.
    fn drop(&mut self) {
        if !self.ended.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let span = self.cx.span();
            span.set_attribute(KeyValue::new("runbook.status", "stopped"));
            span.set_status(Status::error("the run stopped before its end"));
            span.end();
        }
    }
}

impl RunTrace {
    /// The run span's trace id and span id (what the journal's
    /// `run-start` records, and a resumed run continues under).
    pub fn ids(&self) -> TraceParent {
        self.ids
    }

    /// The trace id, 32 hex digits (the report's `trace_id`).
    pub fn trace_id(&self) -> String {
        self.ids.trace_hex()
    }

    /// What the journal records of the trace.
    pub fn record(&self) -> serde_json::Value {
        serde_json::json!({
            "trace_id": self.ids.trace_hex(),
            "span_id": self.ids.span_hex(),
            "sampled": self.ids.sampled,
        })
    }

    /// The spans of a step that ran from `began` (also `began_at` on the
    /// wall clock) until `ended_at`, and of each of its calls.
    pub(crate) fn step(
        &self,
        report: &StepReport,
        began: Instant,
        began_at: SystemTime,
        ended_at: SystemTime,
    ) {
        let mut attributes = vec![
            KeyValue::new("runbook.step", report.id.clone()),
            KeyValue::new("runbook.plugin", report.plugin.clone()),
            KeyValue::new("runbook.plugin.digest", report.plugin_digest.clone()),
            KeyValue::new("runbook.outcome", report.outcome.clone()),
        ];
        if let Some(next) = &report.next {
            attributes.push(KeyValue::new("runbook.next", next.clone()));
        }
        let mut span = SpanBuilder::from_name(format!("step {}", report.id))
            .with_start_time(began_at)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.cx);
        // The outcome the host gives a step that failed (facts, which a
        // plugin writes too, are not exported).
        if report.outcome == "error" {
            span.set_status(Status::error("the step ended `error`"));
        }
        let step = self.cx.with_span(span);
        for call in &report.calls {
            let start = call
                .began
                .map(|b| began_at + b.saturating_duration_since(began))
                .unwrap_or(began_at);
            let mut attributes = vec![
                KeyValue::new("runbook.capability", call.interface.to_string()),
                KeyValue::new("runbook.operation", call.operation.clone()),
                KeyValue::new("runbook.resource", call.resource.clone()),
                KeyValue::new("runbook.access", call.access.to_string()),
                KeyValue::new("runbook.allowed", call.allowed),
                KeyValue::new(
                    "runbook.outcome",
                    call.error.clone().unwrap_or_else(|| "ok".into()),
                ),
            ];
            if let Some(d) = &call.approval {
                attributes.push(KeyValue::new(
                    "runbook.approval",
                    serde_json::to_value(d.decision)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                ));
            }
            let mut span = SpanBuilder::from_name(format!("{}.{}", call.interface, call.operation))
                .with_kind(SpanKind::Client)
                .with_start_time(start)
                .with_attributes(attributes)
                .start_with_context(&self.tracer, &step);
            if let Some(kind) = &call.error {
                span.set_status(Status::error(kind.clone()));
            }
            span.end_with_timestamp(start + Duration::from_micros(call.duration_us));
        }
        step.span().end_with_timestamp(ended_at);
    }

    /// Ends the run's span with how the run ended (once).
    pub fn end(&self, report: &Report) {
        if self.ended.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let span = self.cx.span();
        let status = serde_json::to_value(report.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        span.set_attribute(KeyValue::new("runbook.status", status.clone()));
        span.set_attribute(KeyValue::new(
            "runbook.mutations",
            report.mutations.used as i64,
        ));
        if matches!(
            report.status,
            crate::report::Status::Failed | crate::report::Status::Unrecorded
        ) {
            span.set_status(Status::error(status));
        }
        span.end();
    }
}
