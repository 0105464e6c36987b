//! The files the kubelet writes for a pod and mounts into its containers:
//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`
//! ([`c4m_core::pod_etc`] says what they hold), one set per container
//! under `<data>/pods/<id>/`, for drivers whose containers have a network
//! namespace of their own.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use c4m_core::pod_etc::{self, ResolvConf};
use c4m_core::{ContainerSpec, Instance};

/// Where the files go and what they are made from.
#[derive(Debug, Clone)]
pub(crate) struct PodEtc {
    /// `<data>/pods`.
    pub dir: PathBuf,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// The node's resolver configuration (`dnsPolicy: Default`), the
    /// kubelet's `--resolv-conf`.
    pub node_resolv_conf: PathBuf,
}

impl PodEtc {
    /// Files under `data_dir/pod-etc` (`data_dir/pods` holds pods'
    /// network namespaces), the node's `/etc/resolv.conf`.
    pub(crate) fn new(data_dir: &Path, cluster_domain: &str) -> PodEtc {
        PodEtc {
            dir: data_dir.join("pod-etc"),
            cluster_domain: cluster_domain.to_string(),
            node_resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }

    /// Writes the files of pod `pod_id` (one set its containers share), whose address is
    /// `address` and whose cluster DNS server (where it reaches it) is
    /// `cluster_dns`, and points `spec` at them; its host name too.
    pub(crate) fn write(
        &self,
        pod_id: &str,
        spec: &mut ContainerSpec,
        pod: &Instance,
        address: Option<IpAddr>,
        cluster_dns: Option<IpAddr>,
    ) -> io::Result<()> {
        let dir = self.dir.join(pod_id);
        std::fs::create_dir_all(&dir)?;
        let node = match std::fs::read_to_string(&self.node_resolv_conf) {
            Ok(text) => ResolvConf::parse(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => ResolvConf::default(),
            Err(e) => return Err(e),
        };
        let domain = &self.cluster_domain;
        let hostname = pod_etc::uts_hostname(pod, domain);
        let files = [
            (
                "hosts",
                pod_etc::hosts_file(pod, &Vec::from_iter(address), domain),
            ),
            ("hostname", format!("{hostname}\n")),
            (
                "resolv.conf",
                pod_etc::resolv_conf(pod, cluster_dns, domain, &node).render(),
            ),
        ];
        for (name, contents) in files {
            // Atomically: a running container of an earlier start may read it.
            write_replacing(&dir.join(name), contents.as_bytes())?;
        }
        spec.hosts_file = Some(dir.join("hosts"));
        spec.hostname_file = Some(dir.join("hostname"));
        spec.resolv_conf = Some(dir.join("resolv.conf"));
        spec.hostname = Some(hostname);
        Ok(())
    }

    /// A new empty file for container `name` of the pod `pod_id` to write
    /// its termination message to (its `terminationMessagePath` is bound
    /// to it), emptied at each start; removed with the pod's files.
    pub(crate) fn termination_log(&self, pod_id: &str, name: &str) -> io::Result<PathBuf> {
        let dir = self.dir.join(pod_id);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("termination-log-{name}"));
        std::fs::write(&path, "")?;
        // Writable by the container's user, whichever it is.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
        Ok(path)
    }

    /// Where the log of the run before the current one of container `name`
    /// of the pod `pod_id` is kept (for `kubectl logs --previous`), with
    /// its lines' times: removed with the pod's files.
    pub(crate) fn previous_log(&self, pod_id: &str, name: &str) -> PathBuf {
        self.dir.join(pod_id).join(format!("previous-log-{name}"))
    }

    /// Keeps `log` as the [`PodEtc::previous_log`] of container `name` of
    /// the pod `pod_id`, replacing the one kept before whole.
    pub(crate) fn keep_previous_log(&self, pod_id: &str, name: &str, log: &[u8]) -> io::Result<()> {
        std::fs::create_dir_all(self.dir.join(pod_id))?;
        write_replacing(&self.previous_log(pod_id, name), log)
    }

    /// Removes the files of container `id`; none is Ok.
    pub(crate) fn remove(&self, id: &str) {
        let dir = self.dir.join(id);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a pod's files");
        }
    }
}

/// Writes `contents` to `path` whole: a new file beside it, renamed over it.
fn write_replacing(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.new"));
    std::fs::write(&temporary, contents)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_files_and_points_the_spec_at_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("node.conf"),
            "nameserver 10.0.0.2\nsearch corp.example\n",
        )
        .unwrap();
        let etc = PodEtc {
            dir: dir.path().join("pod-etc"),
            cluster_domain: "cluster.local".into(),
            node_resolv_conf: dir.path().join("node.conf"),
        };
        let pod: Instance = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"hostname": "db", "subdomain": "nodes", "dnsPolicy": "Default", "containers": [{"name": "a"}]},
        }))
        .unwrap();
        let mut spec = ContainerSpec {
            id: "shop_web_1".into(),
            ..ContainerSpec::default()
        };
        etc.write(
            "web-1",
            &mut spec,
            &pod,
            Some("10.9.0.4".parse().unwrap()),
            None,
        )
        .unwrap();
        let files = dir.path().join("pod-etc/web-1");
        assert_eq!(spec.hosts_file, Some(files.join("hosts")));
        assert_eq!(spec.resolv_conf, Some(files.join("resolv.conf")));
        assert_eq!(spec.hostname.as_deref(), Some("db"));
        assert_eq!(
            std::fs::read_to_string(files.join("hostname")).unwrap(),
            "db\n"
        );
        let hosts = std::fs::read_to_string(files.join("hosts")).unwrap();
        assert!(
            hosts.ends_with("10.9.0.4\tdb.nodes.shop.svc.cluster.local\tdb\n"),
            "{hosts}"
        );
        assert_eq!(
            std::fs::read_to_string(files.join("resolv.conf")).unwrap(),
            "search corp.example\nnameserver 10.0.0.2\n"
        );
        etc.remove("web-1");
        assert!(!files.exists());
        etc.remove("web-1");
    }
}
