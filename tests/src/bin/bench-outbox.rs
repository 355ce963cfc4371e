//! The capture benchmark: 1M outbox rows already committed in PostgreSQL (the slot was
//! created first), then the real `sinkd` binary captures them into Kafka as registered
//! Avro records. Reports changes/s from the daemon's start until the broker acknowledged
//! the last record, and the daemon's peak RSS. Run it with `./bench outbox`.

use std::time::{Duration, Instant};

use clap::Parser;
use sinkd_tests::control::TOKEN;
use sinkd_tests::daemon::{Daemon, Workdir};
use sinkd_tests::{outbox, stack};

#[derive(Parser)]
struct Args {
    /// Outbox rows.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Distinct aggregate ids.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Rows per source transaction.
    #[arg(long, default_value_t = 1_000)]
    txn: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
}

async fn applied(http: &reqwest::Client, listen: &str, name: &str) -> u64 {
    let r = http
        .get(format!("http://{listen}/pipelines/{name}"))
        .bearer_auth(TOKEN)
        .send()
        .await;
    match r {
        Ok(r) => r
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["counts"]["applied"].as_u64())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let id = stack::unique("bench").replace('-', "_").to_lowercase();
    let name = id.replace('_', "-");
    let slot = format!("sinkd_{id}");
    let table = format!("outbox_{id}");
    let aggregate = format!("order_{id}");
    let topic = format!("outbox.{aggregate}");
    let dir = Workdir::new(&format!("bench-{id}"));
    let pg = stack::pg().await;
    outbox::create_table(&pg, &table).await;
    stack::create_topic(&topic, args.partitions).await;
    let file = outbox::capture_file(&dir, &name, &table, "");
    let log = dir.0.join("sinkd.log");
    let listen = format!("127.0.0.1:{}", stack::free_port());
    let env = [("SINKD_API_TOKEN", TOKEN)];

    // The slot must exist before the rows are written: start once, then stop.
    let mut daemon = Daemon::start_with_env(&file, &log, &listen, &env);
    outbox::wait_streaming(&pg, &slot, || {
        std::fs::read_to_string(&log).unwrap_or_default()
    })
    .await;
    daemon.terminate(Duration::from_secs(20));

    eprintln!(
        "writing {} outbox rows in transactions of {}…",
        args.rows, args.txn
    );
    let t = Instant::now();
    let mut first = 0;
    while first < args.rows {
        let last = (first + args.txn).min(args.rows) - 1;
        pg.batch_execute(&format!(
            "INSERT INTO {table} (aggregatetype, aggregateid, type, payload, tenant)
             SELECT '{aggregate}', 'agg-' || (g % {keys}),  'OrderPlaced',
                    jsonb_build_object('order_id', 'agg-' || (g % {keys}), 'customer',
                                       'customer-' || g, 'total_cents', g,
                                       'note', 'a note of some forty characters, give or take'),
                    't1'
             FROM generate_series({first}, {last}) g",
            keys = args.keys
        ))
        .await
        .expect("insert");
        first = last + 1;
    }
    let write_s = t.elapsed().as_secs_f64();
    let wal: String = pg
        .query_one(
            "SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)) \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("slot")
        .get(0);

    eprintln!("capturing with sinkd…");
    let http = reqwest::Client::new();
    let t = Instant::now();
    let mut daemon = Daemon::start_with_env(&file, &log, &listen, &env);
    let pid = daemon.pid();
    let mut peak_kib = 0;
    loop {
        peak_kib = peak_kib.max(sinkd_tests::daemon::proc_status_kib(pid, "VmHWM").unwrap_or(0));
        if applied(&http, &listen, &name).await >= args.rows as u64 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(900),
            "not done after 15 minutes\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let capture_s = t.elapsed().as_secs_f64();
    peak_kib = peak_kib.max(sinkd_tests::daemon::proc_status_kib(pid, "VmHWM").unwrap_or(0));
    let acknowledged = applied(&http, &listen, &name).await;
    daemon.terminate(Duration::from_secs(30));

    println!();
    println!("| measure (PostgreSQL outbox → Kafka) | value |");
    println!("|---|---|");
    println!(
        "| outbox rows (transactions of {}) | {} written in {write_s:.1} s; {wal} of WAL behind the slot |",
        args.txn, args.rows
    );
    println!(
        "| **capture: daemon start → last record acknowledged** | **{capture_s:.1} s, {:.0} changes/s** |",
        args.rows as f64 / capture_s
    );
    // Counted by the daemon from delivery reports: Tansu's ListOffsets under-reports
    // the end of a partition after batched produce (TEST-STACK.md).
    println!(
        "| records acknowledged by the broker ({} partitions) | {acknowledged} |",
        args.partitions
    );
    println!("| sinkd peak RSS | {:.1} MiB |", peak_kib as f64 / 1024.0);
    println!("| Debezium on Kafka Connect (Conduit's published benchmark) | about 45,000 msg/s |");
    outbox::drop_capture(&pg, &slot, &table).await;
}
