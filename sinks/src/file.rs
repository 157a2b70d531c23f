//! `type: file` — appends events as NDJSON to `path`, a template (`out/%Y-%m-%d/{{ host }}.ndjson`).
//! Events are acknowledged only after their bytes were written and fsynced. An event whose
//! path cannot be rendered (template field missing) goes to `<name>.dropped`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use sessiontrail_core::component::{ComponentError, ComponentTask, SinkContext};
use sessiontrail_core::template::Template;
use sessiontrail_core::{AckToken, BuildError, DeadLetter, DeliveryStatus, Event, SinkConfig};

use crate::encode::write_ndjson;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Output path template: strftime on the event time and `{{ field.path }}` / `{{ %label }}`
    /// (field values are made path-safe: no `/`, `\`, leading `.`).
    pub path: String,
    /// fsync before acknowledging (default true). Turning it off trades the delivery
    /// guarantee across power loss for throughput.
    #[serde(default = "default_true")]
    pub fsync: bool,
}

fn default_true() -> bool {
    true
}

/// Write and sync at most this much per round; more ready input waits for the next round.
const MAX_ROUND_BYTES: usize = 4 << 20;
/// Open file handles kept; the least recently written are closed beyond this.
const MAX_OPEN_FILES: usize = 256;

#[async_trait::async_trait]
impl SinkConfig for FileSinkConfig {
    fn validate(&self) -> Result<(), String> {
        Template::parse(&self.path).map(|_| ())
    }

    async fn build(&self, cx: SinkContext) -> Result<ComponentTask, BuildError> {
        let template = Template::parse(&self.path)?;
        Ok(Box::pin(run(template, self.fsync, cx)))
    }
}

struct Writer {
    files: HashMap<PathBuf, (File, u64)>,
    round: u64,
    fsync: bool,
}

impl Writer {
    /// Appends each buffer to its file and syncs the files it touched. On error, says which
    /// file failed.
    fn write(
        &mut self,
        buffers: &HashMap<PathBuf, Vec<u8>>,
    ) -> Result<(), (PathBuf, std::io::Error)> {
        self.round += 1;
        for (path, bytes) in buffers {
            self.write_one(path, bytes).map_err(|e| (path.clone(), e))?;
        }
        Ok(())
    }

    fn write_one(&mut self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        if !self.files.contains_key(path) {
            if self.files.len() >= MAX_OPEN_FILES {
                self.evict_oldest();
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let f = match OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(path)
            {
                Ok(mut f) => {
                    close_torn_line(&mut f)?;
                    f
                }
                // A file we may append to but not read: append without the torn-line check.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    OpenOptions::new().create(true).append(true).open(path)?
                }
                Err(e) => return Err(e),
            };
            self.files.insert(path.to_path_buf(), (f, 0));
        }
        if let Some((f, last)) = self.files.get_mut(path) {
            f.write_all(bytes)?;
            if self.fsync {
                f.sync_data()?;
            }
            *last = self.round;
        }
        Ok(())
    }

    fn evict_oldest(&mut self) {
        if let Some(oldest) = self
            .files
            .iter()
            .min_by_key(|(_, (_, r))| *r)
            .map(|(p, _)| p.clone())
        {
            self.files.remove(&oldest);
        }
    }
}

/// A process killed in the middle of a write (kill -9, power loss) can leave the file ending
/// in part of a line. Those events were never acknowledged, so they are sent again; without
/// this, the next record would be glued onto the fragment and both lines would be lost to
/// any NDJSON reader. Ending the fragment with a newline keeps the damage to one bad line.
fn close_torn_line(f: &mut File) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1))?;
    f.read_exact(&mut last)?;
    if last[0] != b'\n' {
        f.write_all(b"\n")?;
    }
    Ok(())
}

/// One write + fsync: the serialized lines per file and what to acknowledge once they are
/// on disk. Only the ack tokens are kept, not the events: memory stays at the encoded bytes.
struct Round {
    buffers: HashMap<PathBuf, Vec<u8>>,
    tokens: Vec<AckToken>,
    events: u64,
    bytes_out: u64,
}

/// The writer, the round's buffers (emptied, for reuse) and the result of the write.
type WriteOutcome = (Writer, Vec<Vec<u8>>, Result<(), (PathBuf, std::io::Error)>);

/// Round buffers kept for reuse. Reusing them matters: a fresh 8 MiB buffer per round is
/// mapped, page-faulted and zeroed by the kernel every time (it was ~20% of the CPU of a
/// file -> file pipeline). Beyond this many (many template paths), extra buffers are freed.
const SPARE_BUFFERS: usize = 4;

fn keep_spare(spare: &mut Vec<Vec<u8>>, buffers: Vec<Vec<u8>>) {
    for b in buffers {
        if spare.len() < SPARE_BUFFERS {
            spare.push(b);
        }
    }
}

