//! Service virtual IPs in nftables, the way kube-proxy's nftables mode
//! does it (decision 0033): one table, `ip c4m_services`, where
//!
//! - the verdict map `service-ips` (`address . protocol . port`: cluster
//!   IPs, load balancer and external addresses) and `service-nodeports`
//!   (`protocol . port`, on any local address but loopback) send a new
//!   connection to its Service port's chain, so the lookup costs the same
//!   whatever the number of Services;
//! - a Service port's chain picks an endpoint at random (`numgen random
//!   mod N-i == 0 goto` for the i-th of N, uniform), after the ClientIP
//!   affinity sets (`update @set { ip saddr }` in the endpoint's chain,
//!   with a timeout); each endpoint's chain DNATs;
//! - `no-endpoint-services` and `no-endpoint-nodeports` reject (or drop,
//!   under a Local policy without local endpoints) new connections to a
//!   Service port that has nowhere to go, in the filter hooks;
//! - what must be masqueraded (an instance reaching itself, traffic from
//!   the node or from outside, NodePorts under the Cluster policy) is
//!   marked, then masqueraded in postrouting: into the overlay with this
//!   node's gateway of the endpoint's VPC (`vpc-gateways`), so the
//!   other node takes it as VPC traffic.
//!
//! [`ServiceRules::sync`] changes only what changed since the last sync
//! (map elements deleted and added, a changed Service port's chains
//! flushed and written again), in one `nft -f -` transaction. The first
//! sync of a process rewrites the maps and every chain, keeping the table
//! and its affinity sets, and drops what no Service wants any more: a
//! restarted agent adopts the table it left.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use super::firewall::nft;
use super::vxlan::OVERLAY_DEVICE;
use crate::service_ips::{ServicePortName, ServicePortRules, ServiceTable};
use crate::{Error, Result};

/// The table's name (family `ip`).
pub const SERVICE_TABLE: &str = "c4m_services";

/// The packet mark bit that asks for masquerading (kube-proxy's bit 14).
const MASQUERADE_MARK: &str = "0x4000";

/// Instances' side of a bridge: c4m bridges are `c4b…`, so traffic that
/// came in through one is from an instance of this node.
const FROM_INSTANCE: &str = "iifname \"c4b*\"";

/// Prefixes of the per-Service-port chains and sets (their names also hold
/// a `/`, which no fixed chain does).
const PORT_CHAIN_PREFIXES: [&str; 4] = ["svc-", "local-", "ext-", "ep-"];
const AFFINITY_PREFIX: &str = "aff-";

/// The verdict maps and the VPC gateway map, with their types.
const MAPS: [(&str, &str); 5] = [
    (
        "service-ips",
        "type ipv4_addr . inet_proto . inet_service : verdict;",
    ),
    (
        "service-nodeports",
        "type inet_proto . inet_service : verdict;",
    ),
    (
        "no-endpoint-services",
        "type ipv4_addr . inet_proto . inet_service : verdict;",
    ),
    (
        "no-endpoint-nodeports",
        "type inet_proto . inet_service : verdict;",
    ),
    (
        "vpc-gateways",
        "type ipv4_addr : ipv4_addr; flags interval;",
    ),
];

/// Programs a [`ServiceTable`] into nftables on this node.
pub struct ServiceRules {
    table: String,
    node_name: String,
    /// `nft`, or a wrapper that runs it elsewhere.
    command: Vec<String>,
    /// What the kernel holds since the last successful sync; None when
    /// unknown (first sync, or after a failed one): the next sync is full.
    applied: Option<Applied>,
    /// Chains flushed by a sync and deleted after it (a chain a map
    /// element pointed to may stay in use a little while on older kernels,
    /// as kube-proxy found); tried again on the next sync when that fails.
    stale_chains: BTreeSet<String>,
}

#[derive(Default)]
struct Applied {
    ports: BTreeMap<ServicePortName, (ServicePortRules, PortObjects)>,
    vpc_gateways: BTreeMap<ipnet::Ipv4Net, std::net::Ipv4Addr>,
}

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    /// Whether it rewrote everything (first sync, or after a failure).
    pub full: bool,
    /// Service ports added or changed.
    pub changed: usize,
    /// Service ports removed.
    pub removed: usize,
}

/// The nftables objects of one Service port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PortObjects {
    /// Affinity sets: name and timeout in seconds.
    sets: Vec<(String, u32)>,
    /// Chains: name and rules.
    chains: Vec<(String, Vec<String>)>,
    /// Map elements: map, key, value.
    elements: Vec<(&'static str, String, String)>,
}

