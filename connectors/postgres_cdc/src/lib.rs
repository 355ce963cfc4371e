//! PostgreSQL change capture into Kafka: a `source: postgres_cdc` pipeline.
//!
//! Changes come from a logical replication slot through the pgoutput plugin (no polling,
//! no triggers), read with `pg_walstream`. Only committed transactions are decoded, in
//! commit order. In `outbox` mode each inserted row becomes one Avro record on Kafka
//! ([`outbox`]), produced by an idempotent producer.
//!
//! The slot's confirmed position is the only checkpoint, and it moves only past a
//! transaction whose every record the broker acknowledged, and after every transaction
//! before it ([`delivery`]). So a crash loses nothing and at worst sends a transaction
//! again.
//!
//! - [`slot`]: publication and slot set-up, slot lag, slots left behind.
//! - [`outbox`]: a row into topic, key, headers and a Confluent-framed Avro value.
//! - [`delivery`]: acknowledgements in order, then the slot's position.
//! - [`capture`]: the loop that reads the slot and sends.
//! - [`stats`]: counters for the status API and metrics.

pub mod capture;
pub mod delivery;
pub mod outbox;
pub mod slot;
pub mod stats;

pub use capture::{CaptureError, run};
pub use slot::{SlotProbe, SlotStatus, slot_status, unclaimed_slots};
pub use stats::CaptureStats;
