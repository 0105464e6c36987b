//! A container's output from the daemon's logs API.
//!
//! The daemon sends stdout and stderr as separate frames in the order it
//! logged them, one frame per log record, each (asked with `timestamps`)
//! starting with the time the record was written and a space. A record
//! without a final newline is the start of a line the next record
//! continues (the daemon splits long lines).

use bollard::container::LogOutput;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::inspect::docker_time;
use crate::Result;
use crate::log_records::RecordFilter;
use c4m_core::LogOptions;

/// The output in `frames` (asked with timestamps) as `options` ask:
/// stdout and stderr in one stream, in order.
pub(super) fn decode(
    frames: BoxStream<'static, Result<LogOutput>>,
    options: &LogOptions,
) -> BoxStream<'static, Result<Bytes>> {
    let mut records = RecordFilter::new(options);
    frames
        .map(move |frame| {
            frame.map(|frame| {
                let mut out = BytesMut::new();
                push_frame(&mut records, &frame.into_bytes(), &mut out);
                out.freeze()
            })
        })
        .filter(|chunk| futures::future::ready(!matches!(chunk, Ok(bytes) if bytes.is_empty())))
        .boxed()
}

/// Appends the record in `frame` (`<time> <text>`) to `out` through `records`.
fn push_frame(records: &mut RecordFilter, frame: &[u8], out: &mut BytesMut) {
    let (written, text) = match frame.iter().position(|b| *b == b' ') {
        Some(space) => {
            let written = std::str::from_utf8(&frame[..space])
                .ok()
                .and_then(docker_time);
            match written {
                Some(time) => (Some(time), &frame[space + 1..]),
                // Not a time after all: the whole frame is text.
                None => (None, frame),
            }
        }
        None => (None, frame),
    };
    let (text, partial) = match text.strip_suffix(b"\n") {
        Some(line) => (line, false),
        None => (text, true),
    };
    records.push(written, text, partial, out);
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn frame(text: &str) -> Result<LogOutput> {
        Ok(LogOutput::StdOut {
            message: Bytes::from(text.to_string()),
        })
    }

    async fn read(frames: Vec<Result<LogOutput>>, options: LogOptions) -> String {
        let chunks: Vec<Bytes> = decode(futures::stream::iter(frames).boxed(), &options)
            .map(|chunk| chunk.unwrap())
            .collect()
            .await;
        String::from_utf8(chunks.concat()).unwrap()
    }

    #[tokio::test]
    async fn frames_become_output_with_kubernetes_timestamps_and_exact_since() {
        let frames = || {
            vec![
                frame("2026-12-01T04:10:00.000000001Z one\n"),
                Ok(LogOutput::StdErr {
                    message: Bytes::from_static(b"2026-12-01T04:10:01.5Z par"),
                }),
                frame("2026-12-01T04:10:02.000000000Z tial\n"),
            ]
        };
        assert_eq!(
            read(frames(), LogOptions::default()).await,
            "one\npartial\n"
        );
        let stamped = LogOptions {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            read(frames(), stamped).await,
            "2026-12-01T04:10:00.000000001Z one\n2026-12-01T04:10:01.500000000Z partial\n"
        );
        let since: SystemTime = "2026-12-01T04:10:00.5Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .into();
        let recent = LogOptions {
            since: Some(since),
            ..Default::default()
        };
        assert_eq!(read(frames(), recent).await, "partial\n");
    }
}
