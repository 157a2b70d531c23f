//! Building PutLogEvents requests that CloudWatch Logs accepts: every limit of the API is a
//! named constant here, with its source, and checked by the unit tests at its exact boundary
//! (the emulator used by the integration tests does not enforce most of them).
//!
//! Source for all limits unless noted: PutLogEvents API reference,
//! <https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutLogEvents.html>.

use sessiontrail_core::AckToken;

/// "The maximum batch size is 1,048,576 bytes. This size is calculated as the sum of all
/// event messages in UTF-8, plus 26 bytes for each log event."
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// The per-event overhead counted in [`MAX_BATCH_BYTES`].
pub const EVENT_OVERHEAD_BYTES: usize = 26;
/// "The maximum number of log events in a batch is 10,000."
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// "A batch of log events in a single request cannot span more than 24 hours." We keep the
/// span strictly below 24 h (last - first < this) so no batch sits on the boundary.
pub const MAX_BATCH_SPAN_MS: i64 = 24 * 60 * 60 * 1000;
/// "Each log event can be no larger than 1 MB" (CloudWatch Logs quotas: event size
/// 1,048,576 bytes including the 26 bytes of overhead), so a message may have this many bytes.
pub const MAX_EVENT_MESSAGE_BYTES: usize = MAX_BATCH_BYTES - EVENT_OVERHEAD_BYTES;
/// "The log events in the batch can't be more than 2 hours in the future."
pub const MAX_FUTURE_MS: i64 = 2 * 60 * 60 * 1000;
/// "The log events in the batch can't be older than 14 days or older than the retention
/// period of the log group."
pub const MAX_AGE_MS: i64 = 14 * 24 * 60 * 60 * 1000;
/// Appended to a message cut to [`MAX_EVENT_MESSAGE_BYTES`] with `oversize: truncate`.
pub const TRUNCATION_MARKER: &str = "...[truncated by sessiontrail]";

/// One log event waiting to be sent, with its acknowledgement.
#[derive(Debug)]
pub struct LogEntry {
    pub timestamp_ms: i64,
    pub message: String,
    pub ack: Option<AckToken>,
}

impl LogEntry {
    /// Bytes this event counts for in [`MAX_BATCH_BYTES`].
    pub fn batch_size(&self) -> usize {
        self.message.len() + EVENT_OVERHEAD_BYTES
    }
}

/// What to do with a message longer than [`MAX_EVENT_MESSAGE_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Oversize {
    /// Send it to `<name>.dropped` (reason `record_too_large`) with the whole event.
    #[default]
    DeadLetter,
    /// Cut it to the limit and end it with [`TRUNCATION_MARKER`].
    Truncate,
}

/// Why an event cannot be sent (the dead-letter reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Message larger than [`MAX_EVENT_MESSAGE_BYTES`] with `oversize: dead_letter`.
    TooLarge,
    /// Older than [`MAX_AGE_MS`] (or the log group's retention).
    TooOld,
    /// More than [`MAX_FUTURE_MS`] ahead.
    TooNew,
    /// Reported as expired by CloudWatch (`rejectedLogEventsInfo.expiredLogEventEndIndex`).
    Expired,
}

impl Refusal {
    /// The stable dead-letter reason.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::TooLarge => "record_too_large",
            Refusal::TooOld => "log_event_too_old",
            Refusal::TooNew => "log_event_too_new",
            Refusal::Expired => "log_event_expired",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Refusal::TooLarge => "the message is larger than the 1,048,550 bytes CloudWatch Logs accepts per event",
            Refusal::TooOld => "the event is older than CloudWatch Logs accepts (14 days, or the log group's retention)",
            Refusal::TooNew => "the event is more than 2 hours in the future; CloudWatch Logs refuses it",
            Refusal::Expired => "CloudWatch Logs reported the event as expired (older than the log group's retention)",
        }
    }
}

/// Checks one event against the per-event limits at time `now_ms`. `max_age_ms` is
/// [`MAX_AGE_MS`] or less when the log group's retention is shorter.
pub fn admit(
    mut entry: LogEntry,
    now_ms: i64,
    max_age_ms: i64,
    oversize: Oversize,
) -> Result<LogEntry, (LogEntry, Refusal)> {
    if entry.timestamp_ms < now_ms.saturating_sub(max_age_ms) {
        return Err((entry, Refusal::TooOld));
    }
    if entry.timestamp_ms > now_ms.saturating_add(MAX_FUTURE_MS) {
        return Err((entry, Refusal::TooNew));
    }
    if entry.message.len() > MAX_EVENT_MESSAGE_BYTES {
        match oversize {
            Oversize::DeadLetter => return Err((entry, Refusal::TooLarge)),
            Oversize::Truncate => {
                let mut cut = MAX_EVENT_MESSAGE_BYTES - TRUNCATION_MARKER.len();
                while !entry.message.is_char_boundary(cut) {
                    cut -= 1;
                }
                entry.message.truncate(cut);
                entry.message.push_str(TRUNCATION_MARKER);
            }
        }
    }
    Ok(entry)
}

