//! One request rate for every CloudWatch Logs call a source makes, whatever the group.
//!
//! CloudWatch Logs: FilterLogEvents is limited per account and region (about 5 transactions
//! per second, https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/cloudwatch_limits_cwl.html),
//! shared with every other reader of the account, so the default is 1 request per second.

use std::time::Duration;

use tokio::time::Instant;

pub struct RequestPacer {
    interval: Duration,
    next_slot: Option<Instant>,
}

impl RequestPacer {
    pub fn new(requests_per_second: f64) -> Self {
        RequestPacer {
            interval: Duration::from_secs_f64(1.0 / requests_per_second),
            next_slot: None,
        }
    }

    /// Waits for the next request slot (returns at once when the last request is older than
    /// one interval).
    pub async fn wait(&mut self) {
        let slot = self.reserve(Instant::now());
        tokio::time::sleep_until(slot).await;
    }

    /// Takes the next free slot at or after `now`.
    fn reserve(&mut self, now: Instant) -> Instant {
        let slot = self.next_slot.map_or(now, |s| s.max(now));
        self.next_slot = Some(slot + self.interval);
        slot
    }

    /// Pushes the next slot back after the service said we were too fast.
    pub fn penalize(&mut self, delay: Duration) {
        let now = Instant::now();
        self.next_slot = Some(self.next_slot.map_or(now, |s| s.max(now)) + delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_spaced_by_the_interval_and_throttling_pushes_them_back() {
        let mut p = RequestPacer::new(2.0);
        let t0 = Instant::now();
        assert_eq!(p.reserve(t0), t0);
        assert_eq!(p.reserve(t0), t0 + Duration::from_millis(500));
        assert_eq!(p.reserve(t0), t0 + Duration::from_millis(1000));
        // A caller that comes back late is not owed the slots it missed.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(p.reserve(later), later);
        p.next_slot = Some(later + Duration::from_millis(500));
        p.penalize(Duration::from_secs(3));
        assert_eq!(p.reserve(later), later + Duration::from_millis(3500));
    }
}
