//! Telemetry in one place: logging (human or JSON, `RUST_LOG` filters), OpenTelemetry traces
//! over OTLP (a span per RPC continuing the caller's `traceparent`, one per execution, one per
//! Kubernetes call), and the Prometheus metrics every layer reports to.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Flushes and stops trace export when dropped (at the end of `main`).
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("flushing traces: {e}");
            }
        }
    }
}

/// Spans sent to OTLP besides the service's own: kube's per-request `HTTP` spans are at debug.
const OTLP_FILTER: &str = "info,kube_client::client::builder=debug";

/// Installs logging, and trace export over OTLP/gRPC to `otlp_endpoint` when given (W3C trace
/// context propagation). A second call is a no-op (tests).
///
/// # Errors
/// When the OTLP exporter cannot be built.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube=warn,tower=warn,h2=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let (otel, provider) = match otlp_endpoint.filter(|e| !e.is_empty()) {
        None => (None, None),
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    Resource::builder()
                        .with_service_name("executor-service")
                        .build(),
                )
                .build();
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            opentelemetry::global::set_tracer_provider(provider.clone());
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("executor-service"))
                .with_filter(EnvFilter::new(OTLP_FILTER));
            (Some(layer), Some(provider))
        }
    };
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init();
    Ok(TelemetryGuard { provider })
}

/// Reads W3C trace context (`traceparent`, `tracestate`) from HTTP or gRPC headers.
struct Headers<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// A server span for one request, continuing the caller's trace when its headers carry one.
pub fn request_span(
    protocol: &'static str,
    name: &str,
    headers: &http::HeaderMap,
) -> tracing::Span {
    let span = tracing::info_span!("request", otel.name = %name, otel.kind = "server", rpc.system = protocol);
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    // Fails only when no OpenTelemetry layer is installed: then there is nothing to continue.
    let _ = span.set_parent(parent);
    span
}

