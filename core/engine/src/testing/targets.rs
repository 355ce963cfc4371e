//! [`MemTargets`]: a live and a shadow [`MemStore`] with the admin a rebuild drives — a
//! shadow that is reset to start offsets, keeps a ticket, is swapped in with its
//! checkpoints in one step, or dropped — with faults injected at the swap.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::MemStore;
use crate::error::SinkError;
use crate::sink::{Reset, Target, TargetAdmin};

#[derive(Default)]
struct Shadow {
    exists: bool,
    ticket: Option<String>,
    prepared: usize,
    swaps: usize,
    /// The checkpoints each swap brought in, summed over partitions.
    swapped_in: Vec<i64>,
    fail_swap: Option<SinkError>,
}

/// The live store, the shadow store and the shadow's state. Cheap to clone.
#[derive(Clone, Default)]
pub struct MemTargets {
    /// The live target.
    pub live: MemStore,
    /// The rebuild's shadow.
    pub shadow: MemStore,
    state: Arc<Mutex<Shadow>>,
}

impl MemTargets {
    fn with<T>(&self, f: impl FnOnce(&mut Shadow) -> T) -> T {
        f(&mut self.state.lock().expect("targets lock"))
    }

    /// The store of `target`.
    pub fn store(&self, target: Target) -> &MemStore {
        match target {
            Target::Live => &self.live,
            Target::Shadow => &self.shadow,
        }
    }

    /// The next swap fails with `error`, changing nothing.
    pub fn fail_next_swap(&self, error: SinkError) {
        self.with(|s| s.fail_swap = Some(error));
    }

    /// How many times the shadow was readied for a swap, and swapped in.
    pub fn swaps(&self) -> (usize, usize) {
        self.with(|s| (s.prepared, s.swaps))
    }

    /// The shadow's checkpoints at each swap, summed over its partitions: how far the
    /// shadow had read when it became the live target.
    pub fn swapped_in(&self) -> Vec<i64> {
        self.with(|s| s.swapped_in.clone())
    }
}

#[async_trait]
impl TargetAdmin for MemTargets {
    fn describe(&self, target: Target) -> String {
        format!("the in-memory {target:?} store")
    }

    async fn shadow_exists(&self) -> Result<bool, SinkError> {
        Ok(self.with(|s| s.exists))
    }

    async fn drop_shadow(&self) -> Result<(), SinkError> {
        self.shadow.take_from(&MemStore::default());
        self.with(|s| {
            s.exists = false;
            s.ticket = None;
        });
        Ok(())
    }

    async fn set_shadow_ticket(&self, ticket: &str) -> Result<(), SinkError> {
        self.with(|s| s.ticket = Some(ticket.to_owned()));
        Ok(())
    }

    async fn shadow_ticket(&self) -> Result<Option<String>, SinkError> {
        Ok(self.with(|s| s.exists.then(|| s.ticket.clone()).flatten()))
    }

    async fn prepare_swap(&self) -> Result<(), SinkError> {
        self.with(|s| s.prepared += 1);
        Ok(())
    }

    async fn swap_in_shadow(&self) -> Result<(), SinkError> {
        if let Some(e) = self.with(|s| s.fail_swap.take()) {
            return Err(e);
        }
        if !self.with(|s| s.exists) {
            return Err(SinkError::Incompatible("no shadow to swap in".into()));
        }
        let read = self.shadow.checkpoints().values().sum();
        self.live.take_from(&self.shadow);
        self.with(|s| {
            s.swapped_in.push(read);
            s.exists = false;
            s.ticket = None;
            s.swaps += 1;
        });
        Ok(())
    }

    async fn reset(&self, target: Target, to: Reset<'_>) -> Result<(), SinkError> {
        // The store's own reset handles its live data; it has no shadow of its own.
        self.store(target).reset(Target::Live, to).await?;
        if target == Target::Shadow {
            self.with(|s| s.exists = true);
        }
        Ok(())
    }
}
