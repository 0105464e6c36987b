//! [`Network`] as a CNI plugin chain (CNI spec 1.0.0): the node's
//! instances join one network that the plugins of a configuration list
//! make (bridge + host-local + portmap, or Calico, Flannel, Cilium...).
//!
//! Each instance gets a named network namespace as [`LinuxNetwork`] makes
//! them; ADD runs the chain in order, each plugin getting the previous
//! one's result; DEL runs it in reverse with the ADD's result. The result
//! of every attachment is kept on disk under the run dir (`cni/ID.json`)
//! before the first plugin runs and after each, so CHECK, DEL and a
//! restarted agent work from what ADD made, and a crash half way through
//! an ADD is undone by the next DEL. The record also keeps the
//! configuration list ADD ran with: CHECK and DEL run with it (as the spec
//! asks), even after the file changed and the agent restarted.
//!
//! [`LinuxNetwork`]: super::super::LinuxNetwork

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Mutex;

use c4m_core::DEFAULT_VPC;

use super::ipam::write_atomically;
use super::{
    json_files, namespace_path, netns, remove_file_if_present, resolv_conf_path, write_resolv_conf,
};
use crate::{Attachment, Error, HostPort, Network, Result, VpcNetwork};

mod config;
mod plugin;

use config::{NetworkConfigList, PluginConfig, validate_identifier};
use plugin::{CniResult, Command, Target, plugin_stdin};

/// `CNI_IFNAME`: the instance's interface.
const INSTANCE_INTERFACE: &str = "eth0";

/// Instance networking through a CNI plugin chain (needs root, as its
/// plugins do).
///
/// Its run dir holds `cni/INSTANCE.json` (each attachment's record),
/// `netns/INSTANCE` and `resolv/INSTANCE.conf`.
pub struct CniNetwork {
    list: NetworkConfigList,
    /// Where the plugins are; `CNI_PATH` joins them.
    bin_dirs: Vec<PathBuf>,
    /// `CNI_PATH`.
    cni_path: String,
    run_dir: PathBuf,
    /// The cluster domain instances' `resolv.conf` searches.
    cluster_domain: String,
    /// Instance → its record; held through a whole ADD, CHECK or DEL.
    records: Mutex<BTreeMap<String, Record>>,
}

/// What is kept of an attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    /// The instance's Kubernetes namespace (its DNS search domains).
    namespace: String,
    /// The host ports given to the chain (`portMappings`).
    host_ports: Vec<HostPort>,
    /// The result of the last plugin that finished ADD.
    result: Option<Value>,
    /// Whether the whole chain finished ADD.
    complete: bool,
    /// The configuration list ADD ran with, as written.
    config: Value,
}

impl CniNetwork {
    /// Reads and checks the configuration list `config_file`, with plugins
    /// from `bin_dirs`, asks every plugin whether it speaks the list's
    /// `cniVersion`, and re-adopts the attachments under `run_dir` (an ADD
    /// an earlier agent left half done is undone).
    pub async fn open(
        config_file: &Path,
        bin_dirs: &[PathBuf],
        run_dir: impl Into<PathBuf>,
    ) -> Result<CniNetwork> {
        let list = NetworkConfigList::load(config_file, bin_dirs)?;
        let cni_path = std::env::join_paths(bin_dirs)
            .map_err(|e| Error::failed("cni plugin directories", e))?
            .to_string_lossy()
            .into_owned();
        let run_dir = run_dir.into();
        let records_dir = run_dir.join("cni");
        std::fs::create_dir_all(&records_dir)
            .map_err(|e| Error::io(format!("creating {}", records_dir.display()), e))?;
        let network = CniNetwork {
            list,
            bin_dirs: bin_dirs.to_vec(),
            cni_path,
            run_dir,
            cluster_domain: crate::DEFAULT_CLUSTER_DOMAIN.to_string(),
            records: Mutex::new(load_records(&records_dir)?),
        };
        network.check_versions().await?;
        let mut records = network.records.lock().await;
        let unfinished: Vec<String> = records
            .iter()
            .filter(|(_, record)| !record.complete)
            .map(|(instance, _)| instance.clone())
            .collect();
        for instance in unfinished {
            tracing::info!(instance, "undoing an unfinished cni ADD");
            if let Err(e) = network.teardown(&mut records, &instance).await {
                tracing::warn!(instance, error = %e, "cannot undo an unfinished cni ADD");
            }
        }
        drop(records);
        Ok(network)
    }

    /// Instances' `resolv.conf` searches `cluster_domain` (default
    /// [`DEFAULT_CLUSTER_DOMAIN`](crate::DEFAULT_CLUSTER_DOMAIN)).
    pub fn with_cluster_domain(mut self, cluster_domain: &str) -> CniNetwork {
        self.cluster_domain = cluster_domain.to_string();
        self
    }

