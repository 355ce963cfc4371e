//! The sink conformance scenarios on a real PostgreSQL.

use sinkd_core::sink::Target;
use sinkd_postgres::PostgresSink;
use sinkd_postgres::PostgresSinkConfig;
use sinkd_tests::{conformance, stack};

fn config(table: &str) -> PostgresSinkConfig {
    serde_json::from_value(serde_json::json!({
        "url": stack::postgres_url(),
        "table": table,
    }))
    .expect("config")
}

/// A table of its own, keyed by `id`.
struct Table(String, PostgresSinkConfig);

impl Table {
    fn new(prefix: &str) -> Table {
        let name = stack::unique(prefix);
        let cfg = config(&name);
        Table(name, cfg)
    }
}

impl conformance::Subject for Table {
    type Sink = PostgresSink;

    fn name(&self) -> &str {
        &self.0
    }

    fn sink(&self, pipeline: &str) -> PostgresSink {
        let tables = [(self.1.table.clone(), vec!["id".to_owned()])];
        PostgresSink::new(&self.1, pipeline, &tables, Target::Live)
    }

    async fn counter(&self, key: &'static str) -> Option<i64> {
        let pg = stack::pg().await;
        let sql = format!("SELECT counter FROM \"{}\" WHERE id = $1", self.0);
        let row = pg.query_opt(&sql, &[&key]).await.ok().flatten();
        row.and_then(|r| r.get::<_, Option<i64>>(0))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_with_a_stale_checkpoint_is_fenced_and_applies_nothing() {
    conformance::fencing(&Table::new("fence")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_after_an_offset_reset_is_skipped_by_row_guards() {
    conformance::replay_is_guarded(&Table::new("guard")).await;
}

/// The live table's indexes, by name, with their OIDs and definitions.
async fn indexes_of(pg: &tokio_postgres::Client, table: &str) -> Vec<(String, u32, String)> {
    pg.query(
        "SELECT c.relname::text, c.oid, pg_get_indexdef(c.oid) FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = $1::text::regclass ORDER BY 1",
        &[&format!("public.\"{table}\"")],
    )
    .await
    .expect("indexes")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_swap_renames_the_indexes_built_before_it_and_builds_only_later_ones() {
    use sinkd_core::sink::TargetAdmin;
    use sinkd_postgres::admin::{PgAdmin, shadow_table};
    // Capitals make every name need quoting, as pg_get_indexdef writes it.
    let table = format!("{}_Orders", stack::unique("idx"));
    let shadow = shadow_table(&table);
    let pg = stack::pg().await;
    pg.batch_execute(&format!(
        "CREATE TABLE \"{table}\" (id text PRIMARY KEY, customer text, status text);
         CREATE TABLE \"{shadow}\" (id text PRIMARY KEY, customer text, status text);
         INSERT INTO \"{shadow}\" SELECT 'o' || i, 'c' || (i % 7), 's' || (i % 3)
             FROM generate_series(1, 500) i;
         CREATE INDEX \"{table}_by_customer\" ON \"{table}\" (customer);
         CREATE UNIQUE INDEX \"{table}_Odd\" ON \"{table}\" (lower(id)) INCLUDE (customer)
             WHERE status <> 'x';
         CREATE INDEX \"{table}_gone\" ON \"{table}\" (status);"
    ))
    .await
    .expect("tables");
    let live_before = indexes_of(&pg, &table).await;
    let admin = PgAdmin::new(&config(&table), &table, &[]);

    admin.prepare_swap().await.expect("prepare");
    let copies = indexes_of(&pg, &shadow).await;
    let built: Vec<&String> = copies
        .iter()
        .filter(|(n, _, _)| n.starts_with("sinkd_shadow_idx_"))
        .map(|(_, _, def)| def)
        .collect();
    assert_eq!(built.len(), 3, "a copy of each secondary index: {copies:?}");
    for def in built {
        assert!(def.contains(&format!("ON public.\"{shadow}\"")), "{def}");
    }
    // Built again (say by a retried rebuild step), nothing changes.
    admin.prepare_swap().await.expect("prepare again");
    assert_eq!(indexes_of(&pg, &shadow).await, copies);

    // The user changes the live table's indexes after the copies were built.
    pg.batch_execute(&format!(
        "CREATE INDEX \"{table}_by_status\" ON \"{table}\" (status, customer);
         DROP INDEX \"{table}_gone\";"
    ))
    .await
    .expect("later index changes");
    admin.swap_in_shadow().await.expect("swap");

    let after = indexes_of(&pg, &table).await;
    let mut names: Vec<&str> = after.iter().map(|(n, _, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            format!("{table}_Odd"),
            format!("{table}_by_customer"),
            format!("{table}_by_status"),
            format!("{table}_pkey"),
        ],
        "the user's indexes under their names, the stale copy dropped"
    );
    for (name, oid, def) in &after {
        if let Some((_, _, old_def)) = live_before.iter().find(|(n, _, _)| n == name) {
            assert_eq!(def, old_def, "{name} is defined as on the old table");
            assert!(
                copies.iter().any(|(_, copy_oid, _)| copy_oid == oid),
                "{name} is the copy built before the swap (renamed, not built again)"
            );
        }
    }
    let rows: i64 = pg
        .query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 500);
    pg.batch_execute(&format!("DROP TABLE \"{table}\""))
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_ticket_lives_with_its_shadow_table() {
    use sinkd_core::sink::TargetAdmin;
    use sinkd_postgres::admin::{PgAdmin, shadow_table};
    let table = stack::unique("ticket");
    let admin = PgAdmin::new(&config(&table), &table, &[]);
    let pg = stack::pg().await;
    admin.set_shadow_ticket("t-1").await.expect("ticket");
    assert_eq!(
        admin.shadow_ticket().await.expect("read"),
        None,
        "no shadow table (never written, or dropped by hand): nothing to resume"
    );
    pg.batch_execute(&format!(
        "CREATE TABLE \"{}\" (id text PRIMARY KEY)",
        shadow_table(&table)
    ))
    .await
    .expect("shadow");
    assert_eq!(admin.shadow_ticket().await.unwrap().as_deref(), Some("t-1"));
    admin.set_shadow_ticket("t-2").await.expect("replaced");
    assert_eq!(admin.shadow_ticket().await.unwrap().as_deref(), Some("t-2"));
    admin.drop_shadow().await.expect("drop");
    let left: i64 = pg
        .query_one(
            "SELECT count(*) FROM sinkd_rebuilds WHERE pipeline = $1",
            &[&table],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "dropping the shadow removes its ticket");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_paused_inside_a_transaction_loses_it_and_its_locks() {
    use conformance::Subject;
    use sinkd_core::sink::Sink;
    use std::time::{Duration, Instant};
    let t = Table::new("paused");
    let topic = format!("{}.t", t.name());
    let mut a = t.sink("p");
    a.open().await.expect("open");
    conformance::increment(&mut a, &topic, "k1", 5, 0)
        .await
        .expect("A writes");
    // A pauses (SIGSTOP, a frozen VM) inside its next transaction, begun the way sinkd
    // begins them: the checkpoint row is locked, nothing committed.
    let mut paused = sinkd_postgres::checkpoint::connect(&stack::postgres_url())
        .await
        .expect("connect");
    let tx = sinkd_postgres::checkpoint::begin(&mut paused)
        .await
        .expect("begin");
    tx.execute(
        "UPDATE sinkd_offsets SET next_offset = 2 WHERE pipeline = 'p' AND topic = $1",
        &[&topic],
    )
    .await
    .expect("the paused writer's update");
    // B took the partition over: its write waits on A's lock until the server ends A's
    // idle transaction (15 s), then goes through.
    let mut b = t.sink("p");
    b.open().await.expect("open");
    let start = Instant::now();
    conformance::increment(&mut b, &topic, "k1", 7, 1)
        .await
        .expect("B writes");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(t.counter("k1").await, Some(12));
    assert!(tx.commit().await.is_err(), "A's transaction was ended");
}