impl ServiceRules {
    /// Rules for node `node_name` (its endpoints are the local ones of the
    /// Local traffic policies), in table [`SERVICE_TABLE`].
    pub fn new(node_name: impl Into<String>) -> ServiceRules {
        ServiceRules {
            table: SERVICE_TABLE.to_string(),
            node_name: node_name.into(),
            command: vec!["nft".to_string()],
            applied: None,
            stale_chains: BTreeSet::new(),
        }
    }

    /// Uses table `table` instead (tests and benchmarks beside a node's own).
    pub fn with_table(mut self, table: &str) -> ServiceRules {
        self.table = table.to_string();
        self
    }

    /// Programs the network namespace at `path` instead of the agent's own
    /// (runs `nsenter --net=PATH nft`).
    pub fn in_namespace(mut self, path: &Path) -> ServiceRules {
        self.command = vec![
            "nsenter".to_string(),
            format!("--net={}", path.display()),
            "nft".to_string(),
        ];
        self
    }

    /// Makes the table match `desired`: one transaction with what changed
    /// since the last sync, or everything on the first sync or after a
    /// failed one.
    pub async fn sync(&mut self, desired: &ServiceTable) -> Result<SyncReport> {
        let full = self.applied.is_none();
        let existing = if full {
            self.listed_objects().await?
        } else {
            BTreeSet::new()
        };
        let applied = self.applied.take().unwrap_or_default();
        let (script, next, report, stale) = self.plan(desired, applied, full, &existing);
        let what = format!("service rules in table ip {}", self.table);
        nft(&self.command, &["-f", "-"], &what, Some(&script)).await?;
        self.applied = Some(next);
        self.stale_chains.extend(stale);
        // A chain left from an earlier sync may be wanted again.
        if let Some(applied) = &self.applied
            && !self.stale_chains.is_empty()
        {
            let wanted: BTreeSet<&str> = applied
                .ports
                .values()
                .flat_map(|(_, objects)| objects.chains.iter().map(|(c, _)| c.as_str()))
                .collect();
            self.stale_chains
                .retain(|chain| !wanted.contains(chain.as_str()));
        }
        if !self.stale_chains.is_empty() {
            let mut script = String::new();
            for chain in &self.stale_chains {
                let _ = writeln!(script, "delete chain ip {} {chain}", self.table);
            }
            match nft(&self.command, &["-f", "-"], &what, Some(&script)).await {
                Ok(_) => self.stale_chains.clear(),
                Err(e) => {
                    tracing::debug!(error = %e, "stale service chains stay until the next sync")
                }
            }
        }
        Ok(report)
    }

    /// Makes the next sync a full one, which repairs whatever changed the
    /// table behind this process's back.
    pub fn forget(&mut self) {
        self.applied = None;
    }

    /// Deletes the table; absent is Ok.
    pub async fn remove(&mut self) -> Result<()> {
        let script = format!(
            "add table ip {table}\ndelete table ip {table}\n",
            table = self.table
        );
        nft(
            &self.command,
            &["-f", "-"],
            &format!("table ip {}", self.table),
            Some(&script),
        )
        .await?;
        self.applied = None;
        self.stale_chains.clear();
        Ok(())
    }

    /// The per-Service-port chains and sets the table holds now (none when
    /// it does not exist).
    async fn listed_objects(&self) -> Result<BTreeSet<String>> {
        let table = format!("table ip {}", self.table);
        let listing = match nft(
            &self.command,
            &["-t", "list", "table", "ip", &self.table],
            &table,
            None,
        )
        .await
        {
            Ok(listing) => listing,
            Err(Error::Network { message, .. })
                if message.contains("No such file or directory") =>
            {
                return Ok(BTreeSet::new());
            }
            Err(e) => return Err(e),
        };
        Ok(listing
            .lines()
            .filter_map(|line| {
                let line = line.trim_start();
                let name = line
                    .strip_prefix("chain ")
                    .or_else(|| line.strip_prefix("set "))?
                    .strip_suffix(" {")?;
                name.contains('/').then(|| name.to_string())
            })
            .collect())
    }

