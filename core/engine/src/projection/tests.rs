use std::sync::Arc;

use apache_avro::types::Value;

use super::events::EventProjection;
use super::*;
use crate::config::OpKind;
use crate::error::RecordError;
use crate::event::SourcePosition;
use crate::operation::{Cell, Op};
use crate::schema::{ColumnType, EventSchema, FieldColumn};

fn pipeline(key: &str, events: &str) -> PipelineFile {
    let yaml = format!(
        "name: p\nsource:\n  kafka: {{bootstrap_servers: b, topics: [t]}}\n  registry: {{url: u}}\n\
         sink:\n  memory: {{table: t}}\n{key}\nevents:\n{events}"
    );
    crate::testing::pipeline(&yaml)
}

/// The main target's operation of one event.
fn one(p: &EventProjection, e: Event) -> Result<Op, RecordError> {
    p.project(e).map(|mut ops| ops.remove(0))
}

fn projector(p: &PipelineFile) -> EventProjection {
    EventProjection::new(p).unwrap()
}

fn event(event_type: &str, key: Option<Value>, fields: Vec<(&str, Value, ColumnType)>) -> Event {
    let schema = EventSchema {
        full_name: Arc::from(event_type),
        fields: fields
            .iter()
            .map(|(n, _, t)| FieldColumn {
                name: Arc::from(*n),
                ty: *t,
            })
            .collect(),
        avro: Arc::new(apache_avro::Schema::Null),
    };
    Event {
        event_type: Arc::from(event_type),
        version: 1,
        key,
        body: Some(Value::Record(
            fields
                .into_iter()
                .map(|(n, v, _)| (n.to_owned(), v))
                .collect(),
        )),
        schema: Some(Arc::new(schema)),
        position: SourcePosition {
            topic: Arc::from("t"),
            partition: 0,
            offset: 9,
        },
        timestamp_ms: None,
    }
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

#[test]
fn upsert_takes_every_field_but_the_key() {
    let p = projector(&pipeline("key: {columns: [id]}", "  A: {op: upsert}\n"));
    let op = one(
        &p,
        event(
            "A",
            Some(s("k1")),
            vec![
                ("id", s("k1"), ColumnType::String),
                ("name", s("n"), ColumnType::String),
            ],
        ),
    )
    .unwrap();
    assert_eq!(op.kind, OpKind::Upsert);
    assert_eq!(op.key[0].value, s("k1"));
    assert_eq!(
        op.cells.iter().map(|c| &*c.column).collect::<Vec<_>>(),
        vec!["name"]
    );
}

#[test]
fn increment_maps_columns_and_refuses_text() {
    let p = projector(&pipeline(
        "key: {columns: [id]}",
        "  A: {op: increment, columns: {count: qty}}\n  B: {op: increment, fields: [name]}\n",
    ));
    let op = one(
        &p,
        event(
            "A",
            Some(s("k")),
            vec![("qty", Value::Int(2), ColumnType::Int)],
        ),
    )
    .unwrap();
    assert_eq!(
        (&*op.cells[0].column, &op.cells[0].value),
        ("count", &Value::Int(2))
    );
    let e = one(
        &p,
        event(
            "B",
            Some(s("k")),
            vec![("name", s("x"), ColumnType::String)],
        ),
    )
    .unwrap_err();
    assert!(e.to_string().contains("needs a number"), "{e}");
}

#[test]
fn key_from_fields_and_from_an_avro_record_key() {
    let p = projector(&pipeline(
        "key: {from: fields, columns: [a, b]}",
        "  A: {op: merge}\n",
    ));
    let op = one(
        &p,
        event(
            "A",
            None,
            vec![
                ("a", s("x"), ColumnType::String),
                ("b", Value::Long(3), ColumnType::Long),
                ("c", s("v"), ColumnType::String),
            ],
        ),
    )
    .unwrap();
    assert_eq!(op.key.len(), 2);
    assert_eq!(op.key[1].ty, ColumnType::Long);
    assert_eq!(op.cells.len(), 1);

    let p = projector(&pipeline("key: {columns: [a, b]}", "  A: {op: delete}\n"));
    let key = Value::Record(vec![("a".into(), s("x")), ("b".into(), Value::Long(3))]);
    let op = one(&p, event("A", Some(key), vec![])).unwrap();
    assert_eq!((op.kind, op.key.len()), (OpKind::Delete, 2));
}

#[test]
fn tombstones_delete_and_missing_keys_are_errors() {
    let p = projector(&pipeline("key: {columns: [id]}", "  A: {op: upsert}\n"));
    let mut tomb = event("A", Some(s("k")), vec![]);
    tomb.body = None;
    assert_eq!(one(&p, tomb).unwrap().kind, OpKind::Delete);
    let e = one(&p, event("A", None, vec![])).unwrap_err();
    assert!(e.to_string().contains("no Kafka key"), "{e}");
    let e = one(&p, event("Z", Some(s("k")), vec![])).unwrap_err();
    assert!(matches!(e, RecordError::UnknownEventType { .. }));
}

fn items(qtys: &[(i32, i64)]) -> Value {
    Value::Array(
        qtys.iter()
            .map(|(q, p)| {
                Value::Record(vec![
                    ("qty".into(), Value::Int(*q)),
                    ("price_cents".into(), Value::Long(*p)),
                ])
            })
            .collect(),
    )
}

fn order(event_type: &str, status: &str, lines: &[(i32, i64)]) -> Event {
    event(
        event_type,
        Some(s("o1")),
        vec![
            ("order_id", s("o1"), ColumnType::String),
            ("status", s(status), ColumnType::String),
            ("amount", Value::Double(0.1 + 0.2), ColumnType::Double),
            ("items", items(lines), ColumnType::Json),
        ],
    )
}

fn cell<'a>(op: &'a Op, column: &str) -> &'a Cell {
    op.cells
        .iter()
        .find(|c| &*c.column == column)
        .unwrap_or_else(|| panic!("no column {column} in {op:?}"))
}

