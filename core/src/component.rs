//! The component traits the runner knows components by, and what each component is given.
//!
//! A component's config is a plain serde struct implementing one of [`SourceConfig`],
//! [`TransformConfig`] or [`SinkConfig`]. `validate()` checks everything that can be checked
//! without side effects (used by `sessiontrail validate` and before start-up); `build()` may do
//! I/O (open a store, check that a bucket exists) and returns the running task.
//!
//! Lifecycle: sources run until their input ends or `shutdown` is cancelled; transforms and
//! sinks run until their input channel closes, which happens once everything upstream has
//! finished. That cascade is the drain on shutdown: nothing already read is abandoned.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ack::DeliveryStatus;
use crate::event::{Event, EventBatch};
use crate::metrics::{ComponentMetrics, MetricsRegistry};
use crate::output::Output;
use crate::store::StateStore;

/// The running component. An `Err` is fatal: the pipeline stops with that message.
pub type ComponentTask = BoxFuture<'static, Result<(), ComponentError>>;

/// A fatal component error: what happened and, where possible, what to do about it.
#[derive(Debug)]
pub struct ComponentError(pub String);

impl std::fmt::Display for ComponentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ComponentError {}

impl From<String> for ComponentError {
    fn from(s: String) -> Self {
        ComponentError(s)
    }
}

/// A component that cannot be built (bad option value, unreachable destination at start-up).
#[derive(Debug)]
pub struct BuildError(pub String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BuildError {}

impl From<String> for BuildError {
    fn from(s: String) -> Self {
        BuildError(s)
    }
}

/// HTTP routes a component adds to the pipeline's API server (`api.address`).
#[derive(Clone, Default)]
pub struct ApiRoutes(Arc<Mutex<Vec<axum::Router>>>);

impl ApiRoutes {
    pub fn add(&self, router: axum::Router) {
        if let Ok(mut r) = self.0.lock() {
            r.push(router);
        }
    }
    pub fn take(&self) -> Vec<axum::Router> {
        self.0
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

/// Everything every component gets, whatever its kind.
#[derive(Clone)]
pub struct Shared {
    pub data_dir: PathBuf,
    pub store: StateStore,
    pub registry: Arc<MetricsRegistry>,
    pub api: ApiRoutes,
    /// Cancelled when the pipeline begins to stop.
    pub shutdown: CancellationToken,
}

pub struct SourceContext {
    pub name: Arc<str>,
    pub out: Output,
    /// `<name>.dropped`.
    pub dropped: Output,
    pub metrics: Arc<ComponentMetrics>,
    pub shared: Shared,
}

pub struct TransformContext {
    pub name: Arc<str>,
    pub input: mpsc::Receiver<EventBatch>,
    pub out: Output,
    pub dropped: Output,
    pub metrics: Arc<ComponentMetrics>,
    pub shared: Shared,
}

pub struct SinkContext {
    pub name: Arc<str>,
    pub input: mpsc::Receiver<EventBatch>,
    /// `<name>.dropped`: events the destination rejected for good.
    pub dropped: Output,
    pub metrics: Arc<ComponentMetrics>,
    pub shared: Shared,
}

#[async_trait::async_trait]
pub trait SourceConfig: Send + Sync + std::fmt::Debug {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    async fn build(&self, cx: SourceContext) -> Result<ComponentTask, BuildError>;
}

#[async_trait::async_trait]
pub trait TransformConfig: Send + Sync + std::fmt::Debug {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    async fn build(&self, cx: TransformContext) -> Result<ComponentTask, BuildError>;
}

#[async_trait::async_trait]
pub trait SinkConfig: Send + Sync + std::fmt::Debug {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    async fn build(&self, cx: SinkContext) -> Result<ComponentTask, BuildError>;
}

/// Where a per-event transform puts its results.
#[derive(Default)]
pub struct TransformOutput {
    pub out: Vec<Event>,
    /// Dead letters (build them with [`crate::DeadLetter::from_event`]).
    pub dropped: Vec<Event>,
    discarded: u64,
}

impl TransformOutput {
    pub fn emit(&mut self, event: Event) {
        self.out.push(event);
    }
    pub fn dead_letter(&mut self, event: Event) {
        self.dropped.push(event);
    }
    /// Drops an event on purpose: it counts as handled for its source.
    pub fn discard(&mut self, event: Event) {
        self.discarded += 1;
        event.ack(DeliveryStatus::Filtered);
    }
    /// Counts an event the transform consumed and resolved as handled itself (for example
    /// one that maps to no output event).
    pub fn count_discarded(&mut self) {
        self.discarded += 1;
    }
}

/// A transform that handles one event at a time with no timers (filter, redact, ocsf).
pub trait FunctionTransform: Send + 'static {
    fn transform(&mut self, event: Event, output: &mut TransformOutput);
}

/// Runs a [`FunctionTransform`] as a task: batch in, batch out, dead letters to `.dropped`.
pub fn run_function_transform<T: FunctionTransform>(
    mut t: T,
    cx: TransformContext,
) -> ComponentTask {
    let TransformContext {
        name,
        mut input,
        out,
        dropped,
        metrics,
        ..
    } = cx;
    Box::pin(async move {
        while let Some(batch) = input.recv().await {
            let bytes: usize = batch.iter().map(|e| e.meta.byte_size).sum();
            metrics.add_received(batch.len() as u64, bytes as u64);
            let mut result = TransformOutput {
                out: Vec::with_capacity(batch.len()),
                ..Default::default()
            };
            for event in batch {
                t.transform(event, &mut result);
            }
            metrics.add_discarded(result.discarded);
            if !result.dropped.is_empty() {
                dropped
                    .send_dead_letters(result.dropped)
                    .await
                    .map_err(|e| ComponentError(format!("transform {name}: {e}")))?;
            }
            out.send(result.out)
                .await
                .map_err(|e| ComponentError(format!("transform {name}: {e}")))?;
        }
        Ok(())
    })
}

/// An option that does not fit its component's config: `path` is the dotted option path
/// inside the component (`batch.max_bytes`), empty for the component itself.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionError {
    pub path: String,
    pub message: String,
}

/// Deserializes a component's options (everything but `type` and `inputs`), keeping the path
/// of the offending option so the config loader can point at its line and column.
pub fn parse_options<T: serde::de::DeserializeOwned>(
    options: serde_json::Value,
) -> Result<T, OptionError> {
    serde_path_to_error::deserialize::<_, T>(options).map_err(|e| {
        let path = e.path().to_string();
        OptionError {
            path: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}
