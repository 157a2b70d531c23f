//! Benchmark of the correlate transform's inner loop (run by `bench/correlate.sh`, not a test):
//! OCSF events applied to the session table in chunks, each chunk committed to a real state
//! store (fsynced redb transaction in a temporary data_dir), as the transform does
//! (`apply_and_commit`, done here in its two halves so that each can be timed).
//!
//!   correlate_bench throughput EVENTS CONCURRENT   events/s with CONCURRENT open sessions
//!   correlate_bench memory OPEN                    peak RSS / OPEN open sessions
//!   correlate_bench store [BYTES [COMMITS]]        the state store alone: one value per commit
//!                                                  (default: a full log segment, 80 commits)
//!
//! Event construction is timed separately and excluded from events/s.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use sessiontrail_core::metrics::MetricsRegistry;
use sessiontrail_core::store::StateStore;
use sessiontrail_core::Event;
use sessiontrail_transforms::correlate::correlator::{CorrelateMetrics, Correlator};
use sessiontrail_transforms::correlate::state::{SessionStore, SEGMENT_BYTES};
use sessiontrail_transforms::correlate::{apply_chunk, CorrelateConfig, MAX_EVENTS_PER_COMMIT};

/// The allocator of the `sessiontrail` binary, so the figures are the pipeline's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// As `sessiontrail`'s main: return freed memory at once (`mi_option_purge_delay` = 0).
fn tune_allocator() {
    // SAFETY: sets a process-wide integer option, once, before any other thread starts.
    unsafe { libmimalloc_sys::mi_option_set(15, 0) };
}

const T0: i64 = 1_741_593_600_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }
}

struct Session {
    id: String,
    user: usize,
    host: usize,
}

fn event(activity: u64, s: &Session, time: i64, rng: &mut Rng) -> Event {
    let v = json!({
        "class_uid": 3002, "category_uid": 3, "activity_id": activity, "time": time,
        "metadata": {"uid": rng.uuid(), "product": {"name": "Windows"}, "version": "1.8.0"},
        "session": {"uid": s.id},
        "user": {"name": format!("CORP\\user{:02}", s.user)},
        "dst_endpoint": {"hostname": format!("res-rds-waw-{:02}", s.host)},
    });
    let serde_json::Value::Object(fields) = v else {
        unreachable!()
    };
    Event::new(fields, "bench".into(), 300)
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

fn main() {
    tune_allocator();
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
    let config: CorrelateConfig = serde_json::from_value(json!({})).unwrap();
    let settings = config.settings().unwrap();
    let metrics = CorrelateMetrics::new(MetricsRegistry::new(), "bench");
    let correlator = Arc::new(Mutex::new(Correlator::new(
        settings,
        "bench".into(),
        metrics,
    )));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut time = T0;
    let mut build = Duration::ZERO;
    let mut correlate = Duration::ZERO;
    let mut committing = Duration::ZERO;
    let mut commits = 0u64;
    let rss_start = rss_kb("VmRSS:");
    // As `apply_and_commit`: the lock held from applying the chunk through its commit.
    let mut run_chunk = |chunk: Vec<Event>, correlate: &mut Duration| {
        let t = Instant::now();
        let mut c = correlator.lock().expect("lock");
        let out = apply_chunk(&mut c, chunk);
        let applied = Instant::now();
        store.commit(&mut c).expect("commit");
        drop(c);
        committing += applied.elapsed();
        *correlate += t.elapsed();
        commits += 1;
        drop(out);
    };
    let mut open: Vec<Session> = Vec::new();
    let mut produced = 0usize;
    while produced < n {
        let t = Instant::now();
        let mut chunk = Vec::with_capacity(MAX_EVENTS_PER_COMMIT);
        while chunk.len() < MAX_EVENTS_PER_COMMIT && produced < n {
            time += 50;
            let new = Session {
                id: rng.uuid(),
                user: (rng.next() % 50) as usize,
                host: (rng.next() % 20) as usize,
            };
            if mode == "memory" || open.len() < concurrent {
                chunk.push(event(1, &new, time, &mut rng));
                if mode != "memory" {
                    open.push(new);
                }
                produced += 1;
            } else {
                let i = (rng.next() % open.len() as u64) as usize;
                chunk.push(event(2, &open[i], time, &mut rng));
                chunk.push(event(1, &new, time, &mut rng));
                open[i] = new;
                produced += 2;
            }
        }
        build += t.elapsed();
        run_chunk(chunk, &mut correlate);
    }
    let c = correlator.lock().unwrap();
    let secs = correlate.as_secs_f64();
    let log = store.stats();
    let log = format!(
        "state log {} segments, {:.1} MiB, {} live records",
        log.segments,
        log.bytes as f64 / 1_048_576.0,
        log.live_records
    );
    match mode {
        "memory" => {
            let open = c.table.open_count().max(1) as u64;
            let hwm = rss_kb("VmHWM:");
            let rss = rss_kb("VmRSS:");
            println!(
                "memory: {open} open sessions; peak RSS {} MiB = {} bytes/session; RSS now {} MiB, {} bytes/session above the start ({} MiB); table+index+heaps {} bytes/session; {commits} commits in {secs:.1}s; {log}",
                hwm / 1024,
                hwm * 1024 / open,
                rss / 1024,
                (rss.saturating_sub(rss_start)) * 1024 / open,
                rss_start / 1024,
                c.table.approx_heap_bytes() as u64 / open,
            );
        }
        _ => println!(
            "throughput: {produced} events, {} open at the end, {concurrent} concurrent: {:.0} events/s through correlate incl. commits ({commits} commits, {secs:.2}s = {:.2}s applying + {:.2}s committing; building the events took {:.2}s, excluded); {log}",
            c.table.open_count(),
            produced as f64 / secs,
            secs - committing.as_secs_f64(),
            committing.as_secs_f64(),
            build.as_secs_f64()
        ),
    }
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}
