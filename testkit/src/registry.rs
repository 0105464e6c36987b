use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for};

/// Debian's `docker-registry` (distribution 2.8) serving plain HTTP on a
/// loopback port, storing under the directory it was started with. Killed
/// on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    login: Option<(String, String)>,
}

impl Registry {
    /// Starts a registry storing under `dir` and waits until it listens.
    ///
    /// # Panics
    /// When `docker-registry` is not installed or does not listen within
    /// 20 s.
    pub fn start(dir: &Path) -> Registry {
        Registry::start_with(dir, None)
    }

    /// [`Registry::start`], answering only requests that log in as
    /// `username` with `password` (HTTP basic, an htpasswd file made with
    /// `htpasswd` from apache2-utils); pushes log in too.
    ///
    /// # Panics
    /// As [`Registry::start`], or when `htpasswd` is missing.
    pub fn start_with_login(dir: &Path, username: &str, password: &str) -> Registry {
        Registry::start_with(dir, Some((username.to_string(), password.to_string())))
    }

    fn start_with(dir: &Path, login: Option<(String, String)>) -> Registry {
        std::fs::create_dir_all(dir).expect("creating the registry's directory");
        let port = free_port();
        let config = dir.join("registry.yml");
        let mut text = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("registry").display()
        );
        if let Some((username, password)) = &login {
            let output = Command::new("htpasswd")
                .args(["-Bbn", username, password])
                .output()
                .expect("htpasswd is required (apt-get install apache2-utils)");
            assert!(output.status.success(), "htpasswd failed: {output:?}");
            let file = dir.join("htpasswd");
            std::fs::write(&file, output.stdout).expect("writing the htpasswd file");
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: c4m-testkit\n    path: {}\n",
                file.display()
            ));
        }
        std::fs::write(&config, text).expect("writing the registry's config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is required (apt-get install docker-registry)");
        let registry = Registry { child, port, login };
        wait_for("the registry to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(drop)
        });
        registry
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, the host part of image references in it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copies the OCI layout `layout` (tag `tag`) into the registry as
    /// `name` (`repo:tag`) with skopeo.
    ///
    /// # Panics
    /// When skopeo is missing or the copy fails.
    pub fn push_oci_layout(&self, layout: &Path, tag: &str, name: &str) {
        let mut skopeo = Command::new("skopeo");
        skopeo.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some((username, password)) = &self.login {
            skopeo.arg(format!("--dest-creds={username}:{password}"));
        }
        let status = skopeo
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{name}", self.host()))
            .status()
            .expect("skopeo is required (apt-get install skopeo)");
        assert!(
            status.success(),
            "skopeo copy of {name} to the registry failed"
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
