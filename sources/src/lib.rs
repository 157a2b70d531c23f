//! Sources: one module per source type. The runner finds them through [`parse`].

use sessiontrail_core::component::{parse_options, OptionError};
use sessiontrail_core::SourceConfig;

pub mod aws_cloudwatch_logs;
pub mod aws_s3;
pub mod decoding;
pub mod demo;
pub mod file;
pub mod http_server;
pub mod parsec;
pub mod pull;
pub mod stdin;

/// Every `type:` a source can have, for error messages and `--help`.
pub const KINDS: &[&str] = &[
    "aws_cloudwatch_logs",
    "aws_s3",
    "demo",
    "file",
    "http_server",
    "parsec",
    "stdin",
];

/// Builds the config of a source of type `kind` from its options; `None` if the type is
/// unknown.
pub fn parse(
    kind: &str,
    options: serde_json::Value,
) -> Option<Result<Box<dyn SourceConfig>, OptionError>> {
    fn boxed<T: SourceConfig + serde::de::DeserializeOwned + 'static>(
        v: serde_json::Value,
    ) -> Result<Box<dyn SourceConfig>, OptionError> {
        parse_options::<T>(v).map(|c| Box::new(c) as Box<dyn SourceConfig>)
    }
    Some(match kind {
        "demo" => boxed::<demo::DemoConfig>(options),
        "http_server" => boxed::<http_server::HttpServerConfig>(options),
        "file" => boxed::<file::FileSourceConfig>(options),
        "stdin" => boxed::<stdin::StdinConfig>(options),
        "parsec" => boxed::<parsec::ParsecConfig>(options),
        "aws_s3" => boxed::<aws_s3::S3SourceConfig>(options),
        "aws_cloudwatch_logs" => boxed::<aws_cloudwatch_logs::CloudWatchLogsSourceConfig>(options),
        _ => return None,
    })
}

/// Installs rustls' aws-lc-rs crypto provider (the one the AWS SDK already builds) as the
/// process default. reqwest is built without a provider of its own, so this must run before
/// any HTTPS client (the parsec source) is created. Safe to call more than once.
pub fn install_tls_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
