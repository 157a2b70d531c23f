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
use sessiontrail_core::{BuildError, DeadLetter, DeliveryStatus, Event, SinkConfig};

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
const MAX_ROUND_BYTES: usize = 8 << 20;
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
            let f = OpenOptions::new().create(true).append(true).open(path)?;
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
    while let Some(first) = cx.input.recv().await {
        // Take whatever else is already queued so one write + fsync covers many batches.
        let mut events: Vec<Event> = first;
        let mut buffers: HashMap<PathBuf, Vec<u8>> = HashMap::new();
        let mut dead = Vec::new();
        let mut delivered = Vec::with_capacity(events.len());
        let mut size = 0usize;
        loop {
            for e in events.drain(..) {
                let path = match &static_path {
                    Some(p) => p.clone(),
                    None => match template.render(&e, true) {
                        Ok(p) => PathBuf::from(p),
                        Err(err) => {
                            dead.push(DeadLetter::from_event(
                                &name,
                                "template_error",
                                err.to_string(),
                                e,
                            ));
                            continue;
                        }
                    },
                };
                let buf = buffers.entry(path).or_default();
                let before = buf.len();
                write_ndjson(buf, &e);
                size += buf.len() - before;
                delivered.push(e);
            }
            if size >= MAX_ROUND_BYTES {
                break;
            }
            match cx.input.try_recv() {
                Ok(more) => events = more,
                Err(_) => break,
            }
        }
        let bytes_in = delivered.iter().map(|e| e.meta.byte_size).sum::<usize>() as u64;
        cx.metrics.add_received(delivered.len() as u64, bytes_in);
        let mut w = writer
            .take()
            .ok_or_else(|| ComponentError(format!("sink {name}: writer lost")))?;
        let (w, result) = tokio::task::spawn_blocking(move || {
            let r = w.write(&buffers);
            (w, r)
        })
        .await
        .map_err(|e| ComponentError(format!("sink {name}: writer task failed: {e}")))?;
        writer = Some(w);
        if let Err((path, e)) = result {
            // Not acknowledged: the sources keep their checkpoints before these events.
            return Err(ComponentError(format!(
                "sink {name}: cannot write {}: {e}; check that the directory can be created and written by this user",
                path.display()
            )));
        }
        cx.metrics.add_sent(delivered.len() as u64, size as u64);
        delivered
            .into_iter()
            .for_each(|e| e.ack(DeliveryStatus::Delivered));
        if !dead.is_empty() {
            cx.dropped
                .send_dead_letters(dead)
                .await
                .map_err(|e| ComponentError(format!("sink {name}: {e}")))?;
        }
    }
    Ok(())
}
