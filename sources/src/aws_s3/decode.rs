//! Turns one S3 object's bytes into records: gzip by magic bytes (several concatenated
//! members included), then NDJSON, a JSON array or a plain-text transcript. NDJSON and text
//! lines are streamed through the bounded line framer, so a large object never needs its
//! decompressed form in memory; a JSON array or a whole-object transcript does (bounded).

use std::io::Read;

use flate2::read::MultiGzDecoder;
use serde::Deserialize;

use sessiontrail_core::dead_letter::MAX_RAW_PREFIX;
use sessiontrail_core::framing::{Frame, LineFramer};
use sessiontrail_core::json::{decode_record, kind_of, object_depth, Decoded, MAX_NESTING_DEPTH};
use sessiontrail_core::{Object, Value};

/// gzip member header (RFC 1952): ID1 ID2.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Decompressed bytes read per step.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectFormat {
    /// Decided per object from its first non-blank byte: `[` JSON array, `{` NDJSON,
    /// anything else text.
    #[default]
    Auto,
    /// One JSON object per line (WSB `JSONLines`).
    Ndjson,
    /// One JSON array of objects (WSB `Json`).
    JsonArray,
    /// Plain text (SSM session transcripts), see `text_records`.
    Text,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextRecords {
    /// One record `{"message": line}` per line.
    #[default]
    Lines,
    /// One record `{"message": whole text}` per object (keeps multi-line content such as a
    /// PEM block together for redaction); limited to `max_record_bytes`.
    Object,
}

#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    pub format: ObjectFormat,
    pub text_records: TextRecords,
    pub max_record_bytes: usize,
    /// Largest decompressed JSON array document held in memory.
    pub max_document_bytes: usize,
}

/// Where a record sits in its object: a 1-based line or a 0-based array index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Position {
    Line(u64),
    Index(u64),
    Object,
}

pub struct Record {
    pub fields: Object,
    pub position: Position,
    pub bytes: usize,
}

pub struct Defect {
    pub reason: &'static str,
    pub message: String,
    pub position: Position,
    /// The original bytes (at most [`MAX_RAW_PREFIX`] when `truncated_from` is set).
    pub raw: Vec<u8>,
    pub truncated_from: Option<usize>,
}

#[derive(Default)]
pub struct DecodedObject {
    pub records: Vec<Record>,
    pub defects: Vec<Defect>,
    pub compressed: bool,
    pub decompressed_bytes: usize,
}

fn defect(
    reason: &'static str,
    message: impl Into<String>,
    position: Position,
    raw: &[u8],
) -> Defect {
    let truncated_from = (raw.len() > MAX_RAW_PREFIX).then_some(raw.len());
    Defect {
        reason,
        message: message.into(),
        position,
        raw: raw[..raw.len().min(MAX_RAW_PREFIX)].to_vec(),
        truncated_from,
    }
}

/// Decodes a whole object. Never panics; everything that is not a record becomes a defect.
pub fn decode_object(body: &[u8], opts: &DecodeOptions) -> DecodedObject {
    let compressed = body.starts_with(&GZIP_MAGIC);
    let mut reader: Box<dyn Read + '_> = if compressed {
        Box::new(MultiGzDecoder::new(body))
    } else {
        Box::new(body)
    };
    let mut out = DecodedObject {
        compressed,
        ..Default::default()
    };
    // The first chunk decides the format in `auto` mode.
    let mut first = Vec::with_capacity(READ_CHUNK);
    let first_error = fill(&mut reader, &mut first, READ_CHUNK).err();
    let format = match opts.format {
        ObjectFormat::Auto => sniff(&first),
        f => f,
    };
    match format {
        ObjectFormat::JsonArray => decode_array(reader, first, first_error, opts, &mut out),
        ObjectFormat::Text if opts.text_records == TextRecords::Object => {
            decode_text_object(reader, first, first_error, opts, &mut out)
        }
        ObjectFormat::Text => decode_lines(reader, first, first_error, false, opts, &mut out),
        ObjectFormat::Ndjson | ObjectFormat::Auto => {
            decode_lines(reader, first, first_error, true, opts, &mut out)
        }
    }
    out
}

fn gzip_defect(e: &std::io::Error, decompressed: usize, raw: &[u8]) -> Defect {
    defect(
        "invalid_gzip",
        format!("decompression failed after {decompressed} bytes: {e}"),
        Position::Object,
        raw,
    )
}

/// Reads until `buf` holds `want` more bytes or the stream ends. On an error the bytes
/// read before it stay in `buf` (records before a damaged gzip tail are kept).
fn fill(reader: &mut dyn Read, buf: &mut Vec<u8>, want: usize) -> std::io::Result<()> {
    reader.take(want as u64).read_to_end(buf).map(|_| ())
}

