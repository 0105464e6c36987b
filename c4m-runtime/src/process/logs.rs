//! Reading a container's `output.log`: the last lines, then (when following)
//! whatever the container appends until it has exited.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::clock::LineTimes;
use crate::{Error, Result};
use c4m_core::format_rfc3339_nanos;

/// How often a following reader looks for appended output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// Size of one read (and at most of one chunk of the stream).
const CHUNK: usize = 64 * 1024;

/// Byte offset where the last `lines` lines of the file start. A final
/// newline ends the last line rather than starting an empty one.
pub(crate) fn tail_offset(path: &Path, lines: usize) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if lines == 0 {
        return Ok(len);
    }
    let mut end = len;
    let mut newlines = 0;
    let mut buf = vec![0u8; CHUNK];
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        for (i, byte) in chunk.iter().enumerate().rev() {
            let offset = start + i as u64;
            if *byte == b'\n' && offset + 1 != len {
                newlines += 1;
                if newlines == lines {
                    return Ok(offset + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

/// Tells a following reader whether the writer is done (the container has
/// exited or is gone).
pub(crate) type ExitedCheck = Box<dyn FnMut() -> futures::future::BoxFuture<'static, bool> + Send>;

struct Reader {
    file: tokio::fs::File,
    path: PathBuf,
    /// `None` when not following.
    exited: Option<ExitedCheck>,
    /// The writer was seen done; one more read at EOF catches what it wrote
    /// between our last read and its exit.
    draining: bool,
    buf: Vec<u8>,
}

/// Streams `path` from `offset`; with `exited`, keeps polling for appended
/// data until `exited` says so and the file is drained.
pub(crate) async fn stream(
    path: PathBuf,
    offset: u64,
    exited: Option<ExitedCheck>,
) -> Result<BoxStream<'static, Result<Bytes>>> {
    let context = |what: &str| format!("{what} {}", path.display());
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| Error::io(context("open"), e))?;
    file.seek(SeekFrom::Start(offset))
        .await
        .map_err(|e| Error::io(context("seek in"), e))?;
    let reader = Reader {
        file,
        path,
        exited,
        draining: false,
        buf: vec![0; CHUNK],
    };
    Ok(futures::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        loop {
            match reader.file.read(&mut reader.buf).await {
                Ok(0) => {}
                Ok(n) => {
                    let chunk = Bytes::copy_from_slice(&reader.buf[..n]);
                    return Some((Ok(chunk), Some(reader)));
                }
                Err(e) => {
                    let error = Error::io(format!("read {}", reader.path.display()), e);
                    return Some((Err(error), None));
                }
            }
            // At end of file.
            let exited = reader.exited.as_mut()?;
            if reader.draining {
                return None;
            }
            if exited().await {
                reader.draining = true;
            } else {
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        }
    })
    .boxed())
}

/// What [`stamp_lines`] does to each line.
pub(crate) struct LineFilter {
    /// When each line was written.
    pub(crate) times: LineTimes,
    /// Start each line with its time.
    pub(crate) timestamps: bool,
    /// Drop lines written before this.
    pub(crate) since: Option<SystemTime>,
}

struct Stamper {
    chunks: BoxStream<'static, Result<Bytes>>,
    /// Offset in the log just past `pending`.
    offset: u64,
    /// The start of a line whose end has not been read yet.
    pending: Vec<u8>,
    filter: LineFilter,
}

impl Stamper {
    /// Appends `line`, which ends just before `self.offset`, to `out` if it
    /// passes the filter.
    fn emit(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let when = self.filter.times.time_of(self.offset);
        if self.filter.since.is_some_and(|since| when < since) {
            return;
        }
        if self.filter.timestamps {
            out.extend_from_slice(format_rfc3339_nanos(when).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(line);
    }
}

/// Splits `chunks` (the log read from `offset`) into lines and applies
/// `filter` to each; a last line without its newline is passed on at the end.
pub(crate) fn stamp_lines(
    chunks: BoxStream<'static, Result<Bytes>>,
    offset: u64,
    filter: LineFilter,
) -> BoxStream<'static, Result<Bytes>> {
    let stamper = Stamper {
        chunks,
        offset,
        pending: Vec::new(),
        filter,
    };
    futures::stream::unfold(Some(stamper), |stamper| async move {
        let mut stamper = stamper?;
        loop {
            match stamper.chunks.next().await {
                Some(Ok(chunk)) => {
                    let mut out = Vec::new();
                    let mut start = 0;
                    for (i, byte) in chunk.iter().enumerate() {
                        if *byte == b'\n' {
                            stamper.offset += (i + 1 - start) as u64;
                            let mut line = std::mem::take(&mut stamper.pending);
                            line.extend_from_slice(&chunk[start..=i]);
                            stamper.emit(&line, &mut out);
                            start = i + 1;
                        }
                    }
                    stamper.pending.extend_from_slice(&chunk[start..]);
                    stamper.offset += (chunk.len() - start) as u64;
                    if !out.is_empty() {
                        return Some((Ok(Bytes::from(out)), Some(stamper)));
                    }
                }
                Some(Err(e)) => return Some((Err(e), None)),
                None => {
                    let line = std::mem::take(&mut stamper.pending);
                    let mut out = Vec::new();
                    if !line.is_empty() {
                        stamper.emit(&line, &mut out);
                    }
                    return (!out.is_empty()).then(|| (Ok(Bytes::from(out)), None));
                }
            }
        }
    })
    .boxed()
}

/// Wraps an async check into an [`ExitedCheck`].
pub(crate) fn exited_check<F, Fut>(mut check: F) -> ExitedCheck
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    Box::new(move || check().boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text = "one\ntwo\nthree\n";
        std::fs::write(&path, text).unwrap();
        let tail = |n| &text[tail_offset(&path, n).unwrap() as usize..];
        assert_eq!(tail(0), "");
        assert_eq!(tail(1), "three\n");
        assert_eq!(tail(2), "two\nthree\n");
        assert_eq!(tail(5), text);
        std::fs::write(&path, "a\nb").unwrap();
        assert_eq!(tail_offset(&path, 1).unwrap(), 2);
        // Longer than one chunk.
        let long: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &long).unwrap();
        let offset = tail_offset(&path, 3).unwrap() as usize;
        assert_eq!(&long[offset..], "line 19997\nline 19998\nline 19999\n");
    }
}
