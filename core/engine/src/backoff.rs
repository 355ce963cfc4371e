//! The one retry policy: exponential backoff, doubling from a first wait up to a ceiling.
//! Every loop that waits out an unavailable server (sink, source, registry, dead-letter
//! topic, capture) takes its waits from here, so they all behave and log alike.

use std::time::Duration;

/// Exponential backoff: `first`, then twice the last wait, never above `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// The runtime's policy: 100 ms doubling to 30 s.
    pub fn new() -> Backoff {
        Backoff::between(Duration::from_millis(100), Duration::from_secs(30))
    }

    /// From `first`, doubling, up to `max`.
    pub fn between(first: Duration, max: Duration) -> Backoff {
        Backoff {
            next: first.min(max),
            max,
        }
    }

    /// The wait before the next attempt.
    pub fn wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling() {
        let mut b = Backoff::between(Duration::from_millis(200), Duration::from_secs(1));
        let waits: Vec<u128> = (0..5).map(|_| b.wait().as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1000, 1000]);
        assert_eq!(Backoff::new().wait(), Duration::from_millis(100));
    }
}
