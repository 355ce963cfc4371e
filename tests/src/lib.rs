//! Shared code for sinkd's end-to-end tests, the demo producer and the benchmark.
//!
//! Server addresses come from the environment (`docker/env` prints them) with loopback
//! defaults; every test uses its own topic, group and table names so tests never interfere.
//!
//! - [`shop`]: the demo domain: Avro schemas, a deterministic event stream, and the
//!   expected read model computed independently of sinkd.
//! - [`lines`]: orders with lines, a read model of two targets (child rows), and the
//!   model of both computed independently.
//! - [`projected`]: the shop's stream through computed columns and `when` rules, and
//!   the read model they give, computed independently.
//! - [`stack`]: the servers: topic creation, producing, the registry, PostgreSQL.
//! - [`conformance`]: scenarios every sink must pass, against the `Sink` trait.
//! - [`target`]: a sink under test (PostgreSQL or MongoDB): its YAML and how to read it.
//! - [`scenarios`]: the end-to-end scenarios every sink runs.
//! - [`daemon`]: running the real `sinkd` binary on a pipeline file.

pub mod conformance;
pub mod control;
pub mod daemon;
pub mod evolution;
pub mod lines;
pub mod mongod;
pub mod outbox;
pub mod projected;
pub mod scenarios;
pub mod shop;
pub mod stack;
pub mod target;
