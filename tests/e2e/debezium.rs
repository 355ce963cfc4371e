//! `envelope: debezium`: change events with the real Debezium PostgreSQL connector's Avro
//! shapes (Key record, Envelope with before/after/source/op/ts_ms/transaction, the
//! `io.debezium.connector.postgresql.Source` block) produced through the registry, into
//! PostgreSQL and MongoDB on the real servers: snapshot reads, inserts, updates (one with
//! an unchanged TOAST column's placeholder), a delete and its tombstone, and a column
//! added at the source.

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::types::Value;
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use sinkd_tests::scenarios;
use sinkd_tests::stack::{self, Record};
use sinkd_tests::target::{MONGO_DATABASE, Target};

const KEY: &str = r#"{"type":"record","name":"Key","namespace":"dbserver1.inventory.customers",
"fields":[{"name":"id","type":"int"}],"connect.name":"dbserver1.inventory.customers.Key"}"#;

fn row_schema(phone: bool) -> String {
    let phone = if phone {
        r#",{"name":"phone","type":["null","string"],"default":null}"#
    } else {
        ""
    };
    format!(
        r#"{{"type":"record","name":"Value","namespace":"dbserver1.inventory.customers","fields":[
{{"name":"id","type":"int"}},{{"name":"first_name","type":"string"}},
{{"name":"last_name","type":"string"}},{{"name":"email","type":"string"}},
{{"name":"bio","type":["null","string"],"default":null}}{phone}],
"connect.name":"dbserver1.inventory.customers.Value"}}"#
    )
}

/// The Envelope the Debezium PostgreSQL connector registers (Avro converter).
fn envelope_schema(phone: bool) -> String {
    format!(
        r#"{{"type":"record","name":"Envelope","namespace":"dbserver1.inventory.customers","fields":[
{{"name":"before","type":["null",{row}],"default":null}},
{{"name":"after","type":["null","Value"],"default":null}},
{{"name":"source","type":{{"type":"record","name":"Source","namespace":"io.debezium.connector.postgresql","fields":[
  {{"name":"version","type":"string"}},{{"name":"connector","type":"string"}},{{"name":"name","type":"string"}},
  {{"name":"ts_ms","type":"long"}},
  {{"name":"snapshot","type":[{{"type":"string","connect.version":1,"connect.parameters":{{"allowed":"true,last,false,incremental"}},"connect.default":"false","connect.name":"io.debezium.data.Enum"}},"null"],"default":"false"}},
  {{"name":"db","type":"string"}},{{"name":"sequence","type":["null","string"],"default":null}},
  {{"name":"schema","type":"string"}},{{"name":"table","type":"string"}},
  {{"name":"txId","type":["null","long"],"default":null}},{{"name":"lsn","type":["null","long"],"default":null}},
  {{"name":"xmin","type":["null","long"],"default":null}}],
  "connect.name":"io.debezium.connector.postgresql.Source"}}}},
{{"name":"op","type":"string"}},
{{"name":"ts_ms","type":["null","long"],"default":null}},
{{"name":"transaction","type":["null",{{"type":"record","name":"block","namespace":"event","fields":[
  {{"name":"id","type":"string"}},{{"name":"total_order","type":"long"}},{{"name":"data_collection_order","type":"long"}}],
  "connect.version":1,"connect.name":"event.block"}}],"default":null}}],
"connect.version":1,"connect.name":"dbserver1.inventory.customers.Envelope"}}"#,
        row = row_schema(phone)
    )
}

