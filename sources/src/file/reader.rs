//! Reading one file: chunks into lines (bounded by `max_line_bytes`), lines into events,
//! truncation and in-place rewrite detection, unterminated last lines, and the record of which
//! byte ranges were sent in which acknowledgement batch.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiontrail_core::ack::BatchReceiver;
use sessiontrail_core::framing::{Frame, LineFramer};
use sessiontrail_core::json::{decode_record, Decoded};
use sessiontrail_core::json_write::JsonObjectWriter;
use sessiontrail_core::{AckToken, BatchNotifier, DeadLetter, Event, Labels, Object, Value};

use super::checkpoint::FileId;
use super::multiline::{Joined, Multiline};
use crate::decoding::Decoding;

/// Bytes kept from just before the read position to notice a file rewritten in place
/// (truncated and refilled to at least the same length between two looks).
const TAIL_BYTES: usize = 64;

/// How lines become events; the same for every file of a source.
pub struct Decoder {
    pub name: Arc<str>,
    pub decoding: Decoding,
    pub max_line_bytes: usize,
    pub host: String,
}

/// The events one read round of one file produced, all sharing one acknowledgement batch.
#[derive(Default)]
pub struct ReadBatch {
    notifier: Option<(BatchNotifier, BatchReceiver)>,
    pub events: Vec<Event>,
    pub dead: Vec<Event>,
    pub bytes: usize,
}

impl ReadBatch {
    fn token(&mut self) -> AckToken {
        self.notifier
            .get_or_insert_with(BatchNotifier::new)
            .0
            .token()
    }

    /// Stops handing out tokens: the receiver resolves once every event is resolved.
    pub fn close(&mut self) -> Option<BatchReceiver> {
        self.notifier.take().map(|(_, rx)| rx)
    }
}

/// A byte range sent downstream and not yet acknowledged.
struct Pending {
    generation: u64,
    /// File offset (and line count) the checkpoint may move to once this batch is handled.
    end: (u64, u64),
    rx: Option<BatchReceiver>,
}

fn file_labels(path: &str, host: &str) -> Object {
    let mut labels = Object::new();
    labels.insert("file".into(), Value::String(path.to_string()));
    labels.insert("host".into(), Value::String(host.to_string()));
    labels
}

/// Where the next record starts and what it belongs to.
struct RecordState {
    path: Arc<str>,
    /// `file` and `host`, shared by every event of this file.
    labels: Arc<Object>,
    /// Offset of the first byte the framer has not turned into a record yet.
    cursor: u64,
    /// Lines before `cursor`.
    line_no: u64,
    multiline: Option<Multiline>,
}

pub struct FileReader {
    pub id: FileId,
    pub file: File,
    /// Next byte to read.
    pub read_pos: u64,
    framer: LineFramer,
    state: RecordState,
    tail: Vec<u8>,
    /// Last time the file grew (or was opened).
    pub last_growth: Instant,
    /// Its path no longer leads to it (renamed away or deleted): read to the end, then close.
    pub retired: bool,
    /// Everything read and flushed; waiting only for acknowledgements.
    pub finished: bool,
    /// Bumped when the file is found truncated: older batches no longer describe its bytes.
    generation: u64,
    pending: VecDeque<Pending>,
    /// Acknowledged prefix: (offset, lines).
    pub acked: (u64, u64),
    /// What the store holds for this file.
    pub saved: Option<(u64, u64)>,
    /// A batch failed downstream: the checkpoint stays before it until restart re-reads it.
    pub ack_blocked: bool,
}

