//! The transform's chunk loop, with each chunk's state commit written while the next chunk is
//! applied.
//!
//! A commit has two parts ([`SessionStore::prepare`], [`SessionStore::write`]):
//! - encoding: the changed sessions of the chunk, taken from the table and encoded into log
//!   segments. It needs the table, so it runs under the correlator lock right after the chunk
//!   is applied;
//! - writing: the redb transaction and its fsync. It needs only the encoded bytes, so it runs
//!   on a writer thread of its own, while the next chunk is applied.
//!
//! At most one commit is in flight (pipeline depth 1): after applying chunk N+1 (while commit N
//! is written), the loop waits for commit N, releases chunk N's outputs and only then hands
//! commit N+1 to the writer. So commits are written in the order they were encoded, and
//! memory holds at most two chunks (one being applied, one whose outputs wait for their
//! commit) and two encoded commits (one being written, one waiting for it).
//!
//! Delivery: a chunk's outputs (forwarded events with their ack tokens, absorbed duplicates,
//! dead letters) are released only after that chunk's commit is durable, so no sink or source
//! can see an event acknowledged whose effect on the state could still be lost. A failed
//! commit is fatal: the pipeline stops, and the outputs of the failed chunk (and of the chunk
//! applied meanwhile) are dropped with their tokens unresolved (= `Failed`), so the sources
//! re-read them after a restart.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{mpsc, oneshot};

use sessiontrail_core::component::TransformOutput;
use sessiontrail_core::metrics::ComponentMetrics;
use sessiontrail_core::{Event, EventBatch, Output};

use super::correlator::{ChunkOutput, Correlator};
use super::state::{PreparedCommit, SessionStore};
use super::{apply_chunk, MAX_EVENTS_PER_COMMIT};

/// How far the store is behind the table: commits encoded from it and commits written. The live API waits on it so that it shows only durable state (see
/// [`CommitWatch::wait_durable`]).
#[derive(Default)]
pub struct CommitWatch {
    state: Mutex<WatchState>,
    changed: Condvar,
}

#[derive(Default)]
struct WatchState {
    submitted: u64,
    durable: u64,
    failed: bool,
}

