//! NDJSON encoding shared by the sinks: serialized straight into the output buffer.

use sessiontrail_core::Event;

/// Appends `event` as one JSON line. Serializing a `serde_json::Map` cannot fail.
pub fn write_ndjson(buf: &mut Vec<u8>, event: &Event) {
    if serde_json::to_writer(&mut *buf, &event.fields).is_ok() {
        buf.push(b'\n');
    }
}
