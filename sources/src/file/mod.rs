//! `type: file` — tails files matched by globs, across rotation, restarts and crashes.
//!
//! - [`discovery`]: `include`/`exclude` globs, periodic scan + filesystem notifications.
//! - [`reader`]: one open file: lines, events, truncation, unterminated last lines.
//! - [`checkpoint`]: fingerprint + offset marker records in the pipeline's state store.
//! - [`multiline`]: joining continuation lines.
//!
//! The source runs on one blocking thread: read a round from every file (bounded per file so
//! one busy file cannot starve the others), send the events (waiting when downstream is full:
//! data stays on disk), poll acknowledgements, and save checkpoints at most once a second.
//! A checkpoint moves only over the contiguous prefix of batches that every sink handled, so
//! after `kill -9` reading resumes at or before the first line not yet delivered.

pub mod checkpoint;
pub mod discovery;
pub mod multiline;
pub mod reader;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer};

use sessiontrail_core::component::{ComponentError, ComponentTask, SourceContext};
use sessiontrail_core::json::DEFAULT_MAX_RECORD_BYTES;
use sessiontrail_core::{BuildError, Event, Output, SourceConfig};

use crate::decoding::Decoding;
use checkpoint::{Checkpoint, CheckpointStore, FileId};
use discovery::{Discovery, Wake};
use multiline::{Multiline, MultilineConfig};
use reader::{Decoder, FileReader, ReadBatch};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Glob patterns of files to read (`*` within a directory, `**` across directories).
    pub include: Vec<String>,
    /// Glob patterns of files never to read, even when `include` matches them.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where to start in a file seen for the first time at start-up with no checkpoint:
    /// `beginning` (default) or `end`. Files that appear while running are always read from
    /// their beginning (they are new, e.g. the fresh file after a rotation).
    #[serde(default)]
    pub read_from: ReadFrom,
    /// `ndjson` (default: each line is a JSON object, the event) or `lines`
    /// (`{"message": "<line>", "file", "offset", "host"}`).
    #[serde(default)]
    pub decoding: Decoding,
    /// Longest accepted line in bytes (default 1 MiB); longer lines are dead-lettered with
    /// reason `line_too_long` and reading continues after them.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// How often to rescan the globs (default 5s). Notifications usually find files sooner.
    #[serde(default = "default_glob_interval", deserialize_with = "duration")]
    pub glob_interval: Duration,
    /// Skip files not modified for this long when they are discovered (e.g. `7d`). Unset:
    /// read every matching file.
    #[serde(default, deserialize_with = "optional_duration")]
    pub ignore_older_than: Option<Duration>,
    /// Emit an unterminated last line once its file has not grown for this long (default
    /// 5000 ms); at rotation or deletion it is emitted at once.
    #[serde(default = "default_line_timeout_ms")]
    pub line_timeout_ms: u64,
    /// Join continuation lines into one event (`decoding: lines` only).
    #[serde(default)]
    pub multiline: Option<MultilineConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

fn default_max_line_bytes() -> usize {
    DEFAULT_MAX_RECORD_BYTES
}
fn default_glob_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_line_timeout_ms() -> u64 {
    5000
}