    /// The network's name (the list's `name`).
    pub fn name(&self) -> &str {
        &self.list.name
    }

    /// Runs CHECK through the chain for an attached instance: Ok when
    /// every plugin finds what ADD made. A list with `disableCheck` only
    /// checks that the namespace is there.
    pub async fn check(&self, instance: &str) -> Result<()> {
        let records = self.records.lock().await;
        let record = records
            .get(instance)
            .filter(|r| r.complete)
            .ok_or_else(|| self.error(format!("instance {instance} is not attached")))?;
        self.verify(instance, record).await.map(|_| ())
    }

    /// Asks each plugin (VERSION) whether it speaks the list's version.
    async fn check_versions(&self) -> Result<()> {
        let version = serde_json::json!({ "cniVersion": self.list.cni_version });
        for (index, plugin) in self.list.plugins.iter().enumerate() {
            let target = Target {
                container: "",
                netns: None,
                ifname: INSTANCE_INTERFACE,
                cni_path: &self.cni_path,
            };
            let output = plugin::run(plugin, Command::Version, &target, &version).await?;
            let supported =
                plugin::supported_versions(&output).ok_or_else(|| Error::CniConfig {
                    file: self.list.file.clone(),
                    field: format!("plugins[{index}].type"),
                    message: format!(
                        "plugin {} answered VERSION with no supportedVersions: {}",
                        plugin.plugin_type,
                        String::from_utf8_lossy(&output).trim()
                    ),
                    source: None,
                })?;
            if !supported.contains(&self.list.cni_version) {
                return Err(Error::CniConfig {
                    file: self.list.file.clone(),
                    field: "cniVersion".into(),
                    message: format!(
                        "plugin {} ({}) does not speak {} (it speaks {})",
                        plugin.plugin_type,
                        plugin.binary.display(),
                        self.list.cni_version,
                        supported.join(", ")
                    ),
                    source: None,
                });
            }
        }
        Ok(())
    }

    fn record_path(&self, instance: &str) -> PathBuf {
        self.run_dir.join("cni").join(format!("{instance}.json"))
    }

    fn save(&self, instance: &str, record: &Record) -> Result<()> {
        let path = self.record_path(instance);
        let text = serde_json::to_vec_pretty(record)
            .map_err(|e| self.failed(format!("encoding {}", path.display()), e))?;
        write_atomically(&path, &text)
    }

    fn failed(&self, what: String, source: impl Into<c4m_core::BoxError>) -> Error {
        Error::failed(format!("cni network {}: {what}", self.list.name), source)
    }

    fn error(&self, message: String) -> Error {
        Error::Network {
            what: format!("cni network {}", self.list.name),
            message,
        }
    }

