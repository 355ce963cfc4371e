//! sinkd's fuzz targets: what a byte string from outside reaches first. Each takes any
//! bytes and must return without panicking, whatever they are; a bad input is an error
//! value, never a crash. cargo-fuzz runs them coverage-guided (`./bench fuzz`,
//! `fuzz/libfuzzer/`), and `./test` runs each for a few seconds with [`quick`]'s
//! mutations of the committed corpus (`fuzz/corpus/<target>/`) on the stable toolchain.
//!
//! - [`avro_datum`]: a Confluent-framed Avro record, decoded with one of [`schemas`]
//!   (resolved to a reader schema for some), then upcast and projected by [`PIPELINE`].
//! - [`pipeline_file`]: a pipeline file: YAML, `${VAR}` interpolation, validation.
//! - [`expression`]: a CEL expression compiled and evaluated against a sample event.
//! - [`upcasters`]: an `upcasters:` section compiled and run on a sample event.

pub mod quick;
pub mod schemas;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use apache_avro::types::Value;
use sinkd_core::event::{Event, RawRecord, SourcePosition};
use sinkd_core::expr::Expression;
use sinkd_core::schema::EventSchema;
use sinkd_core::transform::Transform;
use sinkd_core::value::to_json;
use sinkd_kafka::datum::ValueReader;
use sinkd_kafka::decoder::split_frame;

/// A fuzz target: any bytes in, no panic out.
pub type Target = fn(&[u8]);

/// The targets by name: the names of `fuzz/libfuzzer/fuzz_targets/*.rs` and of the corpus
/// folders.
pub const TARGETS: [(&str, Target); 4] = [
    ("avro_datum", avro_datum),
    ("pipeline_file", pipeline_file),
    ("expression", expression),
    ("upcasters", upcasters),
];

/// The pipeline the decoded events go through: computed columns, a condition, child rows,
/// an increment, over the schemas of [`schemas`].
pub const PIPELINE: &str = r#"name: fuzz
source:
  kafka: { bootstrap_servers: "127.0.0.1:9092", topics: [fuzz] }
  registry: { url: "http://127.0.0.1:8081" }
sink:
  postgres: { url: "postgres://fuzz@127.0.0.1/fuzz", table: samples }
key:
  from: kafka_key
  columns: [id]
targets:
  sample_lines:
    key: [id, line_no]
events:
  com.edge.Sample:
    - when: "d > 0.0"
      op: upsert
      columns:
        d: d
        half: "d / 2.0"
        f: f
        l: l
        amount: amount
        at: at
        lines_n: "size(lines)"
        first_weight: "size(lines) > 0 ? lines[0].weight : 0.0"
        cents: cents
      also:
        - target: sample_lines
          for_each: lines
          op: upsert
          key: { id: id, line_no: index }
          columns: { price: item.price, weight: item.weight }
    - op: increment
      columns:
        l: l
  com.shop.OrderPlaced:
    op: upsert
  com.shop.ItemAdded:
    op: increment
    columns:
      item_count: quantity
      total_cents: "line_cents * 2"
  com.fuzz.Node:
    op: merge
    columns:
      depth: "next == null ? 0 : 1"
      label: label
"#;

/// The compiled [`PIPELINE`].
static TRANSFORM: LazyLock<Transform> = LazyLock::new(|| {
    let pipeline = sinkd_core::config::load::parse_str(
        Path::new("fuzz.yaml"),
        PIPELINE,
        &HashMap::new(),
        &sinkd_connectors::connectors(),
    )
    .expect("the fuzz pipeline parses");
    Transform::new(&pipeline).expect("the fuzz pipeline compiles")
});

/// One reader per schema of [`schemas::ALL`], with its column view.
static READERS: LazyLock<Vec<(ValueReader, Arc<EventSchema>)>> = LazyLock::new(|| {
    schemas::ALL
        .iter()
        .map(|(writer, reader)| {
            let writer = apache_avro::Schema::parse_str(writer).expect("writer schema");
            let reader =
                reader.map(|r| Arc::new(apache_avro::Schema::parse_str(r).expect("reader")));
            let view = EventSchema::from_avro(reader.as_deref().unwrap_or(&writer))
                .expect("record schema");
            let values = ValueReader::new(&writer, reader).expect("schema resolves");
            (values, Arc::new(view))
        })
        .collect()
});

