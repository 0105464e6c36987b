//! The daemons start, answer on their own sockets, and leave nothing
//! running behind them.

use c4m_testkit::{Containerd, Dockerd};

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .count()
}

#[test]
#[ignore = "needs root + containerd"]
fn containerd_answers_then_stops_with_its_handle() {
    let dir = tempfile::tempdir().unwrap();
    let containerd = Containerd::start(&dir.path().join("containerd"));
    let version = containerd.ctr(&["version"]);
    assert!(version.contains("Server:"), "{version}");
    assert!(processes_mentioning(&containerd.config_path().display().to_string()) > 0);
    let config = containerd.config_path().display().to_string();
    drop(containerd);
    assert_eq!(processes_mentioning(&config), 0);
}

#[test]
#[ignore = "needs root + dockerd"]
fn dockerd_answers_then_stops_with_its_handle() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("dockerd");
    let dockerd = Dockerd::start(&root);
    let version = dockerd.docker(&["version", "--format", "{{.Server.Version}}"]);
    assert!(version.trim().starts_with("20."), "{version}");
    drop(dockerd);
    assert_eq!(processes_mentioning(&root.display().to_string()), 0);
}
