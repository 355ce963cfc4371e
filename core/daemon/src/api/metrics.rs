//! `GET /metrics`: the Prometheus text format.
//!
//! Histograms (`sinkd_batch_events`, `sinkd_write_seconds`) are recorded by the runtime as
//! batches commit. Counters and gauges are read from the pipelines at scrape time, so the
//! hot path only bumps atomics:
//! - `sinkd_events_consumed_total`, `sinkd_events_applied_total`,
//!   `sinkd_events_dead_lettered_total`, `sinkd_events_skipped_total`,
//!   `sinkd_batches_total` {pipeline};
//! - `sinkd_pipeline_running` {pipeline}: 1 while running (or rebuilding);
//! - `sinkd_partition_lag`, `sinkd_partition_staleness_seconds`,
//!   `sinkd_partition_sink_offset` {pipeline, topic, partition};
//! - `sinkd_rebuild_active`, `sinkd_rebuild_events_done`, `sinkd_rebuild_events_total`
//!   {pipeline}.
//!
//! Capture pipelines (PostgreSQL into Kafka):
//! - `sinkd_cdc_rows_total`, `sinkd_cdc_records_acknowledged_total`,
//!   `sinkd_cdc_dead_lettered_total`, `sinkd_cdc_transactions_total` {pipeline};
//! - `sinkd_cdc_slot_lag_bytes`, `sinkd_cdc_slot_lag_seconds`, `sinkd_cdc_confirmed_lsn`
//!   {pipeline, slot}; `sinkd_pipeline_running` {pipeline}.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::Ordering;

use super::{Api, error};

/// Installs the process-wide recorder, with buckets for the histograms.
pub fn install() -> Result<PrometheusHandle, String> {
    let latency = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let sizes = [
        1.0, 10.0, 50.0, 100.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0, 50_000.0,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("sinkd_write_seconds".into()), &latency)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full("sinkd_batch_events".into()), &sizes))
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// Renders every metric.
pub async fn render(State(api): State<Api>) -> Response {
    let Some(handle) = &api.metrics else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are not recorded in this process".into(),
        );
    };
    for c in api.roster.sinks() {
        let pipeline = c.name.clone();
        let labels = [("pipeline", pipeline.clone())];
        let s = &c.stats;
        counter!("sinkd_events_consumed_total", &labels)
            .absolute(s.consumed.load(Ordering::Relaxed));
        counter!("sinkd_events_applied_total", &labels).absolute(s.applied.load(Ordering::Relaxed));
        counter!("sinkd_events_dead_lettered_total", &labels)
            .absolute(s.dead_lettered.load(Ordering::Relaxed));
        counter!("sinkd_events_skipped_total", &labels).absolute(s.skipped.load(Ordering::Relaxed));
        counter!("sinkd_batches_total", &labels).absolute(s.batches.load(Ordering::Relaxed));
        let running = matches!(c.state_name(), "running" | "rebuilding");
        gauge!("sinkd_pipeline_running", &labels).set(if running { 1.0 } else { 0.0 });
        if let Ok(partitions) = c.partition_status().await {
            for p in partitions {
                let labels = [
                    ("pipeline", pipeline.clone()),
                    ("topic", p.topic.clone()),
                    ("partition", p.partition.to_string()),
                ];
                if let Some(lag) = p.lag {
                    gauge!("sinkd_partition_lag", &labels).set(lag as f64);
                }
                if let Some(s) = p.staleness_seconds {
                    gauge!("sinkd_partition_staleness_seconds", &labels).set(s);
                }
                if let Some(o) = p.sink_offset {
                    gauge!("sinkd_partition_sink_offset", &labels).set(o as f64);
                }
            }
        }
        let rebuild = c.rebuild_status().map(|r| r.view());
        let active = c.rebuilding();
        gauge!("sinkd_rebuild_active", &labels).set(if active { 1.0 } else { 0.0 });
        if let Some(r) = rebuild {
            gauge!("sinkd_rebuild_events_done", &labels).set(r.events_done as f64);
            gauge!("sinkd_rebuild_events_total", &labels).set(r.events_total as f64);
        }
    }
    for c in api.roster.captures() {
        let labels = [("pipeline", c.name.clone())];
        let s = &c.stats;
        counter!("sinkd_cdc_rows_total", &labels).absolute(s.rows.load(Ordering::Relaxed));
        counter!("sinkd_cdc_records_acknowledged_total", &labels)
            .absolute(s.acknowledged.load(Ordering::Relaxed));
        counter!("sinkd_cdc_dead_lettered_total", &labels)
            .absolute(s.dead_lettered.load(Ordering::Relaxed));
        counter!("sinkd_cdc_transactions_total", &labels)
            .absolute(s.transactions.load(Ordering::Relaxed));
        let running = c.state_name() == "running";
        gauge!("sinkd_pipeline_running", &labels).set(if running { 1.0 } else { 0.0 });
        let slot_labels = [("pipeline", c.name.clone()), ("slot", c.slot.clone())];
        let (view, _) = c.slot_view().await;
        if let Some(b) = view["lag_bytes"].as_f64() {
            gauge!("sinkd_cdc_slot_lag_bytes", &slot_labels).set(b);
        }
        if let Some(t) = view["lag_seconds"].as_f64() {
            gauge!("sinkd_cdc_slot_lag_seconds", &slot_labels).set(t);
        }
        let confirmed = view["confirmed_lsn"].as_str().and_then(pg_lsn);
        if let Some(lsn) = confirmed {
            gauge!("sinkd_cdc_confirmed_lsn", &slot_labels).set(lsn as f64);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

/// `16/B374D848` as a number.
fn pg_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}