/// Serializes `first` and whatever else is already queued (up to [`MAX_ROUND_BYTES`]), so one
/// write + fsync covers many batches. Events whose path cannot be rendered go to `dead`.
fn collect_round(
    name: &str,
    template: &Template,
    static_path: Option<&PathBuf>,
    first: Vec<Event>,
    input: &mut tokio::sync::mpsc::Receiver<Vec<Event>>,
    dead: &mut Vec<Event>,
    spare: &mut Vec<Vec<u8>>,
) -> (Round, u64) {
    let mut buffers: HashMap<PathBuf, Vec<u8>> = HashMap::new();
    let mut static_buf = spare.pop().unwrap_or_default();
    let mut tokens = Vec::with_capacity(first.len());
    let mut events = 0u64;
    let mut bytes_in = 0u64;
    let mut batch = first;
    loop {
        for mut e in batch.drain(..) {
            let buf = match static_path {
                Some(_) => &mut static_buf,
                None => match template.render(&e, true) {
                    Ok(p) => buffers
                        .entry(PathBuf::from(p))
                        .or_insert_with(|| spare.pop().unwrap_or_default()),
                    Err(err) => {
                        dead.push(DeadLetter::from_event(
                            name,
                            "template_error",
                            err.to_string(),
                            e,
                        ));
                        continue;
                    }
                },
            };
            write_ndjson(buf, &e);
            events += 1;
            bytes_in += e.meta.byte_size as u64;
            if let Some(token) = e.meta.ack.take() {
                tokens.push(token);
            }
        }
        let size = static_buf.len() + buffers.values().map(Vec::len).sum::<usize>();
        if size >= MAX_ROUND_BYTES {
            break;
        }
        match input.try_recv() {
            Ok(more) => batch = more,
            Err(_) => break,
        }
    }
    if let Some(p) = static_path {
        if !static_buf.is_empty() {
            buffers.insert(p.clone(), static_buf);
        } else {
            spare.push(static_buf);
        }
    }
    let bytes_out = buffers.values().map(|b| b.len() as u64).sum();
    (
        Round {
            buffers,
            tokens,
            events,
            bytes_out,
        },
        bytes_in,
    )
}

async fn run(template: Template, fsync: bool, mut cx: SinkContext) -> Result<(), ComponentError> {
    let name = Arc::clone(&cx.name);
    let static_path = template
        .is_static()
        .then(|| PathBuf::from(template.source()));
    let mut writer = Some(Writer {
        files: HashMap::new(),
        round: 0,
        fsync,
    });
    let mut spare: Vec<Vec<u8>> = Vec::new();
    // The round being written on a blocking thread while the next one is serialized here.
    let mut in_flight: Option<(tokio::task::JoinHandle<WriteOutcome>, Round)> = None;
    let finish = |joined: Result<WriteOutcome, tokio::task::JoinError>,
                  round: Round|
     -> Result<(Writer, Vec<Vec<u8>>), ComponentError> {
        let (w, buffers, result) =
            joined.map_err(|e| ComponentError(format!("sink {name}: writer task failed: {e}")))?;
        if let Err((path, e)) = result {
            // Not acknowledged: the sources keep their checkpoints before these events.
            return Err(ComponentError(format!(
                "sink {name}: cannot write {}: {e}; check that the directory can be created and written by this user",
                path.display()
            )));
        }
        cx.metrics.add_sent(round.events, round.bytes_out);
        for token in round.tokens {
            token.resolve(DeliveryStatus::Delivered);
        }
        Ok((w, buffers))
    };
    loop {
        let first = tokio::select! {
            // Acknowledge a finished write at once, even when no more input comes.
            joined = async {
                match in_flight.as_mut() {
                    Some((handle, _)) => handle.await,
                    None => std::future::pending().await,
                }
            }, if in_flight.is_some() => {
                if let Some((_, round)) = in_flight.take() {
                    let (w, buffers) = finish(joined, round)?;
                    writer = Some(w);
                    keep_spare(&mut spare, buffers);
                }
                continue;
            }
            first = cx.input.recv() => first,
        };
        let Some(first) = first else { break };
        let mut dead = Vec::new();
        let (mut round, bytes_in) = collect_round(
            &name,
            &template,
            static_path.as_ref(),
            first,
            &mut cx.input,
            &mut dead,
            &mut spare,
        );
        cx.metrics.add_received(round.events, bytes_in);
        if let Some((handle, previous)) = in_flight.take() {
            let (w, buffers) = finish(handle.await, previous)?;
            writer = Some(w);
            keep_spare(&mut spare, buffers);
        }
        let mut w = writer
            .take()
            .ok_or_else(|| ComponentError(format!("sink {name}: writer lost")))?;
        let buffers = std::mem::take(&mut round.buffers);
        in_flight = Some((
            tokio::task::spawn_blocking(move || {
                let r = w.write(&buffers);
                let emptied = buffers
                    .into_values()
                    .map(|mut b| {
                        b.clear();
                        b
                    })
                    .collect();
                (w, emptied, r)
            }),
            round,
        ));
        if !dead.is_empty() {
            cx.dropped
                .send_dead_letters(dead)
                .await
                .map_err(|e| ComponentError(format!("sink {name}: {e}")))?;
        }
    }
    if let Some((handle, round)) = in_flight.take() {
        finish(handle.await, round)?;
    }
    Ok(())
}
