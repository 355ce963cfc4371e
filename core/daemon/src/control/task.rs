//! What both kinds of controller share: one background task at a time, started and
//! stopped under a lock so requests cannot interleave, the state the API shows, a signal
//! on every change, and the rule that nothing starts once the daemon is shutting down.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use super::State;

/// A background task that finishes what it holds and ends when told to stop.
pub struct Task {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Task {
    /// Whether it still runs (it may have ended by itself, on an error).
    pub fn running(&self) -> bool {
        !self.handle.is_finished()
    }
}

/// A pipeline's task, state and change signal.
pub struct Lifecycle {
    state: Mutex<State>,
    changes: watch::Sender<u64>,
    closing: AtomicBool,
    /// The task, `None` while none runs. Held across a start or stop, so requests that
    /// start or stop it run one at a time.
    pub task: tokio::sync::Mutex<Option<Task>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            state: Mutex::new(State::Starting),
            changes: watch::channel(0).0,
            closing: AtomicBool::new(false),
            task: tokio::sync::Mutex::new(None),
        }
    }
}

impl Lifecycle {
    /// The current state.
    pub fn state(&self) -> State {
        self.state.lock().expect("state lock").clone()
    }

    /// Sets the state and signals the change.
    pub fn set_state(&self, state: State) {
        *self.state.lock().expect("state lock") = state;
        self.changed();
    }

    /// Signals a change that is not a state (a rebuild's end, say).
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Changes whenever the state does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether the daemon is shutting down.
    pub fn closing(&self) -> bool {
        self.closing.load(Relaxed)
    }

    /// Spawns `run` as the task (the caller holds [`Lifecycle::task`]) and marks the
    /// pipeline running; `run` gets the stop signal. Nothing starts while closing.
    pub fn start<F, Fut>(&self, slot: &mut Option<Task>, run: F)
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if self.closing() {
            return;
        }
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::spawn(run(stopped));
        *slot = Some(Task { stop, handle });
        self.set_state(State::Running);
    }

    /// Tells the task to stop and waits until it has written what it holds (the caller
    /// holds [`Lifecycle::task`]). Returns whether there was one.
    pub async fn stop(slot: &mut Option<Task>) -> bool {
        let Some(task) = slot.take() else {
            return false;
        };
        let _ = task.stop.send(true);
        let _ = task.handle.await;
        true
    }

    /// Starts pipeline `name`'s task with `start` unless it runs (one that ended by
    /// itself is reaped first).
    pub async fn resume(&self, name: &str, start: impl FnOnce(&mut Option<Task>)) {
        let mut task = self.task.lock().await;
        if task.as_ref().is_some_and(Task::running) {
            return;
        }
        Self::stop(&mut task).await;
        start(&mut task);
        info!(pipeline = %name, "resumed");
    }

    /// Stops pipeline `name`'s task and keeps it stopped.
    pub async fn pause(&self, name: &str) {
        let mut task = self.task.lock().await;
        Self::stop(&mut task).await;
        self.set_state(State::Paused);
        info!(pipeline = %name, "paused");
    }

    /// At daemon shutdown, first: nothing starts the task again from now on.
    pub fn begin_closing(&self) {
        self.closing.store(true, Relaxed);
    }

    /// At daemon shutdown: stops the task, and nothing starts it again.
    pub async fn close(&self) {
        self.begin_closing();
        let mut task = self.task.lock().await;
        Self::stop(&mut task).await;
    }
}