impl FileReader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: FileId,
        path: &str,
        file: File,
        start: (u64, u64),
        saved: Option<(u64, u64)>,
        decoder: &Decoder,
        multiline: Option<Multiline>,
    ) -> Self {
        let path: Arc<str> = path.into();
        let labels = Arc::new(file_labels(&path, &decoder.host));
        FileReader {
            id,
            file,
            read_pos: start.0,
            framer: LineFramer::new(decoder.max_line_bytes),
            state: RecordState {
                path,
                labels,
                cursor: start.0,
                line_no: start.1,
                multiline,
            },
            tail: Vec::new(),
            last_growth: Instant::now(),
            retired: false,
            finished: false,
            generation: 0,
            pending: VecDeque::new(),
            acked: start,
            saved,
            ack_blocked: false,
        }
    }

    pub fn path(&self) -> &str {
        &self.state.path
    }

    /// The file was found under another matching path (renamed within the include set).
    pub fn set_path(&mut self, path: &str) {
        self.state.path = path.into();
        let host = self.state.labels.get("host").and_then(Value::as_str);
        self.state.labels = Arc::new(file_labels(path, host.unwrap_or_default()));
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Reads one chunk and turns its complete lines into events. Returns the bytes read
    /// (0 at the end of the file for now).
    pub fn read_chunk(
        &mut self,
        buf: &mut [u8],
        decoder: &Decoder,
        batch: &mut ReadBatch,
    ) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.read_pos)?;
        if n == 0 {
            return Ok(0);
        }
        let chunk = &buf[..n];
        self.read_pos += n as u64;
        self.last_growth = Instant::now();
        if n >= TAIL_BYTES {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[n - TAIL_BYTES..]);
        } else {
            self.tail.extend_from_slice(chunk);
            let excess = self.tail.len().saturating_sub(TAIL_BYTES);
            self.tail.drain(..excess);
        }
        batch.bytes += n;
        let state = &mut self.state;
        self.framer
            .push(chunk, |frame| state.frame(frame, true, decoder, batch));
        Ok(n)
    }

    /// Whether the file was truncated or rewritten in place under the read position.
    pub fn rewritten(&self) -> bool {
        let Ok(meta) = self.file.metadata() else {
            return false;
        };
        if meta.len() < self.read_pos {
            return true;
        }
        if self.tail.is_empty() {
            return false;
        }
        let mut now = vec![0u8; self.tail.len()];
        let start = self.read_pos - self.tail.len() as u64;
        match self.file.read_exact_at(&mut now, start) {
            Ok(()) => now != self.tail,
            Err(_) => true,
        }
    }

    /// Copytruncate or rewrite: emits what was held from the old content, forgets the batches
    /// that described it, and starts again at offset 0.
    pub fn restart_from_zero(&mut self, decoder: &Decoder, batch: &mut ReadBatch) {
        tracing::info!(file = %self.state.path, "file was truncated or rewritten; reading it again from the start");
        self.flush_held(decoder, batch);
        self.generation += 1;
        self.pending.clear();
        self.read_pos = 0;
        self.tail.clear();
        self.framer = LineFramer::new(decoder.max_line_bytes);
        self.state.cursor = 0;
        self.state.line_no = 0;
        self.acked = (0, 0);
        self.last_growth = Instant::now();
    }

    /// Emits an unterminated last line and a held multi-line record (the file is rotated
    /// away, deleted, or truncated: nothing will complete them).
    pub fn flush_held(&mut self, decoder: &Decoder, batch: &mut ReadBatch) {
        let state = &mut self.state;
        self.framer
            .finish(|frame| state.frame(frame, false, decoder, batch));
        if let Some(j) = state.multiline.as_mut().and_then(|m| m.flush()) {
            state.emit_joined(j, decoder, batch);
        }
    }

    /// Time-based completion: a multi-line record nobody added to, an unterminated line the
    /// writer did not finish within `line_timeout`.
    pub fn tick(
        &mut self,
        now: Instant,
        line_timeout: Duration,
        decoder: &Decoder,
        batch: &mut ReadBatch,
    ) {
        if self.framer.pending_len() > 0 && now.duration_since(self.last_growth) >= line_timeout {
            let state = &mut self.state;
            self.framer
                .finish(|frame| state.frame(frame, false, decoder, batch));
        }
        let state = &mut self.state;
        if let Some(j) = state.multiline.as_mut().and_then(|m| m.take_expired(now)) {
            state.emit_joined(j, decoder, batch);
        }
    }

    /// Records that the records read so far (up to the current handled position) went out in
    /// the batch `rx`, made while the file was in `generation`.
    pub fn commit(&mut self, generation: u64, rx: Option<BatchReceiver>) {
        if generation != self.generation {
            return;
        }
        let end = self.handled_position();
        let last = self.pending.back().map_or(self.acked, |p| p.end);
        if end == last && rx.is_none() {
            return;
        }
        self.pending.push_back(Pending {
            generation,
            end,
            rx,
        });
    }

    /// Offset and line count up to which every record has been emitted (not counting bytes
    /// still held as an unfinished line or multi-line record).
    fn handled_position(&self) -> (u64, u64) {
        match self.state.multiline.as_ref().and_then(|m| m.held_start()) {
            Some((offset, first_line)) => (offset, first_line.saturating_sub(1)),
            None => (self.state.cursor, self.state.line_no),
        }
    }

    /// Moves `acked` over the contiguous prefix of handled batches.
    pub fn poll_acks(&mut self) {
        while let Some(front) = self.pending.front_mut() {
            if front.generation != self.generation {
                self.pending.pop_front();
                continue;
            }
            let status = match &mut front.rx {
                None => None,
                Some(rx) => match rx.try_recv() {
                    Ok(s) => Some(s.is_handled()),
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => return,
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => Some(false),
                },
            };
            let end = front.end;
            self.pending.pop_front();
            if status == Some(false) && !self.ack_blocked {
                self.ack_blocked = true;
                tracing::warn!(file = %self.state.path, offset = end.0, "events were not delivered; the checkpoint of this file stays before them so they are read again after a restart");
            }
            if !self.ack_blocked {
                self.acked = end;
            }
        }
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Forgets any held multi-line record (used at shutdown: it is re-read after restart).
    pub fn drop_held(&mut self) {
        if let Some(m) = self.state.multiline.as_mut() {
            m.clear();
        }
    }
}

