//! Child rows end to end (`targets` and `also:`), with the real `sinkd` binary on
//! PostgreSQL and MongoDB: orders with item arrays, line additions, status updates and
//! cancels give exactly the `orders` and `order_lines` computed independently in
//! [`sinkd_tests::lines`], across six `kill -9`s mid-run (increments included), and a
//! swap rebuild replaces both targets together (on PostgreSQL no reader ever sees one
//! rebuilt and the other not); and a replay of the whole log from offset zero changes
//! nothing. Routed by tenant (`{table}_{tenant}`), the same
//! stream fills three tables of each.

use std::time::{Duration, Instant};

use sinkd_tests::control::Api;
use sinkd_tests::lines;
use sinkd_tests::scenarios::{self, Setup};
use sinkd_tests::target::Target;

/// A pipeline of the lines stream writing `<table>` and `<table>_lines`; with `routed`,
/// `<table>_{tenant}` and `<table>_lines_{tenant}` for the three tenants.
async fn setup_routed(target: &Target, name: &str, routed: bool) -> (Setup, String) {
    let s = Setup::new(target, name, 4, scenarios::BATCHES_OF_1000).await;
    let lines_target = format!("{}_lines", s.table);
    let mut text = std::fs::read_to_string(&s.file).unwrap();
    let lines_name = if routed {
        // The sink's own table and the child table, one per tenant.
        text = text.replace(
            &format!("{}\n", target_line(target, &s.table)),
            &format!(
                "{}\n",
                target_line(target, &format!("\"{}_{{tenant}}\"", s.table))
            ),
        );
        text = text.replace(
            "events:\n",
            &format!(
                "routing:\n  tenant: [{}]\nevents:\n",
                lines::TENANTS.join(", ")
            ),
        );
        format!("\"{lines_target}_{{tenant}}\"")
    } else {
        lines_target.clone()
    };
    let start = text.find("events:\n").unwrap();
    let end_marker = "  com.shop.OrderCancelled:\n    op: delete\n";
    let end = text.find(end_marker).unwrap() + end_marker.len();
    let yaml = format!(
        "{}{}{}",
        &text[..start],
        lines::RULES.replace("{lines}", &lines_name),
        &text[end..]
    );
    std::fs::write(&s.file, yaml).unwrap();
    (s, lines_target)
}

/// A pause of 300 to 1,300 ms, so the kills land at different points of the work.
fn rand_ms() -> u64 {
    300 + u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_millis(),
    )
}

async fn setup(target: &Target, name: &str) -> (Setup, String) {
    setup_routed(target, name, false).await
}

/// The line of the sink section naming the table or collection.
fn target_line(target: &Target, name: &str) -> String {
    match target {
        Target::Postgres(_) => format!("    table: {name}"),
        _ => format!("    collection: {name}"),
    }
}

