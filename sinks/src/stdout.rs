//! `type: stdout` — writes events as NDJSON to standard output; an event is acknowledged once
//! its line was written and flushed.

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use sessiontrail_core::component::{ComponentError, ComponentTask, SinkContext};
use sessiontrail_core::{BuildError, DeliveryStatus, SinkConfig};

use crate::encode::write_ndjson;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {}

#[async_trait::async_trait]
impl SinkConfig for StdoutConfig {
    async fn build(&self, cx: SinkContext) -> Result<ComponentTask, BuildError> {
        Ok(Box::pin(run(cx)))
    }
}

async fn run(mut cx: SinkContext) -> Result<(), ComponentError> {
    let mut out = tokio::io::stdout();
    let mut buf = Vec::with_capacity(1 << 20);
    while let Some(batch) = cx.input.recv().await {
        buf.clear();
        for e in &batch {
            write_ndjson(&mut buf, e);
        }
        let written = async {
            out.write_all(&buf).await?;
            out.flush().await
        }
        .await;
        let bytes = batch.iter().map(|e| e.meta.byte_size).sum::<usize>() as u64;
        cx.metrics.add_received(batch.len() as u64, bytes);
        match written {
            Ok(()) => {
                cx.metrics.add_sent(batch.len() as u64, buf.len() as u64);
                batch
                    .into_iter()
                    .for_each(|e| e.ack(DeliveryStatus::Delivered));
            }
            // A closed pipe (`| head`) is not worth a crash loop; the events are not delivered.
            Err(e) => {
                return Err(ComponentError(format!(
                    "sink {}: writing to stdout: {e}",
                    cx.name
                )))
            }
        }
    }
    Ok(())
}
