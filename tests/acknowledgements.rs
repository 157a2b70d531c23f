//! Acknowledgements through real components: a source-side `BatchNotifier` learns whether its
//! events were delivered, dropped on purpose by `filter`, dead-lettered by the `file` sink, or
//! failed, with the components wired by channels exactly as the runner wires them.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::mpsc;

use sessiontrail_core::ack::BatchReceiver;
use sessiontrail_core::component::{ApiRoutes, Shared};
use sessiontrail_core::metrics::MetricsRegistry;
use sessiontrail_core::store::StateStore;
use sessiontrail_core::{
    BatchNotifier, BatchStatus, DeliveryStatus, Event, EventBatch, Object, Output, SinkConfig,
    SinkContext, TransformConfig, TransformContext,
};

fn shared(dir: &Path, registry: &Arc<MetricsRegistry>) -> Shared {
    Shared {
        data_dir: dir.to_path_buf(),
        store: StateStore::new(dir),
        registry: Arc::clone(registry),
        api: ApiRoutes::default(),
        shutdown: Default::default(),
    }
}

/// `source -> filter(event_type == keep) -> file(path)`, the file sink's `.dropped` going to
/// `dead_letters` when given (else unwired). Returns the source's output.
async fn filter_to_file(
    dir: &Path,
    path: &str,
    dead_letters: Option<mpsc::Sender<EventBatch>>,
) -> (Output, tokio::task::JoinHandle<()>) {
    let registry = MetricsRegistry::new();
    let source_metrics = registry.component("src", "test");
    let (to_filter, filter_in) = mpsc::channel(4);
    let (to_sink, sink_in) = mpsc::channel(4);

    let filter: sessiontrail_transforms::filter::FilterConfig = serde_json::from_value(
        json!({"condition": {"equals": {"field": "event_type", "value": "keep"}}}),
    )
    .unwrap();
    let fm = registry.component("keep", "filter");
    let filter_task = filter
        .build(TransformContext {
            name: "keep".into(),
            input: filter_in,
            out: Output::new("keep".into(), vec![to_sink], Arc::clone(&fm)),
            dropped: Output::unwired("keep.dropped", Arc::clone(&fm)),
            metrics: fm,
            shared: shared(dir, &registry),
        })
        .await
        .unwrap();

    let sink: sessiontrail_sinks::file::FileSinkConfig =
        serde_json::from_value(json!({ "path": path })).unwrap();
    let sm = registry.component("out", "file");
    let dropped = match dead_letters {
        Some(tx) => Output::new("out.dropped".into(), vec![tx], Arc::clone(&sm)),
        None => Output::unwired("out.dropped", Arc::clone(&sm)),
    };
    let sink_task = sink
        .build(SinkContext {
            name: "out".into(),
            input: sink_in,
            dropped,
            metrics: sm,
            shared: shared(dir, &registry),
        })
        .await
        .unwrap();
    let tasks = tokio::spawn(async move {
        let (_, _) = tokio::join!(filter_task, sink_task);
    });
    (
        Output::new("src".into(), vec![to_filter], source_metrics),
        tasks,
    )
}

/// Sends one batch of `records` with one notifier, as a source does per checkpoint unit.
async fn emit(out: &Output, records: &[serde_json::Value]) -> BatchReceiver {
    let (notifier, rx) = BatchNotifier::new();
    let batch: Vec<Event> = records
        .iter()
        .map(|r| {
            let fields: Object = r.as_object().unwrap().clone();
            Event::new(fields, "src".into(), 10).with_ack(notifier.token())
        })
        .collect();
    drop(notifier);
    out.send(batch).await.unwrap();
    rx
}

async fn outcome(rx: BatchReceiver) -> BatchStatus {
    rx.await.expect("every token resolved or dropped")
}

