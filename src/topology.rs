//! Wires the configured components with bounded channels and runs them until the input ends,
//! a signal arrives, or a component fails.
//!
//! Each transform and sink owns one bounded input channel (fan-in: every producer it reads
//! from holds a sender). Each output (`name`, `name.dropped`) holds the senders of its
//! consumers (fan-out). A full channel makes the producer wait, all the way back to the
//! sources: memory is bounded by `CHANNEL_BATCHES` batches per edge.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use sessiontrail_core::component::{ApiRoutes, Shared};
use sessiontrail_core::metrics::MetricsRegistry;
use sessiontrail_core::store::StateStore;
use sessiontrail_core::{EventBatch, Output, SinkContext, SourceContext, TransformContext};

use crate::api::{self, Health};
use crate::config::PipelineConfig;

/// Batches buffered per channel. With batches of ~1,000 events (~400 KB of input) this
/// keeps a straight pipeline well under the 50 MB memory target.
pub const CHANNEL_BATCHES: usize = 4;

pub struct RunOptions {
    pub shutdown_timeout: Duration,
}

#[derive(Debug)]
pub enum RunError {
    Build(String),
    Component(String),
    ShutdownTimeout,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Build(m) => write!(f, "cannot start the pipeline: {m}"),
            RunError::Component(m) => write!(f, "pipeline stopped: {m}"),
            RunError::ShutdownTimeout => write!(f, "shutdown timed out before every component drained; events not yet acknowledged will be read again on restart"),
        }
    }
}

