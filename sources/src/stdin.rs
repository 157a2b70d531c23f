//! `type: stdin` — reads records from standard input until EOF, then the pipeline drains and
//! exits. `decoding: ndjson` (default) parses each line as a JSON object; `lines` wraps each
//! line as `{"message": "..."}`. An undecodable line goes to `<name>.dropped` with its reason,
//! line number and raw text; reading continues.

use std::sync::Arc;

use serde::Deserialize;
use tokio::io::AsyncReadExt;

use sessiontrail_core::component::{ComponentError, ComponentTask, SourceContext};
use sessiontrail_core::framing::{Frame, LineFramer};
use sessiontrail_core::json::{decode_record, Decoded, DEFAULT_MAX_RECORD_BYTES};
use sessiontrail_core::{BuildError, DeadLetter, Event, Object, SourceConfig};

use crate::decoding::Decoding;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// `ndjson` (default) or `lines`.
    #[serde(default)]
    pub decoding: Decoding,
    /// Longest accepted line in bytes (default 1 MiB); longer lines are dead-lettered.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

fn default_max_line_bytes() -> usize {
    DEFAULT_MAX_RECORD_BYTES
}

/// Events per channel message.
const BATCH_EVENTS: usize = 1024;
const READ_BUFFER: usize = 256 * 1024;

#[async_trait::async_trait]
impl SourceConfig for StdinConfig {
    fn validate(&self) -> Result<(), String> {
        if self.max_line_bytes == 0 {
            return Err("max_line_bytes must be greater than 0".into());
        }
        Ok(())
    }

    async fn build(&self, cx: SourceContext) -> Result<ComponentTask, BuildError> {
        let config = self.clone();
        Ok(Box::pin(run(config, cx, tokio::io::stdin())))
    }
}

/// Reads `reader` to its end (or until shutdown). Generic so tests can feed any reader.
pub async fn run<R: tokio::io::AsyncRead + Unpin>(
    config: StdinConfig,
    cx: SourceContext,
    mut reader: R,
) -> Result<(), ComponentError> {
    let mut framer = LineFramer::new(config.max_line_bytes);
    let mut buf = vec![0u8; READ_BUFFER];
    let mut line_no: u64 = 0;
    let mut decoder = LineDecoder {
        name: Arc::clone(&cx.name),
        decoding: config.decoding,
        max: config.max_line_bytes,
        events: Vec::with_capacity(BATCH_EVENTS),
        dead: Vec::new(),
        emitted: 0,
    };
    let stop = |e: sessiontrail_core::output::OutputClosed| {
        ComponentError(format!("source {}: {e}", cx.name))
    };
    loop {
        let n = tokio::select! {
            biased;
            _ = cx.shared.shutdown.cancelled() => break,
            r = reader.read(&mut buf) => r.map_err(|e| ComponentError(format!("source {}: reading stdin: {e}", cx.name)))?,
        };
        if n == 0 {
            framer.finish(|f| decoder.frame(f, &mut line_no));
            decoder.flush(&cx).await.map_err(stop)?;
            break;
        }
        cx.metrics.add_received(0, n as u64);
        framer.push(&buf[..n], |f| decoder.frame(f, &mut line_no));
        decoder.flush(&cx).await.map_err(stop)?;
    }
    // Everything counted here was handed downstream: after the drain it is in the output.
    tracing::info!(source = %cx.name, events = decoder.emitted, "source stopped");
    Ok(())
}

struct LineDecoder {
    name: Arc<str>,
    decoding: Decoding,
    max: usize,
    events: Vec<Event>,
    dead: Vec<Event>,
    /// Events sent on the main output so far.
    emitted: u64,
}

impl LineDecoder {
    fn frame(&mut self, frame: Frame<'_>, line_no: &mut u64) {
        *line_no += 1;
        match frame {
            Frame::TooLong { prefix, len } => self.dead.push(
                DeadLetter::new(
                    &self.name,
                    "record_too_large",
                    format!("line is {len} bytes, the limit is {}", self.max),
                )
                .raw_prefix(prefix, len)
                .with("line", *line_no)
                .build(Arc::clone(&self.name)),
            ),
            Frame::Line(line) => match self.decoding {
                Decoding::Ndjson => match decode_record(line, self.max) {
                    Ok(Decoded::Blank) => {}
                    Ok(Decoded::Record(text)) => {
                        self.events
                            .push(Event::from_json(text, Arc::clone(&self.name), line.len()))
                    }
                    Err(e) => self.dead.push(
                        DeadLetter::new(&self.name, e.reason, e.message)
                            .raw(line)
                            .with("line", *line_no)
                            .build(Arc::clone(&self.name)),
                    ),
                },
                Decoding::Lines => {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let mut obj = Object::new();
                    match std::str::from_utf8(line) {
                        Ok(s) => {
                            obj.insert("message".into(), s.into());
                        }
                        Err(_) => {
                            obj.insert(
                                "message".into(),
                                String::from_utf8_lossy(line).into_owned().into(),
                            );
                            obj.insert("invalid_utf8".into(), true.into());
                        }
                    }
                    self.events
                        .push(Event::new(obj, Arc::clone(&self.name), line.len()));
                }
            },
        }
    }

