//! The end-to-end scenarios every sink runs, against the real servers and the real
//! `sinkd` binary (STYLE.md item 10). Each sink's test file calls them with its
//! [`Target`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use rand::Rng;
use rdkafka::message::{Headers, Message};

use crate::daemon::{Daemon, Workdir};
use crate::target::Target;
use crate::{shop, stack};

/// A pipeline's `batch:` of at most 500 events: several batches per test log, so a
/// crash or a rebuild lands between commits.
pub const SMALL_BATCHES: &str = "batch:\n  max_events: 500\n";
/// At most 500 events or 50 ms per batch: frequent commits under a slow producer.
pub const QUICK_BATCHES: &str = "batch:\n  max_events: 500\n  max_wait_ms: 50\n";
/// At most 1,000 events or 100 ms per batch.
pub const BATCHES_OF_1000: &str = "batch:\n  max_events: 1000\n  max_wait_ms: 100\n";

/// One scenario's topic, pipeline file and work folder.
pub struct Setup {
    /// The work folder (pipeline file, logs).
    pub dir: Workdir,
    /// Pipeline name (also the table or collection).
    pub pipeline: String,
    /// The topic.
    pub topic: String,
    /// Table or collection name.
    pub table: String,
    /// The pipeline file.
    pub file: PathBuf,
    /// The sink.
    pub target: Target,
}

impl Setup {
    /// A topic with `partitions` partitions and a pipeline file for `target`, with `extra`
    /// top-level YAML.
    pub async fn new(target: &Target, name: &str, partitions: i32, extra: &str) -> Setup {
        let pipeline = stack::unique(name);
        let topic = format!("{pipeline}.orders");
        let table = pipeline.clone();
        stack::create_topic(&topic, partitions).await;
        if let Target::Tantivy(base) = target {
            std::fs::create_dir_all(base).expect("index base folder");
        }
        let dir = Workdir::new(&pipeline);
        let file = dir.file(
            "pipeline.yaml",
            &shop::pipeline_yaml_to(&pipeline, &topic, &target.sink_yaml(&table), extra),
        );
        Setup {
            dir,
            pipeline,
            topic,
            table,
            file,
            target: target.clone(),
        }
    }

    /// Starts sinkd on the pipeline file.
    pub fn start(&self) -> Daemon {
        Daemon::start(&self.file, &self.dir.0.join("sinkd.log"))
    }

    /// Publishes `events`, starts the daemon and waits until it has applied them all.
    pub async fn run_through(&self, events: &[shop::ShopEvent]) -> Daemon {
        let ends = shop::publish(&self.topic, events).await;
        let daemon = self.start();
        self.caught_up(&ends, &daemon).await;
        daemon
    }

