//! Request bodies: size limits, gzip / zstd decompression with a cap, and splitting a body
//! into records (one object, an array of objects, or NDJSON lines) without parsing it twice.

use std::io::Read;

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

/// Why a body could not be turned into bytes; each maps to one HTTP status.
#[derive(Debug)]
pub enum BodyError {
    /// 413: larger than `max_body_bytes` on the wire.
    TooLarge { limit: usize },
    /// 413: decompresses to more than `max_decompressed_bytes` (a decompression bomb).
    DecompressedTooLarge { limit: usize },
    /// 415: a `Content-Encoding` we do not decode.
    UnsupportedEncoding(String),
    /// 400: the compressed data is corrupt.
    Corrupt(String),
    /// The client went away or the connection broke while sending.
    Read(String),
}

/// gzip members start with these two bytes (RFC 1952).
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
/// zstd frames start with this little-endian magic number (RFC 8878).
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

/// Reads the whole body, refusing more than `limit` bytes (checked against `Content-Length`
/// first, then while streaming, so an oversize body is never buffered).
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(BodyError::TooLarge { limit })
        }
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}

/// The encoding named by `Content-Encoding`, or — when there is none — the one the magic
/// bytes show (corpus input rule 6: detect compression from content, never from names; a
/// JSON text can never start with these bytes).
pub fn encoding_of(headers: &HeaderMap, body: &[u8]) -> Result<Encoding, BodyError> {
    match headers.get(axum::http::header::CONTENT_ENCODING) {
        Some(v) => {
            let v = v.to_str().unwrap_or("").trim().to_ascii_lowercase();
            match v.as_str() {
                "" | "identity" => Ok(Encoding::Identity),
                "gzip" | "x-gzip" => Ok(Encoding::Gzip),
                "zstd" => Ok(Encoding::Zstd),
                other => Err(BodyError::UnsupportedEncoding(
                    other.chars().take(40).collect(),
                )),
            }
        }
        None if body.starts_with(GZIP_MAGIC) => Ok(Encoding::Gzip),
        None if body.starts_with(ZSTD_MAGIC) => Ok(Encoding::Zstd),
        None => Ok(Encoding::Identity),
    }
}

/// Decompresses `body`, stopping as soon as the output would exceed `limit`.
pub fn decompress(body: Bytes, encoding: Encoding, limit: usize) -> Result<Bytes, BodyError> {
    match encoding {
        Encoding::Identity => Ok(body),
        // Several concatenated gzip members are one stream (what `cat a.gz b.gz` makes).
        Encoding::Gzip => read_capped(flate2::read::MultiGzDecoder::new(&body[..]), limit),
        Encoding::Zstd => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(&body[..])
                .map_err(|e| BodyError::Corrupt(format!("zstd: {e}")))?;
            read_capped(decoder, limit)
        }
    }
}

fn read_capped<R: Read>(reader: R, limit: usize) -> Result<Bytes, BodyError> {
    let mut out = Vec::new();
    // One byte more than allowed tells "exactly at the limit" from "over it".
    match reader.take(limit as u64 + 1).read_to_end(&mut out) {
        Ok(_) if out.len() > limit => Err(BodyError::DecompressedTooLarge { limit }),
        Ok(_) => Ok(Bytes::from(out)),
        Err(e) => Err(BodyError::Corrupt(e.to_string())),
    }
}

/// How a body is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One JSON document: an object, or an array of objects.
    Json,
    /// One JSON object per line (`application/x-ndjson` and its aliases).
    Ndjson,
}

pub fn layout_of(headers: &HeaderMap) -> Layout {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/jsonlines" => Layout::Ndjson,
        _ => Layout::Json,
    }
}

/// One record's bytes and its position in the body: the array index, or the 0-based line.
pub struct RecordSlice<'a> {
    pub index: usize,
    pub bytes: &'a [u8],
    /// An array element with nothing in it (`[1,,2]`): not even JSON.
    pub empty_element: bool,
}

/// The body is not a JSON document at all.
pub struct NotJson;

