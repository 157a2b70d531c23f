//! `type: blackhole` — acknowledges and discards everything; for benchmarks.

use serde::Deserialize;

use sessiontrail_core::component::{ComponentTask, SinkContext};
use sessiontrail_core::{BuildError, DeliveryStatus, SinkConfig};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {}

#[async_trait::async_trait]
impl SinkConfig for BlackholeConfig {
    async fn build(&self, mut cx: SinkContext) -> Result<ComponentTask, BuildError> {
        Ok(Box::pin(async move {
            while let Some(batch) = cx.input.recv().await {
                let bytes = batch.iter().map(|e| e.meta.byte_size).sum::<usize>() as u64;
                cx.metrics.add_received(batch.len() as u64, bytes);
                cx.metrics.add_sent(batch.len() as u64, bytes);
                batch
                    .into_iter()
                    .for_each(|e| e.ack(DeliveryStatus::Delivered));
            }
            Ok(())
        }))
    }
}
