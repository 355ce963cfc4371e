//! Whole-index operations for the control plane: the shadow is the next generation folder
//! (see [`crate::layout`]), and the swap switches `ACTIVE` to it and reopens the search
//! reader on it before the old folder is removed.

use std::path::PathBuf;

use crate::config::TantivySinkConfig;
use async_trait::async_trait;
use sinkd_core::error::SinkError;
use sinkd_core::sink::{Reset, Target, TargetAdmin};
use tantivy::{IndexWriter, ReloadPolicy, TantivyDocument};
use tracing::info;

use crate::checkpoint;
use crate::error::classify;
use crate::search::{SearchHandle, Searchable};
use crate::{index, layout};

/// [`TargetAdmin`] for a Tantivy index folder.
pub struct TantivyAdmin {
    cfg: TantivySinkConfig,
    pipeline: String,
    search: SearchHandle,
}

impl TantivyAdmin {
    /// The admin of `cfg`'s index; `search` is reopened on the new index by a swap.
    pub fn new(cfg: &TantivySinkConfig, pipeline: &str, search: SearchHandle) -> TantivyAdmin {
        TantivyAdmin {
            cfg: cfg.clone(),
            pipeline: pipeline.to_owned(),
            search,
        }
    }

    fn root(&self) -> PathBuf {
        PathBuf::from(&self.cfg.path)
    }

    fn dir(&self, target: Target) -> Result<PathBuf, SinkError> {
        match target {
            Target::Live => layout::live_dir(&self.root()),
            Target::Shadow => layout::shadow_dir(&self.root()),
        }
    }

    fn reset_sync(&self, target: Target, to: Reset<'_>) -> Result<(), SinkError> {
        let Reset { truncate, offsets } = to;
        let dir = self.dir(target)?;
        let index = index::open(&self.cfg, &dir)?;
        let mut writer: IndexWriter<TantivyDocument> = index
            .writer_with_num_threads(1, 15 * 1024 * 1024)
            .map_err(|e| classify("cannot open the index writer", e))?;
        if truncate {
            writer
                .delete_all_documents()
                .map_err(|e| classify("empty the index", e))?;
        }
        checkpoint::commit(
            &mut writer,
            &self.pipeline,
            offsets.iter().map(|((t, p), next)| ((&**t, *p), *next)),
        )?;
        Ok(())
    }

    fn swap_sync(&self) -> Result<(), SinkError> {
        let root = self.root();
        let shadow = layout::shadow_dir(&root)?;
        // An empty log leaves no shadow index: the rebuilt read model is an empty index.
        let index = index::open(&self.cfg, &shadow)?;
        let old = layout::switch_to_shadow(&root)?;
        sinkd_core::crash::point("tantivy-swap-switched");
        // Written for the generation that is live now, it would never be read again.
        layout::remove_ticket(&root)?;
        info!(pipeline = %self.pipeline, live = %shadow.display(), "the rebuilt index is live");
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| classify("cannot open an index reader", e))?;
        *self.search.inner.write().expect("lock") = Some(Searchable { index, reader });
        layout::remove_generation(&root, old)
    }
}

#[async_trait]
impl TargetAdmin for TantivyAdmin {
    fn describe(&self, target: Target) -> String {
        self.dir(target)
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| self.cfg.path.clone())
    }

    async fn recover(&self) -> Result<(), SinkError> {
        // The switch is one rename; only the old folder's removal can be left undone.
        let root = self.root();
        for generation in layout::stale_generations(&root)? {
            layout::remove_generation(&root, generation)?;
        }
        Ok(())
    }

    async fn shadow_exists(&self) -> Result<bool, SinkError> {
        Ok(self.dir(Target::Shadow)?.exists())
    }

    async fn drop_shadow(&self) -> Result<(), SinkError> {
        let dir = self.dir(Target::Shadow)?;
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SinkError::Unavailable(
                format!("cannot remove {}: {e}", dir.display()),
            )),
            _ => layout::remove_ticket(&self.root()),
        }
    }

    async fn set_shadow_ticket(&self, ticket: &str) -> Result<(), SinkError> {
        layout::set_ticket(&self.root(), ticket)
    }

    async fn shadow_ticket(&self) -> Result<Option<String>, SinkError> {
        layout::ticket(&self.root())
    }

    async fn swap_in_shadow(&self) -> Result<(), SinkError> {
        tokio::task::block_in_place(|| self.swap_sync())
    }

    async fn reset(&self, target: Target, to: Reset<'_>) -> Result<(), SinkError> {
        tokio::task::block_in_place(|| self.reset_sync(target, to))
    }
}
