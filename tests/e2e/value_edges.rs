//! Values at the edges of their types reach each database exactly as they were committed,
//! with the real `sinkd` binary: doubles and floats bit for bit (extremes, subnormals,
//! negative zero, NaN, infinities), longs at both ends, decimals at full precision and
//! scale (top-level, and nested in a record, an array, a map and child rows, where only
//! the schema knows the scale), and microsecond timestamps either side of the epoch.

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::types::Value;
use mongodb::bson::{Bson, Document};
use sinkd_tests::daemon::Daemon;
use sinkd_tests::scenarios;
use sinkd_tests::stack;
use sinkd_tests::target::Target;

/// The sample schema the fuzz target of Avro datums also decodes.
const SCHEMA: &str = sinkd_fuzz::schemas::SAMPLE;

/// One sample: what is sent, and the decimal texts every database must give back.
struct Sample {
    id: &'static str,
    d: f64,
    f: f32,
    l: i64,
    /// Unscaled, scale 10.
    amount: i128,
    amount_text: &'static str,
    at_micros: i64,
    /// Unscaled, scale 2, with its text; also the price of each of `lines`.
    price: i64,
    price_text: &'static str,
    weight: f64,
    /// Unscaled, scale 4, with its text.
    cents: i64,
    cents_text: &'static str,
}

fn samples() -> Vec<Sample> {
    vec![
        Sample {
            id: "max",
            d: f64::MAX,
            f: f32::MAX,
            l: i64::MAX,
            amount: 10i128.pow(38) - 1,
            amount_text: "9999999999999999999999999999.9999999999",
            // 9999-12-31T23:59:59.999999Z
            at_micros: 253_402_300_799_999_999,
            price: 999_999_999_999,
            price_text: "9999999999.99",
            weight: f64::MAX,
            cents: 999_999_999_999_999_999,
            cents_text: "99999999999999.9999",
        },
        Sample {
            id: "min",
            d: f64::MIN_POSITIVE,
            f: f32::MIN_POSITIVE,
            l: i64::MIN,
            amount: -1,
            amount_text: "-0.0000000001",
            at_micros: -1,
            price: -999_999_999_999,
            price_text: "-9999999999.99",
            weight: 5e-324,
            cents: -1,
            cents_text: "-0.0001",
        },
        Sample {
            id: "zero",
            d: -0.0,
            f: -0.0,
            l: 0,
            amount: 0,
            amount_text: "0.0000000000",
            at_micros: 0,
            price: 0,
            price_text: "0.00",
            weight: 0.0,
            cents: 0,
            cents_text: "0.0000",
        },
        Sample {
            id: "odd",
            d: f64::from_bits(1), // the smallest subnormal
            f: f32::from_bits(1),
            l: -1,
            amount: 1_000_000_000_000,
            amount_text: "100.0000000000",
            at_micros: 1_700_000_000_123_456,
            price: 10_000,
            price_text: "100.00",
            weight: 0.1 + 0.2,
            cents: 12_345,
            cents_text: "1.2345",
        },
        Sample {
            id: "nan",
            d: f64::NAN,
            f: f32::INFINITY,
            l: 1,
            amount: 1,
            amount_text: "0.0000000001",
            at_micros: 1,
            price: 1,
            price_text: "0.01",
            weight: f64::NEG_INFINITY,
            cents: 1,
            cents_text: "0.0001",
        },
    ]
}

fn decimal(unscaled: i128) -> Value {
    Value::Decimal(apache_avro::Decimal::from(unscaled.to_be_bytes()))
}

fn value(s: &Sample) -> Value {
    let line = || {
        Value::Record(vec![
            ("price".into(), decimal(s.price.into())),
            ("weight".into(), Value::Double(s.weight)),
        ])
    };
    let cents = Value::Union(
        1,
        Box::new(Value::Decimal(apache_avro::Decimal::from(
            s.cents.to_be_bytes(),
        ))),
    );
    Value::Record(vec![
        ("id".into(), Value::String(s.id.into())),
        ("d".into(), Value::Double(s.d)),
        ("f".into(), Value::Float(s.f)),
        ("l".into(), Value::Long(s.l)),
        ("amount".into(), decimal(s.amount)),
        ("at".into(), Value::TimestampMicros(s.at_micros)),
        ("line".into(), line()),
        ("lines".into(), Value::Array(vec![line(), line()])),
        (
            "cents".into(),
            Value::Map(
                [
                    ("c".to_owned(), cents),
                    ("none".to_owned(), Value::Union(0, Box::new(Value::Null))),
                ]
                .into_iter()
                .collect(),
            ),
        ),
    ])
}

