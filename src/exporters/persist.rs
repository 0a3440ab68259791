//! The persistent sending queue: an append-only, checksummed segment log on disk.
//!
//! Every accepted request is appended as a *data* record before the client is answered
//! (`ack: durable`). When a consumer starts sending a record it appends a small *sending*
//! marker; when the record is done (delivered, or dropped for good) an *ack* marker. On start,
//! every data record without an ack is replayed; those that carried a sending marker may
//! already have reached the backend and are counted as replayed (possible duplicates).
//!
//! Frame: `magic "TGQ1" | body length u32 LE | CRC32 u32 LE (of length and body) | body`.
//! The magic lets recovery skip a damaged region and resynchronise on the next intact record,
//! so a torn tail or flipped bytes lose only the damaged records; the damaged bytes are moved
//! to `corrupt/` next to the segments and reported.
//!
//! Segments are deleted oldest first once all their data records are acknowledged (ack
//! markers always live in the same or a later segment than their data, so deleting in order
//! never forgets an acknowledgement that still matters). All writes go through one thread
//! that commits in groups: one `write` and at most one `fsync` per group.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::sync::oneshot;

use crate::component::{Payload, Signal};

const MAGIC: [u8; 4] = *b"TGQ1";
const HEADER: usize = 12;
/// Larger bodies are treated as damage (a flipped length byte must not make us skip a file).
const MAX_BODY: usize = 1 << 30;

const KIND_DATA: u8 = 1;
const KIND_SENDING: u8 = 2;
const KIND_ACK: u8 = 3;

/// Where and how the queue is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    pub directory: PathBuf,
    /// `fsync` after every group of data records before the client is answered.
    pub fsync: bool,
    /// Upper bound of the segment files' total size in bytes.
    pub max_size: u64,
    /// A segment is closed and a new one started beyond this size.
    pub segment_size: u64,
}

impl StorageConfig {
    pub fn segment_size_for(max_size: u64) -> u64 {
        (max_size / 8).clamp(64 * 1024, 16 * 1024 * 1024)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("persistent queue is full ({used} of {max} bytes on disk)")]
    Full { used: u64, max: u64 },
    #[error("the request takes {size} bytes in the persistent queue, more than its whole size ({max} bytes, storage.max_size_mib)")]
    TooLarge { size: u64, max: u64 },
    #[error("persistent queue write failed: {0}")]
    Io(String),
    #[error("persistent queue is closed")]
    Closed,
}

/// Where a record's frame is on disk (payloads found at start are read back only when sent,
/// so a large backlog does not have to fit in memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub segment: PathBuf,
    pub offset: u64,
    pub len: u64,
}

/// One unsent request found on disk at start.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: u64,
    pub pipeline: String,
    pub signal: Signal,
    /// Spans, data points or log records in it.
    pub items: u64,
    pub location: Location,
    /// A consumer had started sending it: the backend may already have it.
    pub was_sending: bool,
}

/// Reads a recovered record's payload back from its segment (checksum verified again).
pub fn read_payload(loc: &Location) -> Result<Payload, String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(&loc.segment).map_err(|e| e.to_string())?;
    f.seek(SeekFrom::Start(loc.offset))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; loc.len as usize];
    f.read_exact(&mut buf).map_err(|e| e.to_string())?;
    match frame_at(&buf, 0) {
        Some((Body::Data { payload, .. }, _)) => Ok(payload),
        _ => Err(format!(
            "record at {}:{} no longer reads back intact",
            loc.segment.display(),
            loc.offset
        )),
    }
}

/// A damaged region found at start and moved aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub segment: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    /// Where the damaged bytes were copied (`None` when there was no room).
    pub moved_to: Option<PathBuf>,
}

/// What [`Store::open`] found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Unsent records, oldest first.
    pub records: Vec<Record>,
    pub damage: Vec<Damage>,
}

enum Cmd {
    Data {
        id: u64,
        frame: Vec<u8>,
        done: Option<oneshot::Sender<Result<(), String>>>,
    },
    Mark {
        kind: u8,
        id: u64,
        done: Option<oneshot::Sender<Result<(), String>>>,
    },
    Close {
        done: std::sync::mpsc::Sender<()>,
    },
}

