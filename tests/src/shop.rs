//! The demo shop: four event types on one `orders` topic keyed by order id.
//!
//! | event | operation |
//! |---|---|
//! | `com.shop.OrderPlaced` | upsert: the order row, replaced whole |
//! | `com.shop.OrderUpdated` | merge: status and address |
//! | `com.shop.ItemAdded` | increment: `item_count += quantity`, `total_cents += line_cents` |
//! | `com.shop.OrderCancelled` | delete |

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::types::Value;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `com.shop.OrderPlaced`.
pub const ORDER_PLACED: &str = r#"{"type":"record","name":"OrderPlaced","namespace":"com.shop","fields":[
  {"name":"order_id","type":"string"},
  {"name":"customer","type":"string"},
  {"name":"status","type":"string"},
  {"name":"placed_at","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"note","type":["null","string"],"default":null}
]}"#;

/// `com.shop.OrderUpdated`.
pub const ORDER_UPDATED: &str = r#"{"type":"record","name":"OrderUpdated","namespace":"com.shop","fields":[
  {"name":"order_id","type":"string"},
  {"name":"status","type":"string"},
  {"name":"address","type":["null","string"],"default":null}
]}"#;

/// `com.shop.ItemAdded`.
pub const ITEM_ADDED: &str = r#"{"type":"record","name":"ItemAdded","namespace":"com.shop","fields":[
  {"name":"order_id","type":"string"},
  {"name":"sku","type":"string"},
  {"name":"quantity","type":"int"},
  {"name":"line_cents","type":"long"}
]}"#;

/// `com.shop.OrderCancelled`.
pub const ORDER_CANCELLED: &str = r#"{"type":"record","name":"OrderCancelled","namespace":"com.shop","fields":[
  {"name":"order_id","type":"string"},
  {"name":"reason","type":"string"}
]}"#;

/// Which event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Creates or replaces the order.
    Placed,
    /// Sets status and address.
    Updated,
    /// Adds to the counters.
    ItemAdded,
    /// Deletes the order.
    Cancelled,
}

impl Kind {
    /// All kinds, in schema order.
    pub const ALL: [Kind; 4] = [
        Kind::Placed,
        Kind::Updated,
        Kind::ItemAdded,
        Kind::Cancelled,
    ];

    /// The Avro schema text.
    pub fn schema_text(self) -> &'static str {
        match self {
            Kind::Placed => ORDER_PLACED,
            Kind::Updated => ORDER_UPDATED,
            Kind::ItemAdded => ITEM_ADDED,
            Kind::Cancelled => ORDER_CANCELLED,
        }
    }

    /// Parsed schema.
    pub fn schema(self) -> Schema {
        Schema::parse_str(self.schema_text()).expect("valid schema")
    }
}

/// One generated event.
#[derive(Clone, Debug, PartialEq)]
pub struct ShopEvent {
    /// Order id (the Kafka key).
    pub order_id: String,
    /// Which event.
    pub kind: Kind,
    /// The Avro record.
    pub value: Value,
}

/// One row of the expected `orders` read model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderRow {
    /// customer
    pub customer: Option<String>,
    /// status
    pub status: Option<String>,
    /// note
    pub note: Option<String>,
    /// address
    pub address: Option<String>,
    /// item_count
    pub item_count: Option<i64>,
    /// total_cents
    pub total_cents: Option<i64>,
}

/// The expected table: order id → row.
pub type Expected = BTreeMap<String, OrderRow>;