/// Parses `250ms`, `5s`, `10m`, `24h`, `7d`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; use e.g. 500ms, 5s, 10m, 24h, 7d"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?}; use ms, s, m, h or d"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationText {
    Seconds(u64),
    Text(String),
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match DurationText::deserialize(d)? {
        DurationText::Seconds(s) => Ok(Duration::from_secs(s)),
        DurationText::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// Bytes read per `read` call.
const READ_CHUNK: usize = 256 * 1024;
/// Chunks read from one file per round before the next file gets its turn. One: a round's
/// decoded events are held until sent, and with 4 (1 MiB of input per round) peak RSS of a
/// file -> file pipeline was ~15% higher and `ndjson` throughput ~20% lower (bench/file_source.sh).
const CHUNKS_PER_ROUND: usize = 1;
/// Events per channel message (as the other sources).
const BATCH_EVENTS: usize = 1024;
/// Checkpoints are saved at most this often (and at shutdown): each save is an fsynced
/// transaction, so saving per batch would cap throughput at the disk's sync rate.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Sleep when no file had new data; filesystem notifications cut it short.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Delay between a create/rename notification and the scan it triggers.
const RESCAN_DEBOUNCE: Duration = Duration::from_millis(50);
/// A rotated-away or deleted file is closed once it has not grown for this long (a writer
/// may still append to the old file for a moment after a rename).
const ROTATED_FILE_GRACE: Duration = Duration::from_secs(1);
/// At shutdown, how long to wait for sinks to acknowledge what was sent before saving the
/// final checkpoints (below the runner's default 30 s shutdown timeout).
const SHUTDOWN_ACK_WAIT: Duration = Duration::from_secs(20);
/// When `read_from: end`, how far back to look for the last line start so the line being
/// written is read whole.
const READ_FROM_END_LOOKBACK: u64 = 64 * 1024;

#[async_trait::async_trait]
impl SourceConfig for FileSourceConfig {
    fn validate(&self) -> Result<(), String> {
        discovery::check_patterns(&self.include, &self.exclude)?;
        if self.max_line_bytes == 0 {
            return Err("max_line_bytes must be greater than 0".into());
        }
        if self.glob_interval.is_zero() {
            return Err("glob_interval must be greater than 0".into());
        }
        if let Some(m) = &self.multiline {
            if self.decoding != Decoding::Lines {
                return Err(
                    "multiline needs `decoding: lines` (an NDJSON record is one line)".into(),
                );
            }
            Multiline::new(m, self.max_line_bytes)?;
        }
        Ok(())
    }

    async fn build(&self, cx: SourceContext) -> Result<ComponentTask, BuildError> {
        self.validate()?;
        let config = self.clone();
        Ok(Box::pin(async move {
            let name = Arc::clone(&cx.name);
            tokio::task::spawn_blocking(move || run(config, cx))
                .await
                .map_err(|e| ComponentError(format!("source {name}: reader thread failed: {e}")))?
        }))
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

struct FileServer {
    config: FileSourceConfig,
    decoder: Decoder,
    store: CheckpointStore,
    files: HashMap<FileId, FileReader>,
    /// Checkpoint keys to delete at the next save (files that are gone).
    forget: Vec<String>,
    runtime: tokio::runtime::Handle,
    out: Option<Output>,
    dropped: Option<Output>,
    cx_metrics: Arc<sessiontrail_core::metrics::ComponentMetrics>,
    shutdown: tokio_util::sync::CancellationToken,
}

/// Downstream is gone (a fatal error elsewhere): stop reading.
struct Stopped;

fn run(config: FileSourceConfig, cx: SourceContext) -> Result<(), ComponentError> {
    let name = Arc::clone(&cx.name);
    let fail = |what: String| ComponentError(format!("source {name}: {what}"));
    let (wake_tx, wake_rx) = mpsc::channel();
    let discovery = Discovery::new(
        config.include.clone(),
        &config.exclude,
        config.ignore_older_than,
        wake_tx,
    )
    .map_err(fail)?;
    let mut server = FileServer {
        decoder: Decoder {
            name: Arc::clone(&cx.name),
            decoding: config.decoding,
            max_line_bytes: config.max_line_bytes,
            host: host_name(),
        },
        store: CheckpointStore::new(cx.shared.store.namespace(&format!("file/{}", cx.name))),
        files: HashMap::new(),
        forget: Vec::new(),
        runtime: tokio::runtime::Handle::current(),
        out: Some(cx.out),
        dropped: Some(cx.dropped),
        cx_metrics: cx.metrics,
        shutdown: cx.shared.shutdown.clone(),
        config,
    };
    server.start(&discovery).map_err(fail)?;

    let mut buf = vec![0u8; READ_CHUNK];
    let mut next_scan = Instant::now() + server.config.glob_interval;
    let mut next_save = Instant::now() + CHECKPOINT_INTERVAL;
    let line_timeout = Duration::from_millis(server.config.line_timeout_ms);
    while !server.shutdown.is_cancelled() {
        let now = Instant::now();
        if now >= next_scan {
            server.scan(&discovery);
            next_scan = now + server.config.glob_interval;
        }
        let progressed = match server.read_round(&mut buf, line_timeout) {
            Ok(p) => p,
            Err(Stopped) => break,
        };
        server.poll_acks();
        if Instant::now() >= next_save {
            server.save_checkpoints();
            next_save = Instant::now() + CHECKPOINT_INTERVAL;
        }
        // Drain notifications every round: the channel is unbounded and a busy writer
        // produces one per write.
        let mut woke = false;
        let mut rescan = false;
        while let Ok(w) = wake_rx.try_recv() {
            woke = true;
            rescan |= w == Wake::Rescan;
        }
        if !progressed && !woke {
            match wake_rx.recv_timeout(IDLE_POLL) {
                Ok(w) => rescan |= w == Wake::Rescan,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(IDLE_POLL),
            }
        }
        if rescan {
            // Soon, not at once: a burst of creations costs one scan.
            next_scan = next_scan.min(Instant::now() + RESCAN_DEBOUNCE);
        }
    }
    server.shutdown_drain();
    Ok(())
}

impl FileServer {
    /// First scan: resume each file from its checkpoint when the checkpoint still describes
    /// it; forget checkpoints of files that are gone.
    fn start(&mut self, discovery: &Discovery) -> Result<(), String> {
        let mut checkpoints = self
            .store
            .load()
            .map_err(|e| format!("{e}; check that data_dir is writable"))?;
        let found = discovery.scan(&HashSet::new());
        let by_path: HashMap<String, String> = checkpoints
            .iter()
            .map(|(k, cp)| (cp.path.clone(), k.clone()))
            .collect();
        let mut opened: Vec<(String, File, u64, FileId)> = Vec::new();
        for f in found {
            let path = f.path.to_string_lossy().into_owned();
            match open_file(&f.path) {
                Ok((file, id, len)) => opened.push((path, file, len, id)),
                Err(e) => {
                    tracing::warn!(file = %path, error = %e, "cannot open file; retrying at the next scan")
                }
            }
        }
        // Pass 1: the checkpoint saved under the same path or the same inode, if it still
        // describes the file. Pass 2: any unclaimed checkpoint with the same fingerprint
        // (the file was renamed while we were stopped).
        let mut resume: Vec<Option<(String, Checkpoint)>> = vec![None; opened.len()];
        for (i, (path, file, len, id)) in opened.iter().enumerate() {
            let candidates = [by_path.get(path).cloned(), Some(id.key())];
            for key in candidates.into_iter().flatten() {
                if let Some(cp) = checkpoints.get(&key) {
                    if cp.matches(file, *len) {
                        if let Some(cp) = checkpoints.remove(&key) {
                            resume[i] = Some((key, cp));
                        }
                        break;
                    }
                }
            }
        }
        for (i, (_, file, len, _)) in opened.iter().enumerate() {
            if resume[i].is_some() || *len < checkpoint::FINGERPRINT_BYTES {
                continue;
            }
            let key = checkpoints
                .iter()
                .find(|(_, cp)| {
                    cp.fingerprint_len == checkpoint::FINGERPRINT_BYTES && cp.matches(file, *len)
                })
                .map(|(k, _)| k.clone());
            if let Some(cp) = key.as_ref().and_then(|k| checkpoints.remove(k)) {
                resume[i] = key.map(|k| (k, cp));
            }
        }
        // Whatever is left describes files that no longer exist (or changed identity).
        self.forget.extend(checkpoints.into_keys());
        for ((path, file, len, id), resumed) in opened.into_iter().zip(resume) {
            let (start, saved) = match resumed {
                Some((key, cp)) => {
                    if key != id.key() {
                        self.forget.push(key);
                    }
                    tracing::debug!(file = %path, offset = cp.offset, "resuming from checkpoint");
                    ((cp.offset, cp.line), Some((cp.offset, cp.line)))
                }
                None => match self.config.read_from {
                    ReadFrom::Beginning => ((0, 0), None),
                    ReadFrom::End => ((last_line_start(&file, len), 0), None),
                },
            };
            self.track(id, &path, file, start, saved);
        }
        self.save_checkpoints();
        Ok(())
    }

    fn track(
        &mut self,
        id: FileId,
        path: &str,
        file: File,
        start: (u64, u64),
        saved: Option<(u64, u64)>,
    ) {
        let multiline = self
            .config
            .multiline
            .as_ref()
            .and_then(|m| Multiline::new(m, self.config.max_line_bytes).ok());
        let reader = FileReader::new(id, path, file, start, saved, &self.decoder, multiline);
        self.files.insert(id, reader);
    }

    /// Finds new files, renamed files, and files whose path no longer leads to them.
    fn scan(&mut self, discovery: &Discovery) {
        let known: HashSet<FileId> = self.files.keys().copied().collect();
        let found = discovery.scan(&known);
        let mut present = HashSet::with_capacity(found.len());
        for f in found {
            present.insert(f.id);
            let path = f.path.to_string_lossy().into_owned();
            if let Some(r) = self.files.get_mut(&f.id) {
                if r.path() != path {
                    r.set_path(&path);
                }
                if r.retired && !r.finished {
                    // Back under a matching path (renamed back): keep reading.
                    r.retired = false;
                }
                continue;
            }
            match open_file(&f.path) {
                Ok((file, id, len)) => {
                    // A file that appeared while running is new: read it from its start,
                    // unless this is a file we read before under this identity (it matched
                    // again after being skipped) and it is unchanged.
                    let start = self
                        .store
                        .get(&id.key())
                        .filter(|cp| cp.matches(&file, len))
                        .map(|cp| (cp.offset, cp.line));
                    self.track(id, &path, file, start.unwrap_or((0, 0)), start);
                }
                Err(e) => {
                    tracing::warn!(file = %path, error = %e, "cannot open file; retrying at the next scan")
                }
            }
        }
        for r in self.files.values_mut() {
            if !present.contains(&r.id) {
                r.retired = true;
            }
        }
    }

    /// One read round over every file. Returns whether any file had new data.
    fn read_round(&mut self, buf: &mut [u8], line_timeout: Duration) -> Result<bool, Stopped> {
        let mut progressed = false;
        let ids: Vec<FileId> = self.files.keys().copied().collect();
        let mut done: Vec<FileId> = Vec::new();
        for id in ids {
            let Some(r) = self.files.get_mut(&id) else {
                continue;
            };
            if r.finished {
                r.poll_acks();
                if !r.has_pending() {
                    done.push(id);
                }
                continue;
            }
            let generation = r.generation();
            let mut batch = ReadBatch::default();
            let mut read_any = false;
            for _ in 0..CHUNKS_PER_ROUND {
                match r.read_chunk(buf, &self.decoder, &mut batch) {
                    Ok(0) => break,
                    Ok(_) => read_any = true,
                    Err(e) => {
                        tracing::warn!(file = %r.path(), error = %e, "read failed; retrying");
                        break;
                    }
                }
            }
            let now = Instant::now();
            if !read_any {
                if r.rewritten() {
                    r.restart_from_zero(&self.decoder, &mut batch);
                    read_any = true;
                } else if r.retired && now.duration_since(r.last_growth) >= ROTATED_FILE_GRACE {
                    // Rotated away or deleted, and fully read: what is held will never be
                    // completed.
                    r.flush_held(&self.decoder, &mut batch);
                    r.finished = true;
                } else {
                    r.tick(now, line_timeout, &self.decoder, &mut batch);
                }
            }
            progressed |= read_any;
            let rx = batch.close();
            let ReadBatch {
                events,
                dead,
                bytes,
                ..
            } = batch;
            let count = events.len() + dead.len();
            self.cx_metrics
                .add_received(events.len() as u64, bytes as u64);
            let sent = self.send(events, dead);
            // Recorded even when sending failed: the unsent events' tokens were dropped,
            // which fails the batch, so the checkpoint cannot move past them.
            if let Some(r) = self.files.get_mut(&id) {
                if count > 0 || rx.is_some() || read_any || r.finished {
                    r.commit(generation, rx);
                }
            }
            sent?;
        }
        for id in done {
            if let Some(r) = self.files.remove(&id) {
                tracing::debug!(file = %r.path(), "finished a rotated or deleted file");
                self.forget.push(id.key());
            }
        }
        Ok(progressed)
    }

    fn send(&self, mut events: Vec<Event>, dead: Vec<Event>) -> Result<(), Stopped> {
        let (Some(out), Some(dropped)) = (&self.out, &self.dropped) else {
            return Err(Stopped);
        };
        let shutdown = &self.shutdown;
        self.runtime.block_on(async {
            if !dead.is_empty() {
                tokio::select! {
                    r = dropped.send_dead_letters(dead) => r.map_err(|_| Stopped)?,
                    _ = shutdown.cancelled() => return Err(Stopped),
                }
            }
            while !events.is_empty() {
                let rest = events.split_off(events.len().min(BATCH_EVENTS));
                let batch = std::mem::replace(&mut events, rest);
                tokio::select! {
                    r = out.send(batch) => r.map_err(|_| Stopped)?,
                    _ = shutdown.cancelled() => return Err(Stopped),
                }
            }
            Ok(())
        })
    }

    fn poll_acks(&mut self) {
        for r in self.files.values_mut() {
            r.poll_acks();
        }
    }

    /// Saves the checkpoints that moved, and forgets those of files that are gone, in one
    /// transaction.
    fn save_checkpoints(&mut self) {
        let mut save = Vec::new();
        let mut saved_keys = Vec::new();
        for r in self.files.values() {
            if r.saved == Some(r.acked) || r.finished {
                continue;
            }
            let len = match r.file.metadata() {
                Ok(m) => m.len(),
                Err(_) => continue,
            };
            match Checkpoint::capture(&r.file, len, r.path(), r.id, r.acked.0, r.acked.1) {
                Ok(cp) => {
                    save.push((r.id.key(), cp));
                    saved_keys.push((r.id, r.acked));
                }
                // Truncated under us: the reader notices and starts again from 0.
                Err(_) => continue,
            }
        }
        let forget = std::mem::take(&mut self.forget);
        match self.store.write(&save, &forget) {
            Ok(()) => {
                for (id, at) in saved_keys {
                    if let Some(r) = self.files.get_mut(&id) {
                        r.saved = Some(at);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "saving file checkpoints failed; retrying in a second (a crash now re-reads more lines)");
                self.forget = forget;
            }
        }
    }

    /// Stops reading, lets downstream finish, waits (bounded) for the acknowledgements of
    /// what was sent, and saves the final checkpoints.
    fn shutdown_drain(&mut self) {
        // Unfinished lines and held multi-line records are not emitted: the checkpoint stays
        // before them and they are read whole after the restart.
        for r in self.files.values_mut() {
            r.drop_held();
        }
        self.out = None;
        self.dropped = None;
        let deadline = Instant::now() + SHUTDOWN_ACK_WAIT;
        loop {
            self.poll_acks();
            if !self.files.values().any(|r| r.has_pending()) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.save_checkpoints();
    }
}

fn open_file(path: &Path) -> std::io::Result<(File, FileId, u64)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    Ok((
        file,
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        },
        meta.len(),
    ))
}

/// The offset just after the last newline (within the lookback window), else the end.
fn last_line_start(file: &File, len: u64) -> u64 {
    let from = len.saturating_sub(READ_FROM_END_LOOKBACK);
    let mut buf = vec![0u8; (len - from) as usize];
    if file.read_exact_at(&mut buf, from).is_err() {
        return len;
    }
    match memchr::memrchr(b'\n', &buf) {
        Some(i) => from + i as u64 + 1,
        None => len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
