//! The `strom` crate: runs a node (`strom server`, also the default with no arguments) and carries the
//! admin and console tools. `main.rs` is only the command line; everything else is here.
//!
//! # Layout
//! - [`config`]: Kafka `server.properties` keys, layering (file, env, override), validation.
//! - [`node`]: assembles a node from its roles: data directory, controller, broker listeners.
//! - [`control_plane`]: the runtime the controller and the broker's heartbeats run on.
//! - [`metrics_http`]: `/metrics`, `/healthz`, `/readyz` on `metrics.listener`.
//! - [`logging`]: `tracing` setup; the node id on every line.
//! - [`shutdown`]: SIGINT/SIGTERM handling.
//! - [`tools`]: `strom topics`, `consumer-groups`, `console-producer`, `console-consumer`, `perf`.

pub mod config;
pub mod control_plane;
pub mod logging;
pub mod metrics_http;
pub mod node;
pub mod shutdown;
pub mod tools;