fn raw(value: &[u8]) -> RawRecord {
    RawRecord {
        position: SourcePosition {
            topic: Arc::from("fuzz"),
            partition: 0,
            offset: 0,
        },
        timestamp_ms: Some(0),
        key: Some(b"k".to_vec()),
        value: Some(value.to_vec()),
        headers: Vec::new(),
    }
}

/// A Confluent frame: the schema id (modulo the number of schemas) picks the schema.
pub fn avro_datum(data: &[u8]) {
    let Ok((id, datum)) = split_frame(data) else {
        return;
    };
    let (values, view) = &READERS[id as usize % READERS.len()];
    let Ok(body) = values.read(datum) else {
        return;
    };
    let _ = to_json(&body);
    let event = Event {
        event_type: view.full_name.clone(),
        version: 1,
        key: Some(Value::String("k".into())),
        body: Some(body),
        schema: Some(view.clone()),
        position: raw(data).position,
        timestamp_ms: Some(0),
    };
    if let Ok(event) = TRANSFORM.prepare(&raw(data), event) {
        let _ = TRANSFORM.project(event);
    }
}

/// A pipeline file, with a few variables in the environment it may name.
pub fn pipeline_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env: HashMap<String, String> = [
        ("BROKERS", "127.0.0.1:9092"),
        ("SECRET", "s3cr3t"),
        ("EMPTY", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let _ = sinkd_core::config::load::load_text(
        Path::new("/nonexistent/fuzz.yaml"),
        text,
        &env,
        &sinkd_connectors::connectors(),
    );
}

/// The fields of a sample event, for expressions to read.
fn sample_fields() -> Vec<(String, Value)> {
    vec![
        ("id".into(), Value::String("o-1".into())),
        ("n".into(), Value::Long(i64::MAX)),
        ("i".into(), Value::Int(i32::MIN)),
        ("d".into(), Value::Double(f64::NAN)),
        ("s".into(), Value::String("héllo".into())),
        ("b".into(), Value::Bytes(vec![0, 255])),
        ("on".into(), Value::Boolean(true)),
        ("none".into(), Value::Union(0, Box::new(Value::Null))),
        ("at".into(), Value::TimestampMicros(-1)),
        (
            "items".into(),
            Value::Array(vec![Value::Record(vec![
                ("qty".into(), Value::Int(2)),
                ("sku".into(), Value::String("x".into())),
            ])]),
        ),
        (
            "tags".into(),
            Value::Map([("a".to_owned(), Value::Long(1))].into_iter().collect()),
        ),
    ]
}

/// A CEL expression, compiled and evaluated against [`sample_fields`].
pub fn expression(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    static ENV: LazyLock<Arc<cel::Env>> = LazyLock::new(sinkd_core::expr::environment);
    let Ok(e) = Expression::compile(&ENV, source) else {
        return;
    };
    let fields = sample_fields();
    let _ = e.eval_cel(&fields);
    let _ = e.eval_bool(&fields);
}

/// An `upcasters:` section (YAML), compiled into a pipeline and run on a sample event of
/// version 1.
pub fn upcasters(data: &[u8]) {
    let Ok(section) = std::str::from_utf8(data) else {
        return;
    };
    let text = format!(
        "name: up\nsource:\n  kafka: {{ bootstrap_servers: b, topics: [t] }}\n  registry: {{ url: 'http://r' }}\n\
         sink:\n  postgres: {{ url: 'postgres://u@h/d', table: t }}\nkey: {{ columns: [id] }}\n\
         events:\n  com.shop.OrderPlaced: {{ op: upsert }}\nupcasters:\n{section}\n"
    );
    let Ok(pipeline) = sinkd_core::config::load::parse_str(
        Path::new("up.yaml"),
        &text,
        &HashMap::new(),
        &sinkd_connectors::connectors(),
    ) else {
        return;
    };
    let Ok(transform) = Transform::new(&pipeline) else {
        return;
    };
    let schema = apache_avro::Schema::parse_str(schemas::ORDER_PLACED).expect("schema");
    let event = Event {
        event_type: Arc::from("com.shop.OrderPlaced"),
        version: 1,
        key: Some(Value::String("o-1".into())),
        body: Some(Value::Record(
            sample_fields()
                .into_iter()
                .chain([("customer".to_owned(), Value::String("c".into()))])
                .collect(),
        )),
        schema: EventSchema::from_avro(&schema).map(Arc::new),
        position: raw(b"").position,
        timestamp_ms: Some(0),
    };
    let _ = transform.prepare(&raw(b""), event);
}
