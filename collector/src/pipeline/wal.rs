//! The write-ahead log: rows the row queue acknowledged, on local disk
//! until the store has them.
//!
//! A request is answered OK only once its rows are appended here (level
//! `process`: written to the file, so they survive the process being
//! killed; level `power`: also flushed to the device, one `fdatasync` for
//! every request appended meanwhile — group commit). The writer reports
//! each batch it stored ([`Wal::stored_through`]): the position is kept in
//! a checkpoint file and segments wholly before it are deleted. At
//! start-up, what follows the checkpoint is read back and queued again
//! before the receivers open; a call stored just before a crash but after
//! the last checkpoint comes back too, and the call identity (refilled
//! from the store) drops it as a repeat.
//!
//! On disk: `seg-<offset>.wal` files, each a run of records
//! `[length u32 LE][crc32 u32 LE][payload]`, where `<offset>` is the
//! position of the segment's first byte in the log; `checkpoint` holds
//! the position through which every record is stored (u64 LE). A record
//! cut short by a crash (or failing its checksum) ends the log: it was
//! never acknowledged.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tollgate_rules::CallRecord;

pub use crate::config::Durability;
use crate::internal_events::WalStats;

/// Settings of the log.
#[derive(Debug, Clone)]
pub struct WalConfig {
    pub dir: PathBuf,
    pub durability: Durability,
    /// Most bytes of records not stored yet; past it appends are refused.
    pub max_bytes: u64,
    /// A segment is closed past this size.
    pub segment_bytes: u64,
}

