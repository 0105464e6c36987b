//! What each node last said of its storage (`ReportVolumes`): memory only,
//! as heartbeats are. The volume controllers read it to bind claims, mark
//! snapshots ready and pick a node with room; a report replaces the node's
//! previous one whole.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use c4m_api::agent::VolumeReport;
use tokio::sync::watch;

/// The last storage report of every node that sent one.
pub(crate) struct VolumeReports {
    reports: Mutex<HashMap<String, VolumeReport>>,
    /// Bumped on every report that changed something, so controllers wake.
    changed: watch::Sender<u64>,
}

impl Default for VolumeReports {
    fn default() -> Self {
        Self {
            reports: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl VolumeReports {
    /// Keeps `report` as its node's storage state; wakes watchers if it
    /// differs from the one before.
    pub(crate) fn record(&self, report: VolumeReport) {
        let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        if reports.get(&report.node_name) == Some(&report) {
            return;
        }
        reports.insert(report.node_name.clone(), report);
        drop(reports);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Forgets a node (it was deleted).
    pub(crate) fn forget(&self, node: &str) {
        let removed = self
            .reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(node);
        if removed.is_some() {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// The last report of every node.
    pub(crate) fn all(&self) -> HashMap<String, VolumeReport> {
        self.reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes whenever a report changes something.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_replaces_the_nodes_last_and_wakes_only_on_change() {
        let reports = VolumeReports::default();
        let mut changed = reports.subscribe();
        let report = VolumeReport {
            node_name: "a".into(),
            ..VolumeReport::default()
        };
        reports.record(report.clone());
        assert!(changed.has_changed().unwrap());
        changed.mark_unchanged();
        reports.record(report);
        assert!(!changed.has_changed().unwrap());
        assert_eq!(reports.all().len(), 1);
        reports.forget("a");
        assert!(reports.all().is_empty());
    }
}