/// Resolves once a data record is written: `Err` carries the I/O error text.
pub type Written = oneshot::Receiver<Result<(), String>>;

/// The open segment log. Cheap to share (`Arc`); all writes go to its writer thread.
pub struct Store {
    tx: Mutex<Option<mpsc::Sender<Cmd>>>,
    next_id: AtomicU64,
    used: Arc<AtomicU64>,
    max_size: u64,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Encodes a data record body.
fn data_body(id: u64, pipeline: &str, payload: &Payload) -> Vec<u8> {
    let p = pipeline.as_bytes();
    let p = &p[..p.len().min(u16::MAX as usize)];
    let proto_len = match payload {
        Payload::Traces(r) => r.encoded_len(),
        Payload::Metrics(r) => r.encoded_len(),
        Payload::Logs(r) => r.encoded_len(),
    };
    let mut b = Vec::with_capacity(12 + p.len() + proto_len);
    b.push(KIND_DATA);
    b.extend_from_slice(&id.to_le_bytes());
    b.push(payload.signal() as u8);
    b.extend_from_slice(&(p.len() as u16).to_le_bytes());
    b.extend_from_slice(p);
    // Encoding into a Vec cannot run out of space.
    let _ = match payload {
        Payload::Traces(r) => r.encode(&mut b),
        Payload::Metrics(r) => r.encode(&mut b),
        Payload::Logs(r) => r.encode(&mut b),
    };
    b
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(HEADER + body.len());
    frame_into(&mut f, body);
    f
}

fn frame_into(out: &mut Vec<u8>, body: &[u8]) {
    let len = (body.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(body);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(body);
}

/// A decoded record body.
enum Body {
    Data {
        id: u64,
        pipeline: String,
        payload: Payload,
    },
    Mark {
        kind: u8,
        id: u64,
    },
}

fn parse_body(b: &[u8]) -> Option<Body> {
    let kind = *b.first()?;
    let id = u64::from_le_bytes(b.get(1..9)?.try_into().ok()?);
    match kind {
        KIND_DATA => {
            let signal = *b.get(9)?;
            let plen = u16::from_le_bytes(b.get(10..12)?.try_into().ok()?) as usize;
            let pipeline = std::str::from_utf8(b.get(12..12 + plen)?).ok()?.to_string();
            let proto = b.get(12 + plen..)?;
            let payload = match signal {
                s if s == Signal::Traces as u8 => {
                    Payload::Traces(ExportTraceServiceRequest::decode(proto).ok()?)
                }
                s if s == Signal::Metrics as u8 => {
                    Payload::Metrics(ExportMetricsServiceRequest::decode(proto).ok()?)
                }
                s if s == Signal::Logs as u8 => {
                    Payload::Logs(ExportLogsServiceRequest::decode(proto).ok()?)
                }
                _ => return None,
            };
            Some(Body::Data {
                id,
                pipeline,
                payload,
            })
        }
        KIND_SENDING | KIND_ACK if b.len() == 9 => Some(Body::Mark { kind, id }),
        _ => None,
    }
}

/// Tries to read one intact frame at `pos`; returns the body and the frame's length.
fn frame_at(data: &[u8], pos: usize) -> Option<(Body, usize)> {
    let h = data.get(pos..pos + HEADER)?;
    if h[0..4] != MAGIC {
        return None;
    }
    let len_bytes: [u8; 4] = h[4..8].try_into().ok()?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_BODY {
        return None;
    }
    let crc = u32::from_le_bytes(h[8..12].try_into().ok()?);
    let body = data.get(pos + HEADER..pos + HEADER + len)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(body);
    if hasher.finalize() != crc {
        return None;
    }
    Some((parse_body(body)?, HEADER + len))
}

/// Splits a segment's bytes into intact records (with their frame ranges) and damaged ranges.
type Span = std::ops::Range<usize>;

fn scan(data: &[u8]) -> (Vec<(Body, Span)>, Vec<Span>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        if let Some((body, n)) = frame_at(data, pos) {
            good.push((body, pos..pos + n));
            pos += n;
            continue;
        }
        // Damaged: resynchronise on the next magic that starts an intact frame.
        let start = pos;
        let mut next = data.len();
        let mut p = pos + 1;
        while let Some(off) = data
            .get(p..)
            .and_then(|rest| rest.windows(4).position(|w| w == MAGIC))
        {
            let cand = p + off;
            if frame_at(data, cand).is_some() {
                next = cand;
                break;
            }
            p = cand + 1;
        }
        bad.push(start..next);
        pos = next;
    }
    (good, bad)
}

/// Deals with a segment's damaged ranges without ever needing free space to start: the
/// damaged bytes are copied to `corrupt/` when there is room (best effort); a torn tail is
/// cut off in place (truncation frees space); damage elsewhere is cut out by rewriting the
/// segment when there is room, else left in place and skipped (found and reported again at
/// the next start). Returns the segment's size; `offsets` follow the intact frames.
#[allow(clippy::too_many_arguments)]
fn set_aside(
    dir: &Path,
    n: u64,
    path: &Path,
    bytes: &[u8],
    good: &[(Body, Span)],
    bad: &[Span],
    offsets: &mut [usize],
    recovery: &mut Recovery,
) -> u64 {
    let cdir = dir.join("corrupt");
    for r in bad {
        let target = cdir.join(format!("{}-{}.bad", segment_name(n), r.start));
        let copied = fs::create_dir_all(&cdir)
            .and_then(|()| fs::write(&target, &bytes[r.clone()]))
            .map_err(|e| {
                let _ = fs::remove_file(&target);
                tracing::warn!(segment = %path.display(), offset = r.start, bytes = r.len(), error = %e, "persistent queue: could not copy damaged bytes to corrupt/ (disk full?); they are skipped");
            })
            .is_ok();
        recovery.damage.push(Damage {
            segment: path.to_path_buf(),
            offset: r.start as u64,
            bytes: r.len() as u64,
            moved_to: copied.then_some(target),
        });
    }
    // Only a torn tail: cut it off in place.
    if let [tail] = bad {
        if tail.end == bytes.len() {
            let cut = OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(tail.start as u64).and_then(|()| f.sync_all()));
            match cut {
                Ok(()) => return tail.start as u64,
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "persistent queue: could not truncate a torn tail; it is skipped");
                    return bytes.len() as u64;
                }
            }
        }
    }
    // Rewrite the segment with the intact frames only, when there is room.
    let mut clean = Vec::with_capacity(bytes.len());
    let mut new_offsets = Vec::with_capacity(good.len());
    for (_, r) in good {
        new_offsets.push(clean.len());
        clean.extend_from_slice(&bytes[r.clone()]);
    }
    let tmp = path.with_extension("tmp");
    let rewritten = File::create(&tmp)
        .and_then(|mut f| f.write_all(&clean).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&tmp, path));
    match rewritten {
        Ok(()) => {
            sync_dir(dir);
            offsets.copy_from_slice(&new_offsets);
            clean.len() as u64
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            tracing::warn!(segment = %path.display(), error = %e, "persistent queue: could not rewrite a damaged segment (disk full?); damaged ranges are left in place and skipped");
            bytes.len() as u64
        }
    }
}