    /// The transaction that takes the table from `applied` to `desired`,
    /// what the kernel then holds, and the chains it leaves flushed for
    /// deletion. `existing`: per-port chains and sets found (full sync).
    fn plan(
        &self,
        desired: &ServiceTable,
        mut applied: Applied,
        full: bool,
        existing: &BTreeSet<String>,
    ) -> (String, Applied, SyncReport, Vec<String>) {
        let table = &self.table;
        // Which ports are written anew, and the old objects they replace.
        let mut next = BTreeMap::new();
        let mut fresh = Vec::new();
        let mut retired: Vec<PortObjects> = Vec::new();
        for (name, rules) in desired.ports() {
            match applied.ports.remove(name) {
                Some((old_rules, objects)) if !full && old_rules == *rules => {
                    next.insert(name.clone(), (old_rules, objects));
                }
                old => {
                    retired.extend(old.map(|(_, objects)| objects));
                    let objects = port_objects(name, rules, &self.node_name);
                    next.insert(name.clone(), (rules.clone(), objects));
                    fresh.push(name);
                }
            }
        }
        let removed = applied.ports.len();
        retired.extend(applied.ports.into_values().map(|(_, objects)| objects));
        let fresh: Vec<&PortObjects> = fresh.iter().map(|name| &next[*name].1).collect();

        let mut script = String::new();
        let mut line = |text: std::fmt::Arguments<'_>| {
            let _ = script.write_fmt(text);
            script.push('\n');
        };
        line(format_args!("add table ip {table}"));
        for (map, spec) in MAPS {
            line(format_args!("add map ip {table} {map} {{ {spec} }}"));
            if full {
                line(format_args!("flush map ip {table} {map}"));
            }
        }
        if !full {
            for objects in &retired {
                for (map, key, _) in &objects.elements {
                    line(format_args!("delete element ip {table} {map} {{ {key} }}"));
                }
            }
        }
        for (set, timeout) in fresh.iter().flat_map(|o| o.sets.iter()) {
            line(format_args!(
                "add set ip {table} {set} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
            ));
        }
        // Every chain written here, empty first (so jumps between them
        // resolve), then its rules.
        let fixed = if full { fixed_chains() } else { Vec::new() };
        let written: Vec<(&str, &str, &[String])> = fixed
            .iter()
            .map(|(name, declaration, rules)| {
                (name.as_str(), declaration.as_str(), rules.as_slice())
            })
            .chain(
                fresh
                    .iter()
                    .flat_map(|o| o.chains.iter())
                    .map(|(name, rules)| (name.as_str(), "", rules.as_slice())),
            )
            .collect();
        for (chain, declaration, _) in &written {
            line(format_args!("add chain ip {table} {chain}{declaration}"));
            line(format_args!("flush chain ip {table} {chain}"));
        }
        for (chain, _, rules) in &written {
            for rule in rules.iter() {
                line(format_args!("add rule ip {table} {chain} {rule}"));
            }
        }
        // What no port wants any more: chains flushed (deleted after the
        // transaction), sets deleted now that no rule refers to them.
        let wanted_chains: BTreeSet<&str> = next
            .values()
            .flat_map(|(_, o)| o.chains.iter().map(|(c, _)| c.as_str()))
            .collect();
        let wanted_sets: BTreeSet<&str> = next
            .values()
            .flat_map(|(_, o)| o.sets.iter().map(|(s, _)| s.as_str()))
            .collect();
        let mut stale_chains = BTreeSet::new();
        let mut stale_sets = BTreeSet::new();
        for objects in &retired {
            stale_chains.extend(objects.chains.iter().map(|(c, _)| c.as_str()));
            stale_sets.extend(objects.sets.iter().map(|(s, _)| s.as_str()));
        }
        for name in existing {
            if name.starts_with(AFFINITY_PREFIX) {
                stale_sets.insert(name);
            } else if PORT_CHAIN_PREFIXES.iter().any(|p| name.starts_with(p)) {
                stale_chains.insert(name);
            }
        }
        stale_chains.retain(|c| !wanted_chains.contains(c));
        stale_sets.retain(|s| !wanted_sets.contains(s));
        for chain in &stale_chains {
            line(format_args!("flush chain ip {table} {chain}"));
        }
        for set in &stale_sets {
            line(format_args!("delete set ip {table} {set}"));
        }
        // Elements last: every chain they name exists by now.
        let mut elements: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (map, key, value) in fresh.iter().flat_map(|o| o.elements.iter()) {
            elements
                .entry(map)
                .or_default()
                .push(format!("{key} : {value}"));
        }
        let gateways = desired.vpc_gateways();
        if full || *gateways != applied.vpc_gateways {
            if !full {
                line(format_args!("flush map ip {table} vpc-gateways"));
            }
            for (range, gateway) in gateways {
                elements
                    .entry("vpc-gateways")
                    .or_default()
                    .push(format!("{range} : {gateway}"));
            }
        }
        for (map, entries) in elements {
            for chunk in entries.chunks(1000) {
                line(format_args!(
                    "add element ip {table} {map} {{ {} }}",
                    chunk.join(", ")
                ));
            }
        }
        let report = SyncReport {
            full,
            changed: fresh.len(),
            removed,
        };
        let stale: Vec<String> = stale_chains.into_iter().map(str::to_string).collect();
        let next = Applied {
            ports: next,
            vpc_gateways: gateways.clone(),
        };
        (script, next, report, stale)
    }
}