impl RecordState {
    fn frame(
        &mut self,
        frame: Frame<'_>,
        terminated: bool,
        decoder: &Decoder,
        batch: &mut ReadBatch,
    ) {
        let newline = u64::from(terminated);
        let start = self.cursor;
        self.line_no += 1;
        match frame {
            Frame::Line(line) => {
                let end = start + line.len() as u64 + newline;
                self.cursor = end;
                let line_no = self.line_no;
                match self.multiline.as_mut() {
                    Some(m) => {
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        if let Some(j) = m.push(line, start, end, line_no) {
                            self.emit_joined(j, decoder, batch);
                        }
                    }
                    None => self.emit(line, start, line_no, decoder, batch),
                }
            }
            Frame::TooLong { prefix, len } => {
                self.cursor = start + len as u64 + newline;
                if let Some(j) = self.multiline.as_mut().and_then(|m| m.flush()) {
                    self.emit_joined(j, decoder, batch);
                }
                let token = batch.token();
                batch.dead.push(
                    DeadLetter::new(
                        &decoder.name,
                        "line_too_long",
                        format!(
                            "line is {len} bytes, the limit is max_line_bytes = {}; skipped, reading continues after it",
                            decoder.max_line_bytes
                        ),
                    )
                    .raw_prefix(prefix, len)
                    .with("file", self.path.to_string())
                    .with("offset", start)
                    .with("line", self.line_no)
                    .ack(Some(token))
                    .build(Arc::clone(&decoder.name)),
                );
            }
        }
    }

    fn emit_joined(&mut self, j: Joined, decoder: &Decoder, batch: &mut ReadBatch) {
        self.emit(&j.text, j.start_offset, j.first_line, decoder, batch);
    }

    fn labels(&self, offset: u64) -> Labels {
        let mut l = Labels::shared(Arc::clone(&self.labels));
        l.insert("offset", offset.into());
        l
    }

    /// One record (a line, or joined lines) starting at `offset` becomes an event or a dead
    /// letter.
    fn emit(
        &self,
        line: &[u8],
        offset: u64,
        line_no: u64,
        decoder: &Decoder,
        batch: &mut ReadBatch,
    ) {
        match decoder.decoding {
            Decoding::Lines => {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                // The record is written as JSON text directly (keys in the order a parsed
                // object would serialize them); nothing parses it unless a transform reads it.
                let mut text = JsonObjectWriter::with_capacity(line.len() + self.path.len() + 64);
                text.string("file", &self.path)
                    .string("host", &decoder.host);
                match std::str::from_utf8(line) {
                    Ok(s) => text.string("message", s),
                    Err(_) => text
                        .boolean("invalid_utf8", true)
                        .string("message", &String::from_utf8_lossy(line)),
                };
                text.unsigned("offset", offset);
                let mut event =
                    Event::from_json(text.finish(), Arc::clone(&decoder.name), line.len());
                event.meta.labels = self.labels(offset);
                event.meta.ack = Some(batch.token());
                batch.events.push(event);
            }
            Decoding::Ndjson => match decode_record(line, decoder.max_line_bytes) {
                Ok(Decoded::Blank) => {}
                Ok(Decoded::Record(text)) => {
                    let mut event = Event::from_json(text, Arc::clone(&decoder.name), line.len());
                    event.meta.labels = self.labels(offset);
                    event.meta.ack = Some(batch.token());
                    batch.events.push(event);
                }
                Err(e) => {
                    let token = batch.token();
                    let mut dl = DeadLetter::new(&decoder.name, e.reason, e.message)
                        .raw(line)
                        .with("file", self.path.to_string())
                        .with("offset", offset)
                        .with("line", line_no)
                        .ack(Some(token))
                        .build(Arc::clone(&decoder.name));
                    dl.meta.labels = self.labels(offset);
                    batch.dead.push(dl);
                }
            },
        }
    }
}
