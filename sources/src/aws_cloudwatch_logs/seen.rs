//! Event ids already emitted for one log group, kept only as long as a poll can return them
//! again (the overlap window), and capped so a flood cannot exhaust memory.

use std::collections::{BTreeSet, HashMap};

/// Ids remembered per group. Beyond this the oldest are forgotten first (they could then be
/// delivered twice: at-least-once, never lost). An event id is 56 digits, so 100,000 ids
/// cost about 20 MB; that is 330 events/s sustained over the default 5 min window.
pub const MAX_SEEN_IDS: usize = 100_000;

#[derive(Default)]
pub struct SeenEvents {
    by_id: HashMap<String, i64>,
    by_time: BTreeSet<(i64, String)>,
}

impl SeenEvents {
    /// Remembers an id; false when it was already there.
    pub fn insert(&mut self, id: &str, timestamp_ms: i64) -> bool {
        if self.by_id.contains_key(id) {
            return false;
        }
        if self.by_id.len() >= MAX_SEEN_IDS {
            if let Some((t, old)) = self.by_time.pop_first() {
                self.by_id.remove(&old);
                tracing::debug!(
                    oldest_ms = t,
                    "event id window full; forgetting the oldest id"
                );
            }
        }
        self.by_id.insert(id.to_string(), timestamp_ms);
        self.by_time.insert((timestamp_ms, id.to_string()));
        true
    }

    pub fn remove(&mut self, id: &str) {
        if let Some(t) = self.by_id.remove(id) {
            self.by_time.remove(&(t, id.to_string()));
        }
    }

    /// Forgets ids of events older than `cutoff_ms` (no later query can return them).
    pub fn forget_before(&mut self, cutoff_ms: i64) {
        while let Some((t, _)) = self.by_time.first() {
            if *t >= cutoff_ms {
                break;
            }
            if let Some((_, id)) = self.by_time.pop_first() {
                self.by_id.remove(&id);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_until_they_leave_the_window() {
        let mut s = SeenEvents::default();
        assert!(s.insert("a", 100));
        assert!(s.insert("b", 200));
        assert!(!s.insert("a", 100));
        s.forget_before(150);
        assert_eq!(s.len(), 1);
        assert!(s.insert("a", 100), "forgotten ids are new again");
        s.remove("b");
        assert!(s.insert("b", 200));
    }
}
