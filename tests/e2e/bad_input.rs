//! The bad-input matrix: each kind of bad record, fed to a running pipeline (PostgreSQL)
//! among good ones, under each `on_error` policy. Under `dead_letter` every bad record
//! reaches the dead-letter topic with its cause and everything good is applied; under
//! `fail` the pipeline stops exactly at the bad record, says where and why, and has
//! applied and checkpointed everything before it. Nothing is lost silently, and the API
//! token never appears in the log. (Registry outages: `faults.rs`; REST bodies and
//! secrets in logs: `control_api.rs`.)

use std::collections::HashMap;
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::types::Value;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureRecord;
use sinkd_tests::daemon::Daemon;
use sinkd_tests::scenarios::Setup;
use sinkd_tests::shop::{self, Kind, ShopEvent};
use sinkd_tests::stack::{self, Record};
use sinkd_tests::target::Target;

/// One kind of bad input: how it is made, the `sinkd.errors.code` it is dead-lettered
/// with, and words the stop message must contain under `fail`.
struct Bad {
    name: &'static str,
    code: &'static str,
    says: &'static str,
}

/// The size of the oversized record's one field: past librdkafka's 1 MB default for a
/// producer, which the dead-letter producer raises.
const OVERSIZED: usize = 2 << 20;

const MATRIX: [Bad; 11] = [
    Bad {
        name: "short payload",
        code: "short_payload",
        says: "shorter than the 5-byte Confluent header",
    },
    Bad {
        name: "wrong magic byte",
        code: "wrong_magic",
        says: "magic byte",
    },
    Bad {
        name: "unknown schema id",
        code: "unknown_schema_id",
        says: "2147483000",
    },
    Bad {
        name: "undecodable datum",
        code: "corrupt_datum",
        says: "schema",
    },
    Bad {
        name: "unknown event type",
        code: "unknown_event_type",
        says: "com.shop.GiftWrapped",
    },
    Bad {
        name: "expression error",
        code: "projection",
        says: "Division by zero",
    },
    Bad {
        name: "value the table rejects",
        code: "rejected",
        says: "0x00",
    },
    Bad {
        name: "oversized numeric for its column",
        code: "projection",
        says: "does not fit an int",
    },
    Bad {
        name: "upcaster failure",
        code: "upcast",
        says: "reason_len",
    },
    Bad {
        name: "oversized record (2 MiB), of an unknown type",
        code: "unknown_event_type",
        says: "com.shop.Oversized",
    },
    Bad {
        name: "no Kafka key",
        code: "projection",
        says: "no Kafka key",
    },
];

/// The shop's events, with ItemAdded's total computed (exactly the same for good events:
/// `line_cents` is a multiple of `quantity`), and a declared `int` column that a huge
/// quantity product cannot fit.
fn pipeline_extra(policy: &str) -> String {
    let dlq = if policy == "dead_letter" {
        "dead_letter_topic: \"{dlq}\"\n"
    } else {
        ""
    };
    // An upcaster step that fails for one reason only (the bad record's).
    let upcaster = "upcasters:\n  com.shop.OrderCancelled:\n    chain:\n      - from: 1\n        \
                    steps:\n          - compute: { field: reason_len, type: long, expr: \
                    \"size(reason) / (reason == 'poison' ? 0 : 1)\" }\n";
    format!(
        "on_error: {policy}\nunknown_events: {policy}\n{dlq}batch:\n  max_events: 100\n  max_wait_ms: 50\n{upcaster}"
    )
}

fn computed(yaml: &str) -> String {
    yaml.replace(
        "      item_count: quantity\n      total_cents: line_cents\n",
        "      item_count: quantity\n      total_cents: \"line_cents / quantity * quantity\"\n      \
         units_x1000: \"quantity * 1000\"\n    types: {units_x1000: int}\n",
    )
}

fn event(kind: Kind, order_id: &str, fields: Vec<(&str, Value)>) -> ShopEvent {
    ShopEvent {
        order_id: order_id.to_owned(),
        kind,
        value: Value::Record(fields.into_iter().map(|(n, v)| (n.to_owned(), v)).collect()),
    }
}

