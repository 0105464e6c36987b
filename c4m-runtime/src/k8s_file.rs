//! The CRI container log format (`<RFC3339Nano> <stream> <P|F> <text>`),
//! which conmon's `k8s-file` writes for the `oci` driver and a CRI runtime
//! writes for the `cri` driver: decoded back into the container's output.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::Result;
use crate::log_records::RecordFilter;
use crate::state::{self, Containers};
use c4m_core::LogOptions;

/// Streams the CRI-format log file `path` of container `id` as the
/// container's output, as `options` ask (tail, since, timestamps, follow).
pub(super) async fn logs<C: Containers>(
    containers: &Arc<C>,
    id: &str,
    path: PathBuf,
    options: &LogOptions,
) -> Result<BoxStream<'static, Result<Bytes>>> {
    if !path.exists() {
        return Ok(futures::stream::empty().boxed());
    }
    let mut decoder = K8sFileDecoder::new(options);
    let (raw, _) = state::logs(containers, id, path, options).await?;
    Ok(raw
        .map(move |chunk| chunk.map(|bytes| decoder.decode(&bytes)))
        .filter(|chunk| futures::future::ready(!matches!(chunk, Ok(b) if b.is_empty())))
        .boxed())
}

/// Turns CRI log lines (`<time> <stream> <F|P> <text>`) back into
/// the container's output: a full line gets its newline back, a partial one
/// (`P`) does not. Bytes of a line not yet complete wait for the rest. The
/// time conmon wrote each line with is what `since` filters on and what
/// `timestamps` prints (as Kubernetes does, in UTC with nanoseconds).
struct K8sFileDecoder {
    pending: BytesMut,
    records: RecordFilter,
}

impl K8sFileDecoder {
    fn new(options: &LogOptions) -> Self {
        K8sFileDecoder {
            pending: BytesMut::new(),
            records: RecordFilter::new(options),
        }
    }

    fn decode(&mut self, chunk: &[u8]) -> Bytes {
        self.pending.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line = self.pending.split_to(end + 1);
            let line = &line[..end];
            let mut fields = line.splitn(4, |b| *b == b' ');
            let (time, _stream, tag) = (fields.next(), fields.next(), fields.next());
            let text = fields.next().unwrap_or_default();
            let written = time
                .and_then(|t| std::str::from_utf8(t).ok())
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(SystemTime::from);
            self.records
                .push(written, text, tag == Some(b"P"), &mut out);
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[u8] = b"2026-12-01T04:10:00.000000001+00:00 stdout F one\n\
2026-12-01T04:10:01.5+01:00 stderr P par\n\
2026-12-01T04:10:02.000000000Z stderr F tial\n";

    #[test]
    fn k8s_file_lines_become_output_with_kubernetes_timestamps() {
        let plain = K8sFileDecoder::new(&LogOptions::default()).decode(LOG);
        assert_eq!(&plain[..], b"one\npartial\n");
        let stamped = K8sFileDecoder::new(&LogOptions {
            timestamps: true,
            ..Default::default()
        })
        .decode(LOG);
        assert_eq!(
            std::str::from_utf8(&stamped).unwrap(),
            "2026-12-01T04:10:00.000000001Z one\n2026-12-01T03:10:01.500000000Z partial\n"
        );
    }

    #[test]
    fn since_drops_older_records_and_split_records_wait_for_their_end() {
        let since: SystemTime = "2026-12-01T04:10:01Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .into();
        let mut decoder = K8sFileDecoder::new(&LogOptions {
            since: Some(since),
            ..Default::default()
        });
        let (head, tail) = LOG.split_at(20);
        assert!(decoder.decode(head).is_empty());
        assert_eq!(&decoder.decode(tail)[..], b"tial\n");
    }
}