/// A customers row: (id, first, last, email, bio, phone). `phone: None` in a v1 row means
/// the column does not exist yet.
type Row = (
    i32,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

const PLACEHOLDER: &str = "__debezium_unavailable_value";

fn row_value(r: &Row, v2: bool) -> Value {
    let opt = |s: Option<&str>| match s {
        Some(s) => Value::Union(1, Box::new(Value::String(s.into()))),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    let mut fields = vec![
        ("id".to_owned(), Value::Int(r.0)),
        ("first_name".to_owned(), Value::String(r.1.into())),
        ("last_name".to_owned(), Value::String(r.2.into())),
        ("email".to_owned(), Value::String(r.3.into())),
        ("bio".to_owned(), opt(r.4)),
    ];
    if v2 {
        fields.push(("phone".to_owned(), opt(r.5)));
    }
    Value::Record(fields)
}

fn change(op: &str, before: Option<&Row>, after: Option<&Row>, v2: bool, lsn: i64) -> Value {
    let side = |r: Option<&Row>| match r {
        Some(r) => Value::Union(1, Box::new(row_value(r, v2))),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    let long = |v: i64| Value::Union(1, Box::new(Value::Long(v)));
    Value::Record(vec![
        ("before".into(), side(before)),
        ("after".into(), side(after)),
        (
            "source".into(),
            Value::Record(vec![
                ("version".into(), Value::String("2.7.3.Final".into())),
                ("connector".into(), Value::String("postgresql".into())),
                ("name".into(), Value::String("dbserver1".into())),
                ("ts_ms".into(), Value::Long(1_763_000_000_000 + lsn)),
                (
                    "snapshot".into(),
                    Value::Union(
                        0,
                        Box::new(Value::String(
                            if op == "r" { "true" } else { "false" }.into(),
                        )),
                    ),
                ),
                ("db".into(), Value::String("postgres".into())),
                ("sequence".into(), Value::Union(0, Box::new(Value::Null))),
                ("schema".into(), Value::String("inventory".into())),
                ("table".into(), Value::String("customers".into())),
                ("txId".into(), long(700 + lsn)),
                ("lsn".into(), long(lsn * 100)),
                ("xmin".into(), Value::Union(0, Box::new(Value::Null))),
            ]),
        ),
        ("op".into(), Value::String(op.into())),
        ("ts_ms".into(), long(1_763_000_000_100 + lsn)),
        ("transaction".into(), Value::Union(0, Box::new(Value::Null))),
    ])
}

/// The final table: id → (first, last, email, bio, phone).
type State = BTreeMap<i32, (String, String, String, Option<String>, Option<String>)>;

fn expected() -> State {
    let own = |s: &str| s.to_owned();
    BTreeMap::from([
        (
            2,
            (
                own("Bob"),
                own("Baker"),
                own("bob2@example.com"),
                None,
                None,
            ),
        ),
        (
            3,
            (
                own("Cy"),
                own("Chu"),
                own("cy2@example.com"),
                Some(own("a long bio, kept in TOAST")),
                None,
            ),
        ),
        (
            4,
            (
                own("Dee"),
                own("Diaz"),
                own("dee@example.com"),
                None,
                Some(own("555-0104")),
            ),
        ),
        (
            5,
            (
                own("Eve"),
                own("Ernst"),
                own("eve@example.com"),
                Some(own("new")),
                Some(own("555-0105")),
            ),
        ),
    ])
}

/// Registers the schemas and produces the change stream; returns the end offset.
async fn produce_changes(topic: &str) -> i64 {
    let key_schema = Schema::parse_str(KEY).unwrap();
    let key_id = stack::register(&format!("{topic}-key"), KEY).await;
    let v1 = Schema::parse_str(&envelope_schema(false)).unwrap();
    let v1_id = stack::register(&format!("{topic}-value"), &envelope_schema(false)).await;
    let v2 = Schema::parse_str(&envelope_schema(true)).unwrap();
    let v2_id = stack::register(&format!("{topic}-value"), &envelope_schema(true)).await;
    let ann: Row = (1, "Ann", "Ames", "ann@example.com", Some("b1"), None);
    let bob: Row = (2, "Bob", "Baker", "bob@example.com", None, None);
    let bob2: Row = (2, "Bob", "Baker", "bob2@example.com", None, None);
    let cy: Row = (
        3,
        "Cy",
        "Chu",
        "cy@example.com",
        Some("a long bio, kept in TOAST"),
        None,
    );
    let cy2: Row = (3, "Cy", "Chu", "cy2@example.com", Some(PLACEHOLDER), None);
    let dee: Row = (4, "Dee", "Diaz", "dee@example.com", None, None);
    let dee2: Row = (4, "Dee", "Diaz", "dee@example.com", None, Some("555-0104"));
    let eve: Row = (
        5,
        "Eve",
        "Ernst",
        "eve@example.com",
        Some("new"),
        Some("555-0105"),
    );
    let key = |id: i32| {
        stack::encode(
            key_id,
            &key_schema,
            &Value::Record(vec![("id".into(), Value::Int(id))]),
        )
    };
    let v1c = |op: &str, b: Option<&Row>, a: Option<&Row>, lsn| {
        Some(stack::encode(v1_id, &v1, &change(op, b, a, false, lsn)))
    };
    let v2c = |op: &str, b: Option<&Row>, a: Option<&Row>, lsn| {
        Some(stack::encode(v2_id, &v2, &change(op, b, a, true, lsn)))
    };
    let records = vec![
        (key(1), v1c("r", None, Some(&ann), 1)),
        (key(2), v1c("r", None, Some(&bob), 2)),
        (key(3), v1c("r", None, Some(&cy), 3)),
        (key(4), v1c("c", None, Some(&dee), 4)),
        (key(2), v1c("u", Some(&bob), Some(&bob2), 5)),
        // bio is TOASTed and unchanged: Debezium sends the placeholder.
        (key(3), v1c("u", None, Some(&cy2), 6)),
        (key(1), v1c("d", Some(&ann), None, 7)),
        (key(1), None),
        // ALTER TABLE customers ADD COLUMN phone: the connector registers a new schema.
        (key(5), v2c("c", None, Some(&eve), 8)),
        (key(4), v2c("u", Some(&dee), Some(&dee2), 9)),
    ];
    let n = records.len() as i64;
    stack::produce(
        topic,
        records
            .into_iter()
            .map(|(key, value)| Record {
                key,
                value,
                headers: vec![],
            })
            .collect(),
    )
    .await;
    n
}

async fn run(target: &Target, read: impl AsyncFn(&str) -> State) {
    let name = stack::unique("dbz");
    let topic = format!("{name}.inventory.customers");
    stack::create_topic(&topic, 1).await;
    let end = produce_changes(&topic).await;
    let yaml = format!(
        "name: {name}
{source}{sink}envelope: debezium
key:
  columns: [id]
",
        source = scenarios::source_yaml(&topic, "    key_format: avro\n"),
        sink = target.sink_yaml(&name)
    );
    let ends = std::collections::HashMap::from([(0, end)]);
    let daemon = scenarios::run_pipeline(target, &name, &yaml, &ends).await;
    assert_eq!(read(&name).await, expected(), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn debezium_changes_give_the_exact_table_in_postgres() {
    run(&Target::postgres(), async |table: &str| {
        let pg = stack::pg().await;
        pg.query(
            &format!("SELECT id, first_name, last_name, email, bio, phone FROM \"{table}\""),
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))))
        .collect()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn debezium_changes_give_the_exact_collection_in_mongodb() {
    let target = Target::mongo();
    let Target::Mongo(url) = target.clone() else {
        unreachable!()
    };
    run(&target, async |collection: &str| {
        let docs: Vec<Document> = mongodb::Client::with_uri_str(&url)
            .await
            .unwrap()
            .database(MONGO_DATABASE)
            .collection::<Document>(collection)
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let text = |d: &Document, k: &str| match d.get(k) {
            Some(Bson::String(s)) => Some(s.clone()),
            _ => None,
        };
        docs.iter()
            .map(|d| {
                let id = match d.get("_id") {
                    Some(Bson::Int32(i)) => *i,
                    other => panic!("_id {other:?}"),
                };
                let t = |k| text(d, k).unwrap_or_default();
                (
                    id,
                    (
                        t("first_name"),
                        t("last_name"),
                        t("email"),
                        text(d, "bio"),
                        text(d, "phone"),
                    ),
                )
            })
            .collect()
    })
    .await;
}
