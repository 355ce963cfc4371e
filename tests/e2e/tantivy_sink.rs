//! The sink conformance scenarios on a Tantivy index, and what a full disk does to it: the
//! write is retried (never a bad record, never a stop), and once there is room again the
//! same batch applies exactly once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sinkd_core::config::OpKind;
use sinkd_core::error::{ErrorClass, SinkError};
use sinkd_core::sink::{CheckpointAdvance, Sink, Target};
use sinkd_tantivy::TantivySinkConfig;
use sinkd_tantivy::{SearchHandle, TantivySink};
use sinkd_tests::conformance::{self, entries, op};
use sinkd_tests::daemon::Workdir;
use sinkd_tests::stack;

fn config(path: &Path) -> TantivySinkConfig {
    serde_json::from_value(serde_json::json!({
        "path": path,
        "key": "id",
        "fields": [
            { "name": "id", "type": "string" },
            { "name": "counter", "type": "i64" },
        ],
    }))
    .expect("config")
}

fn sink(cfg: &TantivySinkConfig, pipeline: &str) -> TantivySink {
    TantivySink::new(cfg, pipeline, Target::Live, SearchHandle::default())
}

/// The counter of `key` in the index `base/name`.
async fn counter(base: PathBuf, name: String, key: &'static str) -> Option<i64> {
    sinkd_tests::target::Target::Tantivy(base)
        .counter(&name, key)
        .await
}

/// An index of its own, in a work folder of its own.
struct Index(String, Workdir, TantivySinkConfig);

impl Index {
    fn new(prefix: &str) -> Index {
        let name = stack::unique(prefix);
        let dir = Workdir::new(&name);
        let cfg = config(&dir.0.join(&name));
        Index(name, dir, cfg)
    }
}

impl conformance::Subject for Index {
    type Sink = TantivySink;

    fn name(&self) -> &str {
        &self.0
    }

    fn sink(&self, pipeline: &str) -> TantivySink {
        sink(&self.2, pipeline)
    }

    async fn counter(&self, key: &'static str) -> Option<i64> {
        counter(self.1.0.clone(), self.0.clone(), key).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_with_a_stale_view_of_the_checkpoint_is_fenced() {
    conformance::stale_view_is_fenced(&Index::new("fence")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_after_an_offset_reset_is_skipped_by_row_guards() {
    conformance::replay_is_guarded(&Index::new("guard")).await;
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(at.to_path_buf())
    }

    /// Fills the disk to the last byte; the file is returned to be removed.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut small = vec![0u8; 512];
        loop {
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
        while f.write_all(&small).is_ok() {}
        small.truncate(1);
        while f.write_all(&small).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn advance(topic: &str, expected: Option<i64>, next: i64) -> Vec<CheckpointAdvance> {
    vec![CheckpointAdvance {
        topic: std::sync::Arc::from(topic),
        partition: 0,
        expected,
        next,
    }]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_retried_and_the_same_batch_then_applies_once() {
    let name = stack::unique("full");
    let dir = Workdir::new(&name);
    let disk = SmallDisk::mount(&dir.0.join("disk"), "8m");
    let base = disk.0.clone();
    let cfg = config(&base.join(&name));
    std::fs::create_dir_all(base.join(&name)).unwrap();
    let topic = format!("{name}.t");
    let mut s = sink(&cfg, &name);
    s.open().await.expect("open");
    s.write(
        &entries(vec![op(&topic, "a", OpKind::Increment, 5, 0)]),
        &advance(&topic, None, 1),
    )
    .await
    .expect("first batch");

    // Enough documents that the commit must write segment files to the full disk.
    let mut batch: Vec<_> = (1..2_000)
        .map(|i| op(&topic, &format!("k{i}"), OpKind::Increment, i, i))
        .collect();
    batch.push(op(&topic, "a", OpKind::Increment, 1, 2_000));
    let filler = disk.fill();
    let full = s
        .write(&entries(batch.clone()), &advance(&topic, Some(1), 2_001))
        .await;
    let e = full.expect_err("a full disk cannot take the commit");
    assert_eq!(e.class(), ErrorClass::Retriable, "{e}");
    assert!(matches!(e, SinkError::Unavailable(_)), "{e:?}");
    assert!(
        e.to_string().contains("No space left on device") || e.to_string().contains("os error 28"),
        "{e}"
    );
    assert_eq!(counter(base.clone(), name.clone(), "a").await, Some(5));
    assert_eq!(counter(base.clone(), name.clone(), "k7").await, None);

    // A second try while still full fails the same way, and nothing is half applied.
    let again = s
        .write(&entries(batch.clone()), &advance(&topic, Some(1), 2_001))
        .await;
    assert_eq!(again.map_err(|e| e.class()), Err(ErrorClass::Retriable));

    std::fs::remove_file(filler).unwrap();
    s.write(&entries(batch.clone()), &advance(&topic, Some(1), 2_001))
        .await
        .expect("with room again, the same batch applies");
    assert_eq!(counter(base.clone(), name.clone(), "a").await, Some(6));
    assert_eq!(counter(base.clone(), name.clone(), "k7").await, Some(7));
    assert_eq!(
        counter(base.clone(), name.clone(), "k1999").await,
        Some(1_999)
    );
    drop(s);
}
