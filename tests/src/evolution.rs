//! The demo shop's `OrderPlaced` through three versions, and under its old name
//! `OrderCreated`: the schemas in `tests/fixtures/upcast`, and a stream of shop events
//! in which each order placement is written by a randomly chosen version (as a log that
//! spans years of deployments is). The upcasters of `config/examples/shop-orders-upcast.yaml`
//! bring them all back to v3.

use std::collections::BTreeMap;
use std::path::Path;

use apache_avro::Schema;
use apache_avro::types::Value;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::shop::{Kind, ShopEvent};
use crate::stack::{self, Record};

/// How an order placement is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Writer {
    /// `com.shop.OrderCreated` v1 (the old name).
    CreatedV1,
    /// `com.shop.OrderPlaced` v1.
    PlacedV1,
    /// `com.shop.OrderPlaced` v2.
    PlacedV2,
    /// `com.shop.OrderPlaced` v3 (current).
    PlacedV3,
}

impl Writer {
    fn ty_version(self) -> (&'static str, u32) {
        match self {
            Writer::CreatedV1 => ("com.shop.OrderCreated", 1),
            Writer::PlacedV1 => ("com.shop.OrderPlaced", 1),
            Writer::PlacedV2 => ("com.shop.OrderPlaced", 2),
            Writer::PlacedV3 => ("com.shop.OrderPlaced", 3),
        }
    }
}

/// The schema text of a fixture type and version.
pub fn schema_text(ty: &str, version: u32) -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/upcast/{ty}/v{version}.avsc"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One order placement, in the current (v3) shape's terms.
#[derive(Clone, Debug)]
struct Placed {
    order_id: String,
    customer: String,
    buyer_email: Option<String>,
    placed_at: i64,
    total_cents: i64,
    currency: String,
    note: Option<String>,
}