impl CommitWatch {
    pub fn new() -> Arc<Self> {
        Arc::new(CommitWatch::default())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        // The guarded counters stay consistent whatever panicked while holding the lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called with the correlator locked, when a commit of its changes has been encoded.
    fn submitted(&self) {
        self.state().submitted += 1;
    }

    fn finished(&self, ok: bool) {
        let mut s = self.state();
        if ok {
            s.durable += 1;
        } else {
            s.failed = true;
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Waits until every commit encoded so far is durable. Called with the correlator locked
    /// (no commit can be encoded meanwhile), it makes what the caller then reads from the
    /// table durable state. Neither the writer nor the loop's hand-over needs the correlator
    /// lock, so this waits for at most two writes (the one in flight, and that of the chunk
    /// applied meanwhile). `Err`: a commit failed, the table holds state that will never be
    /// durable.
    pub fn wait_durable(&self) -> Result<(), String> {
        let mut s = self.state();
        loop {
            if s.failed {
                return Err("a state commit failed; the pipeline is stopping".into());
            }
            if s.durable >= s.submitted {
                return Ok(());
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Commits encoded and not yet written (tests).
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> u64 {
        let s = self.state();
        s.submitted - s.durable
    }
}

/// How long one commit's write took on the writer thread.
type WriteResult = Result<Duration, String>;

struct Job {
    commit: PreparedCommit,
    done: oneshot::Sender<WriteResult>,
}

/// A thread that writes prepared commits in the order they were handed over (one at a time:
/// the loop hands over the next only after the previous is done). Ends when it is dropped,
/// after the commit already handed over.
struct Committer {
    jobs: std_mpsc::Sender<Job>,
}

impl Committer {
    fn start(store: SessionStore, watch: Arc<CommitWatch>) -> Result<Self, String> {
        let (jobs, queue) = std_mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("correlate-commit".into())
            .spawn(move || {
                let mut failed = false;
                for job in queue {
                    if failed {
                        // Written after a failed one, this commit would store segments whose
                        // predecessors are missing: dropped, its sender reports the failure.
                        continue;
                    }
                    let t = Instant::now();
                    // A panic in the store is a failed commit like any other: reported, so that
                    // neither the loop nor an API request waits for it forever.
                    let result =
                        std::panic::catch_unwind(AssertUnwindSafe(|| store.write(&job.commit)))
                            .unwrap_or_else(|_| {
                                Err("the state store panicked while committing".into())
                            })
                            .map(|()| t.elapsed());
                    failed = result.is_err();
                    watch.finished(!failed);
                    // The encoded bytes go before the outputs are released.
                    drop(job.commit);
                    let _ = job.done.send(result);
                }
            })
            .map_err(|e| format!("cannot start the state commit thread: {e}"))?;
        Ok(Committer { jobs })
    }
}

/// Where the time of the chunk loop went (the benchmark prints it).
#[derive(Debug, Default, Clone, Copy)]
pub struct PipelineTimes {
    /// Chunks applied.
    pub chunks: u64,
    /// Applying chunks to the table (under the lock).
    pub applying: Duration,
    /// Encoding their changes for the store (under the lock, after applying).
    pub encoding: Duration,
    /// Writing the commits (transaction + fsync), on the writer thread, overlapping the
    /// above.
    pub writing: Duration,
    /// Waiting for the previous commit after a chunk was applied and encoded: the part of the
    /// writes that applying did not hide.
    pub waiting: Duration,
    /// Bytes of segments written.
    pub written_bytes: u64,
}

/// A chunk applied to the table and its commit encoded, not yet handed to the writer
/// ([`ChunkPipeline::apply`], then [`ChunkPipeline::submit`]).
pub struct Applied {
    out: ChunkOutput,
    /// Taken by `submit`.
    commit: Option<PreparedCommit>,
    watch: Arc<CommitWatch>,
}

impl Drop for Applied {
    fn drop(&mut self) {
        if self.commit.is_some() {
            // Counted as submitted but never to be written (the loop stopped on an error): the
            // table holds state that will not be durable, which the API must not wait for.
            self.watch.finished(false);
        }
    }
}

/// A chunk whose commit the writer has, and its outputs, held until the commit is durable.
struct Pending {
    out: ChunkOutput,
    done: oneshot::Receiver<WriteResult>,
}

/// The chunk loop's state: the table, the store, the writer, and the chunk whose commit is in
/// flight.
pub struct ChunkPipeline {
    correlator: Arc<Mutex<Correlator>>,
    store: SessionStore,
    watch: Arc<CommitWatch>,
    committer: Committer,
    pending: Option<Pending>,
    pub times: PipelineTimes,
}

impl ChunkPipeline {
    /// `watch` must be the one the live API waits on (if any).
    pub fn new(
        correlator: Arc<Mutex<Correlator>>,
        store: SessionStore,
        watch: Arc<CommitWatch>,
    ) -> Result<Self, String> {
        let committer = Committer::start(store.clone(), Arc::clone(&watch))?;
        Ok(ChunkPipeline {
            correlator,
            store,
            watch,
            committer,
            pending: None,
            times: PipelineTimes::default(),
        })
    }

    /// A chunk's commit is being written; its outputs are held.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// One step of the loop: applies a chunk (while the previous chunk's commit is written),
    /// waits for that commit, and hands this chunk's commit to the writer. Returns the
    /// previous chunk's outputs, now safe to release (`None`: there was none).
    pub async fn push(&mut self, events: Vec<Event>) -> Result<Option<ChunkOutput>, String> {
        let applied = self.apply(events).await?;
        let t = Instant::now();
        let previous = self.committed().await?;
        self.times.waiting += t.elapsed();
        self.submit(applied)?;
        Ok(previous)
    }

    /// Applies a chunk to the table and encodes its commit, under the correlator lock, off the
    /// async workers. Runs while the previous chunk's commit is being written.
    pub async fn apply(&mut self, events: Vec<Event>) -> Result<Applied, String> {
        let correlator = Arc::clone(&self.correlator);
        let store = self.store.clone();
        let watch = Arc::clone(&self.watch);
        let work = move || {
            let mut c = correlator
                .lock()
                .map_err(|_| "correlation state lock poisoned by an earlier panic".to_string())?;
            let t = Instant::now();
            let out = apply_chunk(&mut c, events);
            let applied = Instant::now();
            let commit = store.prepare(&mut c).map_err(|e| {
                // The table has changes that will never be durable: the API must not show
                // them as if they were.
                watch.finished(false);
                format!("{e}; the state was not saved")
            })?;
            let encoded = Instant::now();
            // Counted before the lock is released: an API request that takes the lock next
            // sees these changes, so it must wait for this commit too.
            watch.submitted();
            let applied_chunk = Applied {
                out,
                commit: Some(commit),
                watch,
            };
            drop(c);
            Ok::<_, String>((applied_chunk, applied - t, encoded - applied))
        };
        // Tens of milliseconds of work: not on an async worker as such. On the multi-threaded
        // runtime (the pipeline's) the worker becomes a blocking thread for it, which spares
        // two thread hand-offs per chunk over `spawn_blocking`; elsewhere (tests), a blocking
        // task.
        let (applied, applying, encoding) =
            if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
                tokio::task::block_in_place(work)?
            } else {
                tokio::task::spawn_blocking(work)
                    .await
                    .map_err(|e| format!("correlation task failed: {e}"))??
            };
        self.times.chunks += 1;
        self.times.applying += applying;
        self.times.encoding += encoding;
        Ok(applied)
    }

    /// Hands an applied chunk's commit to the writer; its outputs are held until
    /// [`ChunkPipeline::committed`]. Only once the previous commit is done: one at a time, so
    /// commits are written in order and at most one chunk's outputs wait.
    pub fn submit(&mut self, mut applied: Applied) -> Result<(), String> {
        if self.pending.is_some() {
            return Err("internal: a state commit is already in flight".into());
        }
        let Some(commit) = applied.commit.take() else {
            return Err("internal: chunk committed twice".into());
        };
        self.times.written_bytes += commit.bytes() as u64;
        let (done, rx) = oneshot::channel();
        if self.committer.jobs.send(Job { commit, done }).is_err() {
            self.watch.finished(false);
            return Err("the state commit thread has stopped; the state was not saved".into());
        }
        self.pending = Some(Pending {
            out: std::mem::take(&mut applied.out),
            done: rx,
        });
        Ok(())
    }

    /// Waits for the commit in flight and returns its chunk's outputs (`None`: no commit in
    /// flight). Cancel-safe: dropped before the commit finished, the chunk stays pending.
    pub async fn committed(&mut self) -> Result<Option<ChunkOutput>, String> {
        let Some(pending) = self.pending.as_mut() else {
            return Ok(None);
        };
        let result = (&mut pending.done).await;
        // No await from here on: the outputs are taken exactly when the result is.
        let Some(pending) = self.pending.take() else {
            return Ok(None);
        };
        match result {
            Ok(Ok(written)) => {
                self.times.writing += written;
                Ok(Some(pending.out))
            }
            // The outputs are dropped here: their tokens resolve as Failed.
            Ok(Err(e)) => Err(format!("{e}; the state was not saved")),
            Err(_) => Err("an earlier state commit failed; the state was not saved".into()),
        }
    }
}

/// The transform's loop: reads chunks of input (whatever is queued, up to
/// [`MAX_EVENTS_PER_COMMIT`]), pushes them through the pipeline, and releases each chunk's
/// outputs once its commit is durable. When no input is queued, the commit in flight is
/// finished and its outputs released at once rather than when the next chunk arrives.
pub async fn run_chunks(
    pipeline: &mut ChunkPipeline,
    input: &mut mpsc::Receiver<EventBatch>,
    out: &Output,
    dropped: &Output,
    metrics: &ComponentMetrics,
) -> Result<(), String> {
    loop {
        let received = if pipeline.has_pending() {
            tokio::select! {
                // A finished commit first: its acks go out before more work is taken.
                biased;
                done = pipeline.committed() => {
                    if let Some(chunk) = done? {
                        release(chunk, out, dropped, metrics).await?;
                    }
                    continue;
                }
                batch = input.recv() => batch,
            }
        } else {
            input.recv().await
        };
        let Some(mut events) = received else {
            break;
        };
        while events.len() < MAX_EVENTS_PER_COMMIT {
            match input.try_recv() {
                Ok(more) => events.extend(more),
                Err(_) => break,
            }
        }
        metrics.add_received_batch(&events);
        if let Some(chunk) = pipeline.push(events).await? {
            release(chunk, out, dropped, metrics).await?;
        }
    }
    if let Some(chunk) = pipeline.committed().await? {
        release(chunk, out, dropped, metrics).await?;
    }
    Ok(())
}

/// A chunk's outputs, once its commit is durable: duplicates resolved as handled, dead letters
/// and forwarded events sent on (their tokens travel with them).
async fn release(
    chunk: ChunkOutput,
    out: &Output,
    dropped: &Output,
    metrics: &ComponentMetrics,
) -> Result<(), String> {
    let mut output = TransformOutput::default();
    output.out = chunk.forward;
    output.dropped = chunk.dead;
    for e in chunk.absorbed {
        output.discard(e);
    }
    output
        .send(out, dropped, metrics)
        .await
        .map_err(|e| e.to_string())
}
