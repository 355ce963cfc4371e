//! Orders with lines: a stream whose read model has two targets, `orders` and its child
//! `order_lines`, for the child-row (`also:`) tests. The expected read model of both is
//! computed here in plain Rust, independently of sinkd.
//!
//! | event | `orders` | `order_lines` |
//! |---|---|---|
//! | `OrderOpened {items}` | upsert: customer, `OPEN`, sums of qty and qty × price | every line of the order deleted, then one row per item (`line_no` = position) |
//! | `LineAdded {line_no, …}` | increment item_count and total_cents | upsert the line |
//! | `StatusChanged {status}` | `cancelled`: delete; else merge the status | `cancelled`: every line of the order deleted |

use std::collections::{BTreeMap, HashMap};

use apache_avro::Schema;
use apache_avro::types::Value;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `com.shop.OrderOpened`.
pub const ORDER_OPENED: &str = r#"{"type":"record","name":"OrderOpened","namespace":"com.shop","fields":[
  {"name":"order_id","type":"string"},
  {"name":"tenant","type":"string"},
  {"name":"customer","type":"string"},
  {"name":"items","type":{"type":"array","items":{"type":"record","name":"Item","fields":[
    {"name":"sku","type":"string"},{"name":"qty","type":"int"},{"name":"price_cents","type":"long"}]}}}
]}"#;

/// `com.shop.LineAdded`.
pub const LINE_ADDED: &str = r#"{"type":"record","name":"LineAdded","namespace":"com.shop","fields":[
  {"name":"order_id","type":"string"},
  {"name":"tenant","type":"string"},
  {"name":"line_no","type":"int"},
  {"name":"sku","type":"string"},
  {"name":"qty","type":"int"},
  {"name":"price_cents","type":"long"}
]}"#;

/// `com.shop.StatusChanged`.
pub const STATUS_CHANGED: &str = r#"{"type":"record","name":"StatusChanged","namespace":"com.shop","fields":[
  {"name":"order_id","type":"string"},
  {"name":"tenant","type":"string"},
  {"name":"status","type":"string"}
]}"#;

/// The pipeline's `targets` and `events` (after its `key:`), `{lines}` the child target.
pub const RULES: &str = r#"targets:
  {lines}:
    key: [order_id, line_no]
events:
  com.shop.OrderOpened:
    op: upsert
    columns:
      customer: customer
      status: "'OPEN'"
      item_count: "items.map(i, i.qty).sum()"
      total_cents: "items.map(i, i.qty * i.price_cents).sum()"
    also:
      - target: {lines}
        op: delete
        key: {order_id: order_id}
      - target: {lines}
        for_each: items
        op: upsert
        key: {order_id: order_id, line_no: index}
        columns: {sku: item.sku, qty: item.qty, price_cents: item.price_cents}
  com.shop.LineAdded:
    op: increment
    columns:
      item_count: "int(qty)"
      total_cents: "qty * price_cents"
    also:
      - target: {lines}
        op: upsert
        key: {order_id: order_id, line_no: "int(line_no)"}
        columns: {sku: sku, qty: qty, price_cents: price_cents}
  com.shop.StatusChanged:
    - when: "status == 'cancelled'"
      op: delete
      also:
        - target: {lines}
          op: delete
          key: {order_id: order_id}
    - op: merge
      columns: {status: status}
"#;

/// [`RULES`] with every computed column of the orders copied from a field instead (the
/// same tables, rows and child rows; the `when` rule and the line number's `int(…)` are
/// kept): the benchmark's measure of what the computed columns themselves cost.
pub fn rules_by_path() -> String {
    let mut rules = RULES.to_owned();
    for (computed, copied) in [
        (
            "      status: \"'OPEN'\"\n      item_count: \"items.map(i, i.qty).sum()\"\n      \
             total_cents: \"items.map(i, i.qty * i.price_cents).sum()\"\n",
            "      status: tenant\n",
        ),
        (
            "      item_count: \"int(qty)\"\n      total_cents: \"qty * price_cents\"\n",
            "      item_count: qty\n      total_cents: price_cents\n",
        ),
    ] {
        assert!(rules.contains(computed), "RULES changed: {computed}");
        rules = rules.replace(computed, copied);
    }
    rules
}

/// One event of the stream.
#[derive(Clone, Debug)]
pub struct LineEvent {
    /// The Kafka key.
    pub order_id: String,
    /// The schema's index in [`SCHEMAS`].
    pub kind: usize,
    /// The record.
    pub value: Value,
}

/// The three schemas, in the order of [`LineEvent::kind`].
pub const SCHEMAS: [&str; 3] = [ORDER_OPENED, LINE_ADDED, STATUS_CHANGED];

/// A row of `orders`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Order {
    /// customer
    pub customer: Option<String>,
    /// status
    pub status: Option<String>,
    /// item_count
    pub item_count: Option<i64>,
    /// total_cents
    pub total_cents: Option<i64>,
}