/// The events of one PutLogEvents request: sorted by time, within every batch limit.
#[derive(Debug)]
pub struct PutLogEventsBatch {
    pub entries: Vec<LogEntry>,
    /// Sum of message bytes + [`EVENT_OVERHEAD_BYTES`] per event.
    pub bytes: usize,
}

impl PutLogEventsBatch {
    pub fn span_ms(&self) -> i64 {
        match (self.entries.first(), self.entries.last()) {
            (Some(f), Some(l)) => l.timestamp_ms - f.timestamp_ms,
            _ => 0,
        }
    }
}

/// Sorts admitted events by time (stable: equal timestamps keep their arrival order) and
/// cuts them into as few requests as the limits allow.
pub fn split_into_batches(mut entries: Vec<LogEntry>) -> Vec<PutLogEventsBatch> {
    entries.sort_by_key(|e| e.timestamp_ms);
    let mut batches = Vec::new();
    let mut current = PutLogEventsBatch {
        entries: Vec::new(),
        bytes: 0,
    };
    for entry in entries {
        let size = entry.batch_size();
        let full = current.entries.len() >= MAX_BATCH_EVENTS
            || current.bytes + size > MAX_BATCH_BYTES
            || current
                .entries
                .first()
                .is_some_and(|f| entry.timestamp_ms - f.timestamp_ms >= MAX_BATCH_SPAN_MS);
        if full && !current.entries.is_empty() {
            batches.push(std::mem::replace(
                &mut current,
                PutLogEventsBatch {
                    entries: Vec::new(),
                    bytes: 0,
                },
            ));
        }
        current.bytes += size;
        current.entries.push(entry);
    }
    if !current.entries.is_empty() {
        batches.push(current);
    }
    batches
}

/// The `rejectedLogEventsInfo` of a PutLogEvents response: indexes into the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectedInfo {
    pub too_new_start_index: Option<i32>,
    pub too_old_end_index: Option<i32>,
    pub expired_end_index: Option<i32>,
}

