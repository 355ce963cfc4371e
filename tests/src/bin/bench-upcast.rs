//! The upcaster benchmark: events per second through the pipeline's own decode (Confluent
//! frame, writer schema from the registry cache, Avro datum), identity, an upcaster chain
//! and projection, on one thread, without a sink. Every event is an `OrderPlaced` v1, so
//! every event runs the whole chain. Run it with `./bench upcast` (release build).
//!
//! Rows: decode alone; decode + projection (no chain); decode + a 3-step chain (rename,
//! convert, rename: one step per version) + projection; the same with a CEL compute as
//! the middle step; decode + the example pipeline's 13-step chain (two CEL expressions,
//! nested moves) + projection. Then the cost of computed projections: decode + five
//! columns copied by name, beside decode + the same five columns where three are CEL
//! expressions and the rule has a `when` condition; and for orders carrying three items,
//! copy-by-name (the items as one JSON column) beside computed totals + a delete of the
//! old lines + one child row per item (`also:` with `for_each`).

use std::sync::Arc;
use std::time::Instant;

use apache_avro::types::Value;
use clap::Parser;
use sinkd_core::config::KeyFormat;
use sinkd_core::decode::Decoder;
use sinkd_core::event::{RawRecord, SourcePosition};
use sinkd_core::transform::Transform;
use sinkd_kafka::{AvroEventDecoder, Registry};
use sinkd_tests::evolution::{self, Writer};
use sinkd_tests::stack;

#[derive(Parser)]
struct Args {
    /// Events per round.
    #[arg(long, default_value_t = 500_000)]
    events: usize,
    /// Rounds per row: the table shows the median and the best round, as one round on a
    /// shared 2-core VM varies by ±15 %.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Run only this row (1-7), for profiling.
    #[arg(long)]
    only: Option<usize>,
}

/// The 3-step chain without an expression: one declarative step per version.
const THREE_STEPS_DECLARATIVE: &str = r#"
upcasters:
  com.shop.OrderPlaced:
    chain:
      - from: 1
        steps: [ { rename: { from: amount, to: amount_eur } } ]
      - from: 2
        steps: [ { convert: { field: amount_eur, to: long, multiply: 100 } } ]
      - from: 3
        steps: [ { rename: { from: amount_eur, to: total_cents } } ]
"#;

/// The 3-step chain: one step per version, one of them a CEL expression.
const THREE_STEPS: &str = r#"
upcasters:
  com.shop.OrderPlaced:
    chain:
      - from: 1
        steps: [ { rename: { from: amount, to: amount_eur } } ]
      - from: 2
        steps: [ { compute: { field: total_cents, type: long, expr: "math.round(amount_eur * 100.0)" } } ]
      - from: 3
        steps: [ { drop: amount_eur } ]
"#;

/// Five columns copied by name (no chain: the v1 fields).
const COPIED: &str = r#"events:
  com.shop.OrderPlaced:
    op: upsert
    columns: {customer: customer, status: status, amount: amount, note: note, placed_at_ms: placed_at_ms}
"#;

/// The same five columns, three computed, behind a condition.
const COMPUTED: &str = r#"events:
  com.shop.OrderPlaced:
    - when: "amount >= 0.0"
      op: upsert
      columns:
        customer: customer
        status: "status.upperAscii()"
        total_cents: "int(math.round(amount * 100.0))"
        note: "note != null ? note : ''"
        placed_at_ms: placed_at_ms
    - op: delete
"#;

/// Orders with items, copied by name.
const ITEMS_COPIED: &str = r#"events:
  com.shop.OrderOpened:
    op: upsert
    columns: {customer: customer, tenant: tenant, items: items}
"#;

/// Orders with items: computed totals and one child row per item.
const ITEMS_CHILD_ROWS: &str = r#"events:
  com.shop.OrderOpened:
    op: upsert
    columns:
      customer: customer
      item_count: "items.map(i, i.qty).sum()"
      total_cents: "items.map(i, i.qty * i.price_cents).sum()"
    also:
      - {target: order_lines, op: delete, key: {order_id: order_id}}
      - target: order_lines
        for_each: items
        op: upsert
        key: {order_id: order_id, line_no: index}
        columns: {sku: item.sku, qty: item.qty, price_cents: item.price_cents}
