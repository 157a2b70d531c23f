//! Transforms: one module per transform type. The runner finds them through [`parse`].

use sessiontrail_core::component::{parse_options, OptionError};
use sessiontrail_core::TransformConfig;

pub mod correlate;
pub mod filter;
pub mod ocsf;
pub mod redact;

/// Every `type:` a transform can have.
pub const KINDS: &[&str] = &["correlate", "filter", "ocsf", "redact"];

/// Builds the config of a transform of type `kind`; `None` if the type is unknown.
pub fn parse(
    kind: &str,
    options: serde_json::Value,
) -> Option<Result<Box<dyn TransformConfig>, OptionError>> {
    fn boxed<T: TransformConfig + serde::de::DeserializeOwned + 'static>(
        v: serde_json::Value,
    ) -> Result<Box<dyn TransformConfig>, OptionError> {
        parse_options::<T>(v).map(|c| Box::new(c) as Box<dyn TransformConfig>)
    }
    Some(match kind {
        "correlate" => boxed::<correlate::CorrelateConfig>(options),
        "filter" => boxed::<filter::FilterConfig>(options),
        "ocsf" => boxed::<ocsf::OcsfConfig>(options),
        "redact" => boxed::<redact::RedactConfig>(options),
        _ => return None,
    })
}