pub async fn run(
    cfg: PipelineConfig,
    opts: RunOptions,
    stop: CancellationToken,
) -> Result<(), RunError> {
    let registry = MetricsRegistry::new();
    let shutdown = CancellationToken::new();
    let shared = Shared {
        data_dir: cfg.data_dir.clone(),
        store: StateStore::new(&cfg.data_dir),
        registry: Arc::clone(&registry),
        api: ApiRoutes::default(),
        shutdown: shutdown.clone(),
    };

    // One input channel per transform and sink.
    let mut senders: HashMap<String, mpsc::Sender<EventBatch>> = HashMap::new();
    let mut receivers: HashMap<String, mpsc::Receiver<EventBatch>> = HashMap::new();
    for name in cfg
        .transforms
        .iter()
        .map(|c| &c.name)
        .chain(cfg.sinks.iter().map(|c| &c.name))
    {
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        senders.insert(name.clone(), tx);
        receivers.insert(name.clone(), rx);
    }
    // Who reads each output.
    let mut readers: HashMap<String, Vec<mpsc::Sender<EventBatch>>> = HashMap::new();
    for (name, inputs) in cfg
        .transforms
        .iter()
        .map(|c| (&c.name, &c.inputs))
        .chain(cfg.sinks.iter().map(|c| (&c.name, &c.inputs)))
    {
        for input in inputs {
            if let Some(tx) = senders.get(name) {
                readers
                    .entry(input.name.clone())
                    .or_default()
                    .push(tx.clone());
            }
        }
    }
    drop(senders);
    let output = |name: &str,
                  kind: &str|
     -> (
        Output,
        Output,
        Arc<sessiontrail_core::metrics::ComponentMetrics>,
    ) {
        let metrics = registry.component(name, kind);
        let dropped_name = format!("{name}.dropped");
        let main = Output::new(
            name.into(),
            readers.get(name).cloned().unwrap_or_default(),
            Arc::clone(&metrics),
        );
        let dropped = Output::new(
            dropped_name.as_str().into(),
            readers.get(&dropped_name).cloned().unwrap_or_default(),
            Arc::clone(&metrics),
        );
        for (o, label) in [(&main, name.to_string()), (&dropped, dropped_name.clone())] {
            if o.is_wired() {
                registry.gauge_fn(
                    "sessiontrail_channel_fill_ratio",
                    "Fill of the channels an output sends into (0 empty, 1 full: backpressure).",
                    &[("output", &label)],
                    Box::new(o.fill_gauge()),
                );
            }
        }
        (main, dropped, metrics)
    };

    let mut tasks: JoinSet<(String, Result<(), sessiontrail_core::ComponentError>)> =
        JoinSet::new();
    let mut pending = Vec::new();
    for c in &cfg.sources {
        let (out, dropped, metrics) = output(&c.name, &c.type_name);
        let cx = SourceContext {
            name: c.name.as_str().into(),
            out,
            dropped,
            metrics,
            shared: shared.clone(),
        };
        let task = c.config.build(cx).await.map_err(|e| {
            RunError::Build(format!("source \"{}\" ({}): {e}", c.name, c.type_name))
        })?;
        pending.push((c.name.clone(), task));
    }
    for c in &cfg.transforms {
        let (out, dropped, metrics) = output(&c.name, &c.type_name);
        let input = receivers
            .remove(&c.name)
            .ok_or_else(|| RunError::Build(format!("no input channel for {}", c.name)))?;
        let cx = TransformContext {
            name: c.name.as_str().into(),
            input,
            out,
            dropped,
            metrics,
            shared: shared.clone(),
        };
        let task = c.config.build(cx).await.map_err(|e| {
            RunError::Build(format!("transform \"{}\" ({}): {e}", c.name, c.type_name))
        })?;
        pending.push((c.name.clone(), task));
    }
    for c in &cfg.sinks {
        let (_, dropped, metrics) = output(&c.name, &c.type_name);
        let input = receivers
            .remove(&c.name)
            .ok_or_else(|| RunError::Build(format!("no input channel for {}", c.name)))?;
        let cx = SinkContext {
            name: c.name.as_str().into(),
            input,
            dropped,
            metrics,
            shared: shared.clone(),
        };
        let task =
            c.config.build(cx).await.map_err(|e| {
                RunError::Build(format!("sink \"{}\" ({}): {e}", c.name, c.type_name))
            })?;
        pending.push((c.name.clone(), task));
    }
    drop(readers);

    let health = Arc::new(AtomicU8::new(Health::Starting as u8));
    let api_task = match &cfg.api_address {
        Some(addr) => Some(
            api::serve(
                addr,
                Arc::clone(&registry),
                Arc::clone(&health),
                shared.api.take(),
            )
            .await
            .map_err(RunError::Build)?,
        ),
        None => None,
    };

    for (name, task) in pending {
        tasks.spawn(async move { (name, task.await) });
    }
    health.store(Health::Running as u8, Ordering::Release);
    tracing::info!(components = tasks.len(), "pipeline started");

    let mut first_error: Option<String> = None;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let sleep_until = deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400 * 365));
        tokio::select! {
            joined = tasks.join_next() => {
                let Some(joined) = joined else { break };
                let (name, result) = match joined {
                    Ok(r) => r,
                    Err(e) => ("<task>".to_string(), Err(sessiontrail_core::ComponentError(format!("a component panicked: {e}")))),
                };
                if let Err(e) = result {
                    if first_error.is_none() {
                        tracing::error!(component = %name, error = %e, "component failed; stopping the pipeline");
                        first_error = Some(format!("component \"{name}\": {e}"));
                    }
                    if !shutdown.is_cancelled() {
                        shutdown.cancel();
                        health.store(Health::Draining as u8, Ordering::Release);
                        deadline = Some(tokio::time::Instant::now() + opts.shutdown_timeout);
                    }
                }
            }
            _ = stop.cancelled(), if !shutdown.is_cancelled() => {
                tracing::info!("stopping: sources stop reading, everything already read drains to the sinks");
                shutdown.cancel();
                health.store(Health::Draining as u8, Ordering::Release);
                deadline = Some(tokio::time::Instant::now() + opts.shutdown_timeout);
            }
            _ = tokio::time::sleep_until(sleep_until), if deadline.is_some() => {
                tasks.abort_all();
                if let Some(t) = api_task { t.abort(); }
                return Err(first_error.map(RunError::Component).unwrap_or(RunError::ShutdownTimeout));
            }
        }
    }
    if let Some(t) = api_task {
        t.abort();
    }
    match first_error {
        Some(e) => Err(RunError::Component(e)),
        None => {
            tracing::info!("pipeline finished");
            Ok(())
        }
    }
}