fn sniff(first: &[u8]) -> ObjectFormat {
    let body = first.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(first);
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => ObjectFormat::JsonArray,
        Some(b'{') => ObjectFormat::Ndjson,
        _ => ObjectFormat::Text,
    }
}

fn decode_lines(
    mut reader: Box<dyn Read + '_>,
    first: Vec<u8>,
    first_error: Option<std::io::Error>,
    json: bool,
    opts: &DecodeOptions,
    out: &mut DecodedObject,
) {
    let mut framer = LineFramer::new(opts.max_record_bytes);
    let mut line_no = 0u64;
    let mut on_frame = |frame: Frame<'_>, out: &mut DecodedObject| {
        line_no += 1;
        let position = Position::Line(line_no);
        match frame {
            Frame::TooLong { prefix, len } => out.defects.push(Defect {
                reason: "record_too_large",
                message: format!(
                    "line is {len} bytes, the limit is {}",
                    opts.max_record_bytes
                ),
                position,
                raw: prefix.to_vec(),
                truncated_from: Some(len),
            }),
            Frame::Line(line) if json => match decode_record(line, opts.max_record_bytes) {
                Ok(Decoded::Blank) => {}
                Ok(Decoded::Record(text)) => out.records.push(Record {
                    fields: text.into_object(),
                    position,
                    bytes: line.len(),
                }),
                Err(e) => out
                    .defects
                    .push(defect(e.reason, e.message, position, line)),
            },
            Frame::Line(line) => {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let line = if line_no == 1 {
                    line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line)
                } else {
                    line
                };
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    return;
                }
                match std::str::from_utf8(line) {
                    Ok(text) => {
                        let mut fields = Object::new();
                        fields.insert("message".into(), text.into());
                        out.records.push(Record {
                            fields,
                            position,
                            bytes: line.len(),
                        });
                    }
                    Err(e) => out.defects.push(defect(
                        "invalid_utf8",
                        format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                        position,
                        line,
                    )),
                }
            }
        }
    };
    let mut chunk = first;
    let mut error = first_error;
    loop {
        out.decompressed_bytes += chunk.len();
        framer.push(&chunk, |f| on_frame(f, out));
        if let Some(e) = error.take() {
            // Whatever decompressed before the damage is kept, the rest is reported.
            framer.finish(|f| on_frame(f, out));
            let d = gzip_defect(&e, out.decompressed_bytes, &[]);
            out.defects.push(d);
            return;
        }
        if chunk.is_empty() {
            break;
        }
        chunk.clear();
        error = fill(&mut reader, &mut chunk, READ_CHUNK).err();
    }
    framer.finish(|f| on_frame(f, out));
}

fn decode_array(
    mut reader: Box<dyn Read + '_>,
    mut doc: Vec<u8>,
    first_error: Option<std::io::Error>,
    opts: &DecodeOptions,
    out: &mut DecodedObject,
) {
    let limit = opts.max_document_bytes;
    let error = first_error.or_else(|| {
        let want = limit.saturating_sub(doc.len()) + 1;
        fill(&mut reader, &mut doc, want).err()
    });
    if let Some(e) = error {
        // A JSON document cut short cannot be parsed: the whole object is a dead letter.
        out.defects.push(gzip_defect(&e, doc.len(), &doc));
        return;
    }
    out.decompressed_bytes = doc.len();
    if doc.len() > limit {
        out.defects.push(defect(
            "record_too_large",
            format!("JSON array document is larger than max_document_bytes ({limit})"),
            Position::Object,
            &doc,
        ));
        return;
    }
    let body = doc.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&doc);
    if let Err(e) = std::str::from_utf8(body) {
        out.defects.push(defect(
            "invalid_utf8",
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            Position::Object,
            body,
        ));
        return;
    }
    let items: Vec<Value> = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            out.defects.push(defect(
                "invalid_json",
                format!("object is not a JSON array: {e}"),
                Position::Object,
                body,
            ));
            return;
        }
    };
    for (i, item) in items.into_iter().enumerate() {
        let position = Position::Index(i as u64);
        let raw = serde_json::to_vec(&item).unwrap_or_default();
        if raw.len() > opts.max_record_bytes {
            out.defects.push(defect(
                "record_too_large",
                format!(
                    "element is {} bytes, the limit is {}",
                    raw.len(),
                    opts.max_record_bytes
                ),
                position,
                &raw,
            ));
            continue;
        }
        match item {
            Value::Object(fields) if object_depth(&fields) <= MAX_NESTING_DEPTH => {
                out.records.push(Record {
                    fields,
                    position,
                    bytes: raw.len(),
                })
            }
            Value::Object(_) => out.defects.push(defect(
                "nesting_too_deep",
                format!("element nests deeper than {MAX_NESTING_DEPTH} levels"),
                position,
                &raw,
            )),
            other => out.defects.push(defect(
                "not_an_object",
                format!("expected a JSON object, found {}", kind_of(&other)),
                position,
                &raw,
            )),
        }
    }
}