targets:
  order_lines: {key: [order_id, line_no]}
"#;

/// The example with its `events` section replaced and no upcasters.
fn with_events(example: &str, events: &str) -> String {
    let start = example.find("\nevents:").unwrap() + 1;
    let end = example[start..]
        .find("\n\n")
        .map_or(example.len(), |i| start + i + 1);
    let chainless = format!("{}{events}{}", &example[..start], &example[end..]);
    let (a, b) = (
        chainless.find("upcasters:").unwrap(),
        chainless.find("\nevents:").unwrap(),
    );
    format!(
        "{}upcasters: {{}}\n{}",
        &chainless[..a],
        &chainless[b + 1..]
    )
}

fn transform(example: &str, chain: Option<&str>) -> Transform {
    let yaml = match chain {
        None => example.to_owned(),
        Some(chain) => {
            let (start, end) = (
                example.find("upcasters:").unwrap(),
                example.find("\nevents:").unwrap(),
            );
            format!(
                "{}{}{}",
                &example[..start],
                chain.trim_start(),
                &example[end..]
            )
        }
    };
    let p = sinkd_core::config::load::parse_str(
        std::path::Path::new("bench.yaml"),
        &yaml,
        &Default::default(),
        &sinkd_connectors::connectors(),
    )
    .expect("bench pipeline parses");
    Transform::new(&p).expect("bench pipeline compiles")
}

fn main() {
    let args = Args::parse();
    // One thread: the figure is per core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let topic = stack::unique("bench-upcast");
    let registered = evolution::register(&topic).await;
    let registry = Registry::new(&sinkd_core::config::RegistryConfig {
        url: stack::registry_url(),
        basic_auth: None,
        bearer_token: None,
        timeout_ms: 10_000,
    })
    .unwrap();
    let decoder = AvroEventDecoder::new(Arc::new(registry), KeyFormat::String);
    let topic: Arc<str> = Arc::from(topic.as_str());
    let s = |v: String| Value::String(v);
    let raws: Vec<RawRecord> = (0..args.events)
        .map(|i| {
            let id = format!("order-{:06}", i % 100_000);
            let value = Value::Record(vec![
                ("order_id".into(), s(id.clone())),
                ("customer".into(), s(format!("customer-{}", i % 1000))),
                ("status".into(), s("new".into())),
                (
                    "placed_at_ms".into(),
                    Value::Long(1_700_000_000_000 + i as i64),
                ),
                ("amount".into(), Value::Double((i % 100_000) as f64 / 100.0)),
                (
                    "note".into(),
                    Value::Union(1, Box::new(s(format!("note {i}")))),
                ),
            ]);
            RawRecord {
                position: SourcePosition {
                    topic: topic.clone(),
                    partition: 0,
                    offset: i as i64,
                },
                timestamp_ms: None,
                key: Some(id.into_bytes()),
                value: Some(registered.encode(Writer::PlacedV1, &value)),
                headers: Vec::new(),
            }
        })
        .collect();
    let bytes: usize = raws.iter().map(|r| r.value.as_ref().unwrap().len()).sum();
    let example = evolution::pipeline_yaml("bench", &topic, "bench");
    let copied = with_events(&example, COPIED);
    let computed = with_events(&example, COMPUTED);
    let rows: [(&str, Option<Transform>); 7] = [
        ("decode only", None),
        (
            "decode + projection (no chain)",
            Some(transform(&example, Some("upcasters: {}\n"))),
        ),
        (
            "decode + 3-step chain + projection",
            Some(transform(&example, Some(THREE_STEPS_DECLARATIVE))),
        ),
        (
            "decode + 3-step chain with CEL + projection",
            Some(transform(&example, Some(THREE_STEPS))),
        ),
        (
            "decode + example 13-step chain + projection",
            Some(transform(&example, None)),
        ),
        (
            "decode + 5 columns copied by name",
            Some(transform(&copied, None)),
        ),
        (
            "decode + 5 columns, 3 computed, `when` rule",
            Some(transform(&computed, None)),
        ),
    ];
    // Warm the registry caches so no row pays for HTTP.
    decoder.decode(&raws[0]).await.expect("decodes");

    println!(
        "upcaster benchmark: {} OrderPlaced v1 events (avg {} bytes) x {} rounds, one thread, no sink",
        raws.len(),
        bytes / raws.len(),
        args.rounds
    );
    header();
    for (i, (label, transform)) in rows.into_iter().enumerate() {
        if args.only.is_some_and(|only| only != i + 1) {
            continue;
        }
        row(label, args.rounds, &raws, &decoder, transform.as_ref()).await;
    }

    items_rows(&args, &topic, &decoder, &example).await;
}