#[test]
fn computed_columns_sum_lists_and_keep_copied_fields_exact() {
    let p = projector(&pipeline(
        "key: {columns: [order_id]}",
        "  A:\n    op: upsert\n    columns:\n      item_count: \"items.map(i, i.qty).sum()\"\n      \
         total_cents: \"items.map(i, i.qty * i.price_cents).sum()\"\n      \
         status: \"'PLACED'\"\n      amount: amount\n      \
         small: \"items.size()\"\n    types: {small: int}\n",
    ));
    let op = one(&p, order("A", "new", &[(2, 150), (3, 1000)])).unwrap();
    assert_eq!(
        (cell(&op, "item_count").ty, &cell(&op, "item_count").value),
        (ColumnType::Long, &Value::Long(5))
    );
    assert_eq!(cell(&op, "total_cents").value, Value::Long(3300));
    assert_eq!(cell(&op, "status").value, s("PLACED"));
    assert_eq!(
        (cell(&op, "small").ty, &cell(&op, "small").value),
        (ColumnType::Int, &Value::Int(2))
    );
    // A copied field is the committed value, bit for bit, with its schema's type.
    let amount = cell(&op, "amount");
    assert_eq!(amount.ty, ColumnType::Double);
    let Value::Double(a) = amount.value else {
        panic!("{amount:?}")
    };
    assert_eq!(a.to_bits(), (0.1f64 + 0.2).to_bits());
    // The sum over no items is the int 0.
    let op = one(&p, order("A", "new", &[])).unwrap();
    assert_eq!(cell(&op, "item_count").value, Value::Long(0));
}

#[test]
fn rules_are_tried_in_order_and_unmatched_events_are_reported() {
    let p = projector(&pipeline(
        "key: {columns: [order_id]}",
        "  A:\n    - when: \"status == 'CANCELLED'\"\n      op: delete\n    \
         - when: \"items.size() > 1\"\n      op: merge\n      columns: {status: \"'BIG'\"}\n    \
         - when: \"items.size() == 1\"\n      op: merge\n      columns: {status: status}\n",
    ));
    let op = one(&p, order("A", "CANCELLED", &[(1, 1), (1, 1)])).unwrap();
    assert_eq!(op.kind, OpKind::Delete);
    let op = one(&p, order("A", "x", &[(1, 1), (1, 1)])).unwrap();
    assert_eq!(
        (op.kind, &cell(&op, "status").value),
        (OpKind::Merge, &s("BIG"))
    );
    let op = one(&p, order("A", "x", &[(1, 1)])).unwrap();
    assert_eq!(cell(&op, "status").value, s("x"));
    let e = one(&p, order("A", "x", &[])).unwrap_err();
    assert!(matches!(e, RecordError::Unmatched { .. }), "{e}");
}

#[test]
fn keys_and_increments_take_expressions() {
    let p = projector(&pipeline(
        "key: {columns: [id]}",
        "  A:\n    op: increment\n    key: {id: \"'order-' + order_id\"}\n    \
         columns: {total_cents: \"items.map(i, i.qty * i.price_cents).sum()\"}\n",
    ));
    let op = one(&p, order("A", "x", &[(2, 5)])).unwrap();
    assert_eq!(op.key[0].value, s("order-o1"));
    assert_eq!(cell(&op, "total_cents").value, Value::Long(10));
}

#[test]
fn runtime_errors_name_the_type_rule_column_and_expression() {
    let p = projector(&pipeline(
        "key: {columns: [order_id]}",
        "  A:\n    - when: \"status == 'x'\"\n      op: merge\n      \
         columns: {avg: \"items.map(i, i.price_cents).sum() / items.size()\"}\n    \
         - op: increment\n      columns: {n: \"status\"}\n",
    ));
    let e = one(&p, order("A", "x", &[])).unwrap_err().to_string();
    for part in [
        "A",
        "rule 1, column `avg`",
        "items.size()",
        "division by zero",
    ] {
        assert!(
            e.to_lowercase().contains(&part.to_lowercase()),
            "{part} missing from: {e}"
        );
    }
    let e = one(&p, order("A", "y", &[])).unwrap_err().to_string();
    assert!(
        e.contains("rule 2, increment of column `n` needs a number"),
        "{e}"
    );
}

