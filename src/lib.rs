#![forbid(unsafe_code)]
//! executor-service runs Kubernetes remediation actions (scale, restart, rollout…) with
//! kubectl's semantics, behind a gRPC API with live progress streams.
//!
//! # Layout
//! A request flows `api → engine → actions → cluster`:
//! - [`config`]: the command line (clap), one struct per command.
//! - [`cli`]: the client commands (`exec`, `watch`, `dry-run`, `actions`, `get`, `cancel`) over
//!   the generated gRPC client.
//! - [`api`]: the gRPC and HTTP edges: proto/JSON ↔ domain translation, health, reflection,
//!   TLS and mTLS (`api::tls`), who is calling (`api::auth`: bearer tokens, certificates).
//! - [`engine`]: validation, queue, worker pool, per-target locks, timeouts, cancellation,
//!   the event log of every execution; `engine::authz` decides who may run or approve what where.
//! - [`actions`]: one file per action behind the `Remediation` trait; `mod.rs` is the registry.
//! - [`cluster`]: kube clients by kubeconfig context and kubectl's rollout-status conditions.
//! - [`policy`]: Rego evaluation (regorus) and the default policy.
//! - [`sim`]: the simulated Kubernetes API server (embedded default and test bed); only
//!   [`run`] and the tests use it.
//! - [`store`]: durable execution history (embedded file or PostgreSQL).
//! - [`run`]: wiring for `serve` and the two-signal shutdown.
//! - [`telemetry`]: logging setup.

pub mod actions;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod engine;
pub mod policy;
pub mod run;
pub mod sim;
pub mod store;
pub mod telemetry;
