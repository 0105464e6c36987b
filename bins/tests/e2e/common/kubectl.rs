//! The real kubectl, configured by `c4m kubeconfig`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::Cluster;

/// The kubectl under test; `scripts/test.sh` installs it when missing.
/// `C4M_TEST_KUBECTL` names another (a pinned version, say).
const KUBECTL: &str = "/usr/bin/kubectl";

pub(crate) fn kubectl_path() -> PathBuf {
    let path =
        std::env::var_os("C4M_TEST_KUBECTL").map_or_else(|| PathBuf::from(KUBECTL), PathBuf::from);
    assert!(
        path.exists(),
        "kubectl is not installed at {}: these tests drive the real kubectl. \
         Run ./scripts/test.sh (it installs kubectl where an apt repository has it) \
         or install kubectl 1.32",
        path.display()
    );
    path
}

/// kubectl with its own kubeconfig and discovery cache.
pub(crate) struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    /// Writes `c4m kubeconfig`'s output for `cluster` and uses it.
    pub(crate) fn for_cluster(cluster: &Cluster) -> Kubectl {
        let text = cluster.ok(&["kubeconfig"]);
        Kubectl::with_config(cluster, "kubeconfig", &text)
    }

    pub(crate) fn with_config(cluster: &Cluster, name: &str, text: &str) -> Kubectl {
        let kubeconfig = cluster.dir.path().join(name);
        std::fs::write(&kubeconfig, text).unwrap();
        Kubectl {
            kubeconfig,
            cache: cluster.dir.path().join(format!("{name}-cache")),
        }
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(kubectl_path());
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run kubectl")
    }

    /// Runs kubectl and insists it succeeds; returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs kubectl, insists it fails; returns stderr.
    pub(crate) fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            !output.status.success(),
            "kubectl {args:?} should have failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8(output.stderr).unwrap()
    }

    /// Applies `manifest` (YAML, written into the cluster's directory) and
    /// waits until pod `name` is Ready, showing `describe` if it is not.
    pub(crate) fn run_ready(&self, cluster: &Cluster, name: &str, manifest: &str) {
        let path = cluster.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, manifest).unwrap();
        self.ok(&["apply", "-f", path.to_str().unwrap()]);
        let ready = self.run(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{name}"),
            "--timeout=90s",
        ]);
        assert!(
            ready.status.success(),
            "{name} is not Ready: {}\n{}",
            String::from_utf8_lossy(&ready.stderr),
            String::from_utf8_lossy(&self.run(&["describe", "pod", name]).stdout)
        );
    }

    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }
}
