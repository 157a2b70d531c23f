//! The component traits the runner knows components by, and what each component is given.
//!
//! A component's config is a plain serde struct implementing one of [`SourceConfig`],
//! [`TransformConfig`] or [`SinkConfig`]. `validate()` checks everything that can be checked
//! without side effects (used by `sessiontrail validate` and before start-up); `build()` may do
//! I/O (open a store, check that a bucket exists) and returns the running task.
//!
//! Lifecycle: sources run until their input ends or `shutdown` is cancelled; transforms and
//! sinks run until their input channel closes, which happens once everything upstream has
//! finished. That cascade is the drain on shutdown: nothing already read is abandoned.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ack::DeliveryStatus;
use crate::event::{Event, EventBatch};
use crate::metrics::{ComponentMetrics, MetricsRegistry};
use crate::output::Output;
use crate::store::StateStore;

/// The running component. An `Err` is fatal: the pipeline stops with that message.
pub type ComponentTask = BoxFuture<'static, Result<(), ComponentError>>;

/// A fatal component error: what happened and, where possible, what to do about it.
#[derive(Debug)]
pub struct ComponentError(pub String);

impl std::fmt::Display for ComponentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ComponentError {}

impl From<String> for ComponentError {
    fn from(s: String) -> Self {
        ComponentError(s)
    }
}