/// A deterministic stream of `n` events over `keys` orders, mixing all four operations.
/// Orders are placed before anything else happens to them; cancelled orders may be placed
/// again (a replace of a fresh row).
pub fn generate(n: usize, keys: usize, seed: u64) -> Vec<ShopEvent> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut live = vec![false; keys];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let k = rng.random_range(0..keys);
        let order_id = format!("order-{k:06}");
        let kind = if !live[k] {
            Kind::Placed
        } else {
            match rng.random_range(0..100) {
                0..45 => Kind::ItemAdded,
                45..75 => Kind::Updated,
                75..88 => Kind::Cancelled,
                _ => Kind::Placed,
            }
        };
        live[k] = kind != Kind::Cancelled;
        let s = |v: String| Value::String(v);
        let value = match kind {
            Kind::Placed => Value::Record(vec![
                ("order_id".into(), s(order_id.clone())),
                (
                    "customer".into(),
                    s(format!("customer-{}", rng.random_range(0..1000))),
                ),
                ("status".into(), s("placed".into())),
                (
                    "placed_at".into(),
                    Value::TimestampMillis(1_700_000_000_000 + i as i64),
                ),
                (
                    "note".into(),
                    if rng.random_bool(0.5) {
                        Value::Union(1, Box::new(s(format!("note {i}"))))
                    } else {
                        Value::Union(0, Box::new(Value::Null))
                    },
                ),
            ]),
            Kind::Updated => Value::Record(vec![
                ("order_id".into(), s(order_id.clone())),
                (
                    "status".into(),
                    s(["paid", "packed", "shipped"][rng.random_range(0..3)].into()),
                ),
                (
                    "address".into(),
                    Value::Union(
                        1,
                        Box::new(s(format!("{} Main St", rng.random_range(1..999)))),
                    ),
                ),
            ]),
            Kind::ItemAdded => {
                let quantity = rng.random_range(1..5);
                Value::Record(vec![
                    ("order_id".into(), s(order_id.clone())),
                    ("sku".into(), s(format!("sku-{}", rng.random_range(0..500)))),
                    ("quantity".into(), Value::Int(quantity)),
                    (
                        "line_cents".into(),
                        Value::Long(quantity as i64 * rng.random_range(100..10_000)),
                    ),
                ])
            }
            Kind::Cancelled => Value::Record(vec![
                ("order_id".into(), s(order_id.clone())),
                ("reason".into(), s("customer request".into())),
            ]),
        };
        out.push(ShopEvent {
            order_id,
            kind,
            value,
        });
    }
    out
}

/// `n` OrderPlaced events for new orders `<prefix>-<i>`: a stream that only ever adds
/// rows, so a reader can tell a partial read model from a complete one by its count.
pub fn new_orders(prefix: &str, n: usize) -> Vec<ShopEvent> {
    (0..n)
        .map(|i| {
            let order_id = format!("{prefix}-{i:06}");
            ShopEvent {
                order_id: order_id.clone(),
                kind: Kind::Placed,
                value: Value::Record(vec![
                    ("order_id".into(), Value::String(order_id)),
                    ("customer".into(), Value::String(format!("customer-{i}"))),
                    ("status".into(), Value::String("placed".into())),
                    (
                        "placed_at".into(),
                        Value::TimestampMillis(1_800_000_000_000 + i as i64),
                    ),
                    ("note".into(), Value::Union(0, Box::new(Value::Null))),
                ]),
            }
        })
        .collect()
}

/// A field of an event record, through its union wrapper.
pub fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    let Value::Record(fields) = v else {
        panic!("not a record")
    };
    let v = &fields.iter().find(|(n, _)| n == name).expect("field").1;
    match v {
        Value::Union(_, inner) => inner,
        other => other,
    }
}

/// A string value's text; `None` for anything else (a null).
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// The read model the events should produce, computed without sinkd: events applied in
/// order, per the table in the module docs.
pub fn expected(events: &[ShopEvent]) -> Expected {
    let mut table = Expected::new();
    for e in events {
        match e.kind {
            Kind::Placed => {
                table.insert(
                    e.order_id.clone(),
                    OrderRow {
                        customer: text(field(&e.value, "customer")),
                        status: text(field(&e.value, "status")),
                        note: text(field(&e.value, "note")),
                        ..OrderRow::default()
                    },
                );
            }
            Kind::Updated => {
                let row = table.entry(e.order_id.clone()).or_default();
                row.status = text(field(&e.value, "status"));
                row.address = text(field(&e.value, "address"));
            }
            Kind::ItemAdded => {
                let row = table.entry(e.order_id.clone()).or_default();
                let Value::Int(q) = field(&e.value, "quantity") else {
                    unreachable!()
                };
                let Value::Long(c) = field(&e.value, "line_cents") else {
                    unreachable!()
                };
                row.item_count = Some(row.item_count.unwrap_or(0) + *q as i64);
                row.total_cents = Some(row.total_cents.unwrap_or(0) + c);
            }
            Kind::Cancelled => {
                table.remove(&e.order_id);
            }
        }
    }
    table
}