    /// Runs `command` through `list`'s chain (in reverse for DEL), each
    /// plugin getting `prev_result`; every plugin runs even when one
    /// fails, and the first failure is returned.
    async fn run_chain(
        &self,
        command: Command,
        instance: &str,
        record: &Record,
        list: &NetworkConfigList,
    ) -> Result<()> {
        let namespace = namespace_path(&self.run_dir, instance);
        let target = Target {
            container: instance,
            // A namespace already gone is DEL's to tolerate (spec: empty).
            netns: netns::is_namespace(&namespace).then_some(namespace.as_path()),
            ifname: INSTANCE_INTERFACE,
            cni_path: &self.cni_path,
        };
        let mut plugins: Vec<_> = list.plugins.iter().collect();
        if command == Command::Del {
            plugins.reverse();
        }
        let mut first_error = None;
        for plugin in plugins {
            let stdin = plugin_stdin(list, plugin, record.result.as_ref(), &record.host_ports);
            if let Err(e) = plugin::run(plugin, command, &target, &stdin).await {
                if command == Command::Check && is_portmap_ipv6_check_bug(plugin, &e, record) {
                    tracing::debug!(instance, error = %e, "portmap's IPv6 CHECK of an IPv4-only instance: its IPv4 rules passed");
                    continue;
                }
                if command != Command::Del {
                    return Err(e);
                }
                tracing::warn!(instance, error = %e, "cni DEL");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The configuration list `record`'s ADD ran with: the current one
    /// unless the file has changed since. One that no longer loads (a
    /// plugin uninstalled) gives way to the current list, with a warning.
    fn list_of(&self, instance: &str, record: &Record) -> Cow<'_, NetworkConfigList> {
        if record.config == self.list.raw {
            return Cow::Borrowed(&self.list);
        }
        let text = serde_json::to_vec(&record.config).unwrap_or_default();
        match NetworkConfigList::parse(&self.record_path(instance), &text, &self.bin_dirs) {
            Ok(list) => Cow::Owned(list),
            Err(e) => {
                tracing::warn!(instance, error = %e, "the configuration this instance was attached with no longer loads; using the current one");
                Cow::Borrowed(&self.list)
            }
        }
    }

    /// The instance's attachment as its record describes it.
    fn attachment_of(&self, instance: &str, record: &Record) -> Result<Attachment> {
        let result = record
            .result
            .as_ref()
            .ok_or_else(|| self.error(format!("instance {instance} has no ADD result")))?;
        let addressing = CniResult::parse(result)
            .and_then(|r| r.addressing(INSTANCE_INTERFACE))
            .map_err(|e| self.error(format!("the ADD result of instance {instance} {e}")))?;
        Ok(Attachment {
            instance: instance.to_string(),
            vpc: DEFAULT_VPC.to_string(),
            network_namespace: namespace_path(&self.run_dir, instance),
            address: addressing.address,
            prefix_len: addressing.prefix_len,
            gateway: addressing.gateway,
            host_interface: addressing.host_interface,
            resolv_conf: resolv_conf_path(&self.run_dir, instance),
        })
    }

    /// Whether an attachment is whole: its namespace is there and every
    /// plugin's CHECK passes.
    async fn verify(&self, instance: &str, record: &Record) -> Result<Attachment> {
        if !netns::is_namespace(&namespace_path(&self.run_dir, instance)) {
            return Err(self.error(format!("the namespace of instance {instance} is gone")));
        }
        let list = self.list_of(instance, record);
        if !list.disable_check {
            self.run_chain(Command::Check, instance, record, &list)
                .await?;
        }
        self.attachment_of(instance, record)
    }

    /// ADD through the chain, the record saved before the first plugin
    /// and after each.
    async fn add(
        &self,
        records: &mut BTreeMap<String, Record>,
        instance: &str,
        record: Record,
    ) -> Result<Attachment> {
        let namespace = namespace_path(&self.run_dir, instance);
        self.save(instance, &record)?;
        records.remove(instance);
        let record = records.entry(instance.to_string()).or_insert(record);
        netns::create(&namespace)?;
        let target = Target {
            container: instance,
            netns: Some(&namespace),
            ifname: INSTANCE_INTERFACE,
            cni_path: &self.cni_path,
        };
        for plugin in &self.list.plugins {
            let stdin = plugin_stdin(
                &self.list,
                plugin,
                record.result.as_ref(),
                &record.host_ports,
            );
            let output = plugin::run(plugin, Command::Add, &target, &stdin).await?;
            let result: Value = serde_json::from_slice(&output).map_err(|e| Error::CniPlugin {
                plugin: plugin.plugin_type.clone(),
                command: "ADD",
                container: instance.to_string(),
                code: None,
                message: "printed no result".into(),
                source: Some(e.into()),
            })?;
            record.result = Some(result);
            self.save(instance, record)?;
        }
        let attachment = self.attachment_of(instance, record)?;
        write_resolv_conf(
            &attachment.resolv_conf,
            IpAddr::V4(attachment.gateway),
            &record.namespace,
            &self.cluster_domain,
        )?;
        record.complete = true;
        self.save(instance, record)?;
        Ok(attachment)
    }

    /// DEL through the chain, then the namespace, `resolv.conf` and record
    /// go. An unknown instance has nothing to DEL; a failed DEL keeps the
    /// record, so the next detach tries again.
    async fn teardown(&self, records: &mut BTreeMap<String, Record>, instance: &str) -> Result<()> {
        if let Some(record) = records.get(instance) {
            let list = self.list_of(instance, record);
            self.run_chain(Command::Del, instance, record, &list)
                .await?;
        }
        netns::remove(&namespace_path(&self.run_dir, instance))?;
        remove_file_if_present(&resolv_conf_path(&self.run_dir, instance))?;
        remove_file_if_present(&self.record_path(instance))?;
        records.remove(instance);
        Ok(())
    }
}

#[async_trait]
impl Network for CniNetwork {
    /// Only the default VPC: a CNI network is one network.
    async fn ensure_vpc(&self, vpc: &VpcNetwork) -> Result<()> {
        if vpc.name == DEFAULT_VPC {
            Ok(())
        } else {
            Err(self.error(format!(
                "is this node's only network: vpc {} is not served here (a node without \
                 --cni-config serves VPCs)",
                vpc.name
            )))
        }
    }

    /// The network stays (the plugins own it); true once no instance of
    /// the VPC is attached.
    async fn remove_vpc(&self, name: &str) -> Result<bool> {
        let records = self.records.lock().await;
        Ok(name != DEFAULT_VPC || records.is_empty())
    }

    async fn attach(
        &self,
        instance: &str,
        namespace: &str,
        vpc: &VpcNetwork,
    ) -> Result<Attachment> {
        self.attach_with_host_ports(instance, namespace, vpc, &[])
            .await
    }

    fn publishes_host_ports(&self) -> bool {
        self.list
            .plugins
            .iter()
            .any(|plugin| plugin.capabilities.contains("portMappings"))
    }

    /// ADD, or for an attached instance CHECK, and when that fails DEL and
    /// ADD again (after a crash or a reboot). A failed ADD is undone.
    async fn attach_with_host_ports(
        &self,
        instance: &str,
        namespace: &str,
        vpc: &VpcNetwork,
        host_ports: &[HostPort],
    ) -> Result<Attachment> {
        self.ensure_vpc(vpc).await?;
        validate_identifier(instance).map_err(|message| Error::Network {
            what: format!("instance {instance}"),
            message,
        })?;
        let mut records = self.records.lock().await;
        if let Some(record) = records.get(instance) {
            if record.complete {
                match self.verify(instance, record).await {
                    Ok(attachment) => {
                        write_resolv_conf(
                            &attachment.resolv_conf,
                            IpAddr::V4(attachment.gateway),
                            namespace,
                            &self.cluster_domain,
                        )?;
                        return Ok(attachment);
                    }
                    Err(e) => {
                        tracing::warn!(instance, error = %e, "attachment failed its check; attaching again")
                    }
                }
            }
            self.teardown(&mut records, instance).await?;
        }
        let record = Record {
            namespace: namespace.to_string(),
            host_ports: host_ports.to_vec(),
            result: None,
            complete: false,
            config: self.list.raw.clone(),
        };
        let attached = self.add(&mut records, instance, record).await;
        if attached.is_err() {
            // Nothing half-made stays behind; the caller may try again.
            if let Err(e) = self.teardown(&mut records, instance).await {
                tracing::warn!(instance, error = %e, "undoing a failed cni ADD");
            }
        }
        attached
    }

    async fn detach(&self, instance: &str) -> Result<()> {
        let mut records = self.records.lock().await;
        self.teardown(&mut records, instance).await
    }

    async fn attachment(&self, instance: &str) -> Result<Option<Attachment>> {
        let records = self.records.lock().await;
        records
            .get(instance)
            .filter(|record| record.complete)
            .map(|record| self.attachment_of(instance, record))
            .transpose()
    }

    /// The default VPC, with the subnet of an attached instance, while
    /// any is attached.
    async fn vpcs(&self) -> Result<Vec<VpcNetwork>> {
        let records = self.records.lock().await;
        let Some((instance, record)) = records.iter().find(|(_, r)| r.complete) else {
            return Ok(Vec::new());
        };
        let attachment = self.attachment_of(instance, record)?;
        let subnet = Ipv4Net::new(attachment.address, attachment.prefix_len)
            .map_err(|e| self.failed(format!("the prefix of instance {instance}"), e))?
            .trunc();
        Ok(vec![VpcNetwork {
            name: DEFAULT_VPC.to_string(),
            subnet,
        }])
    }
}

/// Whether `error` is portmap 1.1.1's CHECK (Debian 12's) failing on the
/// IPv6 rules of an instance that has no IPv6 address and so none
/// (containernetworking/plugins#819). It checks IPv4 first, so such a
/// failure means the IPv4 rules, the only ones there are, passed.
fn is_portmap_ipv6_check_bug(plugin: &PluginConfig, error: &Error, record: &Record) -> bool {
    let Error::CniPlugin { message, .. } = error else {
        return false;
    };
    plugin.plugin_type == "portmap"
        && message.starts_with("could not check ipv6 dnat")
        && record
            .result
            .as_ref()
            .and_then(|result| CniResult::parse(result).ok())
            .is_some_and(|result| !result.has_ipv6())
}

/// The records in `dir`, by instance.
fn load_records(dir: &Path) -> Result<BTreeMap<String, Record>> {
    let mut records = BTreeMap::new();
    for (instance, path) in json_files(dir)? {
        let text = std::fs::read(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let record: Record = serde_json::from_slice(&text).map_err(|e| {
            Error::failed(
                format!("{}: not a cni attachment record", path.display()),
                e,
            )
        })?;
        records.insert(instance, record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_back_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let record = Record {
            namespace: "shop".into(),
            host_ports: vec![],
            result: Some(
                serde_json::json!({"ips": [{"address": "10.99.0.5/24", "gateway": "10.99.0.1"}]}),
            ),
            complete: true,
            config: serde_json::json!({"cniVersion": "1.0.0", "name": "n", "plugins": []}),
        };
        std::fs::write(
            dir.path().join("a.json"),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("a.tmp"), b"half written").unwrap();
        let records = load_records(dir.path()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records["a"], record);

        std::fs::write(dir.path().join("b.json"), b"{\"vpc\": 1}").unwrap();
        let error = load_records(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("b.json: not a cni attachment record"),
            "{error}"
        );
    }
}