/// The child-row rows: OrderOpened events with three items each.
async fn items_rows(args: &Args, topic: &Arc<str>, decoder: &AvroEventDecoder, example: &str) {
    let schema = apache_avro::Schema::parse_str(sinkd_tests::lines::ORDER_OPENED).unwrap();
    let id = stack::register(
        &format!("{topic}-com.shop.OrderOpened"),
        sinkd_tests::lines::ORDER_OPENED,
    )
    .await;
    let s = |v: String| Value::String(v);
    let raws: Vec<RawRecord> = (0..args.events)
        .map(|i| {
            let order_id = format!("order-{:06}", i % 100_000);
            let item = |n: usize| {
                Value::Record(vec![
                    ("sku".into(), s(format!("sku-{}", (i + n) % 500))),
                    ("qty".into(), Value::Int((1 + (i + n) % 4) as i32)),
                    (
                        "price_cents".into(),
                        Value::Long(100 + ((i * 7 + n) % 900) as i64),
                    ),
                ])
            };
            let value = Value::Record(vec![
                ("order_id".into(), s(order_id.clone())),
                ("tenant".into(), s("acme".into())),
                ("customer".into(), s(format!("customer-{}", i % 1000))),
                ("items".into(), Value::Array((0..3).map(item).collect())),
            ]);
            RawRecord {
                position: SourcePosition {
                    topic: topic.clone(),
                    partition: 0,
                    offset: i as i64,
                },
                timestamp_ms: None,
                key: Some(order_id.into_bytes()),
                value: Some(stack::encode(id, &schema, &value)),
                headers: Vec::new(),
            }
        })
        .collect();
    decoder.decode(&raws[0]).await.expect("decodes");
    let bytes: usize = raws.iter().map(|r| r.value.as_ref().unwrap().len()).sum();
    println!();
    println!(
        "orders with 3 items: {} events (avg {} bytes) x {} rounds, one thread, no sink",
        raws.len(),
        bytes / raws.len(),
        args.rounds
    );
    header();
    for (label, events) in [
        ("decode + 3 columns copied by name", ITEMS_COPIED),
        (
            "decode + totals + prefix delete + 3 child rows",
            ITEMS_CHILD_ROWS,
        ),
    ] {
        let t = transform(&with_events(example, events), None);
        row(label, args.rounds, &raws, decoder, Some(&t)).await;
    }
}

fn header() {
    println!(
        "| {:<45} | {:>15} | {:>13} | {:>9} |",
        "path", "median events/s", "best events/s", "ns/event"
    );
    println!("|{:-<47}|{:->17}|{:->15}|{:->11}|", "", "", "", "");
}

/// Decodes every record (and, given a transform, upcasts and projects it) `rounds` times
/// and prints the median and best rate as one row of the table.
async fn row(
    label: &str,
    rounds: usize,
    raws: &[RawRecord],
    decoder: &AvroEventDecoder,
    transform: Option<&Transform>,
) {
    let mut rates = Vec::new();
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        let mut ops = 0usize;
        for raw in raws {
            let event = decoder.decode(raw).await.expect("decodes");
            if let Some(t) = transform {
                let event = t.prepare(raw, event).expect("upcasts");
                let produced = t.project(event).expect("projects");
                ops += produced.iter().map(|o| o.cells.len()).sum::<usize>();
            } else {
                ops += usize::from(event.body.is_some());
            }
        }
        std::hint::black_box(ops);
        rates.push(raws.len() as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "| {:<45} | {:>15.0} | {:>13.0} | {:>9.0} |",
        label,
        median,
        rates[rates.len() - 1],
        1e9 / median
    );
}