/// Publishes the samples and runs a pipeline into `target` (with child rows of `lines`
/// into `<table>_lines` where the sink has child targets) until it has applied them.
async fn run(target: &Target) -> (String, Daemon) {
    let name = stack::unique("edges");
    let topic = format!("{name}.samples");
    stack::create_topic(&topic, 1).await;
    let id = stack::register(&format!("{topic}-value"), SCHEMA).await;
    let schema = Schema::parse_str(SCHEMA).unwrap();
    let records = samples()
        .iter()
        .map(|s| stack::Record {
            key: s.id.as_bytes().to_vec(),
            value: Some(stack::encode(id, &schema, &value(s))),
            headers: Vec::new(),
        })
        .collect();
    let ends = stack::produce(&topic, records).await;
    let yaml = format!(
        "name: {name}
{source}{sink}key:
  from: kafka_key
  columns: [id]
targets:
  {name}_lines:
    key: [id, line_no]
events:
  com.edge.Sample:
    op: upsert
    also:
      - target: {name}_lines
        for_each: lines
        op: upsert
        key: {{id: id, line_no: index}}
        columns: {{price: item.price, weight: item.weight}}
",
        source = scenarios::source_yaml(&topic, ""),
        sink = target.sink_yaml(&name)
    );
    let daemon = scenarios::run_pipeline(target, &name, &yaml, &ends).await;
    (name, daemon)
}

/// Asserts a double came back with the same bits (any NaN is a NaN).
fn same_f64(got: f64, want: f64, what: &str) {
    if want.is_nan() {
        assert!(got.is_nan(), "{what}: {got} is not NaN");
    } else {
        assert_eq!(got.to_bits(), want.to_bits(), "{what}: {got:e} != {want:e}");
    }
}

/// A double nested in JSON: a number, or one of the strings JSON uses for what has no
/// number. PostgreSQL's `jsonb` keeps numbers as `numeric`, which has no negative zero.
fn json_f64(got: &serde_json::Value, want: f64, what: &str) {
    let got = match got {
        serde_json::Value::Number(n) => n.to_string().parse::<f64>().unwrap(),
        serde_json::Value::String(s) if s == "NaN" => f64::NAN,
        serde_json::Value::String(s) if s == "Infinity" => f64::INFINITY,
        serde_json::Value::String(s) if s == "-Infinity" => f64::NEG_INFINITY,
        other => panic!("{what}: {other} is not a double"),
    };
    same_f64(got, want, what);
}