    /// Kills `daemon` with SIGKILL `kills` times, each time once its checkpoints have moved
    /// since the last kill, starting it again after each; returns the last one.
    pub async fn kill9_while_progressing(&self, mut daemon: Daemon, kills: usize) -> Daemon {
        let mut last = 0i64;
        for _ in 0..kills {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let done = self.applied().await;
                if done > last {
                    last = done;
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no progress\n{}",
                    daemon.log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            daemon.kill9();
            daemon = self.start();
        }
        daemon
    }

    /// Waits until the checkpoint reaches `ends`; fails with the daemon's log.
    pub async fn caught_up(&self, ends: &HashMap<i32, i64>, daemon: &Daemon) {
        self.target
            .wait_caught_up(&self.pipeline, ends, Duration::from_secs(180))
            .await
            .unwrap_or_else(|e| panic!("{e}\n--- sinkd log ---\n{}", daemon.log()));
    }

    /// The read model.
    pub async fn orders(&self) -> shop::Expected {
        self.target.read_orders(&self.table).await
    }

    /// The checkpoint.
    pub async fn checkpoints(&self) -> HashMap<i32, i64> {
        self.target.checkpoints(&self.pipeline).await
    }

    /// Events applied so far: the sum of the stored next offsets.
    pub async fn applied(&self) -> i64 {
        self.checkpoints().await.values().sum()
    }

    /// A pipeline (as [`Setup::new`]) that dead-letters bad records and unknown event
    /// types to a new topic; returns it with the topic's name.
    pub async fn dead_lettering(target: &Target, name: &str, partitions: i32) -> (Setup, String) {
        let extra =
            "on_error: dead_letter\nunknown_events: dead_letter\ndead_letter_topic: {dlq}\n";
        let s = Setup::new(target, name, partitions, extra).await;
        let dlq = s.with_dead_letter_topic().await;
        (s, dlq)
    }

    /// Gives the pipeline file's sink `parallelism: writers`.
    pub fn set_parallelism(&self, writers: usize) {
        let text = std::fs::read_to_string(&self.file).unwrap();
        let with = text.replacen(
            "\nsink:\n",
            &format!("\nsink:\n  parallelism: {writers}\n"),
            1,
        );
        assert_ne!(text, with, "a `sink:` section");
        std::fs::write(&self.file, with).unwrap();
    }

    /// Replaces `{dlq}` in the pipeline file with a new dead-letter topic; returns its name.
    pub async fn with_dead_letter_topic(&self) -> String {
        let dlq = format!("{}.dlq", self.pipeline);
        let text = std::fs::read_to_string(&self.file)
            .unwrap()
            .replace("{dlq}", &dlq);
        std::fs::write(&self.file, text).unwrap();
        stack::create_topic(&dlq, 1).await;
        dlq
    }
}

/// The `source:` section of a pipeline reading `topic` on the local stack (quick group
/// session timeouts), with `kafka_extra` (lines indented four spaces) in its `kafka:` map.
pub fn source_yaml(topic: &str, kafka_extra: &str) -> String {
    format!(
        "source:
  kafka:
    bootstrap_servers: ${{KAFKA_BROKERS:-127.0.0.1:9092}}
    topics: [{topic}]
{kafka_extra}    properties:
      session.timeout.ms: \"6000\"
      heartbeat.interval.ms: \"500\"
  registry:
    url: ${{SCHEMA_REGISTRY_URL:-http://127.0.0.1:8081}}
"
    )
}

/// Starts sinkd on pipeline `name` written as `yaml` into `target`, and waits until it
/// has applied everything up to `ends` (fails with its log otherwise).
pub async fn run_pipeline(
    target: &Target,
    name: &str,
    yaml: &str,
    ends: &HashMap<i32, i64>,
) -> Daemon {
    let dir = Workdir::new(name);
    let file = dir.file("pipeline.yaml", yaml);
    let daemon = Daemon::start(&file, &dir.0.join("sinkd.log"));
    target
        .wait_caught_up(name, ends, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n--- sinkd log ---\n{}", daemon.log()));
    daemon
}

/// Produces `records` in the background, `slice` at a time with `pause` between (a
/// steady load while a test does harm); the task returns the partition ends.
pub fn produce_in_slices(
    topic: &str,
    mut records: Vec<stack::Record>,
    slice: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<HashMap<i32, i64>> {
    let topic = topic.to_owned();
    tokio::spawn(async move {
        let producer = stack::producer();
        let mut ends = HashMap::new();
        while !records.is_empty() {
            let rest = records.split_off(records.len().min(slice));
            merge_ends(
                &mut ends,
                stack::produce_with(&producer, &topic, records).await,
            );
            records = rest;
            tokio::time::sleep(pause).await;
        }
        ends
    })
}

/// Merges partition ends (max per partition).
pub fn merge_ends(a: &mut HashMap<i32, i64>, b: HashMap<i32, i64>) {
    for (p, o) in b {
        let e = a.entry(p).or_insert(0);
        *e = (*e).max(o);
    }
}

/// Scenario: ten thousand events over four partitions give the expected table.
pub async fn ten_thousand_events_over_four_partitions_give_the_expected_table(target: &Target) {
    let s = Setup::new(target, "e2e", 4, "").await;
    let events = shop::generate(10_000, 500, 42);
    let _daemon = s.run_through(&events).await;
    let got = s.orders().await;
    let want = shop::expected(&events);
    assert!(want.len() > 100, "the stream keeps a good share of orders");
    assert_eq!(got, want);
}

/// Scenario: kill dash nine six times during a run leaves an exact table.
pub async fn kill_dash_nine_six_times_during_a_run_leaves_an_exact_table(target: &Target) {
    kill_dash_nine_six_times_with_writers(target, 1).await;
}

/// Scenario: the same six `kill -9` with `sink.parallelism: writers` (8 partitions, so
/// each writer holds several), ending exact.
pub async fn kill_dash_nine_six_times_with_writers(target: &Target, writers: usize) {
    let s = Setup::new(
        target,
        "crash",
        8,
        "batch:\n  max_events: 2000\n  max_wait_ms: 100\n",
    )
    .await;
    if writers != 1 {
        s.set_parallelism(writers);
    }
    let events = shop::generate(50_000, 2_000, 7);
    let ids = shop::register_schemas(&s.topic).await;
    let records = shop::records(&ids, &events);
    // Produce while the daemon is being killed: ten slices, a second apart.
    let producer = produce_in_slices(&s.topic, records, 5_000, Duration::from_secs(1));
    let mut kills = 0;
    let mut last_progress = 0i64;
    let mut daemon = s.start();
    while kills < 6 {
        // Wait for progress, then kill at a random moment of the next stretch of work.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let done = s.applied().await;
            if done > last_progress {
                last_progress = done;
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no progress\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..400))).await;
        daemon.kill9();
        kills += 1;
        daemon = s.start();
    }
    let ends = producer.await.unwrap();
    s.caught_up(&ends, &daemon).await;
    assert_eq!(ends.values().sum::<i64>(), 50_000);
    let got = s.orders().await;
    assert_eq!(got, shop::expected(&events), "after {kills} kills");
}

/// Scenario: moving the group offsets back does not reapply anything.
pub async fn moving_the_group_offsets_back_does_not_reapply_anything(target: &Target) {
    let s = Setup::new(target, "redeliver", 4, "").await;
    let first = shop::generate(3_000, 300, 11);
    let mut ends = shop::publish(&s.topic, &first).await;
    let mut daemon = s.start();
    s.caught_up(&ends, &daemon).await;
    daemon.stop_cleanly();
    let before = s.orders().await;
    assert_eq!(before, shop::expected(&first));

    // Behind the daemon's back: the group's committed offsets go back to the start.
    let group = format!("sinkd-{}", s.pipeline);
    let zeros: HashMap<i32, i64> = (0..4).map(|p| (p, 0)).collect();
    stack::commit_group_offsets(&group, &s.topic, &zeros);
    assert_eq!(stack::group_offsets(&group, &s.topic, 4), zeros);

    let daemon = s.start();
    // New events after the restart prove the daemon ran; the old ones must not count twice.
    let second = shop::generate(500, 300, 12);
    let ids = shop::register_schemas(&s.topic).await;
    merge_ends(
        &mut ends,
        stack::produce(&s.topic, shop::records(&ids, &second)).await,
    );
    s.caught_up(&ends, &daemon).await;
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_eq!(s.orders().await, shop::expected(&all));
}

/// Scenario: a poisoned record is dead lettered and the rest applied.
pub async fn a_poisoned_record_is_dead_lettered_and_the_rest_applied(target: &Target) {
    let (s, dlq) = Setup::dead_lettering(target, "dlq", 1).await;

    let events = shop::generate(400, 40, 3);
    let ids = shop::register_schemas(&s.topic).await;
    let mut records = shop::records(&ids, &events[..200]);
    let poison = vec![1u8, 0, 0, 0, 1, 42, 42];
    records.push(stack::Record {
        key: b"order-poison".to_vec(),
        value: Some(poison.clone()),
        headers: vec![("trace".into(), "abc".into())],
    });
    // An event type the pipeline does not declare.
    let gift = r#"{"type":"record","name":"GiftWrapped","namespace":"com.shop","fields":[{"name":"order_id","type":"string"}]}"#;
    let gift_id = stack::register(&format!("{}-com.shop.GiftWrapped", s.topic), gift).await;
    let gift_value = stack::encode(
        gift_id,
        &apache_avro::Schema::parse_str(gift).unwrap(),
        &apache_avro::types::Value::Record(vec![(
            "order_id".into(),
            apache_avro::types::Value::String("order-000001".into()),
        )]),
    );
    records.push(stack::Record {
        key: b"order-000001".to_vec(),
        value: Some(gift_value.clone()),
        headers: vec![],
    });
    records.extend(shop::records(&ids, &events[200..]));
    // A tombstone deletes by key.
    let victim = shop::expected(&events).keys().next().unwrap().clone();
    records.push(stack::Record {
        key: victim.clone().into_bytes(),
        value: None,
        headers: vec![],
    });
    let ends = stack::produce(&s.topic, records).await;
    let daemon = s.start();
    s.caught_up(&ends, &daemon).await;

    let mut want = shop::expected(&events);
    want.remove(&victim);
    assert_eq!(s.orders().await, want);

    let letters = stack::read_topic(&dlq, 2, Duration::from_secs(30));
    assert_eq!(letters.len(), 2, "two dead letters");
    let headers = |m: &rdkafka::message::OwnedMessage| -> HashMap<String, String> {
        m.headers()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect()
    };
    let letter = &letters[0];
    assert_eq!(letter.payload(), Some(&poison[..]));
    assert_eq!(letter.key(), Some(&b"order-poison"[..]));
    let h = headers(letter);
    assert_eq!(h["trace"], "abc");
    assert_eq!(h["sinkd.errors.code"], "wrong_magic");
    assert_eq!(h["sinkd.errors.class"], "bad_record");
    assert_eq!(h["sinkd.errors.topic"], s.topic);
    assert_eq!(h["sinkd.errors.partition"], "0");
    assert_eq!(h["sinkd.errors.offset"], "200");
    assert!(h["sinkd.errors.message"].contains("magic byte"));
    assert_eq!(letters[1].payload(), Some(&gift_value[..]));
    let h = headers(&letters[1]);
    assert_eq!(h["sinkd.errors.class"], "unknown_event_type");
    assert_eq!(h["sinkd.errors.offset"], "201");
    assert!(h["sinkd.errors.message"].contains("com.shop.GiftWrapped"));
}

/// Scenario: with the fail policy a poisoned record stops the pipeline and says where.
pub async fn with_the_fail_policy_a_poisoned_record_stops_the_pipeline_and_says_where(
    target: &Target,
) {
    let s = Setup::new(target, "fail", 1, "").await;
    let events = shop::generate(100, 10, 5);
    let ids = shop::register_schemas(&s.topic).await;
    let mut records = shop::records(&ids, &events[..50]);
    records.push(stack::Record {
        key: b"k".to_vec(),
        value: Some(vec![0, 0, 0]),
        headers: vec![],
    });
    records.extend(shop::records(&ids, &events[50..]));
    stack::produce(&s.topic, records).await;
    let mut daemon = s.start();
    daemon.fails_saying(&[
        &format!("topic {} partition 0 offset 50", s.topic),
        "shorter than the 5-byte Confluent header",
    ]);
    // Everything before the bad record is applied and checkpointed; nothing after it.
    assert_eq!(s.checkpoints().await.get(&0), Some(&50));
    assert_eq!(s.orders().await, shop::expected(&events[..50]));
}
