//! AWS client setup shared by the AWS sources and sinks: credentials and region from the
//! default chain (environment, profile, SSO, ECS, IMDS), optional endpoint override for
//! LocalStack / MinIO / moto, and path-style S3 addressing with a custom endpoint.

use serde::Deserialize;

pub use aws_sdk_cloudwatchlogs as cloudwatchlogs;
pub use aws_sdk_s3 as s3;

/// Options every AWS component accepts (flattened into its config).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsOptions {
    /// AWS region; default from the environment / profile (`AWS_REGION`).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint URL override (LocalStack, MinIO, moto). The standard `AWS_ENDPOINT_URL`,
    /// `AWS_ENDPOINT_URL_S3` and `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS` variables also work.
    #[serde(default)]
    pub endpoint: Option<String>,
}

impl AwsOptions {
    /// Loads the shared SDK config from the default credential and region chain.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        loader.load().await
    }

    /// An S3 client; path-style addressing is forced when an endpoint override is in use
    /// (virtual-host style would resolve `bucket.localhost`), or when `force_path_style`.
    pub async fn s3_client(&self, force_path_style: bool) -> s3::Client {
        let sdk = self.sdk_config().await;
        let custom_endpoint = self.endpoint.is_some()
            || std::env::var_os("AWS_ENDPOINT_URL").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let conf = s3::config::Builder::from(&sdk)
            .force_path_style(force_path_style || custom_endpoint)
            .build();
        s3::Client::from_conf(conf)
    }

    pub async fn logs_client(&self) -> cloudwatchlogs::Client {
        let sdk = self.sdk_config().await;
        cloudwatchlogs::Client::new(&sdk)
    }
}
