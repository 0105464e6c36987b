//! Logs kept as dated records (conmon's `k8s-file`, dockerd's logs API):
//! each record is a line, or the start of one when the writer marked it
//! partial, with the time it was written. [`RecordFilter`] turns them back
//! into the container's output as a [`LogOptions`] asks.

use std::time::SystemTime;

use bytes::BytesMut;

use c4m_core::LogOptions;
use c4m_core::format_rfc3339_nanos;

/// Applies `since` and `timestamps` to a log's records, in order.
#[derive(Debug, Default)]
pub(super) struct RecordFilter {
    timestamps: bool,
    since: Option<SystemTime>,
    /// The last record was partial: the next one continues its line.
    in_line: bool,
}

impl RecordFilter {
    pub(super) fn new(options: &LogOptions) -> Self {
        RecordFilter {
            timestamps: options.timestamps,
            since: options.since,
            in_line: false,
        }
    }

    /// Appends record `text` (without its newline) written at `written` to
    /// `out`: dropped if older than `since`, else stamped (as Kubernetes
    /// does, UTC with nanoseconds) when it starts a line, and ended with a
    /// newline unless `partial`.
    pub(super) fn push(
        &mut self,
        written: Option<SystemTime>,
        text: &[u8],
        partial: bool,
        out: &mut BytesMut,
    ) {
        let starts_line = !self.in_line;
        self.in_line = partial;
        if let (Some(since), Some(written)) = (self.since, written)
            && written < since
        {
            return;
        }
        if self.timestamps && starts_line {
            let when = written.unwrap_or(SystemTime::UNIX_EPOCH);
            out.extend_from_slice(format_rfc3339_nanos(when).as_bytes());
            out.extend_from_slice(b" ");
        }
        out.extend_from_slice(text);
        if !partial {
            out.extend_from_slice(b"\n");
        }
    }
}
