use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::daemon::{Daemon, output_of, reap, socket_answers};

/// dockerd (Debian's docker.io 20.10) on a socket of its own, with its data
/// and exec roots under one directory, no bridge and no iptables rules (it
/// changes nothing on the host's network). It runs its own containerd.
///
/// On drop every container is removed, dockerd is stopped (it stops its
/// containerd), and leftovers are killed and unmounted.
#[derive(Debug)]
pub struct Dockerd {
    daemon: Option<Daemon>,
    dir: PathBuf,
    socket: PathBuf,
}

impl Dockerd {
    /// Starts dockerd under `dir` and waits until its socket answers.
    ///
    /// # Panics
    /// When dockerd is not installed, exits, or does not answer in 60 s.
    pub fn start(dir: &Path) -> Dockerd {
        std::fs::create_dir_all(dir).expect("creating dockerd's directory");
        let socket = dir.join("docker.sock");
        let mut command = Command::new("dockerd");
        command
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--userland-proxy=false",
                "--log-level=warn",
            ]);
        let mut daemon = Daemon::spawn(
            "dockerd",
            "docker.io",
            command,
            dir.join("dockerd.log"),
            Duration::from_secs(15),
        );
        let ping = socket.clone();
        daemon.wait_ready(Duration::from_secs(60), move || {
            socket_answers(&ping)
                && !docker(&ping, &["version", "--format", "{{.Server.Version}}"])
                    .trim()
                    .is_empty()
        });
        Dockerd {
            daemon: Some(daemon),
            dir: dir.to_owned(),
            socket,
        }
    }

    /// The Engine API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The `docker` CLI against this daemon, for tests that look behind a
    /// driver.
    pub fn docker(&self, args: &[&str]) -> String {
        docker(&self.socket, args)
    }
}

fn docker(socket: &Path, args: &[&str]) -> String {
    let host = format!("unix://{}", socket.display());
    let mut all = vec!["-H", host.as_str()];
    all.extend_from_slice(args);
    output_of("docker", &all)
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        let ids: Vec<&str> = ids.lines().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            self.docker(&args);
        }
        drop(self.daemon.take());
        reap(&self.dir.display().to_string(), &self.dir);
    }
}