/// Splits a body into records. A JSON array is split at its top-level commas with a small
/// scanner that knows strings and escapes, so each element is then decoded on its own with
/// the corpus rules (a broken element does not take its neighbours down). Anything else is
/// one record and is judged by the decoder.
pub fn split_records(body: &[u8], layout: Layout) -> Result<Vec<RecordSlice<'_>>, NotJson> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    match layout {
        Layout::Ndjson => {
            let trimmed = body.strip_suffix(b"\n").unwrap_or(body);
            Ok(trimmed
                .split(|b| *b == b'\n')
                .enumerate()
                .map(|(index, bytes)| RecordSlice {
                    index,
                    bytes,
                    empty_element: false,
                })
                .collect())
        }
        Layout::Json => {
            let trimmed = body.trim_ascii_start();
            if trimmed.first() == Some(&b'[') {
                split_array(trimmed).ok_or(NotJson)
            } else {
                Ok(vec![RecordSlice {
                    index: 0,
                    bytes: body,
                    empty_element: false,
                }])
            }
        }
    }
}

fn push_element<'a>(elements: &mut Vec<RecordSlice<'a>>, bytes: &'a [u8]) {
    elements.push(RecordSlice {
        index: elements.len(),
        bytes,
        empty_element: bytes.trim_ascii().is_empty(),
    });
}

fn split_array(body: &[u8]) -> Option<Vec<RecordSlice<'_>>> {
    let mut elements = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut start = 1;
    for (i, &b) in body.iter().enumerate().skip(1) {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => depth -= 1,
            b']' => {
                let last = &body[start..i];
                // `[]` has no element; `[1,]` has an empty last one.
                if !(elements.is_empty() && last.trim_ascii().is_empty()) {
                    push_element(&mut elements, last);
                }
                return body[i + 1..].trim_ascii().is_empty().then_some(elements);
            }
            b'}' => return None,
            b',' if depth == 0 => {
                push_element(&mut elements, &body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(body: &str) -> Option<Vec<String>> {
        split_records(body.as_bytes(), Layout::Json).ok().map(|v| {
            v.iter()
                .map(|r| String::from_utf8_lossy(r.bytes).trim().to_string())
                .collect()
        })
    }

    #[test]
    fn arrays_split_at_top_level_commas_only() {
        assert_eq!(
            parts(r#"[{"a":"x,]}"},{"b":[1,2]}, "s\"]" ]"#).unwrap(),
            vec![r#"{"a":"x,]}"}"#, r#"{"b":[1,2]}"#, r#""s\"]""#]
        );
        assert_eq!(parts("[]").unwrap(), Vec::<String>::new());
        assert_eq!(parts("[{},]").unwrap(), vec!["{}", ""]);
    }

    #[test]
    fn broken_arrays_are_not_json() {
        assert!(parts(r#"[{"a":1}"#).is_none());
        assert!(parts(r#"[{"a":1}] x"#).is_none());
        assert!(parts(r#"[{"a":1}}]"#).is_none());
    }

    #[test]
    fn a_single_object_is_one_record() {
        assert_eq!(parts(" {\"a\":1} ").unwrap().len(), 1);
    }

    #[test]
    fn ndjson_lines_keep_their_index() {
        let v = split_records(b"{}\n\n{}\r\n", Layout::Ndjson).ok().unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].index, 2);
    }

    #[test]
    fn gzip_bomb_stops_at_the_cap() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b' '; 1 << 20]).unwrap();
        let gz = Bytes::from(enc.finish().unwrap());
        assert!(gz.len() < 4096);
        assert!(matches!(
            decompress(gz.clone(), Encoding::Gzip, 1000),
            Err(BodyError::DecompressedTooLarge { limit: 1000 })
        ));
        assert_eq!(
            decompress(gz, Encoding::Gzip, 1 << 20).unwrap().len(),
            1 << 20
        );
    }

    #[test]
    fn zstd_bodies_decode() {
        let data = b"{\"a\":1}".repeat(100);
        let z = ruzstd::encoding::compress_to_vec(
            &data[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let mut h = HeaderMap::new();
        assert_eq!(encoding_of(&h, &z).unwrap(), Encoding::Zstd);
        h.insert("content-encoding", "br".parse().unwrap());
        assert!(matches!(
            encoding_of(&h, &z),
            Err(BodyError::UnsupportedEncoding(_))
        ));
        assert_eq!(
            &decompress(Bytes::from(z), Encoding::Zstd, 1 << 20).unwrap()[..],
            &data[..]
        );
    }
}