/// The trace id of the current span, empty when traces are not exported.
pub fn current_trace_id() -> String {
    let context = tracing::Span::current().context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span_context.trace_id().to_string()
    } else {
        String::new()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    action: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Action {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Code {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reload {
    outcome: String,
}

/// Execution durations from a fraction of a second (a scale) to an hour (a long drain).
const DURATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

/// The service's metrics. Counters are process-wide; the gauges are set from the engine's
/// state when scraped, so they can never drift.
pub struct Metrics {
    registry: Registry,
    executions: Family<Outcome, Counter>,
    duration: Family<Action, Histogram>,
    pub queue_depth: Gauge,
    pub in_flight: Gauge,
    pub waiting_approval: Gauge,
    pub in_memory: Gauge,
    subscribers: Gauge,
    kube_errors: Family<Code, Counter>,
    reloads: Family<Reload, Counter>,
    /// Several replicas on PostgreSQL: executions this replica claimed from the queue.
    pub claims: Counter,
    /// Lease renewals this replica made (one per execution per renewal).
    pub lease_renewals: Counter,
    /// Executions whose lease this replica found expired and ended (or re-queued).
    pub takeovers: Counter,
    /// Executions this replica was running when it found it no longer held their lease.
    pub leases_lost: Counter,
    /// Kafka: approved-action messages consumed, refused, and status messages published.
    pub kafka_consumed: Counter,
    pub kafka_rejected: Counter,
    pub kafka_published: Counter,
    /// Kafka: messages of the approved topic not yet committed by this consumer.
    pub kafka_lag: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("executor");
        let executions = Family::<Outcome, Counter>::default();
        registry.register(
            "executions",
            "Executions ended, by action and final state",
            executions.clone(),
        );
        let duration =
            Family::<Action, Histogram>::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register(
            "execution_duration_seconds",
            "Running time of executions, from start to final state",
            duration.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Executions queued, waiting for a target or a worker",
            queue_depth.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("in_flight", "Executions running now", in_flight.clone());
        let waiting_approval = Gauge::default();
        registry.register(
            "waiting_approval",
            "Executions waiting for an approval",
            waiting_approval.clone(),
        );
        let in_memory = Gauge::default();
        registry.register(
            "executions_in_memory",
            "Executions held in memory (unfinished, and the newest finished when history is stored)",
            in_memory.clone(),
        );
        let subscribers = Gauge::default();
        registry.register(
            "stream_subscribers",
            "Open execution event streams",
            subscribers.clone(),
        );
        let kube_errors = Family::<Code, Counter>::default();
        registry.register(
            "kubernetes_api_errors",
            "Kubernetes API calls that failed, by HTTP status code (or `transport`)",
            kube_errors.clone(),
        );
        let reloads = Family::<Reload, Counter>::default();
        registry.register(
            "config_reloads",
            "SIGHUP reloads of tokens, authorization rules and policy, by outcome (ok, failed)",
            reloads.clone(),
        );
        let claims = Counter::default();
        registry.register(
            "replica_claims",
            "Queued executions this replica claimed to run (several replicas on PostgreSQL)",
            claims.clone(),
        );
        let lease_renewals = Counter::default();
        registry.register(
            "replica_lease_renewals",
            "Leases on running executions this replica renewed",
            lease_renewals.clone(),
        );
        let takeovers = Counter::default();
        registry.register(
            "replica_takeovers",
            "Executions of another replica whose lease expired, which this replica ended or re-queued",
            takeovers.clone(),
        );
        let leases_lost = Counter::default();
        registry.register(
            "replica_leases_lost",
            "Executions this replica stopped because another replica took them over",
            leases_lost.clone(),
        );
        let kafka_consumed = Counter::default();
        registry.register(
            "kafka_consumed",
            "Approved-action messages consumed from Kafka",
            kafka_consumed.clone(),
        );
        let kafka_rejected = Counter::default();
        registry.register(
            "kafka_rejected",
            "Kafka messages refused (a `rejected` status published)",
            kafka_rejected.clone(),
        );
        let kafka_published = Counter::default();
        registry.register(
            "kafka_status_published",
            "Status messages published to Kafka",
            kafka_published.clone(),
        );
        let kafka_lag = Gauge::default();
        registry.register(
            "kafka_consumer_lag",
            "Approved-action messages not yet committed, over this consumer's partitions",
            kafka_lag.clone(),
        );
        Metrics {
            registry,
            kafka_lag,
            kafka_consumed,
            kafka_rejected,
            kafka_published,
            claims,
            lease_renewals,
            takeovers,
            leases_lost,
            reloads,
            executions,
            duration,
            queue_depth,
            in_flight,
            waiting_approval,
            in_memory,
            subscribers,
            kube_errors,
        }
    }

    /// An execution reached its final `state` after running for `ran` (None if it never ran).
    pub fn execution_ended(&self, action: &str, state: &str, ran: Option<Duration>) {
        self.executions
            .get_or_create(&Outcome {
                action: action.to_string(),
                state: state.to_string(),
            })
            .inc();
        if let Some(ran) = ran {
            self.duration
                .get_or_create(&Action {
                    action: action.to_string(),
                })
                .observe(ran.as_secs_f64());
        }
    }

    /// A Kubernetes API call failed with `code` (an HTTP status, or `transport`).
    pub fn kube_error(&self, code: &str) {
        self.kube_errors
            .get_or_create(&Code {
                code: code.to_string(),
            })
            .inc();
    }

    /// A reload of the configuration files ended: `ok` or `failed`.
    pub fn reloaded(&self, ok: bool) {
        self.reloads
            .get_or_create(&Reload {
                outcome: if ok { "ok" } else { "failed" }.to_string(),
            })
            .inc();
    }

    /// Counts an open event stream until the guard is dropped.
    pub fn subscriber(&'static self) -> SubscriberGuard {
        self.subscribers.inc();
        SubscriberGuard { metrics: self }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Decrements the subscriber gauge when its stream ends.
pub struct SubscriberGuard {
    metrics: &'static Metrics,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.metrics.subscribers.dec();
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();
    METRICS.get_or_init(|| Arc::new(Metrics::new()))
}
