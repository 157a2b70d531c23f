//! Times `decode_record` (the strict NDJSON line check every source runs) over a file held in
//! memory, so the validator can be measured apart from I/O and the rest of a pipeline.
//!
//! `cargo run --release -p sessiontrail-core --example validate_bench -- FILE [PASSES]`
//!
//! Prints the fastest of PASSES (default 3) passes: the machine this runs on is noisy, and the
//! fastest pass is the one least disturbed. Under callgrind, run one pass and collect only
//! `decode_all` (`--toggle-collect=*decode_all*`) to count the decoder's instructions alone.

use std::time::{Duration, Instant};

use sessiontrail_core::json::{decode_record, Decoded, DEFAULT_MAX_RECORD_BYTES};

/// What one pass saw, compared across passes so a pass that decoded differently is noticed.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    records: usize,
    blank: usize,
    rejected: usize,
}

#[inline(never)]
fn decode_all(lines: &[&[u8]]) -> Tally {
    let mut tally = Tally::default();
    for line in lines {
        match decode_record(line, DEFAULT_MAX_RECORD_BYTES) {
            Ok(Decoded::Record(_)) => tally.records += 1,
            Ok(Decoded::Blank) => tally.blank += 1,
            Err(_) => tally.rejected += 1,
        }
    }
    tally
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: validate_bench FILE [PASSES]");
        std::process::exit(2);
    };
    let passes: usize = match args.next().map(|p| p.parse()) {
        None => 3,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("PASSES must be a positive number");
            std::process::exit(2);
        }
    };
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(1);
        }
    };
    let lines: Vec<&[u8]> = data
        .strip_suffix(b"\n")
        .unwrap_or(&data)
        .split(|&b| b == b'\n')
        .collect();

    let mut best = Duration::MAX;
    let mut first: Option<Tally> = None;
    for _ in 0..passes {
        let start = Instant::now();
        let tally = decode_all(std::hint::black_box(&lines));
        best = best.min(start.elapsed());
        match &first {
            None => first = Some(tally),
            Some(seen) => assert_eq!(seen, &tally, "passes decoded differently"),
        }
    }
    let secs = best.as_secs_f64();
    let tally = first.unwrap_or_default();
    println!(
        "{} lines ({} records, {} blank, {} rejected), {:.1} MB",
        lines.len(),
        tally.records,
        tally.blank,
        tally.rejected,
        data.len() as f64 / 1e6
    );
    println!(
        "fastest of {passes}: {:.3} s, {:.1} MB/s, {:.0} lines/s",
        secs,
        data.len() as f64 / 1e6 / secs,
        lines.len() as f64 / secs
    );
}