async fn routed_by_tenant_after_kills(target: Target) {
    let (s, lines_target) = setup_routed(&target, "routed", true).await;
    let events = lines::generate(12_000, 600, 31);
    let ends = lines::publish(&s.topic, &events).await;
    let daemon = s.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.applied().await == 0 {
        assert!(Instant::now() < deadline, "no progress\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut daemon = daemon;
    for _ in 0..3 {
        daemon.kill9();
        daemon = s.start();
        tokio::time::sleep(Duration::from_millis(rand_ms())).await;
    }
    s.caught_up(&ends, &daemon).await;
    let want = lines::expected(&events);
    for tenant in lines::TENANTS {
        let got = lines::read(
            &target,
            &format!("{}_{tenant}", s.table),
            &format!("{lines_target}_{tenant}"),
        )
        .await;
        let want = want.of_tenant(tenant);
        assert!(!want.orders.is_empty(), "{tenant} has orders");
        assert_eq!(got.orders, want.orders, "orders of {tenant}");
        assert_eq!(got.lines, want.lines, "lines of {tenant}");
    }
}

async fn exact_after_kills(target: Target, kills: usize) {
    let (s, lines_target) = setup(&target, "lines").await;
    let events = lines::generate(20_000, 800, 23);
    let ends = lines::publish(&s.topic, &events).await;
    let mut daemon = s.kill9_while_progressing(s.start(), kills).await;
    s.caught_up(&ends, &daemon).await;
    let want = lines::expected(&events);
    assert!(
        want.lines.len() > 500 && want.orders.len() > 200,
        "the stream keeps lines"
    );
    let got = lines::read(&target, &s.table, &lines_target).await;
    assert_eq!(got.orders, want.orders, "orders after {kills} kills");
    assert_eq!(got.lines, want.lines, "order lines after {kills} kills");

    // Replay everything from offset zero: row guards skip what is there, and what a later
    // delete removed is removed again by the time the replay ends.
    daemon.kill9();
    forget_checkpoints(&target, &s.pipeline).await;
    let daemon = s.start();
    s.caught_up(&ends, &daemon).await;
    let got = lines::read(&target, &s.table, &lines_target).await;
    assert_eq!(
        got.orders, want.orders,
        "orders after a replay from offset zero"
    );
    assert_eq!(
        got.lines, want.lines,
        "order lines after a replay from offset zero"
    );
}

/// Deletes a pipeline's checkpoints in the sink, so it starts again from the beginning.
async fn forget_checkpoints(target: &Target, pipeline: &str) {
    match target {
        Target::Postgres(_) => {
            sinkd_tests::stack::pg()
                .await
                .execute(
                    "DELETE FROM sinkd_offsets WHERE pipeline = $1",
                    &[&pipeline],
                )
                .await
                .unwrap();
        }
        Target::Mongo(url) => {
            use mongodb::bson::{Document, doc};
            Target::mongo_db(url)
                .await
                .collection::<Document>("sinkd_offsets")
                .delete_many(doc! { "_id.pipeline": pipeline })
                .await
                .unwrap();
        }
        Target::Tantivy(_) => unreachable!(),
    }
}

async fn a_swap_rebuild_replaces_both_targets(target: Target) {
    let (s, lines_target) = setup(&target, "lines-rebuild").await;
    let events = lines::generate(6_000, 300, 29);
    let ends = lines::publish(&s.topic, &events).await;
    let api = Api::start(&s, &[]).await;
    s.caught_up(&ends, &api.daemon).await;
    let want = lines::expected(&events);
    // Tamper with both targets: a rebuild from the log must put both back.
    match &target {
        Target::Postgres(_) => {
            let pg = sinkd_tests::stack::pg().await;
            pg.batch_execute(&format!(
                "DELETE FROM \"{lines_target}\"; UPDATE \"{}\" SET status = 'tampered'",
                s.table
            ))
            .await
            .unwrap();
        }
        Target::Mongo(url) => {
            let db = Target::mongo_db(url).await;
            use mongodb::bson::{Document, doc};
            db.collection::<Document>(&lines_target)
                .delete_many(doc! {})
                .await
                .unwrap();
            db.collection::<Document>(&s.table)
                .update_many(doc! {}, doc! { "$set": { "status": "tampered" } })
                .await
                .unwrap();
        }
        Target::Tantivy(_) => unreachable!(),
    }
    // PostgreSQL swaps both tables in one transaction: a reader's snapshot shows both old
    // (tampered: no lines) or both rebuilt, never one of each.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let reader = matches!(target, Target::Postgres(_)).then(|| {
        let (orders, lines) = (s.table.clone(), lines_target.clone());
        tokio::spawn(async move {
            let pg = sinkd_tests::stack::pg().await;
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM \"{orders}\" WHERE status = 'tampered'), \
                 EXISTS (SELECT 1 FROM \"{lines}\")"
            );
            let mut reads = 0;
            while !*stopped.borrow() {
                if let Ok(row) = pg.query_one(&sql, &[]).await {
                    let (tampered, has_lines): (bool, bool) = (row.get(0), row.get(1));
                    assert_ne!(tampered, has_lines, "one table rebuilt and the other not");
                    reads += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            reads
        })
    });
    api.rebuild_to_done(&s.pipeline, Duration::from_secs(120))
        .await;
    let _ = stop.send(true);
    if let Some(reader) = reader {
        assert!(
            reader.await.expect("reader") > 10,
            "the reader read during the rebuild"
        );
    }
    let got = lines::read(&target, &s.table, &lines_target).await;
    assert_eq!(got.orders, want.orders, "orders after the rebuild");
    assert_eq!(got.lines, want.lines, "order lines after the rebuild");
    assert!(!target.shadow_exists(&s.table).await);
    assert!(!target.shadow_exists(&lines_target).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_orders_and_lines_are_exact_after_kills() {
    exact_after_kills(Target::postgres(), 6).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mongodb_orders_and_lines_are_exact_after_kills() {
    exact_after_kills(Target::mongo(), 6).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_routing_by_tenant_fills_three_tables_of_each_exactly() {
    routed_by_tenant_after_kills(Target::postgres()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mongodb_routing_by_tenant_fills_three_collections_of_each_exactly() {
    routed_by_tenant_after_kills(Target::mongo()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_swap_rebuild_replaces_orders_and_lines_together() {
    a_swap_rebuild_replaces_both_targets(Target::postgres()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mongodb_swap_rebuild_replaces_orders_and_lines_together() {
    a_swap_rebuild_replaces_both_targets(Target::mongo()).await;
}