/// Why rows were not appended.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("the write-ahead log is full ({used} of {max} bytes not stored yet)")]
    Full { used: u64, max: u64 },
    #[error("the write-ahead log could not be written: {0}")]
    Io(#[from] std::io::Error),
    #[error("a write-ahead log record could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One record: rows queued together.
#[derive(Debug, Serialize, Deserialize)]
pub struct WalEntry {
    pub rows: Vec<CallRecord>,
}

/// Records read back at start-up, each with the position it ends at.
#[derive(Debug, Default)]
pub struct Recovered {
    pub entries: Vec<(u64, WalEntry)>,
    /// Bytes dropped at the end of the log (a record cut short by a crash).
    pub torn_bytes: u64,
}

const HEADER: u64 = 8;
const CHECKPOINT: &str = "checkpoint";

struct Segment {
    start: u64,
    path: PathBuf,
}

struct Appender {
    file: File,
    /// Position of the next byte appended.
    next: u64,
    /// Open segments, oldest first; the last is `file`'s.
    segments: VecDeque<Segment>,
    /// Files written since the last flush (power level).
    unsynced: Vec<File>,
}

/// The log. Appends are serialised by the caller (the row queue appends
/// and enqueues under one lock, so queue order is log order).
pub struct Wal {
    config: WalConfig,
    appender: Mutex<Appender>,
    checkpoint: File,
    stored: AtomicU64,
    synced: AtomicU64,
    appended: AtomicU64,
    flushed: Notify,
    wanted: Notify,
    counters: WalCounters,
}

/// Totals for `/metrics`.
#[derive(Debug, Default)]
pub struct WalCounters {
    pub appends: AtomicU64,
    pub appended_bytes: AtomicU64,
    pub refused_full: AtomicU64,
    pub write_errors: AtomicU64,
    pub flushes: AtomicU64,
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("seg-{start:020}.wal"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Wal {
    /// Opens the log in `config.dir` (created if missing) and reads back
    /// every record after the checkpoint.
    pub fn open(config: WalConfig) -> Result<(Arc<Wal>, Recovered), WalError> {
        std::fs::create_dir_all(&config.dir)?;
        let checkpoint = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(config.dir.join(CHECKPOINT))?;
        let mut buf = [0u8; 8];
        let stored = match checkpoint.read_exact_at(&mut buf, 0) {
            Ok(()) => u64::from_le_bytes(buf),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.into()),
        };
        let mut starts: Vec<u64> = std::fs::read_dir(&config.dir)?
            .filter_map(|e| {
                let name = e.ok()?.file_name();
                let name = name.to_str()?;
                name.strip_prefix("seg-")?
                    .strip_suffix(".wal")?
                    .parse()
                    .ok()
            })
            .collect();
        starts.sort_unstable();
        let mut recovered = Recovered::default();
        let mut segments = VecDeque::new();
        let mut next = stored;
        for (i, start) in starts.iter().enumerate() {
            let path = segment_path(&config.dir, *start);
            let end = starts.get(i + 1).copied();
            if end.is_some_and(|e| e <= stored) {
                // Wholly stored: left over from before the last clean-up.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let (read_to, torn) = read_segment(&path, *start, stored, &mut recovered.entries)?;
            next = next.max(read_to);
            if torn > 0 {
                // The end of the log: what follows was never acknowledged.
                recovered.torn_bytes += torn;
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(read_to - start)?;
                for later in &starts[i + 1..] {
                    let _ = std::fs::remove_file(segment_path(&config.dir, *later));
                }
                segments.push_back(Segment {
                    start: *start,
                    path,
                });
                break;
            }
            segments.push_back(Segment {
                start: *start,
                path,
            });
        }
        // Appends go to a fresh segment.
        let path = segment_path(&config.dir, next);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if segments.back().is_none_or(|s| s.start != next) {
            segments.push_back(Segment { start: next, path });
        }
        sync_dir(&config.dir, config.durability)?;
        let wal = Arc::new(Wal {
            appender: Mutex::new(Appender {
                file,
                next,
                segments,
                unsynced: Vec::new(),
            }),
            checkpoint,
            stored: AtomicU64::new(stored),
            synced: AtomicU64::new(next),
            appended: AtomicU64::new(next),
            flushed: Notify::new(),
            wanted: Notify::new(),
            counters: WalCounters::default(),
            config,
        });
        Ok((wal, recovered))
    }

    pub fn durability(&self) -> Durability {
        self.config.durability
    }

    pub fn counters(&self) -> &WalCounters {
        &self.counters
    }

    /// Bytes of records not stored yet (and the limit).
    pub fn pending_bytes(&self) -> (u64, u64) {
        let appended = self.appended.load(Ordering::Acquire);
        let stored = self.stored.load(Ordering::Acquire);
        (appended.saturating_sub(stored), self.config.max_bytes)
    }

    /// Segment files on disk.
    pub fn segments(&self) -> usize {
        lock(&self.appender).segments.len()
    }

    /// Figures for `/metrics`.
    pub fn stats(&self) -> WalStats {
        let (pending_bytes, max_bytes) = self.pending_bytes();
        let c = &self.counters;
        WalStats {
            pending_bytes,
            max_bytes,
            segments: self.segments() as u64,
            appends: c.appends.load(Ordering::Relaxed),
            appended_bytes: c.appended_bytes.load(Ordering::Relaxed),
            refused_full: c.refused_full.load(Ordering::Relaxed),
            write_errors: c.write_errors.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
        }
    }

    /// Encodes a record; done outside the queue's lock.
    pub fn encode(rows: &[CallRecord]) -> Result<Vec<u8>, WalError> {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            rows: &'a [CallRecord],
        }
        let mut out = vec![0u8; HEADER as usize];
        serde_json::to_writer(&mut out, &Borrowed { rows })?;
        let len = u32::try_from(out.len() as u64 - HEADER).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "record over 4 GiB")
        })?;
        let crc = crc32fast::hash(&out[HEADER as usize..]);
        out[..4].copy_from_slice(&len.to_le_bytes());
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Appends an encoded record; returns the position it ends at. The
    /// caller holds the queue's lock, so records are in queue order.
    pub fn append(&self, record: &[u8]) -> Result<u64, WalError> {
        let mut a = lock(&self.appender);
        let used = a.next.saturating_sub(self.stored.load(Ordering::Acquire));
        if used + record.len() as u64 > self.config.max_bytes {
            self.counters.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(WalError::Full {
                used,
                max: self.config.max_bytes,
            });
        }
        if let Err(e) = a.file.write_all(record) {
            self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
            // A partial record (disk full) is cut off, so the log stays a
            // run of whole records.
            let start = a.segments.back().map_or(a.next, |s| s.start);
            let _ = a.file.set_len(a.next - start);
            return Err(e.into());
        }
        a.next += record.len() as u64;
        let end = a.next;
        self.counters.appends.fetch_add(1, Ordering::Relaxed);
        self.counters
            .appended_bytes
            .fetch_add(record.len() as u64, Ordering::Relaxed);
        if end - a.segments.back().map_or(end, |s| s.start) >= self.config.segment_bytes {
            self.rotate(&mut a)?;
        }
        self.appended.store(end, Ordering::Release);
        Ok(end)
    }

    fn rotate(&self, a: &mut Appender) -> Result<(), WalError> {
        let path = segment_path(&self.config.dir, a.next);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let old = std::mem::replace(&mut a.file, file);
        if self.config.durability == Durability::Power {
            a.unsynced.push(old);
        }
        a.segments.push_back(Segment {
            start: a.next,
            path,
        });
        sync_dir(&self.config.dir, self.config.durability)?;
        Ok(())
    }

    /// Waits until the record ending at `end` is on the device (level
    /// `power`); returns at once otherwise.
    pub async fn durable(&self, end: u64) {
        if self.config.durability != Durability::Power {
            return;
        }
        loop {
            let flushed = self.flushed.notified();
            if self.synced.load(Ordering::Acquire) >= end {
                return;
            }
            self.wanted.notify_one();
            flushed.await;
        }
    }

    /// Flushes appended records to the device whenever a request waits for
    /// it: one `fdatasync` covers every record appended before it started.
    pub async fn run_flusher(self: Arc<Self>) {
        if self.config.durability != Durability::Power {
            return;
        }
        loop {
            self.wanted.notified().await;
            let wal = Arc::clone(&self);
            let done = tokio::task::spawn_blocking(move || wal.flush()).await;
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "write-ahead log flush failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    self.wanted.notify_one();
                }
                Err(e) => tracing::error!(error = %e, "write-ahead log flush task failed"),
            }
            self.flushed.notify_waiters();
        }
    }

    fn flush(&self) -> std::io::Result<()> {
        let (file, older, upto) = {
            let mut a = lock(&self.appender);
            (a.file.try_clone()?, std::mem::take(&mut a.unsynced), a.next)
        };
        for f in older {
            f.sync_data()?;
        }
        file.sync_data()?;
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        self.synced.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    /// Every record ending at or before `end` is stored: moves the
    /// checkpoint and deletes the segments wholly before it.
    pub fn stored_through(&self, end: u64) {
        if self.stored.fetch_max(end, Ordering::AcqRel) >= end {
            return;
        }
        // Losing this write costs a replay of stored rows (dropped as
        // repeats), never a row: no flush needed.
        if let Err(e) = self.checkpoint.write_all_at(&end.to_le_bytes(), 0) {
            tracing::warn!(error = %e, "could not write the write-ahead log checkpoint");
        }
        let mut a = lock(&self.appender);
        while a.segments.len() > 1 && a.segments.get(1).is_some_and(|s| s.start <= end) {
            if let Some(s) = a.segments.pop_front()
                && let Err(e) = std::fs::remove_file(&s.path)
            {
                tracing::warn!(error = %e, path = %s.path.display(), "could not delete a stored write-ahead log segment");
            }
        }
    }
}

