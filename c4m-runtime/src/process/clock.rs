//! When each line of a container's output was written.
//!
//! Containers write `output.log` themselves (they outlive the agent, so
//! their output never passes through it). While a driver runs, its *log
//! clock* looks at every container's log every [`TICK`] and, when one has
//! grown, appends `(length, now)` to the container's `output.times`: every
//! byte below `length` and above the previous record's was written in the
//! tick before `now`. Output written while no agent ran is stamped with the
//! log's modification time when the next agent first sees it: the latest
//! time it can have been written, to the kernel's coarse file-time clock.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;

/// How often logs are looked at: a line's time is at most this late.
pub(crate) const TICK: Duration = Duration::from_millis(20);
/// Size of one `output.times` record: length and nanoseconds since the
/// epoch, both u64 little endian.
const RECORD: usize = 16;

/// The index file beside a container's `output.log`.
pub(crate) fn times_path(container_dir: &Path) -> PathBuf {
    container_dir.join("output.times")
}

/// The clock's memory: per container directory, the log length last
/// stamped.
#[derive(Default)]
pub(super) struct LogClock {
    stamped: HashMap<PathBuf, u64>,
}

impl LogClock {
    /// Stamps whatever grew in the containers under `state_dir` since the
    /// last call. Errors only skip a container until the next tick.
    pub(super) fn tick(&mut self, state_dir: &Path) {
        let Ok(entries) = std::fs::read_dir(state_dir) else {
            return;
        };
        let mut seen = HashMap::with_capacity(self.stamped.len());
        for entry in entries.flatten() {
            let dir = entry.path();
            let Ok(metadata) = std::fs::metadata(dir.join("output.log")) else {
                continue;
            };
            let length = metadata.len();
            let stamped = match self.stamped.get(&dir) {
                Some(stamped) => *stamped,
                None => last_record(&times_path(&dir)).map_or(0, |(length, _)| length),
            };
            let mut now = stamped;
            if length > stamped {
                // First sight of output from before this clock ran: its
                // modification time; else it was written in the last tick.
                let when = if self.stamped.contains_key(&dir) {
                    SystemTime::now()
                } else {
                    metadata.modified().unwrap_or_else(|_| SystemTime::now())
                };
                if append(&times_path(&dir), length, when).is_ok() {
                    now = length;
                }
            } else if length < stamped {
                // A log that shrank was replaced: start its index over.
                let _ = std::fs::remove_file(times_path(&dir));
                now = 0;
            }
            seen.insert(dir, now);
        }
        self.stamped = seen;
    }
}

/// The clock's task over one directory of containers (`<dir>/<id>/output.log`),
/// started on first use; it ends when its owner is dropped (and is aborted
/// with this handle).
#[derive(Default)]
pub(crate) struct ClockTask {
    task: Mutex<Option<JoinHandle<()>>>,
}

impl ClockTask {
    /// Starts the clock over `state_dir` unless it runs; it stops once
    /// `owner` is gone. Called from async code only.
    pub(crate) fn ensure<T: Send + Sync + 'static>(&self, owner: Weak<T>, state_dir: PathBuf) {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.is_some() {
            return;
        }
        *task = Some(tokio::spawn(async move {
            let mut stamps = LogClock::default();
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if owner.strong_count() == 0 {
                    return;
                }
                let dir = state_dir.clone();
                match tokio::task::spawn_blocking(move || {
                    stamps.tick(&dir);
                    stamps
                })
                .await
                {
                    Ok(returned) => stamps = returned,
                    Err(_) => return,
                }
            }
        }));
    }
}

impl Drop for ClockTask {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

fn append(path: &Path, length: u64, when: SystemTime) -> std::io::Result<()> {
    let mut record = [0u8; RECORD];
    record[..8].copy_from_slice(&length.to_le_bytes());
    record[8..].copy_from_slice(&nanos(when).to_le_bytes());
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(&record)
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn decode(record: &[u8]) -> (u64, SystemTime) {
    let field = |range: std::ops::Range<usize>| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&record[range]);
        u64::from_le_bytes(bytes)
    };
    (field(0..8), UNIX_EPOCH + Duration::from_nanos(field(8..16)))
}

fn last_record(path: &Path) -> Option<(u64, SystemTime)> {
    let mut file = std::fs::File::open(path).ok()?;
    let length = file.metadata().ok()?.len();
    // A record cut short by a crash is ignored.
    let whole = length - length % RECORD as u64;
    if whole == 0 {
        return None;
    }
    file.seek(SeekFrom::Start(whole - RECORD as u64)).ok()?;
    let mut record = [0u8; RECORD];
    file.read_exact(&mut record).ok()?;
    Some(decode(&record))
}

/// A container's index, read for one log request.
#[derive(Debug, Default)]
pub(crate) struct LineTimes {
    path: PathBuf,
    records: Vec<(u64, SystemTime)>,
}

impl LineTimes {
    /// Reads the index at `path` (empty if there is none yet).
    pub(crate) fn load(path: PathBuf) -> LineTimes {
        let mut times = LineTimes {
            path,
            records: Vec::new(),
        };
        times.reload();
        times
    }

    /// Reads the records appended since the last read (the index only
    /// grows, but for a log replaced from scratch, which starts it over).
    fn reload(&mut self) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        let known = (self.records.len() * RECORD) as u64;
        let length = file.metadata().map_or(0, |m| m.len());
        if length < known {
            self.records.clear();
            return self.reload();
        }
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(known)).is_ok() && file.read_to_end(&mut bytes).is_ok() {
            self.records.extend(bytes.chunks_exact(RECORD).map(decode));
        }
    }

    /// When the byte just before `end` was written: the first record at or
    /// past it. Output the clock has not stamped yet is being written now.
    pub(super) fn time_of(&mut self, end: u64) -> SystemTime {
        if self.records.last().is_none_or(|(length, _)| *length < end) {
            self.reload();
        }
        let index = self.records.partition_point(|(length, _)| *length < end);
        self.records
            .get(index)
            .map_or_else(SystemTime::now, |(_, when)| *when)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_stamps_growth() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join("c1");
        std::fs::create_dir(&dir).unwrap();
        let log = dir.join("output.log");
        std::fs::write(&log, "old\n").unwrap();
        let mut clock = LogClock::default();
        clock.tick(state.path());
        let modified = std::fs::metadata(&log).unwrap().modified().unwrap();
        let mut times = LineTimes::load(times_path(&dir));
        // Output from before the clock ran: the log's modification time.
        assert_eq!(times.time_of(4), modified);

        let before = SystemTime::now();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"new\n")
            .unwrap();
        clock.tick(state.path());
        let after = SystemTime::now();
        let stamped = times.time_of(8);
        assert!(before <= stamped && stamped <= after, "{stamped:?}");
        assert_eq!(times.time_of(4), modified);
        // Nothing new: no record.
        clock.tick(state.path());
        assert_eq!(std::fs::metadata(times_path(&dir)).unwrap().len(), 32);
        // A new clock (a restarted agent) resumes from the last record.
        let mut restarted = LogClock::default();
        restarted.tick(state.path());
        assert_eq!(std::fs::metadata(times_path(&dir)).unwrap().len(), 32);
    }

    #[test]
    fn timestamps_as_kubernetes_prints_them() {
        let time = UNIX_EPOCH + Duration::new(1_700_000_000, 120_000);
        assert_eq!(
            c4m_core::format_rfc3339_nanos(time),
            "2023-11-14T22:13:20.000120000Z"
        );
    }
}