fn segment_name(n: u64) -> String {
    format!("{n:016}.seg")
}

fn segment_number(p: &Path) -> Option<u64> {
    let name = p.file_name()?.to_str()?;
    name.strip_suffix(".seg")?.parse().ok()
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

struct Segment {
    number: u64,
    size: u64,
    /// Data records in this segment not yet acknowledged.
    outstanding: u64,
}

struct Writer {
    dir: PathBuf,
    fsync: bool,
    segment_size: u64,
    segments: VecDeque<Segment>,
    /// Unacknowledged data record id → its segment number.
    owner: HashMap<u64, u64>,
    active: File,
    used: Arc<AtomicU64>,
}

impl Store {
    /// Opens (creating) the queue in `cfg.directory`, recovers what is there and starts the
    /// writer thread. Damaged regions are moved aside, never fatal; only I/O errors on the
    /// directory itself fail.
    pub fn open(cfg: &StorageConfig) -> io::Result<(Store, Recovery)> {
        let dir = cfg.directory.clone();
        fs::create_dir_all(&dir)?;
        let mut numbers: Vec<(u64, PathBuf)> = Vec::new();
        for e in fs::read_dir(&dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "tmp") {
                let _ = fs::remove_file(&p);
            } else if let Some(n) = segment_number(&p) {
                numbers.push((n, p));
            }
        }
        numbers.sort();

        let mut recovery = Recovery::default();
        let mut segments: VecDeque<Segment> = VecDeque::new();
        // (segment, id, pipeline, signal, items, location)
        let mut data: Vec<(u64, u64, String, Signal, u64, Location)> = Vec::new();
        let mut seen: HashSet<u64> = HashSet::new();
        let mut acked: HashSet<u64> = HashSet::new();
        let mut sending: HashSet<u64> = HashSet::new();
        let mut max_id = 0u64;
        for (n, path) in &numbers {
            let bytes = fs::read(path)?;
            let (good, bad) = scan(&bytes);
            let mut size = bytes.len() as u64;
            // Where each intact frame ends up (moved up when damaged bytes are cut out).
            let mut offsets: Vec<usize> = good.iter().map(|(_, r)| r.start).collect();
            if !bad.is_empty() {
                size = set_aside(
                    &dir,
                    *n,
                    path,
                    &bytes,
                    &good,
                    &bad,
                    &mut offsets,
                    &mut recovery,
                );
            }
            drop(bytes);
            for ((body, r), off) in good.into_iter().zip(offsets) {
                match body {
                    Body::Data {
                        id,
                        pipeline,
                        payload,
                    } => {
                        max_id = max_id.max(id);
                        if seen.insert(id) {
                            let location = Location {
                                segment: path.clone(),
                                offset: off as u64,
                                len: r.len() as u64,
                            };
                            let (signal, items) = (payload.signal(), payload.item_count());
                            data.push((*n, id, pipeline, signal, items, location));
                        }
                    }
                    Body::Mark { kind, id } => {
                        max_id = max_id.max(id);
                        if kind == KIND_ACK {
                            acked.insert(id);
                        } else {
                            sending.insert(id);
                        }
                    }
                }
            }
            segments.push_back(Segment {
                number: *n,
                size,
                outstanding: 0,
            });
        }
        let mut owner = HashMap::new();
        for (seg, id, pipeline, signal, items, location) in data {
            if acked.contains(&id) {
                continue;
            }
            if let Some(s) = segments.iter_mut().find(|s| s.number == seg) {
                s.outstanding += 1;
            }
            owner.insert(id, seg);
            recovery.records.push(Record {
                id,
                pipeline,
                signal,
                items,
                location,
                was_sending: sending.contains(&id),
            });
        }
        // Fully acknowledged segments at the front are done.
        while segments.front().is_some_and(|s| s.outstanding == 0) {
            if let Some(s) = segments.pop_front() {
                let _ = fs::remove_file(dir.join(segment_name(s.number)));
            }
        }
        // Always write into a fresh segment: never append after a possibly torn tail.
        let next_number = numbers.last().map_or(0, |(n, _)| n + 1);
        let active = open_segment(&dir, next_number)?;
        sync_dir(&dir);
        segments.push_back(Segment {
            number: next_number,
            size: 0,
            outstanding: 0,
        });
        let used = Arc::new(AtomicU64::new(segments.iter().map(|s| s.size).sum()));
        let writer = Writer {
            dir,
            fsync: cfg.fsync,
            segment_size: cfg.segment_size.max(1),
            segments,
            owner,
            active,
            used: used.clone(),
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tollgate-queue".into())
            .spawn(move || writer.run(rx))?;
        Ok((
            Store {
                tx: Mutex::new(Some(tx)),
                next_id: AtomicU64::new(max_id + 1),
                used,
                max_size: cfg.max_size,
                thread: Mutex::new(Some(thread)),
            },
            recovery,
        ))
    }

    /// Bytes the segment files take now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn send(&self, cmd: Cmd) -> Result<(), StoreError> {
        let tx = self.tx.lock().ok().and_then(|g| g.clone());
        tx.ok_or(StoreError::Closed)?
            .send(cmd)
            .map_err(|_| StoreError::Closed)
    }

    /// Appends a data record; with `wait`, resolves once it is written (and fsynced when
    /// configured). Returns the record id.
    pub fn append(
        &self,
        pipeline: &str,
        payload: &Payload,
        wait: bool,
    ) -> Result<(u64, Option<Written>), StoreError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let f = frame(&data_body(id, pipeline, payload));
        let len = f.len() as u64;
        if len > self.max_size {
            return Err(StoreError::TooLarge {
                size: len,
                max: self.max_size,
            });
        }
        // Reserve the space up front so concurrent appends cannot overshoot the bound.
        let prev = self.used.fetch_add(len, Ordering::AcqRel);
        if prev + len > self.max_size {
            self.used.fetch_sub(len, Ordering::AcqRel);
            return Err(StoreError::Full {
                used: prev,
                max: self.max_size,
            });
        }
        let (done, rx) = if wait {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        if let Err(e) = self.send(Cmd::Data { id, frame: f, done }) {
            self.used.fetch_sub(len, Ordering::AcqRel);
            return Err(e);
        }
        Ok((id, rx))
    }

    /// Records that a consumer starts sending `id`.
    /// Resolves once the marker is written (to the OS, not fsynced): a record can then never
    /// reach the backend without being counted as possibly sent after a crash.
    pub async fn mark_sending(&self, id: u64) {
        let (done, written) = oneshot::channel();
        if self
            .send(Cmd::Mark {
                kind: KIND_SENDING,
                id,
                done: Some(done),
            })
            .is_ok()
        {
            let _ = written.await;
        }
    }

    /// Records that `id` is done (delivered or dropped for good); its space is reclaimed
    /// once its segment is fully acknowledged.
    pub fn ack(&self, id: u64) {
        let _ = self.send(Cmd::Mark {
            kind: KIND_ACK,
            id,
            done: None,
        });
    }

    /// Writes everything pending, syncs and stops the writer thread (blocking).
    pub fn close(&self) {
        let tx = self.tx.lock().ok().and_then(|mut g| g.take());
        if let Some(tx) = tx {
            let (done, wait) = std::sync::mpsc::channel();
            if tx.send(Cmd::Close { done }).is_ok() {
                let _ = wait.recv();
            }
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut g| g.take()) {
            let _ = t.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

fn open_segment(dir: &Path, n: u64) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(segment_name(n)))
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let mut buf: Vec<u8> = Vec::new();
        let mut waiters: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
        let mut acks: Vec<u64> = Vec::new();
        let mut group_ids: Vec<u64> = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut close: Option<std::sync::mpsc::Sender<()>> = None;
            let mut data_bytes = 0u64;
            let mut cmd = Some(first);
            // Group commit: take everything already waiting (bounded so replies keep flowing).
            let mut taken = 0;
            while let Some(c) = cmd.take() {
                taken += 1;
                match c {
                    Cmd::Data { id, frame, done } => {
                        buf.extend_from_slice(&frame);
                        data_bytes += frame.len() as u64;
                        group_ids.push(id);
                        if let Some(s) = self.segments.back_mut() {
                            s.outstanding += 1;
                            self.owner.insert(id, s.number);
                        }
                        if let Some(d) = done {
                            waiters.push(d);
                        }
                    }
                    Cmd::Mark { kind, id, done } => {
                        if let Some(d) = done {
                            waiters.push(d);
                        }
                        let mut body = [0u8; 9];
                        body[0] = kind;
                        body[1..].copy_from_slice(&id.to_le_bytes());
                        frame_into(&mut buf, &body);
                        if kind == KIND_ACK {
                            acks.push(id);
                        }
                    }
                    Cmd::Close { done } => {
                        close = Some(done);
                        break;
                    }
                }
                if taken < 4096 {
                    cmd = rx.try_recv().ok();
                }
            }
            let res = self.write(&buf, data_bytes);
            buf.clear();
            if let Err(e) = &res {
                tracing::error!(directory = %self.dir.display(), error = %e, "persistent queue write failed");
                // The clients are told to retry: these records are not expected to be sent.
                acks.append(&mut group_ids);
            }
            group_ids.clear();
            for w in waiters.drain(..) {
                let _ = w.send(res.clone());
            }
            for id in acks.drain(..) {
                self.acknowledge(id);
            }
            self.reclaim();
            if res.is_err() {
                // Out of space: also reclaim the active segment once everything is done.
                self.reclaim_active();
            }
            if let Some(done) = close {
                let _ = self.active.sync_all();
                let _ = done.send(());
                return;
            }
        }
        let _ = self.active.sync_all();
    }

    fn write(&mut self, buf: &[u8], data_bytes: u64) -> Result<(), String> {
        if buf.is_empty() {
            return Ok(());
        }
        let n = buf.len() as u64;
        // Data bytes were reserved by `append`; marker bytes are counted here.
        self.used
            .fetch_add(n.saturating_sub(data_bytes), Ordering::AcqRel);
        let before = self.segments.back().map_or(0, |s| s.size);
        if let Some(s) = self.segments.back_mut() {
            s.size += n;
        }
        let written = self.active.write_all(buf).and_then(|()| {
            if data_bytes > 0 && self.fsync {
                self.active.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Cut a partly written group off again (truncation needs no space), so the
            // segment ends on a whole frame and its size is known.
            if self.active.set_len(before).is_ok() {
                if let Some(s) = self.segments.back_mut() {
                    s.size = before;
                }
                let _ = self
                    .used
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                        Some(u.saturating_sub(n))
                    });
            }
            return Err(e.to_string());
        }
        if self
            .segments
            .back()
            .is_some_and(|s| s.size >= self.segment_size)
        {
            self.rotate().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let next = self.segments.back().map_or(0, |s| s.number + 1);
        let f = open_segment(&self.dir, next)?;
        if self.fsync {
            self.active.sync_all()?;
            sync_dir(&self.dir);
        }
        self.active = f;
        self.segments.push_back(Segment {
            number: next,
            size: 0,
            outstanding: 0,
        });
        Ok(())
    }

    fn acknowledge(&mut self, id: u64) {
        if let Some(seg) = self.owner.remove(&id) {
            if let Some(s) = self.segments.iter_mut().find(|s| s.number == seg) {
                s.outstanding = s.outstanding.saturating_sub(1);
            }
        }
    }

    /// Empties the active segment in place when it is the only one left and every record
    /// in it is done (delivered or given up): after a write error on a full disk nothing
    /// else would ever free its space.
    fn reclaim_active(&mut self) {
        let [only] = self.segments.make_contiguous() else {
            return;
        };
        if only.outstanding > 0 || only.size == 0 {
            return;
        }
        match self.active.set_len(0) {
            Ok(()) => {
                let freed = only.size;
                only.size = 0;
                let _ = self
                    .used
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                        Some(u.saturating_sub(freed))
                    });
                tracing::info!(directory = %self.dir.display(), freed, "persistent queue: emptied the fully acknowledged active segment after a write error");
            }
            Err(e) => {
                tracing::warn!(directory = %self.dir.display(), error = %e, "persistent queue: could not empty the active segment");
            }
        }
    }

    /// Deletes fully acknowledged segments from the front (never the active one).
    fn reclaim(&mut self) {
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.outstanding == 0) {
            let Some(s) = self.segments.pop_front() else {
                break;
            };
            match fs::remove_file(self.dir.join(segment_name(s.number))) {
                Ok(()) => {
                    let _ = self
                        .used
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                            Some(u.saturating_sub(s.size))
                        });
                }
                Err(e) => {
                    tracing::warn!(segment = s.number, error = %e, "could not delete a finished queue segment");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