/// Which refusal, if any, CloudWatch reported for the event at `index` of the request.
pub fn rejection_of(index: usize, info: &RejectedInfo) -> Option<Refusal> {
    let i = index as i64;
    if info.too_new_start_index.is_some_and(|s| i >= s as i64) {
        return Some(Refusal::TooNew);
    }
    if info.expired_end_index.is_some_and(|e| i <= e as i64) {
        return Some(Refusal::Expired);
    }
    if info.too_old_end_index.is_some_and(|e| i <= e as i64) {
        return Some(Refusal::TooOld);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_763_700_000_000;

    fn entry(ts: i64, len: usize) -> LogEntry {
        LogEntry {
            timestamp_ms: ts,
            message: "x".repeat(len),
            ack: None,
        }
    }

    fn sizes(batches: &[PutLogEventsBatch]) -> Vec<usize> {
        batches.iter().map(|b| b.entries.len()).collect()
    }

    #[test]
    fn limits_match_the_aws_documentation() {
        assert_eq!(MAX_BATCH_BYTES, 1_048_576);
        assert_eq!(MAX_EVENT_MESSAGE_BYTES, 1_048_550);
        assert_eq!(MAX_BATCH_EVENTS, 10_000);
        assert_eq!(MAX_BATCH_SPAN_MS, 86_400_000);
    }

    #[test]
    fn exactly_1_mib_including_26_bytes_per_event_fits_one_batch() {
        // 4 events of 262,118 bytes: 4 * (262,118 + 26) = 1,048,576.
        let batches = split_into_batches((0..4).map(|i| entry(NOW + i, 262_118)).collect());
        assert_eq!(sizes(&batches), vec![4]);
        assert_eq!(batches[0].bytes, MAX_BATCH_BYTES);
    }

    #[test]
    fn one_byte_over_1_mib_splits_the_batch() {
        let mut events: Vec<_> = (0..3).map(|i| entry(NOW + i, 262_118)).collect();
        events.push(entry(NOW + 3, 262_119));
        let batches = split_into_batches(events);
        assert_eq!(sizes(&batches), vec![3, 1]);
        assert!(batches.iter().all(|b| b.bytes <= MAX_BATCH_BYTES));
    }

    #[test]
    fn the_26_byte_overhead_is_counted() {
        // Messages alone fit (10 * 100,000 = 1,000,000) but with 26 bytes per event of
        // 1-byte messages... use many small events: 40,330 bytes of overhead would not fit.
        let n = 10_000;
        let len = MAX_BATCH_BYTES / n - EVENT_OVERHEAD_BYTES; // 78 bytes
        let batches = split_into_batches((0..n as i64).map(|i| entry(NOW + i, len)).collect());
        assert_eq!(sizes(&batches), vec![10_000]);
        // One more byte per message: 10,000 * (79 + 26) = 1,050,000 > 1,048,576.
        let batches = split_into_batches((0..n as i64).map(|i| entry(NOW + i, len + 1)).collect());
        assert_eq!(batches.len(), 2);
        assert!(batches.iter().all(|b| b.bytes <= MAX_BATCH_BYTES));
    }

    #[test]
    fn ten_thousand_events_fit_and_the_next_one_starts_a_new_batch() {
        let batches = split_into_batches((0..10_000).map(|i| entry(NOW + i, 1)).collect());
        assert_eq!(sizes(&batches), vec![10_000]);
        let batches = split_into_batches((0..10_001).map(|i| entry(NOW + i, 1)).collect());
        assert_eq!(sizes(&batches), vec![10_000, 1]);
    }

    #[test]
    fn span_just_under_24_hours_fits_and_24_hours_splits() {
        let batches =
            split_into_batches(vec![entry(NOW, 1), entry(NOW + MAX_BATCH_SPAN_MS - 1, 1)]);
        assert_eq!(sizes(&batches), vec![2]);
        assert_eq!(batches[0].span_ms(), 86_399_999);
        let batches = split_into_batches(vec![entry(NOW, 1), entry(NOW + MAX_BATCH_SPAN_MS, 1)]);
        assert_eq!(sizes(&batches), vec![1, 1]);
    }

    #[test]
    fn events_are_sorted_by_time_keeping_arrival_order_for_ties() {
        let mut events = vec![entry(NOW + 5, 1), entry(NOW, 2), entry(NOW + 5, 3)];
        events.push(entry(NOW - 3, 4));
        let batches = split_into_batches(events);
        let order: Vec<(i64, usize)> = batches[0]
            .entries
            .iter()
            .map(|e| (e.timestamp_ms - NOW, e.message.len()))
            .collect();
        assert_eq!(order, vec![(-3, 4), (0, 2), (5, 1), (5, 3)]);
    }

    #[test]
    fn message_of_exactly_the_event_limit_is_accepted_unchanged() {
        let e = admit(
            entry(NOW, MAX_EVENT_MESSAGE_BYTES),
            NOW,
            MAX_AGE_MS,
            Oversize::DeadLetter,
        )
        .unwrap();
        assert_eq!(e.message.len(), 1_048_550);
        assert_eq!(e.batch_size(), MAX_BATCH_BYTES);
    }

    #[test]
    fn message_one_byte_over_is_dead_lettered_or_truncated_by_option() {
        let (_, why) = admit(
            entry(NOW, MAX_EVENT_MESSAGE_BYTES + 1),
            NOW,
            MAX_AGE_MS,
            Oversize::DeadLetter,
        )
        .unwrap_err();
        assert_eq!(why, Refusal::TooLarge);
        let e = admit(
            entry(NOW, MAX_EVENT_MESSAGE_BYTES + 1),
            NOW,
            MAX_AGE_MS,
            Oversize::Truncate,
        )
        .unwrap();
        assert_eq!(e.message.len(), MAX_EVENT_MESSAGE_BYTES);
        assert!(e.message.ends_with(TRUNCATION_MARKER));
    }

    #[test]
    fn truncation_never_splits_a_utf8_character() {
        let mut message = "é".repeat(MAX_EVENT_MESSAGE_BYTES / 2 + 10);
        message.insert(0, 'a'); // shift so the cut lands inside a 2-byte character
        let e = LogEntry {
            timestamp_ms: NOW,
            message,
            ack: None,
        };
        let e = admit(e, NOW, MAX_AGE_MS, Oversize::Truncate).unwrap();
        assert!(e.message.len() <= MAX_EVENT_MESSAGE_BYTES);
        assert!(e.message.ends_with(TRUNCATION_MARKER));
    }

    #[test]
    fn age_limits_at_their_exact_boundaries() {
        let ok = |ts| admit(entry(ts, 1), NOW, MAX_AGE_MS, Oversize::DeadLetter).is_ok();
        let why = |ts| {
            admit(entry(ts, 1), NOW, MAX_AGE_MS, Oversize::DeadLetter)
                .unwrap_err()
                .1
        };
        assert!(ok(NOW - MAX_AGE_MS));
        assert_eq!(why(NOW - MAX_AGE_MS - 1), Refusal::TooOld);
        assert!(ok(NOW + MAX_FUTURE_MS));
        assert_eq!(why(NOW + MAX_FUTURE_MS + 1), Refusal::TooNew);
    }

    #[test]
    fn shorter_retention_lowers_the_age_limit() {
        let one_day = 24 * 60 * 60 * 1000;
        let r = admit(
            entry(NOW - one_day - 1, 1),
            NOW,
            one_day,
            Oversize::DeadLetter,
        );
        assert_eq!(r.unwrap_err().1, Refusal::TooOld);
    }

    #[test]
    fn rejected_info_indexes_map_to_refusals() {
        let info = RejectedInfo {
            too_new_start_index: Some(8),
            too_old_end_index: Some(1),
            expired_end_index: Some(0),
        };
        let got: Vec<_> = (0..10).map(|i| rejection_of(i, &info)).collect();
        assert_eq!(got[0], Some(Refusal::Expired));
        assert_eq!(got[1], Some(Refusal::TooOld));
        assert!(got[2..8].iter().all(Option::is_none));
        assert_eq!(got[8], Some(Refusal::TooNew));
        assert_eq!(got[9], Some(Refusal::TooNew));
        assert_eq!(rejection_of(5, &RejectedInfo::default()), None);
    }
}
