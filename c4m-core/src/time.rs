//! Timestamps as Kubernetes writes them: RFC 3339, UTC, whole seconds.

use std::time::SystemTime;

/// `time` as RFC 3339 (`2026-11-21T22:53:19Z`).
pub fn format_rfc3339(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// `time` as Kubernetes prints log timestamps: RFC 3339, UTC, always nine
/// fractional digits.
pub fn format_rfc3339_nanos(time: SystemTime) -> String {
    let since_epoch = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = jiff::Timestamp::from_second(since_epoch.as_secs() as i64)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_default();
    format!("{seconds}.{:09}Z", since_epoch.subsec_nanos())
}

/// Now, as RFC 3339.
pub fn now_rfc3339() -> String {
    format_rfc3339(SystemTime::now())
}

/// An RFC 3339 time (`2026-11-21T22:53:19Z`, any offset or precision).
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let timestamp: jiff::Timestamp = text.parse().ok()?;
    Some(SystemTime::from(timestamp))
}

/// Seconds from an RFC 3339 time to now (negative if it is in the future).
pub fn seconds_since(rfc3339: &str) -> Option<i64> {
    let then: jiff::Timestamp = rfc3339.parse().ok()?;
    Some(jiff::Timestamp::now().as_second() - then.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_and_measures() {
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::from_secs(86_400)),
            "1970-01-02T00:00:00Z"
        );
        let age = seconds_since(&now_rfc3339()).unwrap();
        assert!((0..5).contains(&age));
        assert!(seconds_since("yesterday").is_none());
        assert_eq!(
            parse_rfc3339("1970-01-02T00:00:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(86_400))
        );
    }
}
