//! The PostgreSQL benchmark: 1M shop events (~200 bytes, 100k keys, 8 partitions) through
//! the real `sinkd` binary into PostgreSQL, beside a COPY of the same final rows into an
//! empty table on the same server. Run it with `./bench` (release build, durable server).

use std::time::{Duration, Instant};

use clap::Parser;
use futures::{SinkExt, StreamExt};
use sinkd_tests::daemon::{Daemon, Workdir};
use sinkd_tests::{shop, stack};

#[derive(Parser)]
struct Args {
    /// Events to produce.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Partitions.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Approximate value size in bytes.
    #[arg(long, default_value_t = 200)]
    value_bytes: usize,
    /// Events per batch (sink transaction).
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let name = stack::unique("bench");
    let topic = format!("{name}.orders");
    stack::create_topic(&topic, args.partitions).await;

    eprintln!("generating {} events over {} keys…", args.events, args.keys);
    let mut events = shop::generate(args.events, args.keys, 2026);
    shop::pad(&mut events, args.value_bytes);
    let ids = shop::register_schemas(&topic).await;
    let records = shop::records(&ids, &events);
    let bytes: usize = records
        .iter()
        .map(|r| r.value.as_ref().map_or(0, Vec::len))
        .sum();
    let avg = bytes / records.len().max(1);
    eprintln!("producing ({avg} bytes per value on average)…");
    let produce_start = Instant::now();
    let ends = stack::produce(&topic, records).await;
    let produce_secs = produce_start.elapsed().as_secs_f64();

    let dir = Workdir::new(&name);
    let extra = format!("batch:\n  max_events: {}\n  max_wait_ms: 200\n", args.batch);
    let file = dir.file(
        "pipeline.yaml",
        &shop::pipeline_yaml(&name, &topic, &name, &extra),
    );
    let pg = stack::pg().await;
    eprintln!("running sinkd…");
    let start = Instant::now();
    let mut daemon = Daemon::start(&file, &dir.0.join("sinkd.log"));
    let pid = daemon.pid();
    stack::wait_caught_up(&pg, &name, &ends, Duration::from_secs(1800))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let sinkd_secs = start.elapsed().as_secs_f64();
    let rss = peak_rss_kib(pid).unwrap_or(0);
    daemon.terminate(Duration::from_secs(30));
    let kept_log = std::env::temp_dir().join("sinkd-bench.log");
    let _ = std::fs::copy(dir.0.join("sinkd.log"), &kept_log);

    let got = stack::read_orders(&pg, &name).await;
    let want = shop::expected(&events);
    let exact = got == want;

    // COPY the same final rows into an empty table of the same shape.
    let copy_table = format!("{name}_copy");
    pg.batch_execute(&format!(
        "CREATE TABLE \"{copy_table}\" (LIKE \"{name}\" INCLUDING ALL)"
    ))
    .await
    .expect("copy table");
    let mut dump = Vec::new();
    let out = pg
        .copy_out(&format!("COPY \"{name}\" TO STDOUT (FORMAT binary)"))
        .await
        .expect("copy out");
    futures::pin_mut!(out);
    while let Some(chunk) = out.next().await {
        dump.push(chunk.expect("chunk"));
    }
    let copy_start = Instant::now();
    let sink = pg
        .copy_in::<_, bytes::Bytes>(&format!("COPY \"{copy_table}\" FROM STDIN (FORMAT binary)"))
        .await
        .expect("copy in");
    futures::pin_mut!(sink);
    for chunk in dump {
        sink.send(chunk).await.expect("send");
    }
    let copied = sink.finish().await.expect("copy finished");
    let copy_secs = copy_start.elapsed().as_secs_f64();

    let fsync: String = pg.query_one("SHOW fsync", &[]).await.unwrap().get(0);
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| events (avg value bytes) | {} ({avg}) |", args.events);
    println!(
        "| keys / partitions / batch | {} / {} / {} |",
        args.keys, args.partitions, args.batch
    );
    println!(
        "| produce rate (broker, for context) | {:.0} events/s |",
        args.events as f64 / produce_secs
    );
    println!(
        "| **sinkd end to end** | **{:.0} events/s** ({sinkd_secs:.1} s, incl. group join) |",
        args.events as f64 / sinkd_secs
    );
    println!("| sinkd peak RSS | {:.1} MiB |", rss as f64 / 1024.0);
    println!("| final rows (table exact: {exact}) | {} |", got.len());
    println!(
        "| COPY of the final rows into an empty table | {:.0} rows/s ({copied} rows in {copy_secs:.2} s) |",
        copied as f64 / copy_secs
    );
    println!("| PostgreSQL fsync | {fsync} |");
    println!("\nsinkd's log: {}", kept_log.display());
    if !exact {
        eprintln!("the table differs from the expected state");
        std::process::exit(1);
    }
    pg.batch_execute(&format!(
        "DROP TABLE \"{name}\"; DROP TABLE \"{copy_table}\""
    ))
    .await
    .ok();
}