/// The chains every table has (name, declaration, rules): base chains on
/// the hooks and the chains they jump to.
fn fixed_chains() -> Vec<(String, String, Vec<String>)> {
    let not_loopback = "ip daddr != 127.0.0.0/8";
    let chain = |name: &str, rules: Vec<String>| (name.to_string(), String::new(), rules);
    let base = |name: &str, kind: &str, hook: &str, priority: i32, rule: &str| {
        (
            name.to_string(),
            format!(" {{ type {kind} hook {hook} priority {priority}; policy accept; }}"),
            vec![rule.to_string()],
        )
    };
    vec![
        chain(
            "endpoints-check",
            vec![
                "ip daddr . meta l4proto . th dport vmap @no-endpoint-services".into(),
                format!(
                    "fib daddr type local {not_loopback} meta l4proto . th dport vmap @no-endpoint-nodeports"
                ),
            ],
        ),
        chain("reject-chain", vec!["reject".into()]),
        chain(
            "services",
            vec![
                "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
                format!(
                    "fib daddr type local {not_loopback} meta l4proto . th dport vmap @service-nodeports"
                ),
            ],
        ),
        chain(
            "mark-for-masquerade",
            vec![format!("meta mark set meta mark | {MASQUERADE_MARK}")],
        ),
        chain(
            "masquerading",
            vec![
                format!("meta mark & {MASQUERADE_MARK} == 0 return"),
                format!("meta mark set meta mark ^ {MASQUERADE_MARK}"),
                format!("oifname \"{OVERLAY_DEVICE}\" snat ip to ip daddr map @vpc-gateways"),
                "masquerade fully-random".into(),
            ],
        ),
        base(
            "filter-input",
            "filter",
            "input",
            -110,
            "ct state new jump endpoints-check",
        ),
        base(
            "filter-forward",
            "filter",
            "forward",
            -110,
            "ct state new jump endpoints-check",
        ),
        base(
            "filter-output",
            "filter",
            "output",
            -110,
            "ct state new jump endpoints-check",
        ),
        base("nat-prerouting", "nat", "prerouting", -100, "jump services"),
        base("nat-output", "nat", "output", -100, "jump services"),
        base(
            "nat-postrouting",
            "nat",
            "postrouting",
            100,
            "jump masquerading",
        ),
    ]
}

