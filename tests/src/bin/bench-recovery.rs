//! Recovery after `kill -9`: how long a restarted sinkd takes from process start to its
//! first committed batch, per sink, while a backlog keeps every writer busy (so the kill
//! lands inside a transaction). Prints a table.
//!
//! A MongoDB writer killed mid-transaction leaves it open on the server; without ending it
//! the successor conflicts until the server expires it. The test server expires them after
//! 5 s; the benchmark sets the server's default (60 s) while it runs, and puts it back.

use std::time::{Duration, Instant};

use clap::Parser;
use sinkd_tests::mongod::set_transaction_lifetime;
use sinkd_tests::scenarios::Setup;
use sinkd_tests::shop;
use sinkd_tests::target::Target;

#[derive(Parser)]
struct Args {
    /// Events in the backlog.
    #[arg(long, default_value_t = 300_000)]
    events: usize,
    /// Kills per sink.
    #[arg(long, default_value_t = 3)]
    kills: usize,
    /// Sinks to measure.
    #[arg(long, value_delimiter = ',', default_value = "postgres,mongodb")]
    sinks: Vec<String>,
    /// Static group membership (`group.instance.id`): the restarted daemon takes its
    /// partitions back without waiting for the group to notice the dead one.
    #[arg(long)]
    static_member: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    println!(
        "recovery after kill -9: {} events backlog, {} kills per sink, {} group membership; \
         time from restart to the first committed batch",
        args.events,
        args.kills,
        if args.static_member {
            "static"
        } else {
            "dynamic"
        }
    );
    println!(
        "| {:<9} | {:>9} | {:>9} | {:>9} |",
        "sink", "best s", "median s", "worst s"
    );
    println!("|{:-<11}|{:->11}|{:->11}|{:->11}|", "", "", "", "");
    for sink in &args.sinks {
        let target = match sink.as_str() {
            "postgres" => Target::postgres(),
            "mongodb" => Target::mongo(),
            other => panic!("unknown sink {other}: postgres or mongodb"),
        };
        let restore = match &target {
            Target::Mongo(url) => Some((url.clone(), set_transaction_lifetime(url, 60).await)),
            _ => None,
        };
        let mut times = measure(&target, &args).await;
        if let Some((url, before)) = restore {
            set_transaction_lifetime(&url, before).await;
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| {:<9} | {:>9.2} | {:>9.2} | {:>9.2} |",
            sink,
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
}

/// Seconds from each restart to the first batch committed after it.
async fn measure(target: &Target, args: &Args) -> Vec<f64> {
    let s = Setup::new(target, "recovery", 8, "").await;
    if args.static_member {
        let text = std::fs::read_to_string(&s.file).expect("pipeline file");
        let text = text.replacen(
            "heartbeat.interval.ms: \"500\"",
            "heartbeat.interval.ms: \"500\"\n      group.instance.id: bench-recovery",
            1,
        );
        std::fs::write(&s.file, text).expect("pipeline file");
    }
    let events = shop::generate(args.events, args.events / 10, 7);
    shop::publish(&s.topic, &events).await;
    let mut daemon = s.start();
    let mut times = Vec::new();
    for kill in 0..args.kills {
        // Let it get going: writers busy, a transaction open most of the time.
        let before = s.applied().await;
        wait_until(Duration::from_secs(120), || async {
            s.applied().await >= before + 20_000
        })
        .await
        .unwrap_or_else(|| panic!("no progress before kill {kill}\n{}", daemon.log()));
        daemon.kill9();
        let stopped = s.applied().await;
        let restarted = Instant::now();
        daemon = s.start();
        wait_until(Duration::from_secs(180), || async {
            s.applied().await > stopped
        })
        .await
        .unwrap_or_else(|| panic!("nothing committed after kill {kill}\n{}", daemon.log()));
        times.push(restarted.elapsed().as_secs_f64());
    }
    daemon.kill9();
    times
}

/// Polls `done` every 20 ms; `None` when `limit` passes first.
async fn wait_until<F, Fut>(limit: Duration, done: F) -> Option<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if done().await {
            return Some(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