#[test]
fn a_value_that_does_not_fit_its_declared_type_is_a_bad_record() {
    let p = projector(&pipeline(
        "key: {columns: [order_id]}",
        "  A:\n    op: merge\n    columns: {b: \"9999999999\"}\n    types: {b: int}\n",
    ));
    let e = one(&p, order("A", "x", &[])).unwrap_err().to_string();
    assert!(e.contains("does not fit an int"), "{e}");
}

#[test]
fn compile_problems_name_the_field() {
    let p = pipeline(
        "key: {columns: [order_id]}",
        "  A:\n    - op: merge\n      columns: {a: \"1 +\"}\n    - when: \"(\"\n      op: delete\n  \
         B:\n    op: merge\n    key: {other: \"1\"}\n",
    );
    let problems = EventProjection::new(&p).err().unwrap();
    let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
    assert!(fields.contains(&"events.A[0].columns.a"), "{problems:?}");
    assert!(fields.contains(&"events.A[1].when"), "{problems:?}");
    assert!(fields.contains(&"events.A[0].op"), "{problems:?}");
    assert!(fields.contains(&"events.B.key"), "{problems:?}");
}

const WITH_LINES: &str =
    "key: {columns: [order_id]}\ntargets:\n  lines: {key: [order_id, line_no]}";

#[test]
fn child_rows_one_per_element_after_the_main_row() {
    let p = projector(&pipeline(
        WITH_LINES,
        "  A:\n    op: upsert\n    columns: {n: \"items.size()\"}\n    also:\n      \
         - {target: lines, op: delete, key: {order_id: order_id}}\n      \
         - target: lines\n        for_each: items\n        when: \"item.qty > 0\"\n        op: upsert\n        \
         key: {order_id: order_id, line_no: \"index\"}\n        \
         columns: {qty: \"item.qty\", cents: \"item.qty * item.price_cents\", status: status}\n",
    ));
    let ops = p
        .project(order("A", "new", &[(2, 150), (0, 1), (3, 10)]))
        .unwrap();
    let kinds: Vec<(usize, OpKind, bool, usize)> = ops
        .iter()
        .map(|o| (o.target, o.kind, o.prefix, o.key.len()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (0, OpKind::Upsert, false, 1),
            (1, OpKind::Delete, true, 1),
            (1, OpKind::Upsert, false, 2),
            (1, OpKind::Upsert, false, 2),
        ]
    );
    // The element at index 1 has qty 0: skipped by `when`; indexes are positions.
    assert_eq!(ops[2].key[1].value, Value::Long(0));
    assert_eq!(ops[3].key[1].value, Value::Long(2));
    assert_eq!(cell(&ops[3], "cents").value, Value::Long(30));
    assert_eq!(cell(&ops[3], "status").value, s("new"));
}

#[test]
fn child_rules_are_checked_against_their_target() {
    let p = pipeline(
        WITH_LINES,
        "  A:\n    op: upsert\n    also:\n      \
         - {target: nope, op: upsert, key: {order_id: order_id}}\n      \
         - {target: lines, op: upsert, key: {order_id: order_id}}\n      \
         - {target: lines, op: delete, key: {line_no: \"1\"}}\n      \
         - {target: lines, op: merge, key: {order_id: order_id, line_no: \"index\"}}\n",
    );
    let problems = EventProjection::new(&p).err().unwrap();
    let text = format!("{problems:?}");
    assert!(text.contains("events.A.also[0].target"), "{text}");
    assert!(
        text.contains("events.A.also[1].key") && text.contains("every key column"),
        "{text}"
    );
    assert!(
        text.contains("events.A.also[2].key") && text.contains("first key columns"),
        "{text}"
    );
    assert!(text.contains("only defined with `for_each`"), "{text}");
}

#[test]
fn routing_picks_the_table_of_the_value_and_refuses_any_other() {
    let p = projector(&pipeline(
        "key: {columns: [order_id]}\nrouting:\n  status: [new, paid]\ntargets:\n  lines_{status}: {key: [order_id, line_no]}",
        "  A:\n    op: upsert\n    columns: {n: \"items.size()\"}\n    also:\n      \
         - {target: \"lines_{status}\", op: delete, key: {order_id: order_id}}\n",
    ));
    // Concrete targets: the sink's own `t`, then lines_new and lines_paid.
    let ops = p.project(order("A", "paid", &[])).unwrap();
    assert_eq!(ops[0].target, 0);
    let lines_paid = ops[1].target;
    let ops = p.project(order("A", "new", &[])).unwrap();
    assert_ne!(ops[1].target, lines_paid);
    let e = p.project(order("A", "evil", &[])).unwrap_err().to_string();
    assert!(
        e.contains("`status` = `evil` is not one of its routing values (new, paid)"),
        "{e}"
    );
}