/// A decimal in MongoDB: a Decimal128 with the same digits and exponent as `want` (its
/// text may be in exponent form: `-1E-10` is `-0.0000000001`), or, wider than Decimal128's
/// 34 digits, the exact string.
fn same_decimal(got: &Bson, want: &str, what: &str) {
    match got {
        Bson::Decimal128(d) => {
            let want: mongodb::bson::Decimal128 = want.parse().unwrap();
            assert_eq!(d.bytes(), want.bytes(), "{what}: {d} is not {want}");
        }
        Bson::String(s) => assert_eq!(s, want, "{what}"),
        other => panic!("{what}: {other:?} is not a decimal"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_keeps_every_bit_and_digit() {
    let (name, _daemon) = run(&Target::postgres()).await;
    let pg = stack::pg().await;
    let rows = pg
        .query(
            &format!(
                "SELECT id, d, f, l, amount::text, \
                 (extract(epoch FROM at) * 1000000)::bigint, \
                 line, lines, cents FROM \"{name}\""
            ),
            &[],
        )
        .await
        .unwrap();
    let rows: BTreeMap<String, _> = rows.into_iter().map(|r| (r.get(0), r)).collect();
    assert_eq!(rows.len(), samples().len());
    for s in samples() {
        let r = &rows[s.id];
        let at = |what: &str| format!("sample {} {what}", s.id);
        same_f64(r.get::<_, f64>(1), s.d, &at("d"));
        let f: f32 = r.get(2);
        same_f64(f as f64, s.f as f64, &at("f"));
        assert_eq!(f.to_bits(), s.f.to_bits(), "{}", at("f bits"));
        assert_eq!(r.get::<_, i64>(3), s.l, "{}", at("l"));
        assert_eq!(r.get::<_, String>(4), s.amount_text, "{}", at("amount"));
        assert_eq!(r.get::<_, i64>(5), s.at_micros, "{}", at("at"));
        let line: serde_json::Value = r.get(6);
        assert_eq!(line["price"], s.price_text, "{}", at("line.price"));
        json_f64(&line["weight"], s.weight, &at("line.weight"));
        let lines: serde_json::Value = r.get(7);
        assert_eq!(lines[1]["price"], s.price_text, "{}", at("lines[1].price"));
        let cents: serde_json::Value = r.get(8);
        assert_eq!(cents["c"], s.cents_text, "{}", at("cents.c"));
        assert_eq!(
            cents["none"],
            serde_json::Value::Null,
            "{}",
            at("cents.none")
        );
    }
    // Child rows: a nested decimal becomes a numeric column with its scale.
    let lines = pg
        .query(
            &format!("SELECT id, line_no, price::text, weight FROM \"{name}_lines\" ORDER BY 1, 2"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(lines.len(), 2 * samples().len());
    let price_type: String = pg
        .query_one(
            "SELECT data_type FROM information_schema.columns \
             WHERE table_name = $1 AND column_name = 'price'",
            &[&format!("{name}_lines")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(price_type, "numeric", "a nested decimal's child column");
    for s in samples() {
        for r in lines.iter().filter(|r| r.get::<_, String>(0) == s.id) {
            assert_eq!(r.get::<_, String>(2), s.price_text, "line of {}", s.id);
            same_f64(r.get(3), s.weight, &format!("line weight of {}", s.id));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mongodb_keeps_every_bit_and_digit() {
    let target = Target::mongo();
    let (name, _daemon) = run(&target).await;
    let db = Target::mongo_db(&stack::mongo_url()).await;
    let docs: BTreeMap<String, Document> = stack::all_documents(&db.collection(&name))
        .await
        .into_iter()
        .map(|d| (d.get_str("_id").unwrap().to_owned(), d))
        .collect();
    assert_eq!(docs.len(), samples().len());
    for s in samples() {
        let d = &docs[s.id];
        let at = |what: &str| format!("sample {} {what}", s.id);
        same_f64(d.get_f64("d").unwrap(), s.d, &at("d"));
        let f = d.get_f64("f").unwrap();
        assert_eq!((f as f32).to_bits(), s.f.to_bits(), "{}", at("f"));
        assert_eq!(d.get_i64("l").unwrap(), s.l, "{}", at("l"));
        same_decimal(d.get("amount").unwrap(), s.amount_text, &at("amount"));
        // A BSON date holds milliseconds: a microsecond timestamp loses its last three
        // digits (documented in docs/sinks/mongodb.md).
        let date = d.get_datetime("at").unwrap();
        assert_eq!(
            date.timestamp_millis(),
            s.at_micros.div_euclid(1000),
            "{}",
            at("at")
        );
        let line = d.get_document("line").unwrap();
        same_decimal(line.get("price").unwrap(), s.price_text, &at("line.price"));
        same_f64(
            line.get_f64("weight").unwrap(),
            s.weight,
            &at("line.weight"),
        );
        let lines = d.get_array("lines").unwrap();
        let Bson::Document(second) = &lines[1] else {
            panic!("{}", at("lines[1]"))
        };
        same_decimal(second.get("price").unwrap(), s.price_text, &at("lines[1]"));
        let cents = d.get_document("cents").unwrap();
        same_decimal(cents.get("c").unwrap(), s.cents_text, &at("cents.c"));
        assert_eq!(cents.get("none"), Some(&Bson::Null), "{}", at("cents.none"));
    }
    let lines = stack::all_documents(&db.collection(&format!("{name}_lines"))).await;
    assert_eq!(lines.len(), 2 * samples().len());
    for l in &lines {
        let id = l.get_document("_id").unwrap().get_str("id").unwrap();
        let s = samples().into_iter().find(|s| s.id == id).unwrap();
        same_decimal(
            l.get("price").unwrap(),
            s.price_text,
            &format!("line of {id}"),
        );
        same_f64(
            l.get_f64("weight").unwrap(),
            s.weight,
            &format!("line weight of {id}"),
        );
    }
}
