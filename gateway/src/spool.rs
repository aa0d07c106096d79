//! (Long because the record format, the segment scan with torn-tail repair, the size bound and the state file are one on-disk structure whose invariants are checked together; about 210 lines are unit and property tests.)
//!
//! The store-and-forward spool: every batch is on disk, fsynced, before it is
//! sent, and leaves the disk only once it is acknowledged (by ingest after its
//! commit, or by the broker's PUBACK with `uplink.ack = "broker"`).
//!
//! Layout of the spool folder:
//! - `seg-{first_seq:020}.wws`: segment files, each a run of records in
//!   `batch_seq` order. A new segment starts when the active one passes
//!   [`Spool::segment_bytes`].
//! - `state`: one line, `done_seq=N`: every batch with a sequence number up to N
//!   has left the spool (acknowledged, or dropped by the size bound). Written
//!   atomically (temporary file, fsync, rename, fsync of the folder) before any
//!   segment is deleted, so that `batch_seq` survives restarts even when the
//!   spool is empty.
//!
//! A record (all integers little-endian):
//! ```text
//! magic u32 "WWSP" | len u32 | seq u64 | crc32(seq bytes ++ payload) u32 | payload[len]
//! ```
//! On opening, each segment is read record by record; the first record that is
//! short, has a bad magic, a bad checksum or a sequence number out of order ends
//! that segment: the records before it are kept, and the last segment is cut
//! back to them (a torn tail after a power cut). It is logged and counted.
//!
//! Bound: `max_bytes`. When a new batch would pass it, whole segments are
//! dropped oldest first (their batches are lost to the uplink, counted in
//! `gateway_spool_dropped_batches_total` and logged): the newest readings are
//! worth more, because a meter's totalizer read later still covers the
//! consumption of the readings lost.
//!
//! This module must never send anything: it is only the disk.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"WWSP");
pub const RECORD_HEADER_BYTES: usize = 20;
/// Largest payload a record may hold (the wire contract's largest payload).
pub const MAX_RECORD_PAYLOAD_BYTES: usize = waterworks_wire::reading::MAX_PAYLOAD_BYTES;
/// Smallest `max_bytes` accepted: room for a few segments of full batches.
pub const MIN_SPOOL_BYTES: u64 = 1024 * 1024;
/// Segment size bounds; a segment holds `max_bytes / 16` clamped to these.
pub const MIN_SEGMENT_BYTES: u64 = 64 * 1024;
pub const MAX_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
const STATE_FILE: &str = "state";
/// Acknowledgements are written to `state` at most this often (and always
/// before a segment is deleted, and on close). A crash can therefore resend
/// batches acknowledged in the last second: at-least-once, never a loss, and
/// two fsyncs per batch saved on a busy spool.
pub const STATE_PERSIST_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
const SEGMENT_PREFIX: &str = "seg-";
const SEGMENT_SUFFIX: &str = ".wws";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("spool {path}: state file is malformed: {content:?}")]
    BadState { path: String, content: String },
    #[error(
        "batch of {0} bytes is larger than a spool record may be ({MAX_RECORD_PAYLOAD_BYTES})"
    )]
    TooLarge(usize),
    #[error("spool record {seq} failed its checksum when read back")]
    Corrupt { seq: u64 },
    #[error("spool {path} is in use by another gateway (its lock file is held); two gateways must not share a spool folder")]
    Locked { path: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

// ---------------------------------------------------------------- pure core

/// Encodes one record.
pub fn encode_record(seq: u64, payload: &[u8]) -> Vec<u8> {
    assert!(
        payload.len() <= MAX_RECORD_PAYLOAD_BYTES,
        "caller checks the size"
    );
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + payload.len());
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&checksum(seq, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Where a record lies in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPos {
    pub seq: u64,
    /// Offset of the record's header.
    pub offset: u64,
    pub payload_len: u32,
}

impl RecordPos {
    fn end(&self) -> u64 {
        self.offset + RECORD_HEADER_BYTES as u64 + u64::from(self.payload_len)
    }
}

/// Why a segment's scan stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTail {
    pub offset: u64,
    pub reason: &'static str,
}

/// Scans a segment's bytes: the complete, valid records in order, and where
/// (and why) the scan stopped if not at the end. Never panics on any input.
pub fn scan_records(buf: &[u8], after_seq: u64) -> (Vec<RecordPos>, Option<BadTail>) {
    let mut out = Vec::new();
    let mut off = 0usize;
    let mut last = after_seq;
    while off < buf.len() {
        let bad = |reason| {
            Some(BadTail {
                offset: off as u64,
                reason,
            })
        };
        let Some(h) = buf.get(off..off + RECORD_HEADER_BYTES) else {
            return (out, bad("short header"));
        };
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        if word(0) != RECORD_MAGIC {
            return (out, bad("bad magic"));
        }
        let len = word(4) as usize;
        if len > MAX_RECORD_PAYLOAD_BYTES {
            return (out, bad("impossible length"));
        }
        let seq = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
        let crc = word(16);
        let start = off + RECORD_HEADER_BYTES;
        let Some(payload) = buf.get(start..start + len) else {
            return (out, bad("short payload"));
        };
        if checksum(seq, payload) != crc {
            return (out, bad("bad checksum"));
        }
        if seq <= last {
            return (out, bad("sequence out of order"));
        }
        out.push(RecordPos {
            seq,
            offset: off as u64,
            payload_len: len as u32,
        });
        last = seq;
        off = start + len;
    }
    (out, None)
}

// ---------------------------------------------------------------- the spool on disk

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
    /// Bytes of valid records.
    bytes: u64,
    records: VecDeque<RecordPos>,
}

