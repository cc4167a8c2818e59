//! Telemetry in one place: logging (human or JSON, `RUST_LOG` filters) and the Prometheus
//! metrics every layer reports to.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; a second call is a no-op (tests).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube=warn,tower=warn,h2=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
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

/// Execution durations from a fraction of a second (a scale) to an hour (a long drain).
const DURATION_BUCKETS: [f64; 12] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0];

/// The service's metrics. Counters are process-wide; the gauges are set from the engine's
/// state when scraped, so they can never drift.
pub struct Metrics {
    registry: Registry,
    executions: Family<Outcome, Counter>,
    duration: Family<Action, Histogram>,
    pub queue_depth: Gauge,
    pub in_flight: Gauge,
    pub waiting_approval: Gauge,
    subscribers: Gauge,
    kube_errors: Family<Code, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("executor");
        let executions = Family::<Outcome, Counter>::default();
        registry.register("executions", "Executions ended, by action and final state", executions.clone());
        let duration = Family::<Action, Histogram>::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register(
            "execution_duration_seconds",
            "Running time of executions, from start to final state",
            duration.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register("queue_depth", "Executions queued, waiting for a target or a worker", queue_depth.clone());
        let in_flight = Gauge::default();
        registry.register("in_flight", "Executions running now", in_flight.clone());
        let waiting_approval = Gauge::default();
        registry.register("waiting_approval", "Executions waiting for an approval", waiting_approval.clone());
        let subscribers = Gauge::default();
        registry.register("stream_subscribers", "Open execution event streams", subscribers.clone());
        let kube_errors = Family::<Code, Counter>::default();
        registry.register(
            "kubernetes_api_errors",
            "Kubernetes API calls that failed, by HTTP status code (or `transport`)",
            kube_errors.clone(),
        );
        Metrics {
            registry,
            executions,
            duration,
            queue_depth,
            in_flight,
            waiting_approval,
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
        self.kube_errors.get_or_create(&Code { code: code.to_string() }).inc();
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
