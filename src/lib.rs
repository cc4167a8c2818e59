#![forbid(unsafe_code)]
//! executor-service runs Kubernetes remediation actions (scale, restart, rollout…) with
//! kubectl's semantics, behind a gRPC API with live progress streams.
//!
//! # Layout
//! A request flows from a door, through the engine, to an action and the cluster:
//! `api → engine → actions → cluster`. Imports go one way only (`scripts/check-layering`
//! checks it in CI), lowest first:
//! - [`telemetry`]: logging, traces and metrics setup; imports nothing of ours.
//! - [`domain`]: the shared vocabulary — executions, events, states, targets, list filters and
//!   page limits, the action catalog's descriptors. Imports nothing of ours, so the engine and
//!   the store both speak it without knowing each other.
//! - [`cluster`]: kube clients by kubeconfig context, kubectl's rollout-status conditions,
//!   node and workload helpers, retries.
//! - [`actions`]: one file (or folder) per action behind the `Remediation` trait; `mod.rs` is
//!   the registry.
//! - [`policy`]: Rego evaluation (regorus) and the default policy.
//! - [`store`]: durable execution history (embedded SQLite file or PostgreSQL).
//! - [`engine`]: the one place that decides and runs: admission (validation, authorization,
//!   dry run, policy, cooldowns, queue), the runner (locks, limits, timeouts, rollback),
//!   history, cancellation and approvals. `engine/mod.rs` is its facade.
//! - [`api`]: the doors — gRPC (`api::grpc`, `api::convert`, `api::status`), HTTP/JSON and SSE
//!   (`api::http`), gRPC-Web, TLS (`api::tls`) and who is calling (`api::auth`). A door only
//!   decodes into the engine's request types, calls the engine and encodes what comes back;
//!   it imports only `domain`, `engine` and `telemetry`. New ways in (Kafka, a Kubernetes
//!   controller, a dashboard) are siblings of `api` with the same rule.
//! - [`kafka`]: the Kafka door — approved actions consumed from a topic become executions,
//!   their statuses published to another; same rule as `api`.
//! - [`controller`]: the Kubernetes door — `KubernetesExecution` custom resources become
//!   executions, their status mirrors them; same rule as `api`.
//! - [`cli`]: the client commands (`exec`, `watch`, `dry-run`, `actions`, `get`, `cancel`,
//!   `approve`, `reject`) over the generated gRPC client.
//! - [`sim`]: the simulated Kubernetes API server (embedded default and test bed), with its
//!   own record of client writes and fault injection; only [`run`], [`config`] and the tests
//!   use it.
//! - [`config`]: the command line (clap); it knows every part it configures, none imports it.
//! - [`run`]: wiring for `serve` and the two-signal shutdown.

pub mod actions;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod domain;
pub mod engine;
pub mod kafka;
pub mod policy;
pub mod run;
pub mod sim;
pub mod store;
pub mod telemetry;