impl Placed {
    fn from_v3(e: &ShopEvent, rng: &mut StdRng) -> Placed {
        let Value::Record(f) = &e.value else {
            unreachable!()
        };
        let get = |n: &str| {
            f.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let string = |v: Value| match sinkd_core::value::unwrap_union(&v) {
            Value::String(s) => Some(s.clone()),
            _ => None,
        };
        let Value::TimestampMillis(placed_at) = get("placed_at") else {
            unreachable!()
        };
        Placed {
            order_id: e.order_id.clone(),
            customer: string(get("customer")).unwrap(),
            buyer_email: rng
                .random_bool(0.5)
                .then(|| format!("{}@example.com", e.order_id)),
            placed_at,
            total_cents: rng.random_range(0..500_000),
            currency: ["EUR", "USD"][rng.random_range(0..2)].to_owned(),
            note: string(get("note")),
        }
    }

    fn value(&self, writer: Writer) -> Value {
        let s = |v: &str| Value::String(v.to_owned());
        let opt = |v: &Option<String>| match v {
            Some(v) => Value::Union(1, Box::new(s(v))),
            None => Value::Union(0, Box::new(Value::Null)),
        };
        let euros = Value::Double(self.total_cents as f64 / 100.0);
        match writer {
            Writer::CreatedV1 | Writer::PlacedV1 => Value::Record(vec![
                ("order_id".into(), s(&self.order_id)),
                ("customer".into(), s(&self.customer)),
                ("status".into(), s("new")),
                ("placed_at_ms".into(), Value::Long(self.placed_at)),
                ("amount".into(), euros),
                ("note".into(), opt(&self.note)),
            ]),
            Writer::PlacedV2 => Value::Record(vec![
                ("order_id".into(), s(&self.order_id)),
                (
                    "buyer".into(),
                    Value::Record(vec![
                        ("name".into(), s(&self.customer)),
                        ("email".into(), opt(&self.buyer_email)),
                    ]),
                ),
                ("status".into(), s("new")),
                ("placed_at".into(), Value::TimestampMillis(self.placed_at)),
                ("amount_eur".into(), euros),
                ("currency".into(), s(&self.currency)),
                ("note".into(), opt(&self.note)),
            ]),
            Writer::PlacedV3 => Value::Record(vec![
                ("order_id".into(), s(&self.order_id)),
                ("customer".into(), s(&self.customer)),
                ("buyer_email".into(), opt(&self.buyer_email)),
                ("status".into(), s("placed")),
                ("placed_at".into(), Value::TimestampMillis(self.placed_at)),
                ("total_cents".into(), Value::Long(self.total_cents)),
                ("currency".into(), s(&self.currency)),
                ("note".into(), opt(&self.note)),
            ]),
        }
    }
}

/// Schema ids of one topic: the three `OrderPlaced` versions and `OrderCreated` v1 under
/// `<topic>-<record>` (compatibility NONE: upcasters exist for the changes Avro cannot
/// resolve), and the other shop events.
pub struct Registered {
    ids: BTreeMap<Writer, (u32, Schema)>,
    others: BTreeMap<Kind, (u32, Schema)>,
}

/// Registers every schema for a topic.
pub async fn register(topic: &str) -> Registered {
    let http = reqwest::Client::new();
    for ty in ["com.shop.OrderPlaced", "com.shop.OrderCreated"] {
        let response = http
            .put(format!("{}/config/{topic}-{ty}", stack::registry_url()))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .body(r#"{"compatibility":"NONE"}"#)
            .send()
            .await
            .expect("registry reachable");
        assert!(
            response.status().is_success(),
            "PUT /config: {}",
            response.status()
        );
    }
    let mut ids = BTreeMap::new();
    for w in [
        Writer::PlacedV1,
        Writer::PlacedV2,
        Writer::PlacedV3,
        Writer::CreatedV1,
    ] {
        let (ty, version) = w.ty_version();
        let text = schema_text(ty, version);
        let id = stack::register(&format!("{topic}-{ty}"), &text).await;
        ids.insert(w, (id, Schema::parse_str(&text).expect("fixture schema")));
    }
    let mut others = BTreeMap::new();
    for kind in [Kind::Updated, Kind::ItemAdded, Kind::Cancelled] {
        let schema = kind.schema();
        let name = schema.name().expect("named").fullname(None);
        let id = stack::register(&format!("{topic}-{name}"), kind.schema_text()).await;
        others.insert(kind, (id, schema));
    }
    Registered { ids, others }
}

impl Registered {
    /// A Confluent-framed value written by `w` (for hand-made records).
    pub fn encode(&self, w: Writer, value: &Value) -> Vec<u8> {
        let (id, schema) = &self.ids[&w];
        stack::encode(*id, schema, value)
    }
}

/// A shop stream with every placement in v3 terms, and the writer chosen for each.
pub struct Stream {
    events: Vec<ShopEvent>,
    placed: Vec<Option<(Placed, Writer)>>,
}

/// `n` shop events over `keys` orders; each placement gets a random writer. Placements
/// written by a version without e-mail or currency get none / EUR in both streams.
pub fn stream(n: usize, keys: usize, seed: u64) -> Stream {
    let events = crate::shop::generate(n, keys, seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let placed = events
        .iter()
        .map(|e| {
            (e.kind == Kind::Placed).then(|| {
                let mut p = Placed::from_v3(e, &mut rng);
                let w = [
                    Writer::CreatedV1,
                    Writer::PlacedV1,
                    Writer::PlacedV2,
                    Writer::PlacedV3,
                ][rng.random_range(0..4)];
                if matches!(w, Writer::CreatedV1 | Writer::PlacedV1) {
                    p.buyer_email = None;
                    p.currency = "EUR".into();
                }
                (p, w)
            })
        })
        .collect();
    Stream { events, placed }
}

impl Stream {
    /// The records: placements by their chosen writer (`as_written`) or all as v3.
    pub fn records(&self, reg: &Registered, as_written: bool) -> Vec<Record> {
        self.events
            .iter()
            .zip(&self.placed)
            .map(|(e, placed)| {
                let (id, schema, value) = match placed {
                    Some((p, w)) => {
                        let w = if as_written { *w } else { Writer::PlacedV3 };
                        let (id, schema) = &reg.ids[&w];
                        (*id, schema, p.value(w))
                    }
                    None => {
                        let (id, schema) = &reg.others[&e.kind];
                        (*id, schema, e.value.clone())
                    }
                };
                Record {
                    key: e.order_id.clone().into_bytes(),
                    value: Some(stack::encode(id, schema, &value)),
                    headers: Vec::new(),
                }
            })
            .collect()
    }

    /// How many placements each writer wrote.
    pub fn writers(&self) -> BTreeMap<Writer, usize> {
        let mut counts = BTreeMap::new();
        for (_, w) in self.placed.iter().flatten() {
            *counts.entry(*w).or_default() += 1;
        }
        counts
    }
}

/// The example pipeline with its upcasters, for a pipeline name, topic and table.
pub fn pipeline_yaml(name: &str, topic: &str, table: &str) -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/shop-orders-upcast.yaml");
    std::fs::read_to_string(path)
        .expect("example pipeline")
        .replace("${PIPELINE_NAME:-shop-orders-upcast}", name)
        .replace("${SHOP_TOPIC:-shop.orders}", topic)
        .replace("${ORDERS_TABLE:-orders_upcast}", table)
}
