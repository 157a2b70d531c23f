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
    Ok(())
}

struct LineDecoder {
    name: Arc<str>,
    decoding: Decoding,
    max: usize,
    events: Vec<Event>,
    dead: Vec<Event>,
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
                    Ok(Decoded::Record(obj)) => {
                        self.events
                            .push(Event::new(obj, Arc::clone(&self.name), line.len()))
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
            cx.metrics.add_received(batch.len() as u64, 0);
            cx.out.send(batch).await?;
        }
        Ok(())
    }
}
