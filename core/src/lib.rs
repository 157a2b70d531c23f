//! The pieces every sessiontrail component shares: the event model, acknowledgements, the
//! component traits the runner knows components by, and small shared codecs.
//!
//! A newcomer should read, in this order: [`event`], [`ack`], [`component`], [`output`].

pub mod ack;
pub mod allocator;
pub mod component;
pub mod condition;
pub mod dead_letter;
pub mod event;
pub mod framing;
pub mod json;
pub mod json_borrowed;
pub mod json_edit;
pub mod json_paths;
mod json_validate;
pub mod json_write;
pub mod metrics;
pub mod output;
pub mod store;
pub mod template;

pub use ack::{AckToken, BatchNotifier, BatchStatus, DeliveryStatus};
pub use component::{
    BuildError, ComponentError, ComponentTask, SinkConfig, SinkContext, SourceConfig,
    SourceContext, TransformConfig, TransformContext,
};
pub use dead_letter::DeadLetter;
pub use event::{Event, EventBatch, EventMeta, JsonObjectText, Labels, Object, Value};
pub use output::Output;
