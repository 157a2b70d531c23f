//! Checkpoints: where reading of each file resumes after a restart, and how we know it is
//! still the same file.
//!
//! Schema (one record per file in the `file/<name>` namespace of the pipeline's state store,
//! key `"<dev>:<inode>"`, value JSON so an operator can read it):
//!
//! | field | meaning |
//! |---|---|
//! | `path` | where the file was last seen |
//! | `dev`, `ino` | its identity on this host (a hint: inodes are reused) |
//! | `fingerprint_len`, `fingerprint` | FNV-1a 64-bit hash (hex) of the first `fingerprint_len` bytes (at most [`FINGERPRINT_BYTES`]) |
//! | `offset` | bytes of the file whose records are acknowledged by every sink |
//! | `line` | number of lines before `offset` (for dead-letter line numbers) |
//! | `marker_len`, `marker` | FNV-1a hash of the `marker_len` bytes just before `offset` |
//!
//! A checkpoint applies to a file only when both hashes match its current bytes: a file that
//! was truncated, replaced, or whose inode was reused is read from the start, never resumed in
//! the middle of other content.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

use sessiontrail_core::store::{Namespace, StoreError};

/// How many leading bytes identify a file. 1 KiB covers the first lines of a log, which carry
/// a timestamp or a session id in practice, so two distinct files rarely share them.
pub const FINGERPRINT_BYTES: u64 = 1024;
/// How many bytes before the saved offset are hashed into the offset marker.
pub const MARKER_BYTES: u64 = 256;

/// Identity of an open file on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn key(&self) -> String {
        format!("{}:{}", self.dev, self.ino)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    pub fingerprint_len: u64,
    pub fingerprint: String,
    pub offset: u64,
    pub line: u64,
    pub marker_len: u64,
    pub marker: String,
}

/// FNV-1a, 64 bits: stable across Rust versions and platforms (unlike `std`'s hasher), which
/// a value saved on disk needs. It tells files apart, it is not a defence against someone
/// crafting colliding log contents.
fn hash_hex(bytes: &[u8]) -> String {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let h = bytes.iter().fold(FNV_OFFSET_BASIS, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
    });
    format!("{h:016x}")
}

fn read_range(file: &File, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    let mut done = 0usize;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], start + done as u64)?;
        if n == 0 {
            buf.truncate(done);
            break;
        }
        done += n;
    }
    Ok(buf)
}

impl Checkpoint {
    /// Builds the checkpoint of `file` (currently `file_len` bytes) at `offset`.
    pub fn capture(
        file: &File,
        file_len: u64,
        path: &str,
        id: FileId,
        offset: u64,
        line: u64,
    ) -> std::io::Result<Checkpoint> {
        let head = read_range(file, 0, file_len.min(FINGERPRINT_BYTES))?;
        let marker_len = offset.min(MARKER_BYTES);
        let marker = read_range(file, offset - marker_len, marker_len)?;
        if (marker.len() as u64) < marker_len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shrank while its checkpoint was taken",
            ));
        }
        Ok(Checkpoint {
            path: path.to_string(),
            dev: id.dev,
            ino: id.ino,
            fingerprint_len: head.len() as u64,
            fingerprint: hash_hex(&head),
            offset,
            line,
            marker_len,
            marker: hash_hex(&marker),
        })
    }

    /// Whether this checkpoint describes `file` (currently `file_len` bytes long): same first
    /// bytes, long enough, and the same bytes just before the saved offset.
    pub fn matches(&self, file: &File, file_len: u64) -> bool {
        if file_len < self.offset || file_len < self.fingerprint_len {
            return false;
        }
        let Ok(head) = read_range(file, 0, self.fingerprint_len) else {
            return false;
        };
        if hash_hex(&head) != self.fingerprint {
            return false;
        }
        let Some(start) = self.offset.checked_sub(self.marker_len) else {
            return false;
        };
        match read_range(file, start, self.marker_len) {
            Ok(m) => m.len() as u64 == self.marker_len && hash_hex(&m) == self.marker,
            Err(_) => false,
        }
    }
}

/// The checkpoints of one `file` source.
pub struct CheckpointStore {
    ns: Namespace,
}

impl CheckpointStore {
    pub fn new(ns: Namespace) -> Self {
        CheckpointStore { ns }
    }

    /// Every saved checkpoint; unreadable records are skipped (they only cost a re-read).
    pub fn load(&self) -> Result<HashMap<String, Checkpoint>, StoreError> {
        let mut out = HashMap::new();
        for (k, v) in self.ns.scan()? {
            let Ok(key) = String::from_utf8(k) else {
                continue;
            };
            match serde_json::from_slice::<Checkpoint>(&v) {
                Ok(cp) => {
                    out.insert(key, cp);
                }
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "ignoring an unreadable file checkpoint; that file will be read from its start")
                }
            }
        }
        Ok(out)
    }

    pub fn get(&self, key: &str) -> Option<Checkpoint> {
        self.ns
            .get(key.as_bytes())
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice(&v).ok())
    }

    /// Saves and deletes checkpoints in one durable transaction.
    pub fn write(
        &self,
        save: &[(String, Checkpoint)],
        delete: &[String],
    ) -> Result<(), StoreError> {
        if save.is_empty() && delete.is_empty() {
            return Ok(());
        }
        let encoded: Vec<(&str, Vec<u8>)> = save
            .iter()
            .map(|(k, cp)| (k.as_str(), serde_json::to_vec(cp).unwrap_or_default()))
            .collect();
        let mut changes: Vec<(&[u8], Option<&[u8]>)> = encoded
            .iter()
            .map(|(k, v)| (k.as_bytes(), Some(v.as_slice())))
            .collect();
        changes.extend(delete.iter().map(|k| (k.as_bytes(), None)));
        self.ns.write(&changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn capture(f: &File, offset: u64) -> Checkpoint {
        let len = f.metadata().unwrap().len();
        Checkpoint::capture(f, len, "x", FileId { dev: 1, ino: 2 }, offset, 0).unwrap()
    }

    #[test]
    fn same_file_grown_still_matches() {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(b"first line\nsecond line\n").unwrap();
        let cp = capture(t.as_file(), 11);
        t.write_all(b"third\n").unwrap();
        assert!(cp.matches(t.as_file(), t.as_file().metadata().unwrap().len()));
    }

    #[test]
    fn truncated_and_refilled_with_same_head_does_not_match() {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(b"header\naaaa\nbbbb\n").unwrap();
        let cp = capture(t.as_file(), 17);
        t.as_file().set_len(0).unwrap();
        t.as_file()
            .write_all_at(b"header\ncccc\ndddd\neeee\n", 0)
            .unwrap();
        assert!(!cp.matches(t.as_file(), 22));
    }

    #[test]
    fn shorter_file_does_not_match() {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(b"abc\ndef\n").unwrap();
        let cp = capture(t.as_file(), 8);
        t.as_file().set_len(4).unwrap();
        assert!(!cp.matches(t.as_file(), 4));
    }
}