fn placed(order_id: &str, customer: &str) -> ShopEvent {
    let s = |v: &str| Value::String(v.to_owned());
    event(
        Kind::Placed,
        order_id,
        vec![
            ("order_id", s(order_id)),
            ("customer", s(customer)),
            ("status", s("placed")),
            ("placed_at", Value::TimestampMillis(1_700_000_000_000)),
            ("note", Value::Union(0, Box::new(Value::Null))),
        ],
    )
}

fn item(order_id: &str, quantity: i32, line_cents: i64) -> ShopEvent {
    let s = |v: &str| Value::String(v.to_owned());
    event(
        Kind::ItemAdded,
        order_id,
        vec![
            ("order_id", s(order_id)),
            ("sku", s("sku-1")),
            ("quantity", Value::Int(quantity)),
            ("line_cents", Value::Long(line_cents)),
        ],
    )
}

/// The bad record of one kind (`None` for the keyless one, produced apart).
async fn bad_record(
    bad: &Bad,
    topic: &str,
    ids: &std::collections::BTreeMap<Kind, (u32, Schema)>,
) -> Option<Record> {
    let record = |value: Vec<u8>| Record {
        key: b"order-bad".to_vec(),
        value: Some(value),
        headers: vec![],
    };
    let one = |e: ShopEvent| shop::records(ids, &[e]).remove(0);
    Some(match bad.code {
        "short_payload" => record(vec![0, 0, 0]),
        "wrong_magic" => record(vec![7, 0, 0, 0, 1, 2, 3]),
        "unknown_schema_id" => record(vec![0, 0x7f, 0xff, 0xfd, 0x78, 2, 0]),
        "corrupt_datum" => {
            let (id, _) = ids[&Kind::Placed];
            let mut v = vec![0];
            v.extend(id.to_be_bytes());
            v.extend([0xff, 0xff, 0xff, 0xff, 0xff]);
            record(v)
        }
        _ if bad.says == "com.shop.Oversized" => {
            let huge = r#"{"type":"record","name":"Oversized","namespace":"com.shop","fields":[{"name":"order_id","type":"string"},{"name":"blob","type":"string"}]}"#;
            let id = stack::register(&format!("{topic}-com.shop.Oversized"), huge).await;
            record(stack::encode(
                id,
                &Schema::parse_str(huge).unwrap(),
                &Value::Record(vec![
                    ("order_id".into(), Value::String("order-bad".into())),
                    ("blob".into(), Value::String("x".repeat(OVERSIZED))),
                ]),
            ))
        }
        "unknown_event_type" => {
            let gift = r#"{"type":"record","name":"GiftWrapped","namespace":"com.shop","fields":[{"name":"order_id","type":"string"}]}"#;
            let id = stack::register(&format!("{topic}-com.shop.GiftWrapped"), gift).await;
            record(stack::encode(
                id,
                &Schema::parse_str(gift).unwrap(),
                &Value::Record(vec![("order_id".into(), Value::String("order-bad".into()))]),
            ))
        }
        _ if bad.says == "Division by zero" => one(item("order-bad", 0, 0)),
        _ if bad.says == "0x00" => one(placed("order-bad", "nul\0byte")),
        _ if bad.says == "does not fit an int" => one(item("order-bad", 3_000_000, 3_000_000)),
        "upcast" => one(event(
            Kind::Cancelled,
            "order-bad",
            vec![
                ("order_id", Value::String("order-bad".into())),
                ("reason", Value::String("poison".into())),
            ],
        )),
        _ => return None,
    })
}