/// A component that cannot be built (bad option value, unreachable destination at start-up).
#[derive(Debug)]
pub struct BuildError(pub String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BuildError {}

impl From<String> for BuildError {
    fn from(s: String) -> Self {
        BuildError(s)
    }
}

/// HTTP routes a component adds to the pipeline's API server (`api.address`).
#[derive(Clone, Default)]
pub struct ApiRoutes(Arc<Mutex<Vec<axum::Router>>>);

impl ApiRoutes {
    pub fn add(&self, router: axum::Router) {
        if let Ok(mut r) = self.0.lock() {
            r.push(router);
        }
    }
    pub fn take(&self) -> Vec<axum::Router> {
        self.0
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

/// Everything every component gets, whatever its kind.
#[derive(Clone)]
pub struct Shared {
    pub data_dir: PathBuf,
    pub store: StateStore,
    pub registry: Arc<MetricsRegistry>,
    pub api: ApiRoutes,
    /// Cancelled when the pipeline begins to stop.
    pub shutdown: CancellationToken,
}

pub struct SourceContext {
    pub name: Arc<str>,
    pub out: Output,
    /// `<name>.dropped`.
    pub dropped: Output,
    pub metrics: Arc<ComponentMetrics>,
    pub shared: Shared,
}

pub struct TransformContext {
    pub name: Arc<str>,
    pub input: mpsc::Receiver<EventBatch>,
    pub out: Output,
    pub dropped: Output,
    pub metrics: Arc<ComponentMetrics>,
    pub shared: Shared,
}

pub struct SinkContext {
    pub name: Arc<str>,
    pub input: mpsc::Receiver<EventBatch>,
    /// `<name>.dropped`: events the destination rejected for good.
    pub dropped: Output,
    pub metrics: Arc<ComponentMetrics>,
    pub shared: Shared,
}

#[async_trait::async_trait]
pub trait SourceConfig: Send + Sync + std::fmt::Debug {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    async fn build(&self, cx: SourceContext) -> Result<ComponentTask, BuildError>;
}

#[async_trait::async_trait]
pub trait TransformConfig: Send + Sync + std::fmt::Debug {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    async fn build(&self, cx: TransformContext) -> Result<ComponentTask, BuildError>;
}

#[async_trait::async_trait]
pub trait SinkConfig: Send + Sync + std::fmt::Debug {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    async fn build(&self, cx: SinkContext) -> Result<ComponentTask, BuildError>;
}

/// Where a per-event transform puts its results.
#[derive(Default)]
pub struct TransformOutput {
    pub out: Vec<Event>,
    /// Dead letters (build them with [`crate::DeadLetter::from_event`]).
    pub dropped: Vec<Event>,
    discarded: u64,
}

impl TransformOutput {
    pub fn emit(&mut self, event: Event) {
        self.out.push(event);
    }
    pub fn dead_letter(&mut self, event: Event) {
        self.dropped.push(event);
    }
    /// Drops an event on purpose: it counts as handled for its source.
    pub fn discard(&mut self, event: Event) {
        self.discarded += 1;
        event.ack(DeliveryStatus::Filtered);
    }
    /// Counts an event the transform consumed and resolved as handled itself (for example
    /// one that maps to no output event).
    pub fn count_discarded(&mut self) {
        self.discarded += 1;
    }

    /// Sends what a transform made of a batch on: the discarded are counted, the dead letters
    /// go to `.dropped`, the events downstream.
    pub async fn send(
        self,
        out: &Output,
        dropped: &Output,
        metrics: &ComponentMetrics,
    ) -> Result<(), crate::output::OutputClosed> {
        metrics.add_discarded(self.discarded);
        dropped.send_dead_letters(self.dropped).await?;
        out.send(self.out).await
    }
}

/// A transform that handles one event at a time with no timers (filter, redact, ocsf).
pub trait FunctionTransform: Send + 'static {
    fn transform(&mut self, event: Event, output: &mut TransformOutput);
}

/// Runs a [`FunctionTransform`] as a task: batch in, batch out, dead letters to `.dropped`.
pub fn run_function_transform<T: FunctionTransform>(
    mut t: T,
    cx: TransformContext,
) -> ComponentTask {
    let TransformContext {
        name,
        mut input,
        out,
        dropped,
        metrics,
        ..
    } = cx;
    Box::pin(async move {
        while let Some(batch) = input.recv().await {
            metrics.add_received_batch(&batch);
            let mut result = TransformOutput {
                out: Vec::with_capacity(batch.len()),
                ..Default::default()
            };
            for event in batch {
                t.transform(event, &mut result);
            }
            result
                .send(&out, &dropped, &metrics)
                .await
                .map_err(|e| ComponentError(format!("transform {name}: {e}")))?;
        }
        Ok(())
    })
}

/// A [`FunctionTransform`] that can run as several copies on as many threads, for transforms
/// whose per-record work is the pipeline's bottleneck (`ocsf`). Each copy has its own state; a
/// record goes to the copy its [`partition_key`](Self::partition_key) picks, so records that
/// share state (one SSM session's reads) meet the same copy in order. Outputs leave in the
/// order of the inputs that made them, as with one copy.
pub trait ParallelTransform: FunctionTransform + Sized {
    /// Which copy must see this record (`None`: any).
    fn partition_key(&self, event: &Event) -> Option<u64>;
    /// A new copy: same settings, empty state.
    fn fork(&self) -> Self;
}

/// Keyless records of batches smaller than this all go to the first copy: spreading them costs
/// more thread hand-offs than it saves.
const MIN_EVENTS_TO_SPLIT: usize = 64;

/// What one copy made of its share of a batch, each output tagged with its input's position.
#[derive(Default)]
struct ShareOutput {
    out: Vec<(usize, Event)>,
    dropped: Vec<(usize, Event)>,
    discarded: u64,
}

fn transform_share<T: FunctionTransform>(t: &mut T, share: Vec<(usize, Event)>) -> ShareOutput {
    let mut result = TransformOutput::default();
    // The input position of each output and dead letter, in step with `result`.
    let mut out_from = Vec::with_capacity(share.len());
    let mut dropped_from = Vec::new();
    for (i, event) in share {
        t.transform(event, &mut result);
        out_from.resize(result.out.len(), i);
        dropped_from.resize(result.dropped.len(), i);
    }
    ShareOutput {
        out: out_from.into_iter().zip(result.out).collect(),
        dropped: dropped_from.into_iter().zip(result.dropped).collect(),
        discarded: result.discarded,
    }
}

/// Batches a [`ParallelCopies`] works on at once: while the oldest waits for its slowest
/// share, the copies that are done go on with the next batches.
const BATCHES_IN_FLIGHT: usize = 4;

/// Runs `threads` copies of a [`ParallelTransform`] (one when `threads` <= 1): each batch is
/// split between the copies by partition key, the shares are transformed at the same time,
/// and the outputs are put back in input order. Several batches are in flight, so no copy
/// waits for another to finish a batch.
pub fn run_parallel_function_transform<T: ParallelTransform>(
    t: T,
    threads: usize,
    cx: TransformContext,
) -> ComponentTask {
    if threads <= 1 {
        return run_function_transform(t, cx);
    }
    let TransformContext {
        name,
        mut input,
        out,
        dropped,
        metrics,
        ..
    } = cx;
    Box::pin(async move {
        let fail = |e: String| ComponentError(format!("transform {name}: {e}"));
        let mut copies = ParallelCopies::new(t, threads);
        let mut in_flight: VecDeque<PendingBatch> = VecDeque::with_capacity(BATCHES_IN_FLIGHT);
        let mut input_open = true;
        loop {
            let full = !input_open || in_flight.len() >= BATCHES_IN_FLIGHT;
            let done = match in_flight.front_mut() {
                None if !input_open => break,
                Some(oldest) if full => oldest.await,
                oldest => {
                    // Take more input while the oldest batch is being worked on.
                    let next = tokio::select! {
                        biased;
                        done = async {
                            match oldest {
                                Some(batch) => batch.await,
                                None => std::future::pending().await,
                            }
                        } => Ok(done),
                        batch = input.recv() => Err(batch),
                    };
                    match next {
                        Ok(done) => done,
                        Err(Some(batch)) => {
                            metrics.add_received_batch(&batch);
                            in_flight.push_back(copies.submit(batch));
                            continue;
                        }
                        Err(None) => {
                            input_open = false;
                            continue;
                        }
                    }
                }
            };
            in_flight.pop_front();
            done.map_err(fail)?
                .send(&out, &dropped, &metrics)
                .await
                .map_err(|e| fail(e.to_string()))?;
        }
        Ok(())
    })
}

/// A batch given to [`ParallelCopies::submit`]: resolves to its outputs, in input order.
pub type PendingBatch = BoxFuture<'static, Result<TransformOutput, String>>;

const COPY_STOPPED: &str = "a transform copy stopped (its thread panicked or could not start)";

/// A share of a batch for one copy, and where its output goes.
struct ShareJob {
    share: Vec<(usize, Event)>,
    reply: tokio::sync::oneshot::Sender<ShareOutput>,
}

/// The copies of a [`ParallelTransform`], each on its own thread for as long as this lives
/// (they stop when it is dropped), and the batch splitting.
pub struct ParallelCopies<T> {
    /// A copy that only answers `partition_key` (on the caller's thread).
    keys: T,
    /// Each copy's queue of shares.
    copies: Vec<std::sync::mpsc::Sender<ShareJob>>,
    /// The copy the next record without a partition key goes to (round robin).
    next_free: usize,
}

impl<T: ParallelTransform> ParallelCopies<T> {
    pub fn new(t: T, threads: usize) -> Self {
        let keys = t.fork();
        let mut forks: Vec<T> = (1..threads.max(1)).map(|_| t.fork()).collect();
        forks.insert(0, t);
        let copies = forks
            .into_iter()
            .enumerate()
            .map(|(n, mut copy)| {
                let (tx, rx) = std::sync::mpsc::channel::<ShareJob>();
                // A thread that cannot start leaves its queue closed: every batch then fails
                // with COPY_STOPPED, which stops the pipeline with that reason.
                let _ = std::thread::Builder::new()
                    .name(format!("transform-copy-{n}"))
                    .spawn(move || {
                        for job in rx {
                            // A caller that stopped waiting just drops the output.
                            let _ = job.reply.send(transform_share(&mut copy, job.share));
                        }
                    });
                tx
            })
            .collect();
        ParallelCopies {
            keys,
            copies,
            next_free: 0,
        }
    }

    /// Splits `batch` between the copies and starts them on it; the returned future resolves
    /// to the outputs and dead letters in the order of the inputs that made them (Err when a
    /// copy panicked). Batches submitted one after another are worked on at the same time.
    pub fn submit(&mut self, batch: EventBatch) -> PendingBatch {
        let n = batch.len();
        let k = self.copies.len();
        let mut shares: Vec<Vec<(usize, Event)>> =
            (0..k).map(|_| Vec::with_capacity(n / k + 1)).collect();
        // A small batch goes to fewer copies (a hand-off costs more than it saves), but
        // keyed records still go to the copy that holds their key's state.
        let spread = n >= MIN_EVENTS_TO_SPLIT;
        for (i, event) in batch.into_iter().enumerate() {
            let copy = match self.keys.partition_key(&event) {
                Some(key) => (key % k as u64) as usize,
                None if spread => {
                    self.next_free = (self.next_free + 1) % k;
                    self.next_free
                }
                None => 0,
            };
            shares[copy].push((i, event));
        }
        let mut replies = Vec::with_capacity(k);
        for (copy, share) in self.copies.iter().zip(shares) {
            if share.is_empty() {
                continue;
            }
            let (reply, output) = tokio::sync::oneshot::channel();
            // A copy whose thread is gone (it panicked) drops the job: its reply fails.
            let _ = copy.send(ShareJob { share, reply });
            replies.push(output);
        }
        Box::pin(async move {
            let mut results = Vec::with_capacity(replies.len());
            for output in replies {
                results.push(output.await.map_err(|_| COPY_STOPPED.to_string()));
            }
            merge_shares(results, n)
        })
    }

    /// Transforms one batch on all copies at once (see [`submit`](Self::submit)).
    pub async fn transform_batch(&mut self, batch: EventBatch) -> Result<TransformOutput, String> {
        self.submit(batch).await
    }
}

/// Puts the outputs of the shares of a batch back in input order.
fn merge_shares(
    results: Vec<Result<ShareOutput, String>>,
    n: usize,
) -> Result<TransformOutput, String> {
    let mut all_out = Vec::with_capacity(n);
    let mut all_dropped = Vec::new();
    let mut discarded = 0;
    for r in results {
        let r = r?;
        all_out.extend(r.out);
        all_dropped.extend(r.dropped);
        discarded += r.discarded;
    }
    // Stable: the outputs of one input keep their order.
    all_out.sort_by_key(|(i, _)| *i);
    all_dropped.sort_by_key(|(i, _)| *i);
    Ok(TransformOutput {
        out: all_out.into_iter().map(|(_, e)| e).collect(),
        dropped: all_dropped.into_iter().map(|(_, e)| e).collect(),
        discarded,
    })
}

/// An option that does not fit its component's config: `path` is the dotted option path
/// inside the component (`batch.max_bytes`), empty for the component itself.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionError {
    pub path: String,
    pub message: String,
}

/// Deserializes a component's options (everything but `type` and `inputs`), keeping the path
/// of the offending option so the config loader can point at its line and column.
pub fn parse_options<T: serde::de::DeserializeOwned>(
    options: serde_json::Value,
) -> Result<T, OptionError> {
    serde_path_to_error::deserialize::<_, T>(options).map_err(|e| {
        let path = e.path().to_string();
        OptionError {
            path: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::event::{Object, Value};

    /// Emits two events per input (`n`, `part`), counting per key how many records of that key
    /// this copy saw before; every 7th input is a dead letter, every 11th is discarded.
    struct CountPerKey {
        seen: HashMap<u64, u64>,
    }

    impl FunctionTransform for CountPerKey {
        fn transform(&mut self, event: Event, output: &mut TransformOutput) {
            let n = event.fields()["n"].as_u64().unwrap_or(0);
            if n.is_multiple_of(7) {
                output.dead_letter(event);
                return;
            }
            if n.is_multiple_of(11) {
                output.discard(event);
                return;
            }
            let key = event.fields()["key"].as_u64().unwrap_or(0);
            let seen = self.seen.entry(key).or_default();
            let thread = format!("{:?}", std::thread::current().id());
            for part in 0..2 {
                let mut f = Object::new();
                f.insert("n".into(), n.into());
                f.insert("part".into(), part.into());
                f.insert("key".into(), key.into());
                f.insert("seen_before".into(), (*seen).into());
                f.insert("thread".into(), thread.clone().into());
                output.emit(Event::new(f, "t".into(), 0));
            }
            *seen += 1;
        }
    }

    impl ParallelTransform for CountPerKey {
        fn partition_key(&self, event: &Event) -> Option<u64> {
            // Keys above 100 are "keyless": any copy may take them.
            event.fields()["key"].as_u64().filter(|k| *k < 100)
        }
        fn fork(&self) -> Self {
            CountPerKey {
                seen: HashMap::new(),
            }
        }
    }

    fn batch(range: std::ops::Range<u64>) -> EventBatch {
        range
            .map(|n| {
                let mut f = Object::new();
                f.insert("n".into(), n.into());
                // 5 keyed partitions, and every 4th record keyless.
                let key = if n.is_multiple_of(4) { 100 + n } else { n % 5 };
                f.insert("key".into(), key.into());
                Event::new(f, "in".into(), 0)
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_in_flight_come_back_in_input_order_with_each_key_on_one_copy_in_order() {
        let mut copies = ParallelCopies::new(
            CountPerKey {
                seen: HashMap::new(),
            },
            3,
        );
        let mut seen_per_key: HashMap<u64, u64> = HashMap::new();
        let mut threads = HashSet::new();
        let mut expected_n = (1..1000u64).filter(|n| !n.is_multiple_of(7) && !n.is_multiple_of(11));
        let mut dead = Vec::new();
        let mut discarded = 0;
        // All three batches are in flight before the first is awaited.
        let pending: Vec<PendingBatch> = [1..300u64, 300..310, 310..1000]
            .into_iter()
            .map(|chunk| copies.submit(batch(chunk)))
            .collect();
        for batch_output in pending {
            let r = batch_output.await.expect("no panic");
            discarded += r.discarded;
            dead.extend(
                r.dropped
                    .iter()
                    .map(|e| e.fields()["n"].as_u64().unwrap_or(0)),
            );
            for pair in r.out.chunks(2) {
                let n = expected_n.next().expect("no more outputs than inputs");
                for (part, e) in pair.iter().enumerate() {
                    let f = e.fields();
                    assert_eq!(f["n"], Value::from(n), "output order follows input order");
                    assert_eq!(f["part"], Value::from(part as u64));
                    threads.insert(f["thread"].as_str().unwrap_or("").to_string());
                }
                let key = pair[0].fields()["key"].as_u64().unwrap_or(0);
                if key < 100 {
                    // Every record of a key went to one copy, in order.
                    let count = seen_per_key.entry(key).or_default();
                    assert_eq!(pair[0].fields()["seen_before"], Value::from(*count));
                    *count += 1;
                }
            }
        }
        assert_eq!(expected_n.next(), None, "every input came out");
        let want_dead: Vec<u64> = (1..1000u64).filter(|n| n.is_multiple_of(7)).collect();
        assert_eq!(dead, want_dead, "dead letters in input order");
        assert_eq!(
            discarded,
            (1..1000u64)
                .filter(|n| n.is_multiple_of(11) && !n.is_multiple_of(7))
                .count() as u64
        );
        assert!(threads.len() > 1, "the work was shared between threads");
    }
}
