//! A cluster of daemons (`--cluster ID`): pipelines defined at runtime over the API are
//! stored in the cluster's topic ([`sinkd_kafka::config_log`]), which every daemon of the
//! cluster follows and applies with the same reload as files, and so is whether each
//! pipeline is paused. Writing either returns once this daemon has applied it; the
//! others apply it as they read it.

use std::sync::Arc;
use std::time::Duration;

use sinkd_kafka::config_log::{ConfigLog, Definitions};
use tokio::sync::watch;

use crate::reload::Reloader;

/// How long a write waits for this daemon to apply it.
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// This daemon's side of the cluster.
pub struct Cluster {
    /// The cluster id.
    pub id: String,
    log: ConfigLog,
    defs: watch::Receiver<Definitions>,
    reloader: Arc<Reloader>,
}

impl Cluster {
    /// The cluster `id` over its topic.
    pub fn new(
        id: String,
        log: ConfigLog,
        defs: watch::Receiver<Definitions>,
        reloader: Arc<Reloader>,
    ) -> Cluster {
        Cluster {
            id,
            log,
            defs,
            reloader,
        }
    }

    /// Whether the cluster defines pipeline `name` (loaded or not).
    pub fn defines(&self, name: &str) -> bool {
        self.defs.borrow().files.contains_key(name)
    }

    /// Stores pipeline `name`'s file text (`None` removes it) and waits until this
    /// daemon has applied it.
    pub async fn put(&self, name: &str, text: Option<&str>) -> Result<(), String> {
        let offset = self.log.put(name, text).await?;
        self.applied_here(offset).await
    }

    /// Pauses (or resumes) pipeline `name` on every daemon of the cluster, and waits
    /// until this daemon has.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<(), String> {
        let offset = self.log.set_paused(name, paused).await?;
        self.applied_here(offset).await
    }

    async fn applied_here(&self, offset: i64) -> Result<(), String> {
        let mut applied = self.reloader.applied();
        let wait = applied.wait_for(|next| *next > offset);
        match tokio::time::timeout(APPLY_TIMEOUT, wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!(
                "stored in {} at offset {offset}, but not applied here within {APPLY_TIMEOUT:?}: \
                 it applies when this daemon reads it",
                self.log.topic()
            )),
        }
    }
}