/// Produces `good[..split]`, the bad record, then `good[split..]` to partition 0; returns
/// the end offsets, the bad record's offset and its value.
async fn produce_around(
    s: &Setup,
    bad: &Bad,
    good: &[ShopEvent],
    split: usize,
) -> (HashMap<i32, i64>, i64, Vec<u8>) {
    let ids = shop::register_schemas(&s.topic).await;
    stack::produce(&s.topic, shop::records(&ids, &good[..split])).await;
    let (offset, bytes) = match bad_record(bad, &s.topic, &ids).await {
        Some(r) => {
            let bytes = r.value.clone().unwrap_or_default();
            (
                *stack::produce(&s.topic, vec![r]).await.get(&0).unwrap() - 1,
                bytes,
            )
        }
        None => {
            // A record without a key, which `key.from: kafka_key` needs.
            let value = shop::records(&ids, &[placed("order-bad", "no key")]).remove(0);
            let producer = stack::producer();
            let delivery = producer
                .send(
                    FutureRecord::<[u8], [u8]>::to(&s.topic)
                        .payload(value.value.as_deref().unwrap()),
                    Duration::from_secs(10),
                )
                .await
                .expect("delivered");
            (delivery.offset, value.value.unwrap_or_default())
        }
    };
    let ends = stack::produce(&s.topic, shop::records(&ids, &good[split..])).await;
    (ends, offset, bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn under_dead_letter_every_bad_record_is_dead_lettered_with_its_cause() {
    let s = Setup::new(
        &Target::postgres(),
        "badmatrix",
        1,
        &pipeline_extra("dead_letter"),
    )
    .await;
    let text = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(&s.file, computed(&text)).unwrap();
    let dlq = s.with_dead_letter_topic().await;
    let good = shop::generate(100 * MATRIX.len(), 90, 41);
    let mut ends = HashMap::new();
    let (mut offsets, mut values) = (Vec::new(), HashMap::new());
    for (i, bad) in MATRIX.iter().enumerate() {
        let slice = &good[i * 100..(i + 1) * 100];
        let (e, offset, bytes) = produce_around(&s, bad, slice, 50).await;
        ends = e;
        offsets.push(offset);
        values.insert(offset, bytes);
    }
    let token = "matrix-secret-token-5c1d";
    let daemon = Daemon::start_with_env(
        &s.file,
        &s.dir.0.join("sinkd.log"),
        &format!("127.0.0.1:{}", stack::free_port()),
        &[("SINKD_API_TOKEN", token)],
    );
    s.caught_up(&ends, &daemon).await;
    assert_eq!(
        s.orders().await,
        shop::expected(&good),
        "every good record applied"
    );

    let letters = stack::read_topic(&dlq, MATRIX.len(), Duration::from_secs(30));
    let got: Vec<(String, i64)> = letters
        .iter()
        .map(|m| {
            let h: HashMap<String, String> = m
                .headers()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect();
            let message = &h["sinkd.errors.message"];
            let bad = MATRIX
                .iter()
                .find(|b| b.code == h["sinkd.errors.code"] && message.contains(b.says));
            let offset: i64 = h["sinkd.errors.offset"].parse().unwrap();
            // The original bytes, whatever their size.
            assert!(
                m.payload() == values.get(&offset).map(Vec::as_slice),
                "the dead letter of offset {offset} is not the record as produced"
            );
            (
                bad.map_or_else(|| format!("unexpected: {h:?}"), |b| b.name.to_owned()),
                offset,
            )
        })
        .collect();
    // Decode and projection errors are dead-lettered as records are read; a row the table
    // rejects only when its batch is written: compare by offset.
    let mut got = got;
    got.sort_by_key(|(_, offset)| *offset);
    let want: Vec<(String, i64)> = MATRIX
        .iter()
        .map(|b| b.name.to_owned())
        .zip(offsets)
        .collect();
    assert_eq!(got, want);
    assert!(!daemon.log().contains(token), "the API token is in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn under_fail_each_bad_record_stops_the_pipeline_exactly_there() {
    let runs = MATRIX.iter().enumerate().map(|(i, bad)| async move {
        let s = Setup::new(&Target::postgres(), "badfail", 1, &pipeline_extra("fail")).await;
        let text = std::fs::read_to_string(&s.file).unwrap();
        std::fs::write(&s.file, computed(&text)).unwrap();
        let good = shop::generate(40, 8, 50 + i as u64);
        let (_, offset, _) = produce_around(&s, bad, &good, 20).await;
        let mut daemon = s.start();
        let code = daemon.wait(Duration::from_secs(90));
        let log = daemon.log();
        assert_eq!(code, Some(1), "{}: {log}", bad.name);
        assert!(
            log.contains(&format!("topic {} partition 0 offset {offset}", s.topic))
                && log.contains(bad.says),
            "{}: the stop names the record and the cause\n{log}",
            bad.name
        );
        assert_eq!(s.checkpoints().await.get(&0), Some(&offset), "{}", bad.name);
        assert_eq!(
            s.orders().await,
            shop::expected(&good[..20]),
            "{}",
            bad.name
        );
    });
    futures::future::join_all(runs).await;
}