/// The pipeline file for the shop, with placeholders `{name}`, `{topic}`, `{group}`,
/// `{sink}` (the sink section) and `{extra}` (extra top-level YAML).
pub const PIPELINE_TEMPLATE: &str = r#"name: {name}
source:
  kafka:
    bootstrap_servers: ${KAFKA_BROKERS:-127.0.0.1:9092}
    topics: [{topic}]
    group_id: {group}
    properties:
      session.timeout.ms: "6000"
      heartbeat.interval.ms: "500"
  registry:
    url: ${SCHEMA_REGISTRY_URL:-http://127.0.0.1:8081}
{sink}key:
  from: kafka_key
  columns: [order_id]
events:
  com.shop.OrderPlaced:
    op: upsert
  com.shop.OrderUpdated:
    op: merge
  com.shop.ItemAdded:
    op: increment
    columns:
      item_count: quantity
      total_cents: line_cents
  com.shop.OrderCancelled:
    op: delete
{extra}"#;

/// Fills [`PIPELINE_TEMPLATE`] for a sink (see [`crate::target::Target::sink_yaml`]).
pub fn pipeline_yaml_to(name: &str, topic: &str, sink: &str, extra: &str) -> String {
    PIPELINE_TEMPLATE
        .replace("{name}", name)
        .replace("{topic}", topic)
        .replace("{sink}", sink)
        .replace("{group}", &format!("sinkd-{name}"))
        .replace("{extra}", extra)
}

/// [`pipeline_yaml_to`] with a PostgreSQL table.
pub fn pipeline_yaml(name: &str, topic: &str, table: &str, extra: &str) -> String {
    pipeline_yaml_to(
        name,
        topic,
        &crate::target::Target::postgres().sink_yaml(table),
        extra,
    )
}

/// Registers the four schemas under `<topic>-<record>` (TopicRecordNameStrategy: several
/// event types share the topic) and returns their ids by kind.
pub async fn register_schemas(topic: &str) -> BTreeMap<Kind, (u32, Schema)> {
    register_schemas_at(&crate::stack::registry_url(), None, topic).await
}

/// [`register_schemas`] on the registry at `url`, as `user:password` when given.
pub async fn register_schemas_at(
    url: &str,
    user: Option<(&str, &str)>,
    topic: &str,
) -> BTreeMap<Kind, (u32, Schema)> {
    let mut ids = BTreeMap::new();
    for kind in Kind::ALL {
        let schema = kind.schema();
        let name = schema.name().expect("named").fullname(None);
        let subject = format!("{topic}-{name}");
        let id = crate::stack::register_at(url, user, &subject, kind.schema_text()).await;
        ids.insert(kind, (id, schema));
    }
    ids
}

/// Registers, on the registry at `url`, a next version of `kind`'s schema with one more
/// optional field, `channel` (a compatible change: a new schema id); returns its id and
/// schema (values: [`evolved`]).
pub async fn register_evolved_at(url: &str, topic: &str, kind: Kind) -> (u32, Schema) {
    let mut json: serde_json::Value = serde_json::from_str(kind.schema_text()).expect("JSON");
    json["fields"]
        .as_array_mut()
        .expect("fields")
        .push(serde_json::json!(
            {"name": "channel", "type": ["null", "string"], "default": null}
        ));
    let text = json.to_string();
    let schema = Schema::parse_str(&text).expect("valid schema");
    let name = schema.name().expect("named").fullname(None);
    let id = crate::stack::register_at(url, None, &format!("{topic}-{name}"), &text).await;
    (id, schema)
}

/// `event`'s value with the `channel` field of [`register_evolved_at`]'s version.
pub fn evolved(event: &ShopEvent) -> Value {
    let Value::Record(mut fields) = event.value.clone() else {
        unreachable!("events are records")
    };
    fields.push((
        "channel".into(),
        Value::Union(1, Box::new(Value::String("web".into()))),
    ));
    Value::Record(fields)
}

/// Encodes events as Kafka records keyed by order id.
pub fn records(
    ids: &BTreeMap<Kind, (u32, Schema)>,
    events: &[ShopEvent],
) -> Vec<crate::stack::Record> {
    events
        .iter()
        .map(|e| {
            let (id, schema) = &ids[&e.kind];
            crate::stack::Record {
                key: e.order_id.clone().into_bytes(),
                value: Some(crate::stack::encode(*id, schema, &e.value)),
                headers: Vec::new(),
            }
        })
        .collect()
}

/// Registers the schemas and produces the events; returns the next offset per partition.
pub async fn publish(topic: &str, events: &[ShopEvent]) -> std::collections::HashMap<i32, i64> {
    let ids = register_schemas(topic).await;
    crate::stack::produce(topic, records(&ids, events)).await
}

/// Pads every event's free-text field so the encoded values average about `bytes` bytes
/// (for benchmarks that state a record size).
pub fn pad(events: &mut [ShopEvent], bytes: usize) {
    for e in events {
        let (field, base) = match e.kind {
            Kind::Placed => ("note", 45),
            Kind::Updated => ("address", 30),
            Kind::ItemAdded => ("sku", 30),
            Kind::Cancelled => ("reason", 20),
        };
        let Value::Record(fields) = &mut e.value else {
            continue;
        };
        let filler = "x".repeat(bytes.saturating_sub(base));
        for (name, v) in fields.iter_mut() {
            if name == field {
                *v = match e.kind {
                    Kind::Placed | Kind::Updated => {
                        Value::Union(1, Box::new(Value::String(filler.clone())))
                    }
                    _ => Value::String(filler.clone()),
                };
            }
        }
    }
}
