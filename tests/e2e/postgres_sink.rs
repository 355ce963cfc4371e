//! The sink conformance scenarios on a real PostgreSQL.

use sinkd_core::config::PostgresSinkConfig;
use sinkd_core::sink::Target;
use sinkd_postgres::PostgresSink;
use sinkd_tests::{conformance, stack};

fn config(table: &str) -> PostgresSinkConfig {
    serde_json::from_value(serde_json::json!({
        "url": stack::postgres_url(),
        "table": table,
    }))
    .expect("config")
}

async fn counter(table: String, key: &'static str) -> Option<i64> {
    let pg = stack::pg().await;
    pg.query_opt(
        &format!("SELECT counter FROM \"{table}\" WHERE id = $1"),
        &[&key],
    )
    .await
    .ok()
    .flatten()
    .and_then(|r| r.get::<_, Option<i64>>(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_with_a_stale_checkpoint_is_fenced_and_applies_nothing() {
    let name = stack::unique("fence");
    let cfg = config(&name);
    let key = vec!["id".to_owned()];
    conformance::fencing(
        &format!("{name}.t"),
        || PostgresSink::new(&cfg, &name, &key, Target::Live),
        |k| counter(name.clone(), k),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_after_an_offset_reset_is_skipped_by_row_guards() {
    let name = stack::unique("guard");
    let cfg = config(&name);
    let key = vec!["id".to_owned()];
    conformance::replay_is_guarded(
        &format!("{name}.t"),
        |pipeline| PostgresSink::new(&cfg, &format!("{name}-{pipeline}"), &key, Target::Live),
        |k| counter(name.clone(), k),
    )
    .await;
}
