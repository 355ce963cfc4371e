//! Produces the demo shop's events to a topic: `shop-demo --topic shop.orders --events 2000`.

use clap::Parser;
use sinkd_tests::{shop, stack};

#[derive(Parser)]
struct Args {
    /// Topic to produce to (created if absent).
    #[arg(long, default_value = "shop.orders")]
    topic: String,
    /// Number of events.
    #[arg(long, default_value_t = 2_000)]
    events: usize,
    /// Number of distinct orders.
    #[arg(long, default_value_t = 200)]
    keys: usize,
    /// Partitions of a new topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Seed of the event stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    stack::create_topic_if_absent(&args.topic, args.partitions).await;
    stack::create_topic_if_absent(&format!("{}.dlq", args.topic), 1).await;
    let events = shop::generate(args.events, args.keys, args.seed);
    let ends = shop::publish(&args.topic, &events).await;
    let expected = shop::expected(&events);
    let mut counts = std::collections::BTreeMap::new();
    for e in &events {
        *counts.entry(format!("{:?}", e.kind)).or_insert(0) += 1;
    }
    // The topic may hold an earlier run's events too: report where it ends.
    let total = stack::topic_end(&args.topic, args.partitions).max(ends.values().sum());
    println!(
        "produced {} events to {} ({counts:?}); this run alone leaves {} orders; records_in_topic={total}",
        events.len(),
        args.topic,
        expected.len()
    );
}
