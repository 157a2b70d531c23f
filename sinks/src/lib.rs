//! Sinks: one module per sink type. The runner finds them through [`parse`].

use sessiontrail_core::component::{parse_options, OptionError};
use sessiontrail_core::SinkConfig;

pub mod aws_cloudwatch_logs;
pub mod aws_s3;
pub mod batch;
pub mod blackhole;
pub mod encode;
pub mod file;
pub mod retry;
pub mod stdout;

/// Every `type:` a sink can have.
pub const KINDS: &[&str] = &[
    "aws_cloudwatch_logs",
    "aws_s3",
    "blackhole",
    "file",
    "stdout",
];

/// Builds the config of a sink of type `kind`; `None` if the type is unknown.
pub fn parse(
    kind: &str,
    options: serde_json::Value,
) -> Option<Result<Box<dyn SinkConfig>, OptionError>> {
    fn boxed<T: SinkConfig + serde::de::DeserializeOwned + 'static>(
        v: serde_json::Value,
    ) -> Result<Box<dyn SinkConfig>, OptionError> {
        parse_options::<T>(v).map(|c| Box::new(c) as Box<dyn SinkConfig>)
    }
    Some(match kind {
        "aws_cloudwatch_logs" => boxed::<aws_cloudwatch_logs::CloudwatchLogsSinkConfig>(options),
        "aws_s3" => boxed::<aws_s3::S3SinkConfig>(options),
        "blackhole" => boxed::<blackhole::BlackholeConfig>(options),
        "file" => boxed::<file::FileSinkConfig>(options),
        "stdout" => boxed::<stdout::StdoutConfig>(options),
        _ => return None,
    })
}
