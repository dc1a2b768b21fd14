//! Logs, traces and metrics.
//!
//! Logs are always on (text, or JSON with `--log-format json`). Traces and metrics are exported over
//! OTLP/gRPC when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or a signal-specific `…_TRACES_…` /
//! `…_METRICS_…`) variable is set; the other `OTEL_*` variables (service name, resource attributes,
//! export interval, headers) apply as the OpenTelemetry SDK defines them.
//!
//! Nothing personal goes out: spans and metrics carry method names, status codes, organisation ids
//! and counts, never request bodies. Identity codes have no `Display` and a redacting `Debug`, so they
//! cannot end up in a span field by accident.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
    time::Duration,
};

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Histogram},
    propagation::Extractor,
    trace::TracerProvider as _,
};
use opentelemetry_sdk::{
    Resource, metrics::SdkMeterProvider, propagation::TraceContextPropagator,
    trace::SdkTracerProvider,
};
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

use crate::store::MailboxCounts;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The instrumentation scope of everything this service reports.
pub const SCOPE: &str = "referral-exchange";

/// The exporters, kept to flush and stop them on shutdown.
#[derive(Default)]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

/// Whether OTLP export is configured by the standard environment variables.
fn otlp_configured(signal: &str) -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
        format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"),
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()))
}

/// Installs logging, and OTLP export of traces and metrics when configured. `RUST_LOG` overrides the
/// default log filter (`info`).
pub fn init(format: LogFormat) -> Telemetry {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let mut telemetry = Telemetry::default();
    let resource = || Resource::builder().with_service_name(SCOPE).build();

    let otel_layer = if otlp_configured("TRACES") {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => {
                let provider = SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource())
                    .build();
                let tracer = provider.tracer(SCOPE);
                global::set_tracer_provider(provider.clone());
                telemetry.tracer_provider = Some(provider);
                // Spans of this service only, at info and above: library spans and debug events would
                // be noise, and sqlx's statement events carry SQL text.
                Some(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(EnvFilter::new("warn,referral_exchange=info")),
                )
            }
            Err(e) => {
                eprintln!("OTLP trace export not started: {e}");
                None
            }
        }
    } else {
        None
    };
    if otlp_configured("METRICS") {
        match opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => {
                let provider = SdkMeterProvider::builder()
                    .with_periodic_exporter(exporter)
                    .with_resource(resource())
                    .build();
                global::set_meter_provider(provider.clone());
                telemetry.meter_provider = Some(provider);
            }
            Err(e) => eprintln!("OTLP metric export not started: {e}"),
        }
    }

    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn"));
    let log_layer = match format {
        // Colours only for a person at a terminal: a log file or a collector gets plain text.
        LogFormat::Text => fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    // Already installed (tests start several servers in one process): keep the first.
    let _ = tracing_subscriber::registry()
        .with(log_layer.with_filter(filter))
        .with(otel_layer)
        .try_init();
    telemetry
}

impl Telemetry {
    /// Exports what is buffered and stops the exporters.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("flushing traces: {e}");
        }
        if let Some(provider) = self.meter_provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing metrics: {e}");
        }
    }
}

/// Reads a W3C `traceparent` (and `tracestate`) from gRPC metadata.
pub struct MetadataExtractor<'a>(pub &'a tonic::metadata::MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The caller's trace context, if it sent one.
pub fn parent_context(metadata: &tonic::metadata::MetadataMap) -> opentelemetry::Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&MetadataExtractor(metadata)))
}

/// Point-in-time values that observable gauges report: filled by the leader's telemetry round, so
/// that one replica reports them, not each.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    pub mailboxes: HashMap<String, MailboxCounts>,
    /// Seconds since the oldest mailbox message not yet acknowledged was published, per mailbox.
    pub oldest_pending_age: HashMap<String, f64>,
    pub overdue_referrals: HashMap<String, i64>,
    pub audit_pending_events: i64,
    pub audit_sequencer_lag_seconds: f64,
}