    async fn flush(
        &mut self,
        cx: &SourceContext,
    ) -> Result<(), sessiontrail_core::output::OutputClosed> {
        if !self.dead.is_empty() {
            cx.dropped
                .send_dead_letters(std::mem::take(&mut self.dead))
                .await?;
        }
        while !self.events.is_empty() {
            let take = self.events.len().min(BATCH_EVENTS);
            let rest = self.events.split_off(take);
            let batch = std::mem::replace(&mut self.events, rest);
            let n = batch.len() as u64;
            cx.metrics.add_received(n, 0);
            cx.out.send(batch).await?;
            self.emitted += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::task::{Context, Poll};

    use sessiontrail_core::component::{ApiRoutes, Shared};
    use sessiontrail_core::metrics::MetricsRegistry;
    use sessiontrail_core::store::StateStore;
    use sessiontrail_core::{EventBatch, Output};
    use tokio::io::ReadBuf;
    use tokio::sync::mpsc;

    use super::*;

    /// An endless stream of identical NDJSON lines that counts the bytes taken from it.
    struct EndlessLines {
        line: Vec<u8>,
        pos: usize,
        consumed: Arc<AtomicU64>,
    }

    impl tokio::io::AsyncRead for EndlessLines {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let this = self.get_mut();
            while buf.remaining() > 0 {
                let n = buf.remaining().min(this.line.len() - this.pos);
                buf.put_slice(&this.line[this.pos..this.pos + n]);
                this.pos = (this.pos + n) % this.line.len();
                this.consumed.fetch_add(n as u64, Ordering::SeqCst);
            }
            Poll::Ready(Ok(()))
        }
    }

    fn context(dir: &std::path::Path, out: mpsc::Sender<EventBatch>) -> SourceContext {
        let registry = MetricsRegistry::new();
        let metrics = registry.component("in", "stdin");
        SourceContext {
            name: "in".into(),
            out: Output::new("in".into(), vec![out], Arc::clone(&metrics)),
            dropped: Output::unwired("in.dropped", Arc::clone(&metrics)),
            metrics,
            shared: Shared {
                data_dir: dir.into(),
                store: StateStore::new(dir),
                registry,
                api: ApiRoutes::default(),
                shutdown: Default::default(),
            },
        }
    }

    #[tokio::test]
    async fn a_sink_that_never_reads_stops_the_source_within_the_channel_bounds() {
        const CHANNEL_BATCHES: usize = 2;
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(CHANNEL_BATCHES);
        let mut line = br#"{"event_type":"session_notify","session_id":"s","pad":""#.to_vec();
        line.resize(99, b'x');
        line.extend_from_slice(b"\"}\n");
        let line_len = line.len() as u64;
        let consumed = Arc::new(AtomicU64::new(0));
        let reader = EndlessLines {
            line,
            pos: 0,
            consumed: Arc::clone(&consumed),
        };
        let config = StdinConfig {
            decoding: Decoding::Ndjson,
            max_line_bytes: 1024,
        };
        let source = tokio::spawn(run(config, context(dir.path(), tx), reader));

        // Nobody reads `rx`: wait until the channel is full and the reader is left alone.
        async fn settle(rx: &mpsc::Receiver<EventBatch>, consumed: &AtomicU64, full: usize) -> u64 {
            let mut last = u64::MAX;
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let now = consumed.load(Ordering::SeqCst);
                if rx.len() == full && now == last {
                    return now;
                }
                last = now;
            }
        }
        let stalled_at = settle(&rx, &consumed, CHANNEL_BATCHES).await;
        // The source holds at most one more batch (the one it is sending) plus what is left of
        // its current read buffer.
        let bound =
            (CHANNEL_BATCHES as u64 + 1) * BATCH_EVENTS as u64 * line_len + READ_BUFFER as u64;
        assert!(
            stalled_at <= bound,
            "read {stalled_at} bytes with a full channel; bound {bound}"
        );
        assert!(stalled_at >= CHANNEL_BATCHES as u64 * BATCH_EVENTS as u64 * line_len);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(consumed.load(Ordering::SeqCst), stalled_at, "kept reading");

        // Taking batches out lets it continue: backpressure, not a stall.
        for _ in 0..4 {
            rx.recv().await.unwrap();
        }
        let resumed = settle(&rx, &consumed, CHANNEL_BATCHES).await;
        assert!(resumed > stalled_at);
        source.abort();
    }
}
