//! Decoding against the real registry: every malformed input is a typed error, never a
//! panic; a registry that is down is retriable, not a bad record.

use std::sync::Arc;

use apache_avro::types::Value;
use sinkd_core::config::{KeyFormat, RegistryConfig};
use sinkd_core::decode::Decoder;
use sinkd_core::error::{ErrorClass, RecordError};
use sinkd_core::event::{RawRecord, SourcePosition};
use sinkd_kafka::{AvroEventDecoder, Registry};
use sinkd_tests::{shop, stack};

fn registry(url: &str) -> Arc<Registry> {
    let cfg: RegistryConfig =
        serde_json::from_value(serde_json::json!({ "url": url, "timeout_ms": 2000 })).unwrap();
    Arc::new(Registry::new(&cfg).unwrap())
}

fn raw(topic: &str, value: Option<Vec<u8>>) -> RawRecord {
    RawRecord {
        position: SourcePosition {
            topic: Arc::from(topic),
            partition: 0,
            offset: 0,
        },
        timestamp_ms: None,
        key: Some(b"order-1".to_vec()),
        value,
        headers: vec![],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_payloads_are_typed_errors() {
    let topic = stack::unique("decode");
    let ids = shop::register_schemas(&topic).await;
    let decoder = AvroEventDecoder::new(registry(&stack::registry_url()), KeyFormat::String);
    let (placed_id, _) = &ids[&shop::Kind::Placed];

    let e = decoder
        .decode(&raw(&topic, Some(vec![0, 0])))
        .await
        .unwrap_err();
    assert!(matches!(e, RecordError::ShortPayload { len: 2 }), "{e}");

    let e = decoder
        .decode(&raw(&topic, Some(vec![7, 0, 0, 0, 1, 2])))
        .await
        .unwrap_err();
    assert!(matches!(e, RecordError::WrongMagic { found: 7 }), "{e}");

    let e = decoder
        .decode(&raw(&topic, Some(vec![0, 0x7f, 0xff, 0xff, 0xf0, 2])))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            RecordError::UnknownSchemaId {
                id: 0x7fff_fff0,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.class(), ErrorClass::BadRecord);

    // A valid header on a datum that does not match the schema: a string whose length
    // runs past the end.
    let mut corrupt = vec![0];
    corrupt.extend_from_slice(&placed_id.to_be_bytes());
    corrupt.extend_from_slice(&[0x7e, b'x']);
    let e = decoder
        .decode(&raw(&topic, Some(corrupt)))
        .await
        .unwrap_err();
    assert!(matches!(e, RecordError::CorruptDatum { .. }), "{e}");

    // Random bytes after a valid header never panic.
    for seed in 0..200u32 {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&placed_id.to_be_bytes());
        bytes.extend(
            (0..(seed % 40))
                .map(|i| (seed.wrapping_mul(2_654_435_761).rotate_left(i) & 0xff) as u8),
        );
        let _ = decoder.decode(&raw(&topic, Some(bytes))).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_record_decodes_with_type_version_and_key() {
    let topic = stack::unique("decode");
    let ids = shop::register_schemas(&topic).await;
    let decoder = AvroEventDecoder::new(registry(&stack::registry_url()), KeyFormat::String);
    let events = shop::generate(1, 1, 1);
    let record = shop::records(&ids, &events).remove(0);
    let event = decoder.decode(&raw(&topic, record.value)).await.unwrap();
    assert_eq!(&*event.event_type, "com.shop.OrderPlaced");
    assert_eq!(event.version, 1);
    assert_eq!(event.key, Some(Value::String("order-1".into())));
    assert!(event.schema.unwrap().field_type("placed_at").is_some());

    let tombstone = decoder.decode(&raw(&topic, None)).await.unwrap();
    assert!(tombstone.body.is_none());
}

/// An id the registry does not have is a bad record that names the registry's answer, and
/// it is remembered: later records with it cost no request (they stay bad records even
/// with the registry gone, rather than turning into an outage).
#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_schema_id_names_the_registrys_answer_and_is_remembered() {
    let server = stack::OwnRegistry::start(&[]);
    let decoder = AvroEventDecoder::new(registry(&server.url), KeyFormat::String);
    let record = raw("t", Some(vec![0, 0, 0, 0x30, 0x39, 2]));
    let e = decoder.decode(&record).await.unwrap_err();
    assert!(
        matches!(e, RecordError::UnknownSchemaId { id: 12_345, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("answered 404 Not Found"), "{e}");
    drop(server);
    let again = decoder.decode(&record).await.unwrap_err();
    assert_eq!(again.class(), ErrorClass::BadRecord, "{again}");
    assert_eq!(again.to_string(), e.to_string());
}

/// A schema registered after its id was found missing is seen by the next task: each task
/// start makes the pipeline's long-lived registry client forget what it found missing.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_start_sees_a_schema_registered_after_its_id_was_missing() {
    let server = stack::OwnRegistry::start(&[]);
    let registry = registry(&server.url);
    let schema = shop::Kind::Cancelled.schema();
    let value = Value::Record(vec![
        ("order_id".into(), Value::String("o".into())),
        ("reason".into(), Value::String("r".into())),
    ]);
    // A fresh registry gives its first schema id 1.
    let record = raw("t", Some(stack::encode(1, &schema, &value)));
    let before = AvroEventDecoder::new(registry.clone(), KeyFormat::String);
    let e = before.decode(&record).await.unwrap_err();
    assert!(
        matches!(e, RecordError::UnknownSchemaId { id: 1, .. }),
        "{e}"
    );
    let id = stack::register_at(&server.url, None, "t-value", shop::ORDER_CANCELLED).await;
    assert_eq!(id, 1);
    registry.forget_failures();
    let after = AvroEventDecoder::new(registry, KeyFormat::String);
    let event = after.decode(&record).await.unwrap();
    assert_eq!(&*event.event_type, "com.shop.OrderCancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_registry_is_retriable_not_a_bad_record() {
    let decoder = AvroEventDecoder::new(registry("http://127.0.0.1:9"), KeyFormat::String);
    let e = decoder
        .decode(&raw("t", Some(vec![0, 0, 0, 0, 1, 2])))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Retriable, "{e}");
}

/// A registry that requires basic authentication: with the credentials decoding works;
/// without them the error is fatal (configuration), never a bad record, and it carries the
/// HTTP status and the registry's own message, also when the body has no `error_code`
/// (Karapace's `{"message": "Unauthorized"}`).
#[tokio::test(flavor = "multi_thread")]
async fn registry_basic_auth_is_sent_and_its_absence_is_fatal() {
    for style in ["confluent", "karapace"] {
        let server = stack::OwnRegistry::start(&[
            ("REGISTRY_BASIC_AUTH", "alice:s3cret"),
            ("REGISTRY_STYLE", style),
        ]);
        let url = server.url.clone();
        let alice = Some(("alice", "s3cret"));
        let id = stack::register_at(&url, alice, "t-value", shop::ORDER_CANCELLED).await;
        let schema = shop::Kind::Cancelled.schema();
        let value = Value::Record(vec![
            ("order_id".into(), Value::String("o".into())),
            ("reason".into(), Value::String("r".into())),
        ]);
        let bytes = stack::encode(id, &schema, &value);

        let cfg: RegistryConfig = serde_json::from_value(serde_json::json!({
            "url": url, "basic_auth": { "username": "alice", "password": "s3cret" }
        }))
        .unwrap();
        let with_auth =
            AvroEventDecoder::new(Arc::new(Registry::new(&cfg).unwrap()), KeyFormat::String);
        let event = with_auth
            .decode(&raw("t", Some(bytes.clone())))
            .await
            .unwrap();
        assert_eq!(&*event.event_type, "com.shop.OrderCancelled");

        let without = AvroEventDecoder::new(registry(&url), KeyFormat::String);
        let e = without.decode(&raw("t", Some(bytes))).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Fatal, "{style}: {e}");
        let text = e.to_string();
        assert!(
            text.contains("401 Unauthorized: Unauthorized") && !text.contains("couldn't parse"),
            "{style}: {text}"
        );
    }
}