/// The chains, sets and map elements of one Service port on `node`.
fn port_objects(name: &ServicePortName, rules: &ServicePortRules, node: &str) -> PortObjects {
    let chosen = rules.select(node);
    let base = name.to_string();
    let protocol = rules.protocol.as_str();
    let cluster_chain = format!("svc-{base}");
    let local_chain = format!("local-{base}");
    let external_chain = format!("ext-{base}");
    let endpoint_chain =
        |e: &crate::ServiceEndpoint| format!("ep-{base}__{}/{}", e.address, e.port);
    let affinity_set = |e: &crate::ServiceEndpoint, timeout: u32| {
        format!(
            "{AFFINITY_PREFIX}{timeout}-{base}__{}/{}",
            e.address, e.port
        )
    };
    let external = rules.externally_accessible();
    let external_local = rules.external_local && external;
    let has_internal = if rules.internal_local {
        !chosen.local.is_empty()
    } else {
        chosen.has_endpoints
    };
    let has_external = if external_local {
        !chosen.local.is_empty()
    } else {
        chosen.has_endpoints
    };
    let no_endpoint = if chosen.has_endpoints {
        "drop"
    } else {
        "goto reject-chain"
    };
    let internal_chain = if rules.internal_local {
        &local_chain
    } else {
        &cluster_chain
    };
    let mut objects = PortObjects::default();
    let service_key =
        |address: std::net::Ipv4Addr| format!("{address} . {protocol} . {}", rules.port);

    // Map elements.
    let cluster_ip = service_key(rules.cluster_ip);
    if has_internal {
        objects
            .elements
            .push(("service-ips", cluster_ip, format!("goto {internal_chain}")));
    } else {
        objects
            .elements
            .push(("no-endpoint-services", cluster_ip, no_endpoint.to_string()));
    }
    for address in &rules.external_ips {
        if chosen.has_endpoints {
            objects.elements.push((
                "service-ips",
                service_key(*address),
                format!("goto {external_chain}"),
            ));
        }
        if !has_external {
            objects.elements.push((
                "no-endpoint-services",
                service_key(*address),
                no_endpoint.to_string(),
            ));
        }
    }
    if let Some(node_port) = rules.node_port {
        let key = format!("{protocol} . {node_port}");
        if chosen.has_endpoints {
            objects.elements.push((
                "service-nodeports",
                key.clone(),
                format!("goto {external_chain}"),
            ));
        }
        if !has_external {
            objects
                .elements
                .push(("no-endpoint-nodeports", key, no_endpoint.to_string()));
        }
    }
    if !chosen.has_endpoints {
        return objects;
    }

    // The external chain: NodePorts and external addresses.
    if external {
        let mut chain = Vec::new();
        if external_local {
            // Instances' and the node's own traffic is not external: it
            // goes to any endpoint, as if through an outside balancer.
            chain.push(format!("{FROM_INSTANCE} goto {cluster_chain}"));
            chain.push("fib saddr type local jump mark-for-masquerade".to_string());
            chain.push(format!("fib saddr type local goto {cluster_chain}"));
            if has_external {
                chain.push(format!("goto {local_chain}"));
            }
        } else {
            chain.push("jump mark-for-masquerade".to_string());
            chain.push(format!("goto {cluster_chain}"));
        }
        objects.chains.push((external_chain.clone(), chain));
    }

    // The policy chains: affinity first, then a random endpoint.
    let mut endpoints: Vec<&crate::ServiceEndpoint> = Vec::new();
    let uses_cluster = !rules.internal_local || external;
    let mut policy_chains = Vec::new();
    if uses_cluster {
        policy_chains.push((&cluster_chain, &chosen.cluster));
    }
    if !chosen.local.is_empty() {
        policy_chains.push((&local_chain, &chosen.local));
    }
    for (chain_name, members) in policy_chains {
        let mut chain = Vec::new();
        if chain_name == internal_chain {
            chain.push(format!(
                "ip daddr {} {protocol} dport {} {} jump mark-for-masquerade",
                rules.cluster_ip,
                rules.port,
                FROM_INSTANCE.replace("iifname", "iifname !=")
            ));
        }
        if let Some(timeout) = rules.affinity_timeout {
            for endpoint in members.iter() {
                chain.push(format!(
                    "ip saddr @{} goto {}",
                    affinity_set(endpoint, timeout),
                    endpoint_chain(endpoint)
                ));
            }
        }
        // One draw per rule, each taking its endpoint with 1/(those left):
        // uniform over the endpoints, without an anonymous map per chain
        // (each costs the kernel a scan of the table's sets, so a
        // `numgen … vmap { … }` per Service made the first sync of 10,000
        // Services take 45 s instead of 3 s: decision 0033).
        let Some(last) = members.len().checked_sub(1) else {
            continue;
        };
        for (i, endpoint) in members.iter().enumerate() {
            if i == last {
                chain.push(format!("goto {}", endpoint_chain(endpoint)));
            } else {
                chain.push(format!(
                    "numgen random mod {} == 0 goto {}",
                    members.len() - i,
                    endpoint_chain(endpoint)
                ));
            }
        }
        objects.chains.push((chain_name.clone(), chain));
        for endpoint in members.iter() {
            if !endpoints
                .iter()
                .any(|e| e.address == endpoint.address && e.port == endpoint.port)
            {
                endpoints.push(endpoint);
            }
        }
    }

    // One chain per endpoint: hairpin masquerade, affinity, DNAT.
    for endpoint in endpoints {
        let mut chain = vec![format!(
            "ip saddr {} jump mark-for-masquerade",
            endpoint.address
        )];
        if let Some(timeout) = rules.affinity_timeout {
            let set = affinity_set(endpoint, timeout);
            chain.push(format!("update @{set} {{ ip saddr }}"));
            objects.sets.push((set, timeout));
        }
        chain.push(format!(
            "meta l4proto {protocol} dnat to {}:{}",
            endpoint.address, endpoint.port
        ));
        objects.chains.push((endpoint_chain(endpoint), chain));
    }
    objects
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn table(endpoint_ready: bool) -> ServiceTable {
        let services = [
            json!({"metadata": {"name": "a", "namespace": "shop"},
                   "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}}),
            json!({"metadata": {"name": "b", "namespace": "shop"},
                   "spec": {"type": "NodePort", "clusterIP": "10.96.0.11",
                            "ports": [{"port": 80, "nodePort": 30080}]}}),
        ];
        let slice = |name: &str, ready: bool| {
            json!({"metadata": {"name": name, "namespace": "shop",
                                "labels": {"kubernetes.io/service-name": name}},
                   "endpoints": [{"addresses": ["10.88.1.2"], "conditions": {"ready": ready}}],
                   "ports": [{"port": 8080}]})
        };
        let (table, problems) =
            ServiceTable::from_objects(&services, &[slice("a", true), slice("b", endpoint_ready)]);
        assert!(problems.is_empty());
        table
    }

    #[test]
    fn a_later_sync_writes_only_the_changed_service_port() {
        let rules = ServiceRules::new("n1");
        let (full, applied, report, _) =
            rules.plan(&table(true), Applied::default(), true, &BTreeSet::new());
        assert_eq!((report.full, report.changed, report.removed), (true, 2, 0));
        assert!(full.contains("flush map ip c4m_services service-ips"));
        assert!(full.contains(
            "add chain ip c4m_services nat-prerouting { type nat hook prerouting priority -100; policy accept; }"
        ));
        assert!(full.contains(
            "add rule ip c4m_services ep-shop/a/tcp/__10.88.1.2/8080 meta l4proto tcp dnat to 10.88.1.2:8080"
        ));
        assert!(full.contains("tcp . 30080 : goto ext-shop/b/tcp/"));

        // b's endpoint turns unready: only b is written; it now rejects.
        let (partial, _, report, stale) =
            rules.plan(&table(false), applied, false, &BTreeSet::new());
        assert_eq!((report.full, report.changed, report.removed), (false, 1, 0));
        assert!(!partial.contains("shop/a/"), "{partial}");
        assert!(!partial.contains("flush map ip c4m_services service-ips"));
        assert!(
            partial
                .contains("delete element ip c4m_services service-ips { 10.96.0.11 . tcp . 80 }")
        );
        assert!(partial.contains(
            "add element ip c4m_services no-endpoint-services { 10.96.0.11 . tcp . 80 : goto reject-chain }"
        ));
        assert!(partial.contains(
            "add element ip c4m_services no-endpoint-nodeports { tcp . 30080 : goto reject-chain }"
        ));
        assert_eq!(
            stale,
            [
                "ep-shop/b/tcp/__10.88.1.2/8080",
                "ext-shop/b/tcp/",
                "svc-shop/b/tcp/"
            ]
        );
    }

    #[tokio::test]
    async fn without_nft_a_sync_fails_saying_what_is_missing_and_stays_full() {
        let mut rules = ServiceRules::new("n1");
        rules.command = vec!["c4m-test-no-such-nft".to_string()];
        let error = rules.sync(&table(true)).await.unwrap_err().to_string();
        assert!(
            error.contains("running c4m-test-no-such-nft (is the nftables package installed?)"),
            "{error}"
        );
        // Nothing is taken as programmed: the next sync is a full one.
        assert!(rules.applied.is_none());
    }

    #[test]
    fn a_full_sync_drops_chains_and_sets_no_port_wants() {
        let rules = ServiceRules::new("n1");
        let existing: BTreeSet<String> = [
            "svc-shop/old/tcp/".to_string(),
            "aff-60-shop/old/tcp/__10.88.1.9/80".to_string(),
            "svc-shop/a/tcp/".to_string(),
        ]
        .into();
        let (script, _, _, stale) = rules.plan(&table(true), Applied::default(), true, &existing);
        assert_eq!(stale, ["svc-shop/old/tcp/"]);
        assert!(script.contains("flush chain ip c4m_services svc-shop/old/tcp/\n"));
        assert!(script.contains("delete set ip c4m_services aff-60-shop/old/tcp/__10.88.1.9/80\n"));
    }
}
