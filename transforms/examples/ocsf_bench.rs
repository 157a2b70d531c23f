//! Benchmark (not a test) of the `ocsf` transform alone: an NDJSON file is read and decoded into
//! events first (not timed), then mapped in batches of 1,024 as the pipeline does, with 1, 2...
//! copies (`threads`). Prints events/s and MB/s of input for each, so the transform's own cost
//! and its scaling can be told apart from the source's and the sink's in `bench/ocsf.sh`.
//! Each setting runs `BENCH_PASSES` times (default 3); take the fastest pass.
//!
//!   cargo run --release -p sessiontrail-transforms --example ocsf_bench -- FILE [THREADS...]

use std::sync::Arc;
use std::time::Instant;

use sessiontrail_core::component::ParallelCopies;
use sessiontrail_core::json::{decode_record, Decoded, DEFAULT_MAX_RECORD_BYTES};
use sessiontrail_core::Event;
use sessiontrail_transforms::ocsf::{OcsfConfig, OcsfTransform};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 1024;

fn main() -> Result<(), String> {
    // As `sessiontrail`'s main.
    sessiontrail_core::allocator::tune_mimalloc();
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: ocsf_bench FILE [THREADS...]")?;
    let mut threads: Vec<usize> = args.filter_map(|a| a.parse().ok()).collect();
    if threads.is_empty() {
        threads = vec![1, 2];
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let source: Arc<str> = Arc::from("bench");
    let records: Vec<Event> = bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| match decode_record(line, DEFAULT_MAX_RECORD_BYTES) {
            Ok(Decoded::Record(text)) => {
                Some(Event::from_json(text, Arc::clone(&source), line.len()))
            }
            _ => None,
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let config: OcsfConfig =
        serde_json::from_value(serde_json::json!({})).map_err(|e| e.to_string())?;
    // Each setting runs `BENCH_PASSES` times (default 3) and the fastest pass is reported: on
    // a shared machine the slower passes measure the neighbours.
    let passes: usize = std::env::var("BENCH_PASSES")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3);
    for n in threads
        .into_iter()
        .flat_map(|n| std::iter::repeat_n(n, passes.max(1)))
    {
        let batches: Vec<Vec<Event>> = records.chunks(BATCH).map(|c| c.to_vec()).collect();
        let mut copies = ParallelCopies::new(OcsfTransform::new(Arc::from("ocsf"), &config), n);
        let started = Instant::now();
        let (events, dead) = runtime.block_on(async {
            let (mut events, mut dead) = (0usize, 0usize);
            for batch in batches {
                let out = copies.transform_batch(batch).await?;
                events += out.out.len();
                dead += out.dropped.len();
            }
            Ok::<_, String>((events, dead))
        })?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "threads {n}: {} records -> {events} OCSF events ({dead} dead letters) in {secs:.2} s: \
             {:.0} records/s, {:.1} MB/s of input",
            records.len(),
            records.len() as f64 / secs,
            bytes.len() as f64 / secs / 1e6
        );
    }
    Ok(())
}