/// The instruments of this service.
pub struct Metrics {
    /// `rpc.server.call.duration` (seconds) by `rpc.method` and `rpc.grpc.status_code`.
    pub rpc_duration: Histogram<f64>,
    /// Deliveries made after an earlier lease of the same message ran out or was released.
    pub lease_expiries: Counter<u64>,
    /// REFERRAL_OVERDUE notices sent, by deadline kind.
    pub overdue_notices: Counter<u64>,
    /// Messages moved to dead letters.
    pub dead_letters: Counter<u64>,
    /// Calls that touched no one's personal data (a pull or stream that delivered nothing, directory
    /// look-ups, checkpoints and proofs, mailbox counts), by `method` and `organization`: they are
    /// counted here instead of being written to the audit trail (see `Exchange::commit_unprocessed`).
    pub calls_without_personal_data: Counter<u64>,
    /// `http.server.request.duration` (seconds) of the HTTP face by `http.route` (the binding's
    /// template, never the URL) and `http.response.status_code`.
    pub http_duration: Histogram<f64>,
    pub gauges: Mutex<Gauges>,
}

/// The instruments, on the global meter provider (a no-op one unless OTLP export is configured).
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::register);
    &METRICS
}

fn gauges() -> Gauges {
    metrics()
        .gauges
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

impl Metrics {
    fn register() -> Metrics {
        let meter = global::meter(SCOPE);
        let mailbox_gauge =
            |name: &'static str, description: &'static str, value: fn(&MailboxCounts) -> i64| {
                meter
                    .i64_observable_gauge(name)
                    .with_description(description)
                    .with_callback(move |observer| {
                        for (mailbox, counts) in gauges().mailboxes {
                            observer.observe(value(&counts), &[KeyValue::new("mailbox", mailbox)]);
                        }
                    })
                    .build()
            };
        // Observable instruments live as long as the meter provider; the handles need not be kept.
        let _ = mailbox_gauge(
            "referral_exchange.mailbox.pending",
            "Messages waiting for delivery",
            |c| c.pending,
        );
        let _ = mailbox_gauge(
            "referral_exchange.mailbox.leased",
            "Messages delivered, not acknowledged",
            |c| c.leased,
        );
        let _ = mailbox_gauge(
            "referral_exchange.mailbox.dead_letters",
            "Messages given up",
            |c| c.dead,
        );
        let _ = meter
            .f64_observable_gauge("referral_exchange.mailbox.oldest_pending_age")
            .with_unit("s")
            .with_description("Age of the oldest message not yet acknowledged")
            .with_callback(|observer| {
                for (mailbox, age) in gauges().oldest_pending_age {
                    observer.observe(age, &[KeyValue::new("mailbox", mailbox)]);
                }
            })
            .build();
        let _ = meter
            .i64_observable_gauge("referral_exchange.referrals.overdue")
            .with_description("Referrals with a deadline passed without the state it requires")
            .with_callback(|observer| {
                for (kind, count) in gauges().overdue_referrals {
                    observer.observe(count, &[KeyValue::new("deadline", kind)]);
                }
            })
            .build();
        let _ = meter
            .i64_observable_gauge("referral_exchange.audit.pending_events")
            .with_description("Audit events committed but not yet in a signed checkpoint")
            .with_callback(|observer| observer.observe(gauges().audit_pending_events, &[]))
            .build();
        let _ = meter
            .f64_observable_gauge("referral_exchange.audit.sequencer_lag")
            .with_unit("s")
            .with_description("Age of the oldest audit event not yet in a signed checkpoint")
            .with_callback(|observer| observer.observe(gauges().audit_sequencer_lag_seconds, &[]))
            .build();
        Metrics {
            http_duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP requests to the HTTP face")
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0, 25.0,
                ])
                .build(),
            rpc_duration: meter
                .f64_histogram("rpc.server.call.duration")
                .with_unit("s")
                .with_description("Duration of incoming gRPC calls")
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0, 25.0,
                ])
                .build(),
            lease_expiries: meter
                .u64_counter("referral_exchange.mailbox.lease_expiries")
                .with_description(
                    "Deliveries after an earlier lease of the message ran out or was released",
                )
                .build(),
            overdue_notices: meter
                .u64_counter("referral_exchange.referrals.overdue_notices")
                .with_description("REFERRAL_OVERDUE notices sent")
                .build(),
            dead_letters: meter
                .u64_counter("referral_exchange.mailbox.dead_lettered")
                .with_description("Messages moved to dead letters")
                .build(),
            calls_without_personal_data: meter
                .u64_counter("referral_exchange.calls.without_personal_data")
                .with_description(
                    "Calls that touched no one's personal data, counted instead of audited",
                )
                .build(),
            gauges: Mutex::new(Gauges::default()),
        }
    }

    pub fn set_gauges(&self, gauges: Gauges) {
        *self.gauges.lock().unwrap_or_else(|p| p.into_inner()) = gauges;
    }
}