/// A row of `order_lines`: sku, qty, price_cents.
pub type Line = (Option<String>, Option<i64>, Option<i64>);

/// Both targets: orders by id, lines by (order id, line number).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    /// `orders`.
    pub orders: BTreeMap<String, Order>,
    /// `order_lines`.
    pub lines: BTreeMap<(String, i64), Line>,
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

/// The tenants orders are spread over (by order number), for routing.
pub const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

/// The tenant of an order.
pub fn tenant_of(order_id: &str) -> &'static str {
    let n: usize = order_id
        .trim_start_matches("order-")
        .parse()
        .expect("order-<n>");
    TENANTS[n % TENANTS.len()]
}

impl Model {
    /// The part of the model of one tenant's orders.
    pub fn of_tenant(&self, tenant: &str) -> Model {
        Model {
            orders: self
                .orders
                .iter()
                .filter(|(id, _)| tenant_of(id) == tenant)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            lines: self
                .lines
                .iter()
                .filter(|((id, _), _)| tenant_of(id) == tenant)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// `n` events over `keys` orders, deterministic for a seed.
pub fn generate(n: usize, keys: usize, seed: u64) -> Vec<LineEvent> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut next_line: Vec<Option<i32>> = vec![None; keys];
    (0..n)
        .map(|_| {
            let k = rng.random_range(0..keys);
            let order_id = format!("order-{k:05}");
            let tenant = s(tenant_of(&order_id));
            let roll = rng.random_range(0..100);
            let (kind, value) = match next_line[k] {
                Some(line) if roll < 45 => {
                    next_line[k] = Some(line + 1);
                    let qty = rng.random_range(1..5);
                    (
                        1,
                        Value::Record(vec![
                            ("order_id".into(), s(&order_id)),
                            ("tenant".into(), tenant.clone()),
                            ("line_no".into(), Value::Int(line)),
                            (
                                "sku".into(),
                                s(&format!("sku-{}", rng.random_range(0..300))),
                            ),
                            ("qty".into(), Value::Int(qty)),
                            (
                                "price_cents".into(),
                                Value::Long(rng.random_range(50..5_000)),
                            ),
                        ]),
                    )
                }
                Some(_) if roll < 90 => {
                    let status = ["paid", "packed", "shipped", "cancelled"][rng.random_range(0..4)];
                    if status == "cancelled" {
                        next_line[k] = None;
                    }
                    (
                        2,
                        Value::Record(vec![
                            ("order_id".into(), s(&order_id)),
                            ("tenant".into(), tenant.clone()),
                            ("status".into(), s(status)),
                        ]),
                    )
                }
                _ => {
                    let items: Vec<Value> = (0..rng.random_range(0..4))
                        .map(|_| {
                            Value::Record(vec![
                                (
                                    "sku".into(),
                                    s(&format!("sku-{}", rng.random_range(0..300))),
                                ),
                                ("qty".into(), Value::Int(rng.random_range(1..5))),
                                (
                                    "price_cents".into(),
                                    Value::Long(rng.random_range(50..5_000)),
                                ),
                            ])
                        })
                        .collect();
                    next_line[k] = Some(items.len() as i32);
                    (
                        0,
                        Value::Record(vec![
                            ("order_id".into(), s(&order_id)),
                            ("tenant".into(), tenant.clone()),
                            (
                                "customer".into(),
                                s(&format!("customer-{}", rng.random_range(0..100))),
                            ),
                            ("items".into(), Value::Array(items)),
                        ]),
                    )
                }
            };
            LineEvent {
                order_id,
                kind,
                value,
            }
        })
        .collect()
}

fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    let Value::Record(fields) = v else {
        panic!("a record")
    };
    &fields.iter().find(|(n, _)| n == name).expect("field").1
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => i64::from(*i),
        Value::Long(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

/// The read model of both targets, the events applied in order.
pub fn expected(events: &[LineEvent]) -> Model {
    let mut m = Model::default();
    for e in events {
        let v = &e.value;
        let id = e.order_id.clone();
        // The order's lines are one range of the map: removing them never scans the rest.
        let drop_lines = |m: &mut Model| {
            let doomed: Vec<(String, i64)> = m
                .lines
                .range((id.clone(), i64::MIN)..=(id.clone(), i64::MAX))
                .map(|(k, _)| k.clone())
                .collect();
            for k in doomed {
                m.lines.remove(&k);
            }
        };
        match e.kind {
            0 => {
                let Value::Array(items) = field(v, "items") else {
                    panic!("items")
                };
                let qty: i64 = items.iter().map(|i| int(field(i, "qty"))).sum();
                let total: i64 = items
                    .iter()
                    .map(|i| int(field(i, "qty")) * int(field(i, "price_cents")))
                    .sum();
                m.orders.insert(
                    id.clone(),
                    Order {
                        customer: Some(text(field(v, "customer"))),
                        status: Some("OPEN".into()),
                        item_count: Some(qty),
                        total_cents: Some(total),
                    },
                );
                drop_lines(&mut m);
                for (n, i) in items.iter().enumerate() {
                    m.lines.insert(
                        (id.clone(), n as i64),
                        (
                            Some(text(field(i, "sku"))),
                            Some(int(field(i, "qty"))),
                            Some(int(field(i, "price_cents"))),
                        ),
                    );
                }
            }
            1 => {
                let (qty, price) = (int(field(v, "qty")), int(field(v, "price_cents")));
                let o = m.orders.entry(id.clone()).or_default();
                o.item_count = Some(o.item_count.unwrap_or(0) + qty);
                o.total_cents = Some(o.total_cents.unwrap_or(0) + qty * price);
                m.lines.insert(
                    (id.clone(), int(field(v, "line_no"))),
                    (Some(text(field(v, "sku"))), Some(qty), Some(price)),
                );
            }
            _ => {
                let status = text(field(v, "status"));
                if status == "cancelled" {
                    m.orders.remove(&id);
                    drop_lines(&mut m);
                } else {
                    m.orders.entry(id.clone()).or_default().status = Some(status);
                }
            }
        }
    }
    m
}

/// Registers the schemas under `<topic>-<record>` and produces the events; returns the
/// next offset per partition.
pub async fn publish(topic: &str, events: &[LineEvent]) -> HashMap<i32, i64> {
    let mut ids = Vec::new();
    for text in SCHEMAS {
        let schema = Schema::parse_str(text).expect("valid schema");
        let name = schema.name().expect("named").fullname(None);
        ids.push((
            crate::stack::register(&format!("{topic}-{name}"), text).await,
            schema,
        ));
    }
    let records = events
        .iter()
        .map(|e| {
            let (id, schema) = &ids[e.kind];
            crate::stack::Record {
                key: e.order_id.clone().into_bytes(),
                value: Some(crate::stack::encode(*id, schema, &e.value)),
                headers: Vec::new(),
            }
        })
        .collect();
    crate::stack::produce(topic, records).await
}

/// Both targets as the sink holds them: `orders` and `lines` tables (PostgreSQL) or
/// collections (MongoDB).
pub async fn read(target: &crate::target::Target, orders: &str, lines: &str) -> Model {
    use crate::target::Target;
    use mongodb::bson::{Bson, Document};
    let mut m = Model::default();
    match target {
        Target::Postgres(_) => {
            let pg = crate::stack::pg().await;
            let exists = |t: &str| format!("SELECT to_regclass('\"{t}\"') IS NOT NULL");
            if pg
                .query_one(&exists(orders), &[])
                .await
                .unwrap()
                .get::<_, bool>(0)
            {
                let sql = format!(
                    "SELECT order_id, customer, status, item_count::bigint, total_cents::bigint FROM \"{orders}\""
                );
                for r in pg.query(&sql, &[]).await.expect("orders") {
                    m.orders.insert(
                        r.get(0),
                        Order {
                            customer: r.get(1),
                            status: r.get(2),
                            item_count: r.get(3),
                            total_cents: r.get(4),
                        },
                    );
                }
            }
            if pg
                .query_one(&exists(lines), &[])
                .await
                .unwrap()
                .get::<_, bool>(0)
            {
                let sql = format!(
                    "SELECT order_id, line_no::bigint, sku, qty::bigint, price_cents::bigint FROM \"{lines}\""
                );
                for r in pg.query(&sql, &[]).await.expect("lines") {
                    m.lines
                        .insert((r.get(0), r.get(1)), (r.get(2), r.get(3), r.get(4)));
                }
            }
        }
        Target::Mongo(url) => {
            let db = Target::mongo_db(url).await;
            let int = |d: &Document, k: &str| match d.get(k) {
                Some(Bson::Int32(i)) => Some(i64::from(*i)),
                Some(Bson::Int64(i)) => Some(*i),
                _ => None,
            };
            let text = |d: &Document, k: &str| d.get_str(k).ok().map(str::to_owned);
            let all = |name: &str| {
                let c = db.collection::<Document>(name);
                async move { crate::stack::all_documents(&c).await }
            };
            for d in all(orders).await {
                m.orders.insert(
                    d.get_str("_id").expect("string _id").to_owned(),
                    Order {
                        customer: text(&d, "customer"),
                        status: text(&d, "status"),
                        item_count: int(&d, "item_count"),
                        total_cents: int(&d, "total_cents"),
                    },
                );
            }
            for d in all(lines).await {
                let id = d.get_document("_id").expect("compound _id");
                m.lines.insert(
                    (
                        id.get_str("order_id").expect("order_id").to_owned(),
                        int(id, "line_no").expect("line_no"),
                    ),
                    (text(&d, "sku"), int(&d, "qty"), int(&d, "price_cents")),
                );
            }
        }
        Target::Tantivy(_) => panic!("a Tantivy index has no child targets"),
    }
    m
}