fn sync_dir(dir: &Path, durability: Durability) -> std::io::Result<()> {
    if durability == Durability::Power {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads the records of the segment starting at `start` that end after
/// `stored`; returns where the segment's whole records end and how many
/// bytes follow them (a torn record).
fn read_segment(
    path: &Path,
    start: u64,
    stored: u64,
    out: &mut Vec<(u64, WalEntry)>,
) -> Result<(u64, u64), WalError> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut at = 0usize;
    loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            return Ok((start + at as u64, 0));
        }
        let torn = Ok((start + at as u64, rest.len() as u64));
        if rest.len() < HEADER as usize {
            return torn;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Some(payload) = rest.get(HEADER as usize..HEADER as usize + len) else {
            return torn;
        };
        if crc32fast::hash(payload) != crc {
            return torn;
        }
        let end = start + (at + HEADER as usize + len) as u64;
        if end > stored {
            match serde_json::from_slice::<WalEntry>(payload) {
                Ok(entry) => out.push((end, entry)),
                // Checksummed but unreadable: written by another version.
                Err(e) => {
                    tracing::error!(error = %e, end, "skipping a write-ahead log record that cannot be read")
                }
            }
        }
        at += HEADER as usize + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, max_bytes: u64) -> WalConfig {
        WalConfig {
            dir: dir.to_path_buf(),
            durability: Durability::Process,
            max_bytes,
            segment_bytes: 4096,
        }
    }

    fn rows(tag: &str, n: usize) -> Vec<CallRecord> {
        (0..n)
            .map(|i| CallRecord {
                span_id: format!("{tag}-{i}"),
                input_tokens: i as u64,
                ..Default::default()
            })
            .collect()
    }

    fn spans(entries: &[(u64, WalEntry)]) -> Vec<String> {
        entries
            .iter()
            .flat_map(|(_, e)| e.rows.iter().map(|r| r.span_id.clone()))
            .collect()
    }

    #[test]
    fn what_is_not_stored_comes_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, recovered) = Wal::open(config(dir.path(), 1 << 20)).unwrap();
        assert!(recovered.entries.is_empty());
        let mut ends = Vec::new();
        for i in 0..50 {
            ends.push(
                wal.append(&Wal::encode(&rows(&format!("r{i}"), 3)).unwrap())
                    .unwrap(),
            );
        }
        assert!(wal.segments() > 1, "segments rotate at 4 KiB");
        wal.stored_through(ends[29]);
        drop(wal);
        let (wal, recovered) = Wal::open(config(dir.path(), 1 << 20)).unwrap();
        let got = spans(&recovered.entries);
        assert_eq!(got.len(), 20 * 3);
        assert_eq!(got[0], "r30-0");
        assert_eq!(recovered.entries.last().unwrap().0, ends[49]);
        // Appends continue after what was read back.
        let end = wal.append(&Wal::encode(&rows("next", 1)).unwrap()).unwrap();
        assert!(end > ends[49]);
        wal.stored_through(end);
        drop(wal);
        let (_wal, recovered) = Wal::open(config(dir.path(), 1 << 20)).unwrap();
        assert!(recovered.entries.is_empty());
        // Stored segments were deleted.
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(files <= 3, "{files} files left");
    }

    #[test]
    fn a_torn_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(config(dir.path(), 1 << 20)).unwrap();
        wal.append(&Wal::encode(&rows("a", 2)).unwrap()).unwrap();
        let second = Wal::encode(&rows("b", 2)).unwrap();
        drop(wal);
        // A crash in the middle of the second record's write.
        let seg = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&second[..second.len() / 2]).unwrap();
        drop(f);
        let (wal, recovered) = Wal::open(config(dir.path(), 1 << 20)).unwrap();
        assert_eq!(spans(&recovered.entries), vec!["a-0", "a-1"]);
        assert_eq!(recovered.torn_bytes, second.len() as u64 / 2);
        // The log goes on after the whole records.
        wal.append(&Wal::encode(&rows("c", 1)).unwrap()).unwrap();
        drop(wal);
        let (_wal, recovered) = Wal::open(config(dir.path(), 1 << 20)).unwrap();
        assert_eq!(spans(&recovered.entries), vec!["a-0", "a-1", "c-0"]);
        // A flipped bit fails the checksum the same way.
    }

    #[test]
    fn past_its_size_the_log_refuses_until_rows_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let record = Wal::encode(&rows("x", 5)).unwrap();
        let (wal, _) = Wal::open(config(dir.path(), record.len() as u64 * 3)).unwrap();
        let mut last = 0;
        for _ in 0..3 {
            last = wal.append(&record).unwrap();
        }
        assert!(matches!(wal.append(&record), Err(WalError::Full { .. })));
        wal.stored_through(last);
        wal.append(&record).unwrap();
        assert_eq!(wal.counters().refused_full.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn power_level_waits_for_a_flush_covering_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), 1 << 20);
        c.durability = Durability::Power;
        let (wal, _) = Wal::open(c).unwrap();
        tokio::spawn(Arc::clone(&wal).run_flusher());
        let mut waits = Vec::new();
        for i in 0..20 {
            let end = wal
                .append(&Wal::encode(&rows(&format!("p{i}"), 1)).unwrap())
                .unwrap();
            let wal = Arc::clone(&wal);
            waits.push(tokio::spawn(async move { wal.durable(end).await }));
        }
        for w in waits {
            tokio::time::timeout(std::time::Duration::from_secs(10), w)
                .await
                .unwrap()
                .unwrap();
        }
        let flushes = wal.counters().flushes.load(Ordering::Relaxed);
        assert!((1..=20).contains(&flushes), "{flushes} flushes");
    }
}