#[tokio::test]
async fn delivered_filtered_and_dead_lettered_batches_report_each_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let template = format!("{}/{{{{ host }}}}.ndjson", dir.path().display());
    let (src, tasks) = filter_to_file(dir.path(), &template, None).await;

    let delivered = emit(
        &src,
        &[
            json!({"event_type": "keep", "host": "a"}),
            json!({"event_type": "keep", "host": "b"}),
        ],
    )
    .await;
    let s = outcome(delivered).await;
    assert_eq!(s.worst, DeliveryStatus::Delivered);
    assert!(!s.any_dead_lettered);
    // Acknowledged only once written: the lines are on disk.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a.ndjson")).unwrap(),
        "{\"event_type\":\"keep\",\"host\":\"a\"}\n"
    );

    let filtered = emit(
        &src,
        &[
            json!({"event_type": "drop", "host": "a"}),
            json!({"event_type": "keep", "host": "a"}),
        ],
    )
    .await;
    let s = outcome(filtered).await;
    assert_eq!(s.worst, DeliveryStatus::Filtered);
    assert!(s.is_handled());

    // No `host`: the file sink cannot render its path and dead-letters the event.
    let dead = emit(
        &src,
        &[
            json!({"event_type": "keep", "host": "a"}),
            json!({"event_type": "keep"}),
        ],
    )
    .await;
    let s = outcome(dead).await;
    assert_eq!(s.worst, DeliveryStatus::DeadLettered);
    assert!(s.any_dead_lettered);
    assert!(s.is_handled());

    drop(src);
    tasks.await.unwrap();
}

#[tokio::test]
async fn a_dead_letter_delivered_to_a_wired_output_still_marks_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let template = format!("{}/{{{{ host }}}}.ndjson", dir.path().display());
    let (dl_tx, mut dl_rx) = mpsc::channel::<EventBatch>(4);
    let (src, tasks) = filter_to_file(dir.path(), &template, Some(dl_tx)).await;
    let rx = emit(&src, &[json!({"event_type": "keep"})]).await;
    // The dead-letter consumer (a sink) delivers it.
    let batch = dl_rx.recv().await.unwrap();
    assert_eq!(batch[0].fields()["reason"], "template_error");
    batch
        .into_iter()
        .for_each(|e| e.ack(DeliveryStatus::Delivered));
    let s = outcome(rx).await;
    assert!(s.any_dead_lettered);
    assert!(s.is_handled());
    drop(src);
    tasks.await.unwrap();
}

#[tokio::test]
async fn a_sink_that_cannot_write_reports_failed() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"a file, not a directory").unwrap();
    let path = blocker.join("out.ndjson").display().to_string();
    let (src, tasks) = filter_to_file(dir.path(), &path, None).await;
    let rx = emit(
        &src,
        &[json!({"event_type": "keep"}), json!({"event_type": "drop"})],
    )
    .await;
    let s = outcome(rx).await;
    assert_eq!(s.worst, DeliveryStatus::Failed);
    assert!(!s.is_handled());
    drop(src);
    tasks.await.unwrap();
}

#[tokio::test]
async fn fan_out_is_delivered_only_when_every_branch_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let registry = MetricsRegistry::new();
    let m = registry.component("src", "test");
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"x").unwrap();
    for path in [dir.path().join("ok.ndjson"), blocker.join("never.ndjson")] {
        let (tx, rx) = mpsc::channel(4);
        senders.push(tx);
        let sink: sessiontrail_sinks::file::FileSinkConfig =
            serde_json::from_value(json!({ "path": path })).unwrap();
        let sm = registry.component("out", "file");
        tasks.push(tokio::spawn(
            sink.build(SinkContext {
                name: "out".into(),
                input: rx,
                dropped: Output::unwired("out.dropped", Arc::clone(&sm)),
                metrics: sm,
                shared: shared(dir.path(), &registry),
            })
            .await
            .unwrap(),
        ));
    }
    let src = Output::new("src".into(), senders, m);
    let rx = emit(&src, &[json!({"n": 1})]).await;
    let s = outcome(rx).await;
    // One branch wrote the event, the other could not: the source must not checkpoint.
    assert_eq!(s.worst, DeliveryStatus::Failed);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ok.ndjson")).unwrap(),
        "{\"n\":1}\n"
    );
    drop(src);
    for t in tasks {
        let _ = t.await.unwrap();
    }
}
