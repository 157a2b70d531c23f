//! Which files to read: `include` globs minus `exclude` globs, found by a periodic scan and,
//! between scans, woken early by filesystem notifications. The scan is the ground truth:
//! `notify` misses events on network filesystems and once the inotify watch limit is reached,
//! so it only makes discovery faster, never decides what is read.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use globset::{Glob, GlobSet, GlobSetBuilder};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::checkpoint::FileId;

/// What a filesystem notification means for the reader loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A file was written: read now instead of at the next poll.
    Data,
    /// A file was created, removed or renamed: scan now.
    Rescan,
}

pub struct Discovery {
    include: Vec<String>,
    exclude: GlobSet,
    ignore_older_than: Option<Duration>,
    /// Kept alive for its notifications; `None` when watching failed (scan only).
    _watcher: Option<RecommendedWatcher>,
}

/// A file found by a scan.
pub struct Found {
    pub path: PathBuf,
    pub id: FileId,
}

fn glob_options() -> glob::MatchOptions {
    glob::MatchOptions {
        case_sensitive: true,
        // `*` stays inside one directory; `**` crosses directories.
        require_literal_separator: true,
        require_literal_leading_dot: false,
    }
}

/// Checks the patterns without side effects (for `validate`).
pub fn check_patterns(include: &[String], exclude: &[String]) -> Result<(), String> {
    if include.is_empty() {
        return Err("include must list at least one glob pattern".into());
    }
    for p in include {
        glob::Pattern::new(p).map_err(|e| format!("include pattern {p:?} is invalid: {e}"))?;
    }
    build_exclude(exclude).map(|_| ())
}

fn build_exclude(exclude: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in exclude {
        let g = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .or_else(|_| Glob::new(p))
            .map_err(|e| format!("exclude pattern {p:?} is invalid: {e}"))?;
        b.add(g);
    }
    b.build().map_err(|e| format!("exclude patterns: {e}"))
}

/// The directory above the first component that contains a glob character: what to watch.
fn literal_base(pattern: &str) -> PathBuf {
    let mut base = PathBuf::new();
    for c in Path::new(pattern).components() {
        let s = c.as_os_str().to_string_lossy();
        if s.contains(['*', '?', '[', '{']) {
            break;
        }
        base.push(c);
    }
    if base.as_os_str().is_empty() || base == Path::new(pattern) {
        // A literal path: watch its directory.
        base.pop();
        if base.as_os_str().is_empty() {
            base.push(Component::CurDir);
        }
    }
    base
}

impl Discovery {
    pub fn new(
        include: Vec<String>,
        exclude: &[String],
        ignore_older_than: Option<Duration>,
        wake: mpsc::Sender<Wake>,
    ) -> Result<Self, String> {
        let exclude = build_exclude(exclude)?;
        let watcher = start_watcher(&include, wake);
        Ok(Discovery {
            include,
            exclude,
            ignore_older_than,
            _watcher: watcher,
        })
    }

    /// Every regular file matching the patterns now, each once. `known` files skip the
    /// `ignore_older_than` filter: a file being read stays read even when it goes quiet.
    pub fn scan(&self, known: &HashSet<FileId>) -> Vec<Found> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let now = SystemTime::now();
        for pattern in &self.include {
            let Ok(paths) = glob::glob_with(pattern, glob_options()) else {
                continue;
            };
            for path in paths.flatten() {
                if self.exclude.is_match(&path) {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                use std::os::unix::fs::MetadataExt;
                let id = FileId {
                    dev: meta.dev(),
                    ino: meta.ino(),
                };
                if !seen.insert(id) {
                    continue;
                }
                if let (Some(limit), false) = (self.ignore_older_than, known.contains(&id)) {
                    let old = meta
                        .modified()
                        .ok()
                        .and_then(|m| now.duration_since(m).ok())
                        .is_some_and(|age| age > limit);
                    if old {
                        continue;
                    }
                }
                out.push(Found { path, id });
            }
        }
        out
    }
}

fn start_watcher(include: &[String], wake: mpsc::Sender<Wake>) -> Option<RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        let w = match ev.kind {
            EventKind::Create(_) | EventKind::Remove(_) => Wake::Rescan,
            EventKind::Modify(notify::event::ModifyKind::Name(_)) => Wake::Rescan,
            EventKind::Modify(_) => Wake::Data,
            _ => return,
        };
        let _ = wake.send(w);
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "file notifications unavailable; discovering files by periodic scan only");
            return None;
        }
    };
    for pattern in include {
        let base = literal_base(pattern);
        let mode = if pattern.contains(['*', '?', '[', '{']) {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        if let Err(e) = watcher.watch(&base, mode) {
            tracing::warn!(dir = %base.display(), error = %e, "cannot watch directory for changes; relying on the periodic scan (glob_interval)");
        }
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_is_the_literal_prefix() {
        assert_eq!(literal_base("/var/log/*.log"), PathBuf::from("/var/log"));
        assert_eq!(
            literal_base("/var/lib/amazon/ssm/*/session/**/*.log"),
            PathBuf::from("/var/lib/amazon/ssm")
        );
        assert_eq!(literal_base("/var/log/app.log"), PathBuf::from("/var/log"));
    }

    #[test]
    fn double_star_crosses_directories_and_exclude_applies() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("x.log"), "1\n").unwrap();
        std::fs::write(deep.join("x.gz"), "1\n").unwrap();
        std::fs::write(dir.path().join("top.log"), "1\n").unwrap();
        std::fs::write(dir.path().join("skip.log"), "1\n").unwrap();
        let (tx, _rx) = mpsc::channel();
        let d = Discovery::new(
            vec![format!("{}/**/*.log", dir.path().display())],
            &[format!("{}/skip.log", dir.path().display())],
            None,
            tx,
        )
        .unwrap();
        let mut names: Vec<String> = d
            .scan(&HashSet::new())
            .into_iter()
            .map(|f| {
                f.path
                    .strip_prefix(dir.path())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        names.sort();
        assert_eq!(names, ["a/b/x.log", "top.log"]);
    }
}
