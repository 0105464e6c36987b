use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::daemon::{Daemon, output_of, reap, socket_answers};

/// containerd (Debian's 1.6) on a socket of its own, with its root, state
/// and configuration under one directory. Its CRI service is on (same
/// socket), reaches the given loopback registries over plain HTTP, and
/// reads CNI configuration from a directory of its own (empty: host-network
/// sandboxes need none).
///
/// On drop every task it runs is killed and deleted, containerd is
/// stopped, leftover shims are killed and their mounts undone.
#[derive(Debug)]
pub struct Containerd {
    daemon: Option<Daemon>,
    dir: PathBuf,
    socket: PathBuf,
    config: PathBuf,
}

/// How to start [`Containerd`].
#[derive(Debug, Clone, Default)]
pub struct ContainerdOptions {
    /// Registries (`127.0.0.1:PORT`) the CRI service reaches over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// The CRI service's pod sandbox ("pause") image; there is no internet,
    /// so tests name one in their loopback registry.
    pub sandbox_image: Option<String>,
}

impl Containerd {
    /// Starts containerd under `dir` with default options.
    pub fn start(dir: &Path) -> Containerd {
        Containerd::start_with(dir, &ContainerdOptions::default())
    }

    /// Starts containerd under `dir` and waits until its socket answers.
    ///
    /// # Panics
    /// When containerd is not installed, exits, or does not answer in 30 s.
    pub fn start_with(dir: &Path, options: &ContainerdOptions) -> Containerd {
        std::fs::create_dir_all(dir.join("cni")).expect("creating containerd's directory");
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(dir, &socket, options))
            .expect("writing containerd's config");
        let mut command = Command::new("containerd");
        command.arg("--config").arg(&config);
        let mut daemon = Daemon::spawn(
            "containerd",
            "containerd",
            command,
            dir.join("containerd.log"),
            Duration::from_secs(10),
        );
        daemon.wait_ready(Duration::from_secs(30), || socket_answers(&socket));
        Containerd {
            daemon: Some(daemon),
            dir: dir.to_owned(),
            socket,
            config,
        }
    }

    /// The gRPC socket (containerd's API and CRI's `runtime.v1`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The configuration file it runs with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// `ctr` against this containerd, for tests that look behind a driver.
    pub fn ctr(&self, args: &[&str]) -> String {
        let mut all = vec![
            "--address",
            self.socket.to_str().expect("utf-8 socket path"),
        ];
        all.extend_from_slice(args);
        output_of("ctr", &all)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for namespace in self.ctr(&["namespaces", "ls", "-q"]).lines() {
            for task in self.ctr(&["-n", namespace, "tasks", "ls", "-q"]).lines() {
                self.ctr(&["-n", namespace, "tasks", "kill", "-s", "SIGKILL", task]);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        drop(self.daemon.take());
        reap(&self.socket.display().to_string(), &self.dir);
    }
}

fn config_toml(dir: &Path, socket: &Path, options: &ContainerdOptions) -> String {
    let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
    let mut toml = format!(
        "version = 2\nroot = {root:?}\nstate = {state:?}\n\n[grpc]\n  address = {socket:?}\n\n[{cri}]\n",
        root = dir.join("root"),
        state = dir.join("state"),
    );
    if let Some(image) = &options.sandbox_image {
        let _ = writeln!(toml, "  sandbox_image = {image:?}");
    }
    let _ = writeln!(
        toml,
        "  [{cri}.cni]\n    conf_dir = {:?}\n    bin_dir = \"/usr/lib/cni\"",
        dir.join("cni")
    );
    for registry in &options.insecure_registries {
        let _ = writeln!(
            toml,
            "  [{cri}.registry.mirrors.{registry:?}]\n    endpoint = [\"http://{registry}\"]"
        );
    }
    toml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_sandbox_image_and_plain_http_registries() {
        let toml = config_toml(
            Path::new("/t"),
            Path::new("/t/containerd.sock"),
            &ContainerdOptions {
                insecure_registries: vec!["127.0.0.1:5000".into()],
                sandbox_image: Some("127.0.0.1:5000/c4m/pause:1".into()),
            },
        );
        assert!(toml.contains("root = \"/t/root\""), "{toml}");
        assert!(toml.contains("address = \"/t/containerd.sock\""), "{toml}");
        assert!(
            toml.contains("sandbox_image = \"127.0.0.1:5000/c4m/pause:1\""),
            "{toml}"
        );
        assert!(
            toml.contains(
                "registry.mirrors.\"127.0.0.1:5000\"]\n    endpoint = [\"http://127.0.0.1:5000\"]"
            ),
            "{toml}"
        );
    }
}
