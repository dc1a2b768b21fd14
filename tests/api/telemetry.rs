//! OpenTelemetry: the real server process exports traces and metrics over OTLP to a receiver in this
//! test, for a whole referral; spans follow the RPC conventions and continue the caller's trace, and
//! no identity code, name or free text is in anything exported.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::any_value::Value,
    trace::v1::Span,
};
use referral_exchange::proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::{helpers::*, server::binary_client};

/// What the receiver got.
#[derive(Clone, Default)]
pub(crate) struct Received {
    pub(crate) traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    pub(crate) metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.traces
            .lock()
            .map_err(|_| Status::internal("poisoned"))?
            .push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.metrics
            .lock()
            .map_err(|_| Status::internal("poisoned"))?
            .push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn spans(received: &Received) -> Vec<Span> {
    let traces = received.traces.lock().expect("lock");
    traces
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| s.spans.clone())
        .collect()
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone())
        .and_then(|v| v.value)
}

fn metric_names(received: &Received) -> Vec<String> {
    let metrics = received.metrics.lock().expect("lock");
    metrics
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| m.name.clone())
        .collect()
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_referral_is_traced_and_measured_without_personal_data() {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let receiver_addr = listener.local_addr().expect("addr");
    let receiver = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .add_service(MetricsServiceServer::new(received.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let database = TestDb::create(Db::Postgres).await;
    let dir = tempfile::tempdir().expect("dir");
    let endpoint = format!("http://{receiver_addr}");
    let (mut child, addr) = crate::server::start_binary_with(
        dir.path(),
        Some(database.url()),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("REFERRAL_EXCHANGE_BACKGROUND_INTERVAL_SECONDS", "1"),
        ],
    );

    // A code, name and free text that no other test uses, so any hit comes from here.
    let code = "030594W903B";
    let name = "Maija Mehiläinen";
    let free_text = "Sleeps in a stairwell since March";
    let mut kela = binary_client(dir.path(), addr, "kela", "handler-1").await;
    let mut hva15 = binary_client(dir.path(), addr, "hva-15", "worker-1").await;
    let mut auditor = binary_client(dir.path(), addr, "auditor-dpo", "dpo-1").await;

    let consent = kela
        .consents
        .record_consent(oral_consent(code, &["hva-15"]))
        .await
        .expect("consent")
        .into_inner();
    let mut create = referral(code, JYVASKYLA, &consent.name);
    if let Some(r) = create.referral.as_mut() {
        r.subject = Some(pb::Subject {
            personal_identity_code: code.into(),
            name: name.into(),
            ..Default::default()
        });
        r.reason_text = free_text.into();
    }
    let mut request = tonic::Request::new(create);
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("header"));
    let created = kela
        .referrals
        .create_referral(request)
        .await
        .expect("create")
        .into_inner();
    let received_referral = receive(&mut hva15, &created.name).await;
    let (n, e, r) = change_fields(&received_referral);
    hva15
        .referrals
        .accept_referral(pb::AcceptReferralRequest {
            name: n,
            etag: e,
            request_id: r,
        })
        .await
        .expect("accept");
    drain(&mut kela).await;
    auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            personal_identity_code: code.into(),
            ..Default::default()
        })
        .await
        .expect("audit");
    // A refusal with the code in the request, too.
    let mut refused = notification(code, "999");
    refused.request_id = new_request_id();
    assert!(kela.referrals.create_referral(refused).await.is_err());

    // One referral left waiting in hva-15's mailbox, for the mailbox gauges to report.
    kela.referrals
        .create_referral(notification("010594Y9032", JYVASKYLA))
        .await
        .expect("create");

    // Let a metric export and a gauge round happen, then stop: the providers flush on shutdown.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(status.code(), Some(0));

    // The server span of the create continues the caller's trace, per the RPC conventions.
    let spans = spans(&received);
    let create_span = spans
        .iter()
        .find(|s| {
            s.name == "referral_exchange.v1.ReferralService/CreateReferral"
                && hex::encode(&s.trace_id) == TRACE_ID
        })
        .unwrap_or_else(|| {
            panic!(
                "no CreateReferral span in the caller's trace among {} spans",
                spans.len()
            )
        });
    assert_eq!(hex::encode(&create_span.parent_span_id), PARENT_SPAN_ID);
    assert_eq!(
        create_span.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );
    assert_eq!(
        attribute(create_span, "rpc.system"),
        Some(Value::StringValue("grpc".into()))
    );
    assert_eq!(
        attribute(create_span, "rpc.service"),
        Some(Value::StringValue(
            "referral_exchange.v1.ReferralService".into()
        ))
    );
    assert_eq!(
        attribute(create_span, "rpc.method"),
        Some(Value::StringValue("CreateReferral".into()))
    );
    assert_eq!(
        attribute(create_span, "rpc.grpc.status_code"),
        Some(Value::IntValue(0))
    );
    // Its store transaction is its child.
    assert!(
        spans
            .iter()
            .any(|s| s.name == "transaction" && s.parent_span_id == create_span.span_id),
        "a transaction span under the create"
    );
    let refusal = spans
        .iter()
        .find(|s| {
            s.name.ends_with("/CreateReferral")
                && attribute(s, "rpc.grpc.status_code") == Some(Value::IntValue(3))
        })
        .expect("the refused create is traced");
    assert!(
        refusal.trace_id != create_span.trace_id,
        "a call without traceparent starts a trace of its own"
    );
    // Background tasks are traced too.
    assert!(
        spans.iter().any(|s| s.name == "deadline-watch"),
        "a deadline watch round"
    );

    let names = metric_names(&received);
    for expected in [
        "rpc.server.call.duration",
        "referral_exchange.mailbox.pending",
        "referral_exchange.mailbox.leased",
        "referral_exchange.mailbox.dead_letters",
        "referral_exchange.mailbox.oldest_pending_age",
        "referral_exchange.referrals.overdue",
        "referral_exchange.audit.sequencer_lag",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "metric {expected} among {names:?}"
        );
    }

    // Nothing personal in anything exported.
    let everything = format!(
        "{:?}{:?}",
        received.traces.lock().expect("lock"),
        received.metrics.lock().expect("lock")
    );
    for secret in [code, "030594W903", name, free_text] {
        assert!(!everything.contains(secret), "{secret} was exported");
    }
    receiver.abort();
}
