//! Computed columns and `when` rules end to end, with the real `sinkd` binary, on every
//! sink: the shop's stream through [`sinkd_tests::projected::EVENTS`] must give exactly
//! the read model computed independently in the test, across `kill -9`s mid-run (the
//! increments of computed amounts included).

use sinkd_tests::projected;
use sinkd_tests::scenarios::{self, Setup};
use sinkd_tests::shop;
use sinkd_tests::target::Target;

async fn computed_read_model_survives_kills(target: Target, kills: usize) {
    let s = Setup::new(&target, "projected", 4, scenarios::BATCHES_OF_1000).await;
    let text = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(&s.file, projected::pipeline_yaml(&text)).unwrap();
    let events = shop::generate(20_000, 1_000, 15);
    let ends = shop::publish(&s.topic, &events).await;
    let daemon = s.kill9_while_progressing(s.start(), kills).await;
    s.caught_up(&ends, &daemon).await;
    let want = projected::expected(&events);
    assert!(
        want.values()
            .any(|r| r.status.as_deref() == Some("ON HOLD"))
            && want
                .values()
                .any(|r| r.status.as_deref() == Some("SHIPPED")),
        "the stream exercises every rule"
    );
    assert_eq!(s.orders().await, want, "after {kills} kills");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_computed_columns_and_rules_are_exact_after_kills() {
    computed_read_model_survives_kills(Target::postgres(), 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mongodb_computed_columns_and_rules_are_exact_after_kills() {
    computed_read_model_survives_kills(Target::mongo(), 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tantivy_computed_columns_and_rules_are_exact() {
    computed_read_model_survives_kills(
        Target::Tantivy(std::env::temp_dir().join("sinkd-test-indexes")),
        1,
    )
    .await;
}
