//! The demo shop's stream through a pipeline that computes its read model: columns from
//! CEL expressions, rules chosen by `when`, increments of computed amounts. The expected
//! read model is computed here in plain Rust, independently of sinkd's projection.
//!
//! | event | rule |
//! |---|---|
//! | `OrderPlaced` | upsert: customer, `status.upperAscii()`, note or `"none"`, counters `0` |
//! | `OrderUpdated` | status `shipped`: merge `SHIPPED` and the address; else merge the status upper-cased |
//! | `ItemAdded` | increment: `item_count += quantity`, `total_cents += quantity * line_cents` |
//! | `OrderCancelled` | order id ending in `0`: merge status `ON HOLD`; else delete |

use apache_avro::types::Value;

use crate::shop::{Expected, Kind, OrderRow, ShopEvent, field, text};

/// The `events` section (replaces the plain shop's).
pub const EVENTS: &str = r#"events:
  com.shop.OrderPlaced:
    op: upsert
    columns:
      customer: customer
      status: "status.upperAscii()"
      note: "note != null ? note : 'none'"
      item_count: "0"
      total_cents: "0"
  com.shop.OrderUpdated:
    - when: "status == 'shipped'"
      op: merge
      columns: {status: "'SHIPPED'", address: address}
    - op: merge
      columns: {status: "status.upperAscii()"}
  com.shop.ItemAdded:
    op: increment
    columns:
      item_count: "int(quantity)"
      total_cents: "quantity * line_cents"
  com.shop.OrderCancelled:
    - when: "order_id.endsWith('0')"
      op: merge
      columns: {status: "'ON HOLD'"}
    - op: delete
"#;

/// A shop pipeline file (from [`crate::shop::pipeline_yaml_to`]) with [`EVENTS`] instead
/// of the plain events.
pub fn pipeline_yaml(shop_yaml: &str) -> String {
    let start = shop_yaml.find("events:\n").expect("an events section");
    let end = shop_yaml[start..]
        .find("\n  com.shop.OrderCancelled:\n    op: delete\n")
        .map(|i| start + i + "\n  com.shop.OrderCancelled:\n    op: delete\n".len())
        .expect("the plain shop's events");
    format!("{}{EVENTS}{}", &shop_yaml[..start], &shop_yaml[end..])
}

/// The read model the rules in [`EVENTS`] give, computed in order without sinkd.
pub fn expected(events: &[ShopEvent]) -> Expected {
    let mut table = Expected::new();
    for e in events {
        let v = &e.value;
        match e.kind {
            Kind::Placed => {
                table.insert(
                    e.order_id.clone(),
                    OrderRow {
                        customer: text(field(v, "customer")),
                        status: text(field(v, "status")).map(|s| s.to_ascii_uppercase()),
                        note: Some(text(field(v, "note")).unwrap_or_else(|| "none".into())),
                        address: None,
                        item_count: Some(0),
                        total_cents: Some(0),
                    },
                );
            }
            Kind::Updated => {
                let row = table.entry(e.order_id.clone()).or_default();
                let status = text(field(v, "status")).expect("a status");
                if status == "shipped" {
                    row.status = Some("SHIPPED".into());
                    row.address = text(field(v, "address"));
                } else {
                    row.status = Some(status.to_ascii_uppercase());
                }
            }
            Kind::ItemAdded => {
                let row = table.entry(e.order_id.clone()).or_default();
                let (Value::Int(q), Value::Long(c)) =
                    (field(v, "quantity"), field(v, "line_cents"))
                else {
                    panic!("ItemAdded fields")
                };
                row.item_count = Some(row.item_count.unwrap_or(0) + i64::from(*q));
                row.total_cents = Some(row.total_cents.unwrap_or(0) + i64::from(*q) * c);
            }
            Kind::Cancelled if e.order_id.ends_with('0') => {
                table.entry(e.order_id.clone()).or_default().status = Some("ON HOLD".into());
            }
            Kind::Cancelled => {
                table.remove(&e.order_id);
            }
        }
    }
    table
}
