//! How line-oriented sources turn a line into an event.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decoding {
    /// Each line is one JSON object (the event).
    #[default]
    Ndjson,
    /// Each line becomes `{"message": "<line>"}`; invalid UTF-8 is decoded lossily and flagged
    /// with `"invalid_utf8": true`.
    Lines,
}
