//! NDJSON encoding shared by the sinks: serialized straight into the output buffer.

use sessiontrail_core::Event;

/// Appends `event` as one JSON line (its original text when it was not modified).
pub fn write_ndjson(buf: &mut Vec<u8>, event: &Event) {
    event.write_json(buf);
    buf.push(b'\n');
}