impl Segment {
    fn last_seq(&self) -> Option<u64> {
        self.records.back().map(|r| r.seq)
    }
}

/// What opening the spool found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Batches found waiting to be sent.
    pub pending_batches: u64,
    /// Segments whose tail was torn or corrupt (and records skipped there).
    pub torn_tails: Vec<(PathBuf, BadTail)>,
}

/// What an append did besides writing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    pub seq: u64,
    /// Batches dropped, oldest first, to stay within `max_bytes`.
    pub dropped_batches: u64,
}

/// The spool. Not shared between processes: one gateway owns its folder.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Oldest first; the last one is the active segment appended to.
    segments: VecDeque<Segment>,
    /// Every batch up to here has left the spool (persisted in `state`).
    done_seq: u64,
    /// `done_seq` as last written to `state`, and when.
    done_seq_persisted: u64,
    persisted_at: std::time::Instant,
    next_seq: u64,
    /// The open lock file, holding an exclusive `flock` for the spool's life
    /// (released by the kernel when the process ends, even by SIGKILL).
    _lock: File,
}

/// The lock file in a spool folder: one gateway per folder.
pub const LOCK_FILE: &str = "lock";

/// Takes the spool folder's lock, or fails at once if another holds it.
fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(SpoolError::Locked {
            path: dir.display().to_string(),
        }),
        Err(e) => Err(SpoolError::Io {
            path: path.display().to_string(),
            source: e.into(),
        }),
    }
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, recovering from a torn tail.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Spool, OpenReport), SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = lock_dir(dir)?;
        let done_seq = read_state(dir)?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(first) = name
                .strip_prefix(SEGMENT_PREFIX)
                .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            {
                names.push((first, entry.path()));
            }
        }
        names.sort();
        let mut report = OpenReport::default();
        let mut segments = VecDeque::new();
        let mut last_seq = done_seq;
        let count = names.len();
        for (i, (_, path)) in names.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let mut file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            let mut buf = Vec::new();
            file.read_to_end(&mut buf).map_err(io_err(&path))?;
            let (records, bad) = scan_records(&buf, 0);
            let valid_end = records.last().map_or(0, |r| r.end());
            if let Some(bad) = bad {
                tracing::warn!(segment = %path.display(), offset = bad.offset, reason = bad.reason,
                    "spool segment has a torn or corrupt tail; the complete records before it are kept");
                metrics::counter!("gateway_spool_torn_tails_total").increment(1);
                if is_last {
                    file.set_len(valid_end).map_err(io_err(&path))?;
                    file.sync_all().map_err(io_err(&path))?;
                }
                report.torn_tails.push((path.clone(), bad));
            }
            let records: VecDeque<RecordPos> = records
                .into_iter()
                .filter(|r| r.seq > done_seq && r.seq > last_seq_or_zero(&segments))
                .collect();
            if let Some(r) = records.back() {
                last_seq = last_seq.max(r.seq);
            }
            if records.is_empty() && !is_last {
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            segments.push_back(Segment {
                path,
                file,
                bytes: valid_end,
                records,
            });
        }
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 16).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
            segments,
            done_seq,
            done_seq_persisted: done_seq,
            persisted_at: std::time::Instant::now(),
            next_seq: last_seq + 1,
            _lock: lock,
        };
        report.pending_batches = spool.pending_batches();
        spool.drop_empty_segments()?;
        Ok((spool, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// The `batch_seq` the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Highest `batch_seq` ever written (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Every batch up to this one has left the spool.
    pub fn done_seq(&self) -> u64 {
        self.done_seq
    }

    pub fn pending_batches(&self) -> u64 {
        self.segments.iter().map(|s| s.records.len() as u64).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// The oldest batch still in the spool with a sequence number above `seq`.
    pub fn next_pending_after(&self, seq: u64) -> Option<u64> {
        // Segments and their records are in sequence order: two binary searches.
        let first = self
            .segments
            .partition_point(|s| s.last_seq().is_some_and(|last| last <= seq));
        self.segments.range(first..).find_map(|s| {
            let i = s.records.partition_point(|r| r.seq <= seq);
            s.records.get(i).map(|r| r.seq)
        })
    }

    /// Writes batch `seq` (which must be [`next_seq`](Self::next_seq)) and
    /// fsyncs it. On return the batch survives a power cut.
    pub fn append(&mut self, seq: u64, payload: &[u8]) -> Result<AppendOutcome, SpoolError> {
        assert_eq!(seq, self.next_seq, "batches are appended in sequence");
        if payload.len() > MAX_RECORD_PAYLOAD_BYTES {
            return Err(SpoolError::TooLarge(payload.len()));
        }
        let record = encode_record(seq, payload);
        let mut outcome = AppendOutcome {
            seq,
            dropped_batches: 0,
        };
        // Make room: drop whole segments, oldest first.
        while self.bytes() + record.len() as u64 > self.max_bytes && self.bytes() > 0 {
            if self.segments.len() == 1 {
                self.start_segment(seq)?;
            }
            let oldest = self.segments.front().expect("two segments at least");
            let n = oldest.records.len() as u64;
            let last = oldest.last_seq().unwrap_or(self.done_seq);
            if n > 0 {
                tracing::warn!(segment = %oldest.path.display(), batches = n, max_bytes = self.max_bytes,
                    "spool is full: dropping its oldest unsent batches to keep the newest");
                metrics::counter!("gateway_spool_dropped_batches_total").increment(n);
                outcome.dropped_batches += n;
            }
            self.set_done(last.max(self.done_seq))?;
            self.remove_front_segment()?;
        }
        let needs_new = match self.segments.back() {
            None => true,
            Some(s) => s.bytes > 0 && s.bytes + record.len() as u64 > self.segment_bytes,
        };
        if needs_new {
            self.start_segment(seq)?;
        }
        let seg = self.segments.back_mut().expect("an active segment");
        let offset = seg.bytes;
        seg.file.write_all(&record).map_err(io_err(&seg.path))?;
        seg.file.sync_data().map_err(io_err(&seg.path))?;
        seg.bytes += record.len() as u64;
        seg.records.push_back(RecordPos {
            seq,
            offset,
            payload_len: payload.len() as u32,
        });
        self.next_seq += 1;
        Ok(outcome)
    }

    /// Reads batch `seq` back, checking its checksum; `None` if it is not in the spool.
    pub fn read(&self, seq: u64) -> Result<Option<Vec<u8>>, SpoolError> {
        for seg in &self.segments {
            let (Some(first), Some(last)) = (seg.records.front(), seg.records.back()) else {
                continue;
            };
            if seq < first.seq || seq > last.seq {
                continue;
            }
            let Ok(i) = seg.records.binary_search_by_key(&seq, |r| r.seq) else {
                return Ok(None);
            };
            let r = seg.records[i];
            let mut buf = vec![0u8; RECORD_HEADER_BYTES + r.payload_len as usize];
            seg.file
                .read_exact_at(&mut buf, r.offset)
                .map_err(io_err(&seg.path))?;
            let (found, _) = scan_records(&buf, 0);
            if found.first().map(|f| f.seq) != Some(seq) {
                return Err(SpoolError::Corrupt { seq });
            }
            buf.drain(..RECORD_HEADER_BYTES);
            return Ok(Some(buf));
        }
        Ok(None)
    }

    /// Marks every batch up to `seq` as acknowledged: they leave the spool.
    /// Segments wholly acknowledged are deleted (after `state` records it).
    pub fn ack_through(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq <= self.done_seq {
            return Ok(());
        }
        let seq = seq.min(self.last_seq());
        self.done_seq = seq;
        for seg in &mut self.segments {
            while seg.records.front().is_some_and(|r| r.seq <= seq) {
                seg.records.pop_front();
            }
        }
        self.drop_empty_segments()?;
        if self.persisted_at.elapsed() >= STATE_PERSIST_INTERVAL {
            self.persist_state()?;
        }
        Ok(())
    }

    /// Writes `done_seq` to disk if it moved; called on close and periodically.
    pub fn persist_state(&mut self) -> Result<(), SpoolError> {
        if self.done_seq != self.done_seq_persisted {
            write_state(&self.dir, self.done_seq)?;
            self.done_seq_persisted = self.done_seq;
        }
        self.persisted_at = std::time::Instant::now();
        Ok(())
    }

    fn set_done(&mut self, seq: u64) -> Result<(), SpoolError> {
        self.done_seq = seq;
        self.persist_state()
    }

    /// Deletes fully acknowledged segments except the active one, which keeps
    /// its acknowledged records until it rolls over (no write per ack).
    fn drop_empty_segments(&mut self) -> Result<(), SpoolError> {
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.records.is_empty())
        {
            self.persist_state()?;
            self.remove_front_segment()?;
        }
        Ok(())
    }

    fn remove_front_segment(&mut self) -> Result<(), SpoolError> {
        if let Some(seg) = self.segments.pop_front() {
            std::fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
        }
        Ok(())
    }

    fn start_segment(&mut self, first_seq: u64) -> Result<(), SpoolError> {
        let path = self
            .dir
            .join(format!("{SEGMENT_PREFIX}{first_seq:020}{SEGMENT_SUFFIX}"));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        file.set_len(0).map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        // A fully acknowledged active segment is useless once another starts;
        // `state` must say so before it goes, or batch_seq could repeat.
        if self.segments.back().is_some_and(|s| s.records.is_empty()) {
            self.persist_state()?;
            let old = self.segments.pop_back().expect("checked");
            if old.path != path {
                std::fs::remove_file(&old.path).map_err(io_err(&old.path))?;
            }
        }
        self.segments.push_back(Segment {
            path,
            file,
            bytes: 0,
            records: VecDeque::new(),
        });
        Ok(())
    }
}

fn last_seq_or_zero(segments: &VecDeque<Segment>) -> u64 {
    segments.back().and_then(|s| s.last_seq()).unwrap_or(0)
}

fn read_state(dir: &Path) -> Result<u64, SpoolError> {
    let path = dir.join(STATE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .strip_prefix("done_seq=")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| SpoolError::BadState {
                path: path.display().to_string(),
                content: text.chars().take(80).collect(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err(&path)(e)),
    }
}

fn write_state(dir: &Path, done_seq: u64) -> Result<(), SpoolError> {
    let tmp = dir.join("state.tmp");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(format!("done_seq={done_seq}\n").as_bytes())
        .map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    let path = dir.join(STATE_FILE);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn payload(seq: u64) -> Vec<u8> {
        format!(
            "{{\"batch\":{seq},\"pad\":\"{}\"}}",
            "x".repeat((seq % 50) as usize)
        )
        .into_bytes()
    }

    #[test]
    fn records_round_trip_and_torn_tails_are_detected() {
        let mut buf = Vec::new();
        for s in 1..=3 {
            buf.extend(encode_record(s, &payload(s)));
        }
        let (recs, bad) = scan_records(&buf, 0);
        assert_eq!(
            recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(bad, None);
        let full = buf.len();
        for cut in 1..full {
            let (recs, bad) = scan_records(&buf[..cut], 0);
            let whole = recs.last().map_or(0, |r| r.end()) as usize;
            assert!(whole <= cut);
            assert_eq!(bad.is_some(), whole < cut, "cut {cut}");
        }
        let mut flipped = buf.clone();
        let at = recs[1].offset as usize + RECORD_HEADER_BYTES + 2;
        flipped[at] ^= 0x40;
        let (recs2, bad) = scan_records(&flipped, 0);
        assert_eq!(recs2.len(), 1);
        assert_eq!(bad.unwrap().reason, "bad checksum");
    }

    proptest! {
        #[test]
        fn scanning_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = scan_records(&bytes, 0);
        }
    }

    #[test]
    fn one_gateway_per_spool_folder() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(dir.path(), MIN_SPOOL_BYTES).unwrap();
        let e = Spool::open(dir.path(), MIN_SPOOL_BYTES).unwrap_err();
        assert!(matches!(e, SpoolError::Locked { .. }), "{e:?}");
        assert!(e.to_string().contains("another gateway"), "{e}");
        drop(s);
        Spool::open(dir.path(), MIN_SPOOL_BYTES).expect("free again once closed");
    }

    #[test]
    fn seq_survives_restart_even_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Spool::open(dir.path(), MIN_SPOOL_BYTES).unwrap();
            for seq in 1..=5 {
                s.append(seq, &payload(seq)).unwrap();
            }
            s.ack_through(5).unwrap();
            assert_eq!(s.pending_batches(), 0);
            // A crash before the lazy state write: the acknowledged batches come
            // back (sent again, at-least-once), and the sequence still goes on.
        }
        let (mut s, r) = Spool::open(dir.path(), MIN_SPOOL_BYTES).unwrap();
        assert_eq!(r.pending_batches, 5);
        assert_eq!(s.next_seq(), 6);
        s.ack_through(5).unwrap();
        s.persist_state().unwrap();
        drop(s);
        let (s, r) = Spool::open(dir.path(), MIN_SPOOL_BYTES).unwrap();
        assert_eq!(r.pending_batches, 0);
        assert_eq!(s.next_seq(), 6);
    }

    #[test]
    fn unacked_batches_survive_and_are_read_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Spool::open(dir.path(), MIN_SPOOL_BYTES).unwrap();
            for seq in 1..=10 {
                s.append(seq, &payload(seq)).unwrap();
            }
            s.ack_through(3).unwrap();
            // state is persisted lazily: a crash here resends 1..=3 (at-least-once)
        }
        let (mut s, r) = Spool::open(dir.path(), MIN_SPOOL_BYTES).unwrap();
        assert!(r.pending_batches >= 7);
        let mut seq = s.done_seq();
        let mut got = vec![];
        while let Some(n) = s.next_pending_after(seq) {
            assert_eq!(s.read(n).unwrap().unwrap(), payload(n));
            got.push(n);
            seq = n;
        }
        assert_eq!(got.last(), Some(&10));
        assert_eq!(s.next_seq(), 11);
        s.append(11, b"x").unwrap();
    }

    #[test]
    fn torn_tail_is_cut_and_complete_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Spool::open(dir.path(), MIN_SPOOL_BYTES).unwrap();
            for seq in 1..=4 {
                s.append(seq, &payload(seq)).unwrap();
            }
        }
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "wws"))
            .unwrap();
        // A power cut in the middle of writing batch 5.
        let half = encode_record(5, &payload(5));
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&half[..half.len() / 2]).unwrap();
        drop(f);
        let (mut s, r) = Spool::open(dir.path(), MIN_SPOOL_BYTES).unwrap();
        assert_eq!(r.torn_tails.len(), 1);
        assert_eq!(r.pending_batches, 4);
        assert_eq!(s.next_seq(), 5);
        s.append(5, &payload(5)).unwrap();
        drop(s);
        let (s, r) = Spool::open(dir.path(), MIN_SPOOL_BYTES).unwrap();
        assert!(r.torn_tails.is_empty());
        assert_eq!(s.read(5).unwrap().unwrap(), payload(5));
    }

    #[test]
    fn full_spool_drops_oldest_segments_and_keeps_newest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), MIN_SPOOL_BYTES).unwrap();
        let big = vec![b'a'; 20_000];
        let mut dropped = 0;
        for seq in 1..=200 {
            dropped += s.append(seq, &big).unwrap().dropped_batches;
            assert!(s.bytes() <= MIN_SPOOL_BYTES);
        }
        assert!(dropped > 0);
        assert_eq!(s.read(200).unwrap().unwrap(), big);
        assert_eq!(s.pending_batches() + dropped, 200);
        assert_eq!(s.next_pending_after(0), Some(dropped + 1));
        drop(s);
        let (s, _) = Spool::open(dir.path(), MIN_SPOOL_BYTES).unwrap();
        assert_eq!(s.next_seq(), 201);
        assert_eq!(s.next_pending_after(0), Some(dropped + 1));
    }

    #[test]
    fn acked_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), MIN_SPOOL_BYTES).unwrap();
        let big = vec![b'a'; 30_000];
        for seq in 1..=20 {
            s.append(seq, &big).unwrap();
        }
        let before = std::fs::read_dir(dir.path()).unwrap().count();
        s.ack_through(20).unwrap();
        let after = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(after < before, "{before} -> {after}");
        assert!(s.bytes() <= s.segment_bytes());
        assert_eq!(s.pending_batches(), 0);
        // The state was written before segments went: the sequence survives.
        drop(s);
        let (s, _) = Spool::open(dir.path(), MIN_SPOOL_BYTES).unwrap();
        assert_eq!(s.next_seq(), 21);
    }

    proptest! {
        // Each append fsyncs: few cases keep this test at a second or two.
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// Whatever is appended, acknowledged and reopened, the pending batches
        /// are exactly those appended above the acknowledged watermark, in order.
        #[test]
        fn pending_is_what_was_not_acked(
            ops in proptest::collection::vec((1usize..15, 0u64..20, any::<bool>()), 1..8)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (mut s, _) = Spool::open(dir.path(), MIN_SPOOL_BYTES).unwrap();
            let mut acked = 0u64;
            for (appends, ack_back, reopen) in ops {
                for _ in 0..appends {
                    let seq = s.next_seq();
                    s.append(seq, &vec![b'x'; 9_000]).unwrap();
                }
                let target = s.last_seq().saturating_sub(ack_back).max(acked);
                s.ack_through(target).unwrap();
                acked = target;
                if reopen {
                    s.persist_state().unwrap();
                    drop(s);
                    s = Spool::open(dir.path(), MIN_SPOOL_BYTES).unwrap().0;
                }
                let mut got = vec![];
                let mut at = s.done_seq();
                while let Some(n) = s.next_pending_after(at) {
                    got.push(n);
                    at = n;
                }
                let want: Vec<u64> = (acked + 1..=s.last_seq()).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
