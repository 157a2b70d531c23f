//! Benchmark of the correlate transform's chunk loop (run by `bench/correlate.sh`, not a test):
//! OCSF events through the transform's own pipeline (`pipeline::ChunkPipeline`, the steps
//! `run_chunks` takes for every chunk): applied to the session table in chunks, each chunk's
//! commit written to a real state store (fsynced redb transaction in a temporary data_dir) by
//! the writer thread while the next chunk is applied.
//!
//!   correlate_bench throughput EVENTS CONCURRENT   events/s with CONCURRENT open sessions
//!   correlate_bench memory OPEN                    peak RSS / OPEN open sessions
//!   correlate_bench store [BYTES [COMMITS]]        the state store alone: one value per commit
//!                                                  (default: a full log segment, 80 commits)
//!
//! Event construction is timed separately and excluded from events/s. It happens at the one
//! point of each step where no commit is in flight (see [`throughput`]): built while a commit
//! is written, events would hide that write, and events/s would leave out what the overlap
//! does not hide. Dropping a chunk's outputs (a sink's work) is excluded too.
//!
//! Memory: events are built chunk by chunk and pushed through `ChunkPipeline::push`, so the
//! peak includes what the transform holds at most: the chunk being applied and the previous
//! one, whose outputs wait for its commit (not what a source queues ahead of it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use sessiontrail_core::json_write::JsonObjectWriter;
use sessiontrail_core::metrics::MetricsRegistry;
use sessiontrail_core::store::StateStore;
use sessiontrail_core::{Event, EventMeta, Object};
use sessiontrail_transforms::correlate::correlator::{CorrelateMetrics, Correlator};
use sessiontrail_transforms::correlate::pipeline::{ChunkPipeline, CommitWatch, PipelineTimes};
use sessiontrail_transforms::correlate::state::{SessionStore, SEGMENT_BYTES};
use sessiontrail_transforms::correlate::{CorrelateConfig, MAX_EVENTS_PER_COMMIT};

/// The allocator of the `sessiontrail` binary, so the figures are the pipeline's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// As `sessiontrail`'s main: return freed memory at once (`mi_option_purge_delay` = 0).
const T0: i64 = 1_741_593_600_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A random UUID (version 4 layout) in canonical text.
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        // Digits written directly rather than through `format!`: the source thread must
        // generate events well ahead of correlate on a 2-core machine.
        let mut s = String::with_capacity(36);
        hex(&mut s, a >> 32, 8);
        s.push('-');
        hex(&mut s, (a >> 16) & 0xffff, 4);
        s.push_str("-4");
        hex(&mut s, a & 0xfff, 3);
        s.push_str("-a");
        hex(&mut s, b >> 52, 3);
        s.push('-');
        hex(&mut s, b & 0xffff_ffff_ffff, 12);
        s
    }
}

/// The low `digits` hex digits of `v`, zero-padded.
fn hex(s: &mut String, v: u64, digits: u32) {
    for i in (0..digits).rev() {
        s.push(char::from(
            b"0123456789abcdef"[((v >> (4 * i)) & 0xf) as usize],
        ));
    }
}

struct Session {
    id: String,
    user: usize,
    host: usize,
}

/// Builds the OCSF Authentication events of the stream (the fields the `ocsf` transform
/// gives Windows logons and logoffs) as the `ocsf` transform hands them on: JSON text, which
/// correlate reads without parsing it whole.
struct Events {
    meta: EventMeta,
    users: Vec<String>,
    hosts: Vec<String>,
}

impl Events {
    fn new() -> Self {
        let source = Event::new(Object::new(), "bench".into(), 300);
        Events {
            meta: source.into_parts().1,
            users: (0..50).map(|i| format!("CORP\\user{i:02}")).collect(),
            hosts: (0..20).map(|i| format!("res-rds-waw-{i:02}")).collect(),
        }
    }

    fn event(&self, activity: u64, s: &Session, time: i64, rng: &mut Rng) -> Event {
        let mut w = JsonObjectWriter::with_capacity(320);
        w.unsigned("class_uid", 3002)
            .unsigned("category_uid", 3)
            .unsigned("activity_id", activity)
            .integer("time", time)
            .begin_object("metadata")
            .string("uid", &rng.uuid())
            .begin_object("product")
            .string("name", "Windows")
            .end_object()
            .string("version", "1.8.0")
            .end_object()
            .begin_object("session")
            .string("uid", &s.id)
            .end_object()
            .begin_object("user")
            .string("name", &self.users[s.user])
            .end_object()
            .begin_object("dst_endpoint")
            .string("hostname", &self.hosts[s.host])
            .end_object();
        Event::from_json_parts(w.finish(), self.meta.clone())
    }
}

fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .trim_end_matches(" kB")
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// `store BYTES COMMITS`: what one commit of a value of that size costs in the state store
/// alone (a new key per commit, as the log appends segments).
fn store_only(bytes: usize, commits: usize) {
    let dir = std::env::temp_dir().join(format!("correlate-bench-store-{}", std::process::id()));
    let ns = StateStore::new(&dir).namespace("correlate/bench");
    let value = vec![0x5a_u8; bytes];
    let t = Instant::now();
    for i in 0..commits as u64 {
        let key = i.to_be_bytes();
        ns.write(&[(&key[..], Some(&value[..]))]).expect("write");
    }
    let per = t.elapsed().as_secs_f64() / commits as f64;
    println!(
        "store: {commits} commits of {bytes} bytes: {:.2} ms each, {:.0} MB/s",
        per * 1e3,
        bytes as f64 / per / 1e6
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The generated stream: sessions opening, and once CONCURRENT are open, a random open one
/// ending for each new one (`memory`: starts only).
struct Stream {
    events: Events,
    rng: Rng,
    time: i64,
    open: Vec<Session>,
    concurrent: usize,
    starts_only: bool,
}

impl Stream {
    /// Appends about `n` events (an end and a start go together).
    fn fill(&mut self, batch: &mut Vec<Event>, n: usize) {
        let rng = &mut self.rng;
        while batch.len() < n {
            self.time += 50;
            let new = Session {
                id: rng.uuid(),
                user: (rng.next() % 50) as usize,
                host: (rng.next() % 20) as usize,
            };
            let events = &self.events;
            if self.starts_only {
                batch.push(events.event(1, &new, self.time, rng));
            } else if self.open.len() < self.concurrent {
                batch.push(events.event(1, &new, self.time, rng));
                self.open.push(new);
            } else {
                let i = (rng.next() % self.open.len() as u64) as usize;
                batch.push(events.event(2, &self.open[i], self.time, rng));
                batch.push(events.event(1, &new, self.time, rng));
                self.open[i] = new;
            }
        }
    }
}

fn times_line(t: &PipelineTimes, secs: f64) -> String {
    let s = |d: Duration| d.as_secs_f64();
    // Of the writes, what applying the next chunk did not hide shows up as waiting.
    let hidden = t.writing.saturating_sub(t.waiting);
    let accounted = s(t.applying) + s(t.encoding) + s(t.waiting);
    format!(
        "{} chunks, {secs:.2}s = {:.2}s applying + {:.2}s encoding commits + {:.2}s waiting for writes + {:.2}s other; writes {:.2}s on the writer thread ({:.1} MiB), {:.2}s of it overlapped with applying",
        t.chunks,
        s(t.applying),
        s(t.encoding),
        s(t.waiting),
        (secs - accounted).max(0.0),
        s(t.writing),
        t.written_bytes as f64 / 1_048_576.0,
        s(hidden),
    )
}

fn main() {
    // As `sessiontrail`'s main.
    sessiontrail_core::allocator::tune_mimalloc();
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("throughput");
    if mode == "store" {
        let bytes = args
            .get(2)
            .and_then(|a| a.parse().ok())
            .unwrap_or(SEGMENT_BYTES);
        let commits = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(80);
        store_only(bytes, commits);
        return;
    }
    let n: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let concurrent: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("correlate-bench-{}", std::process::id()));
    let store = SessionStore::new(StateStore::new(&dir).namespace("correlate/bench"));
    let config: CorrelateConfig = serde_json::from_value(json!({})).expect("default config");
    let settings = config.settings().expect("default settings");
    let registry = MetricsRegistry::new();
    let metrics = CorrelateMetrics::new(Arc::clone(&registry), "bench");
    let correlator = Arc::new(Mutex::new(Correlator::new(
        settings,
        "bench".into(),
        metrics,
    )));
    let mut pipeline =
        ChunkPipeline::new(Arc::clone(&correlator), store.clone(), CommitWatch::new())
            .expect("pipeline");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut stream = Stream {
        events: Events::new(),
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        time: T0,
        open: Vec::new(),
        concurrent,
        starts_only: mode == "memory",
    };
    if mode != "memory" {
        throughput(stream, n, runtime, pipeline, &correlator, &store, &dir);
        return;
    }
    let rss_start = rss_kb("VmRSS:");
    let mut build = Duration::ZERO;
    let mut produced = 0usize;
    let started = Instant::now();
    runtime.block_on(async {
        while produced < n {
            let t = Instant::now();
            let mut chunk = Vec::with_capacity(MAX_EVENTS_PER_COMMIT);
            stream.fill(&mut chunk, MAX_EVENTS_PER_COMMIT.min(n - produced));
            produced += chunk.len();
            build += t.elapsed();
            // Returns the previous chunk's outputs, released by its commit.
            drop(pipeline.push(chunk).await.expect("commit"));
        }
        drop(pipeline.committed().await.expect("commit"));
    });
    let secs = started.elapsed().as_secs_f64();
    let c = correlator.lock().expect("lock");
    let open = c.table.open_count().max(1) as u64;
    let hwm = rss_kb("VmHWM:");
    let rss = rss_kb("VmRSS:");
    println!(
        "memory: {open} open sessions; peak RSS {} MiB = {} bytes/session; RSS now {} MiB, {} bytes/session above the start ({} MiB); table+index+heaps {} bytes/session; {} commits in {secs:.1}s (building the events {:.1}s); {}",
        hwm / 1024,
        hwm * 1024 / open,
        rss / 1024,
        (rss.saturating_sub(rss_start)) * 1024 / open,
        rss_start / 1024,
        c.table.approx_heap_bytes() as u64 / open,
        pipeline.times.chunks,
        build.as_secs_f64(),
        log_line(&store),
    );
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `throughput`: the steps of [`ChunkPipeline::push`] (what the transform's loop runs for each
/// chunk), timed: apply chunk N while commit N-1 is written, wait for commit N-1, hand commit
/// N to the writer. Chunk N+1 is built between the wait and the hand-over, the one moment no
/// commit is in flight, so building neither counts nor hides any of a write.
fn throughput(
    mut stream: Stream,
    n: usize,
    runtime: tokio::runtime::Runtime,
    mut pipeline: ChunkPipeline,
    correlator: &Mutex<Correlator>,
    store: &SessionStore,
    dir: &std::path::Path,
) {
    let mut build = Duration::ZERO;
    let mut timed = Duration::ZERO;
    let mut produced = 0usize;
    let mut next_chunk = |stream: &mut Stream, build: &mut Duration| {
        let t = Instant::now();
        let mut chunk = Vec::with_capacity(MAX_EVENTS_PER_COMMIT + 1);
        stream.fill(&mut chunk, MAX_EVENTS_PER_COMMIT.min(n - produced));
        produced += chunk.len();
        *build += t.elapsed();
        chunk
    };
    let mut chunk = next_chunk(&mut stream, &mut build);
    runtime.block_on(async {
        while !chunk.is_empty() {
            let t = Instant::now();
            let applied = pipeline.apply(chunk).await.expect("apply");
            let waited = Instant::now();
            let previous = pipeline.committed().await.expect("commit");
            pipeline.times.waiting += waited.elapsed();
            timed += t.elapsed();
            // Dropped untimed: that is a sink's work.
            drop(previous);
            chunk = next_chunk(&mut stream, &mut build);
            let t = Instant::now();
            pipeline.submit(applied).expect("submit");
            timed += t.elapsed();
        }
        let t = Instant::now();
        let last = pipeline.committed().await.expect("commit");
        pipeline.times.waiting += t.elapsed();
        timed += t.elapsed();
        drop(last);
    });
    let secs = timed.as_secs_f64();
    let open = correlator.lock().expect("lock").table.open_count();
    println!(
        "throughput: {produced} events, {open} open at the end, {} concurrent: {:.0} events/s through correlate incl. commits ({}; building the events took {:.2}s, excluded); {}",
        stream.concurrent,
        produced as f64 / secs,
        times_line(&pipeline.times, secs),
        build.as_secs_f64(),
        log_line(store),
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn log_line(store: &SessionStore) -> String {
    let log = store.stats();
    format!(
        "state log {} segments, {:.1} MiB, {} live records",
        log.segments,
        log.bytes as f64 / 1_048_576.0,
        log.live_records
    )
}