fn decode_text_object(
    mut reader: Box<dyn Read + '_>,
    mut text: Vec<u8>,
    first_error: Option<std::io::Error>,
    opts: &DecodeOptions,
    out: &mut DecodedObject,
) {
    let limit = opts.max_record_bytes;
    let error = first_error.or_else(|| {
        let want = limit.saturating_sub(text.len()) + 1;
        fill(&mut reader, &mut text, want).err()
    });
    if let Some(e) = error {
        out.defects.push(gzip_defect(&e, text.len(), &text));
        return;
    }
    out.decompressed_bytes = text.len();
    if text.len() > limit {
        out.defects.push(defect(
            "record_too_large",
            format!(
                "transcript is larger than max_record_bytes ({limit}); use text_records: lines"
            ),
            Position::Object,
            &text,
        ));
        return;
    }
    let body = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&text);
    match std::str::from_utf8(body) {
        Ok(s) => {
            let mut fields = Object::new();
            fields.insert("message".into(), s.into());
            out.records.push(Record {
                fields,
                position: Position::Object,
                bytes: body.len(),
            });
        }
        Err(e) => out.defects.push(defect(
            "invalid_utf8",
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            Position::Object,
            body,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn opts(format: ObjectFormat, text_records: TextRecords) -> DecodeOptions {
        DecodeOptions {
            format,
            text_records,
            max_record_bytes: 1 << 20,
            max_document_bytes: 1 << 24,
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn concatenated_gzip_members_are_all_read() {
        let mut body = gzip(b"{\"a\":1}\n");
        body.extend(gzip(b"{\"a\":2}\n{\"a\":3}\n"));
        let d = decode_object(&body, &opts(ObjectFormat::Auto, TextRecords::Lines));
        assert!(d.compressed);
        assert_eq!(d.records.len(), 3);
        assert_eq!(d.records[2].position, Position::Line(3));
    }

    #[test]
    fn ndjson_defects_keep_their_line_and_the_rest_flows() {
        let d = decode_object(
            b"{\"a\":1}\n{bad\n\n[1]\n{\"a\":2}\r\n",
            &opts(ObjectFormat::Auto, TextRecords::Lines),
        );
        assert_eq!(d.records.len(), 2);
        let reasons: Vec<_> = d.defects.iter().map(|x| (x.reason, x.position)).collect();
        assert_eq!(
            reasons,
            vec![
                ("invalid_json", Position::Line(2)),
                ("not_an_object", Position::Line(4))
            ]
        );
    }

    #[test]
    fn json_arrays_yield_one_record_per_object() {
        let d = decode_object(
            b" [{\"a\":1}, 2, {\"b\":[]}]",
            &opts(ObjectFormat::Auto, TextRecords::Lines),
        );
        assert_eq!(d.records.len(), 2);
        assert_eq!(d.defects[0].reason, "not_an_object");
        assert_eq!(d.defects[0].position, Position::Index(1));
        let d = decode_object(b"[{\"a\":1}", &opts(ObjectFormat::Auto, TextRecords::Lines));
        assert_eq!(d.defects[0].reason, "invalid_json");
    }

    #[test]
    fn transcripts_become_lines_or_one_message() {
        let text = b"Script started on 2025-03-10\n\x1b[?2004hsh-5.2$ ls\r\n\r\nfile\r\n";
        let d = decode_object(text, &opts(ObjectFormat::Auto, TextRecords::Lines));
        let lines: Vec<_> = d
            .records
            .iter()
            .map(|r| r.fields["message"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            lines,
            vec![
                "Script started on 2025-03-10",
                "\x1b[?2004hsh-5.2$ ls",
                "file"
            ]
        );
        let d = decode_object(&gzip(text), &opts(ObjectFormat::Text, TextRecords::Object));
        assert_eq!(d.records.len(), 1);
        assert_eq!(
            d.records[0].fields["message"].as_str().unwrap().as_bytes(),
            text
        );
    }

    #[test]
    fn corrupt_gzip_is_a_defect_not_a_panic() {
        let mut body = gzip(b"{\"a\":1}\n");
        let n = body.len();
        body[n / 2] ^= 0xff;
        let d = decode_object(&body, &opts(ObjectFormat::Auto, TextRecords::Lines));
        assert!(d.defects.iter().any(|x| x.reason == "invalid_gzip"));
    }
}
