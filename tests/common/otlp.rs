//! An OTLP/HTTP receiver on 127.0.0.1 (wiremock on a runtime of its own):
//! it takes what an exporter POSTs to `/v1/traces` and decodes it with the
//! OpenTelemetry protocol's own types (`opentelemetry-proto`).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// One span as received, ids in hex.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent: String,
    pub name: String,
    pub attributes: BTreeMap<String, String>,
    pub start_ns: u64,
    pub end_ns: u64,
    /// 2: error (`Status.code`).
    pub status: i32,
    /// The service's name, from the resource.
    pub service: String,
}

impl Span {
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map(String::as_str).unwrap_or("")
    }
}

pub struct Collector {
    rt: tokio::runtime::Runtime,
    server: MockServer,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Collector {
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(MockServer::start());
        rt.block_on(
            Mock::given(method("POST"))
                .and(path("/v1/traces"))
                .respond_with(
                    ResponseTemplate::new(200)
                        .insert_header("content-type", "application/x-protobuf"),
                )
                .mount(&server),
        );
        Self { rt, server }
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` is set to.
    pub fn endpoint(&self) -> String {
        self.server.uri()
    }

    /// Every body POSTed to `/v1/traces`, as sent.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.rt
            .block_on(self.server.received_requests())
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == "/v1/traces")
            .map(|r| {
                assert_eq!(
                    r.headers.get("content-type").and_then(|v| v.to_str().ok()),
                    Some("application/x-protobuf"),
                    "OTLP over HTTP/protobuf"
                );
                r.body
            })
            .collect()
    }

    /// Every span received, in the order received.
    pub fn spans(&self) -> Vec<Span> {
        let mut out = Vec::new();
        for body in self.bodies() {
            let request = ExportTraceServiceRequest::decode(&body[..])
                .expect("an OTLP ExportTraceServiceRequest");
            for resource in request.resource_spans {
                let attrs = resource
                    .resource
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                let service = attrs.get("service.name").cloned().unwrap_or_default();
                for scope in resource.scope_spans {
                    for s in scope.spans {
                        out.push(Span {
                            trace_id: hex(&s.trace_id),
                            span_id: hex(&s.span_id),
                            parent: hex(&s.parent_span_id),
                            name: s.name,
                            attributes: attributes(&s.attributes),
                            start_ns: s.start_time_unix_nano,
                            end_ns: s.end_time_unix_nano,
                            status: s.status.map(|st| st.code).unwrap_or(0),
                            service: service.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Waits (bounded) until `done` holds of the spans received.
    pub fn wait_for(&self, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < until,
                "{what}: not within 30 s; received: {spans:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn attributes(
    kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(s)) => s.clone(),
                Some(Any::BoolValue(b)) => b.to_string(),
                Some(Any::IntValue(i)) => i.to_string(),
                Some(Any::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}
