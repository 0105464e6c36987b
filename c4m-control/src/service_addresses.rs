//! A Service's addresses: its cluster IP from the Service CIDR and the node
//! ports of NodePort and LoadBalancer Services, allocated as Kubernetes
//! 1.33 allocates cluster IPs: one allocation record per address, written
//! in the same store transaction as the Service with
//! [`Precondition::Absent`], and deleted in the transaction that deletes
//! the Service or gives the address up. Two Services can never hold one
//! address (the second transaction fails on the record and picks again),
//! and allocations survive restarts with the store.
//!
//! Semantics follow kube-apiserver's allocators
//! (`pkg/registry/core/service/ipallocator`, `portallocator`): an address
//! a user asks for is given if free and in range, refused with
//! Kubernetes' message otherwise; the rest are picked at random, first
//! from the upper band of the range (the lower band, of
//! `min(max(16, size/16), 256)` addresses, is kept for requests), the
//! range's first address being the `kubernetes` Service's. `clusterIP:
//! None` is a headless Service; `ExternalName` has no cluster IP; a
//! cluster IP never changes (an update without one keeps it, as do node
//! ports left unset). Defaults are Kubernetes': `type: ClusterIP`,
//! `sessionAffinity: None` (ClientIP timing out after 10800 s),
//! `internalTrafficPolicy: Cluster`, `externalTrafficPolicy: Cluster` for
//! NodePort and LoadBalancer, `ipFamilies: [IPv4]`, `ipFamilyPolicy:
//! SingleStack`, a port's `protocol: TCP` and `targetPort` its `port`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use c4m_state::{Op, Precondition, Store};
use serde_json::{Value, json};

use crate::objects::{name_of, namespace_of};
use crate::{Error, Result};

/// Where cluster IP records live (`/registry/serviceipallocations/IP`);
/// not a served kind, so only Service writes touch them.
pub(crate) const IP_RECORDS: &str = "/registry/serviceipallocations/";
/// Where node port records live (`/registry/servicenodeportallocations/PORT`).
pub(crate) const PORT_RECORDS: &str = "/registry/servicenodeportallocations/";

/// Random picks tried before a full scan of the records.
const RANDOM_TRIES: usize = 32;

/// How many times a create picks again after losing an address to a
/// concurrent one (a nearly full range under concurrent creates).
pub(crate) const PICK_RETRIES: usize = 64;

/// The ranges Service addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRanges {
    /// The Service CIDR's network address (`--service-cidr`).
    pub network: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// Node ports (`--service-node-port-range`).
    pub node_ports: RangeInclusive<u16>,
}

impl Default for ServiceRanges {
    /// Kubernetes' defaults: 10.96.0.0/16 and 30000-32767.
    fn default() -> Self {
        ServiceRanges {
            network: Ipv4Addr::new(10, 96, 0, 0),
            prefix: 16,
            node_ports: 30000..=32767,
        }
    }
}

/// Why a range given on the command line is not one.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    /// Not `A.B.C.D/N` with N between 8 and 30 and no host bits set.
    #[error("service CIDR {0:?}: {1}")]
    Cidr(String, &'static str),
    /// Not `LOW-HIGH` with 1 <= LOW <= HIGH <= 65535.
    #[error("node port range {0:?}: expected LOW-HIGH, ports between 1 and 65535")]
    NodePorts(String),
}

impl ServiceRanges {
    /// Parses `--service-cidr` (IPv4 only).
    pub fn parse_cidr(text: &str) -> std::result::Result<(Ipv4Addr, u8), RangeError> {
        let bad = |why| RangeError::Cidr(text.to_string(), why);
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| bad("expected A.B.C.D/N"))?;
        let address: Ipv4Addr = address.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("not a prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("the prefix length must be between 8 and 30"));
        }
        if u32::from(address) & !mask(prefix) != 0 {
            return Err(bad("host bits are set"));
        }
        Ok((address, prefix))
    }

    /// Parses `--service-node-port-range` (`30000-32767`).
    pub fn parse_node_ports(text: &str) -> std::result::Result<RangeInclusive<u16>, RangeError> {
        let bad = || RangeError::NodePorts(text.to_string());
        let (low, high) = text.split_once('-').ok_or_else(bad)?;
        let low: u16 = low.trim().parse().map_err(|_| bad())?;
        let high: u16 = high.trim().parse().map_err(|_| bad())?;
        if low == 0 || low > high {
            return Err(bad());
        }
        Ok(low..=high)
    }

    /// The CIDR as text (`10.96.0.0/16`).
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network, self.prefix)
    }

    /// The first and last address a Service may get (network and
    /// broadcast addresses excluded).
    /// (Fields set by hand to a prefix beyond /30 give no address at all,
    /// rather than an overflow.)
    fn bounds(&self) -> (u32, u32) {
        let network = u64::from(u32::from(self.network) & mask(self.prefix.min(32)));
        let size = 1u64 << (32 - u32::from(self.prefix.min(32)));
        let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        (
            clamp(network + 1),
            clamp((network + size).saturating_sub(2)),
        )
    }

    /// The `kubernetes` Service's address: the range's first.
    pub fn api_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.bounds().0)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let (first, last) = self.bounds();
        (first..=last).contains(&u32::from(ip))
    }

    /// Where dynamic picks start: past the band kept for requests.
    fn upper_band(&self) -> u32 {
        let (first, last) = self.bounds();
        let size = (last + 1).saturating_sub(first);
        first.saturating_add((size / 16).clamp(16, 256).min(size / 2))
    }
}

/// A random number below `n` (uniform enough for picking addresses).
fn random_below(n: u32) -> u32 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(n)) as u32
}

/// One of `items` at random.
fn pick<T: Copy>(items: &[T]) -> Option<T> {
    match items.len() {
        0 => None,
        n => Some(items[random_below(n as u32) as usize]),
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn ip_key(ip: Ipv4Addr) -> String {
    format!("{IP_RECORDS}{ip}")
}

fn port_key(port: u16) -> String {
    format!("{PORT_RECORDS}{port}")
}

/// The record of an address held by `service`.
fn record(name: &str, service: &Value) -> bytes::Bytes {
    let record = json!({
        "metadata": {"name": name},
        "parentRef": {
            "resource": "services",
            "namespace": namespace_of(service),
            "name": name_of(service),
            "uid": service["metadata"]["uid"],
        },
    });
    bytes::Bytes::from(record.to_string())
}

/// Whether the record stored at `key` is held by `service`.
async fn held_by(store: &dyn Store, key: &str, service: &Value) -> Result<Option<bool>> {
    let Some(kv) = store.get(key).await? else {
        return Ok(None);
    };
    let record: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
    Ok(Some(
        record["parentRef"]["uid"] == service["metadata"]["uid"]
            && !service["metadata"]["uid"].is_null(),
    ))
}

/// The addresses a stored Service holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Held {
    pub ip: Option<Ipv4Addr>,
    pub node_ports: BTreeSet<u16>,
}

impl Held {
    pub(crate) fn of(service: &Value) -> Held {
        Held {
            ip: service["spec"]["clusterIP"]
                .as_str()
                .and_then(|ip| ip.parse().ok()),
            node_ports: service["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| &p["nodePort"])
                .chain([&service["spec"]["healthCheckNodePort"]])
                .filter_map(|port| u16::try_from(port.as_u64()?).ok())
                .filter(|port| *port != 0)
                .collect(),
        }
    }

    /// Deletes of the records of what `self` holds and `keep` does not.
    fn released(&self, keep: &Held) -> Vec<Op> {
        let mut ops = Vec::new();
        if let Some(ip) = self.ip.filter(|ip| keep.ip != Some(*ip)) {
            ops.push(Op::delete(&ip_key(ip), Precondition::None));
        }
        for port in self.node_ports.difference(&keep.node_ports) {
            ops.push(Op::delete(&port_key(*port), Precondition::None));
        }
        ops
    }
}

/// The record deletes that go with deleting `service`.
pub(crate) fn release(service: &Value) -> Vec<Op> {
    Held::of(service).released(&Held::default())
}

/// Addresses picked for earlier objects of one transaction (a batch apply
/// may create several Services): not picked twice.
#[derive(Debug, Default)]
pub(crate) struct Picked {
    ips: BTreeSet<Ipv4Addr>,
    ports: BTreeSet<u16>,
}

fn service_type(service: &Value) -> &str {
    service["spec"]["type"].as_str().unwrap_or("ClusterIP")
}

/// Sets `field` of `object` to `value` unless it has a non-null one.
fn default_field(object: &mut Value, field: &str, value: Value) {
    if object.get(field).is_none_or(Value::is_null) {
        object[field] = value;
    }
}

/// The defaults Kubernetes gives a Service's spec.
fn default_spec(service: &mut Value) {
    if !service["spec"].is_object() {
        service["spec"] = json!({});
    }
    let type_ = service_type(service).to_string();
    let spec = &mut service["spec"];
    default_field(spec, "type", json!("ClusterIP"));
    default_field(spec, "sessionAffinity", json!("None"));
    if spec["sessionAffinity"] == "ClientIP" {
        default_field(
            spec,
            "sessionAffinityConfig",
            json!({"clientIP": {"timeoutSeconds": 10800}}),
        );
        default_field(
            &mut spec["sessionAffinityConfig"],
            "clientIP",
            json!({"timeoutSeconds": 10800}),
        );
        default_field(
            &mut spec["sessionAffinityConfig"]["clientIP"],
            "timeoutSeconds",
            json!(10800),
        );
    }
    if let Some(ports) = spec["ports"].as_array_mut() {
        for port in ports.iter_mut().filter(|p| p.is_object()) {
            default_field(port, "protocol", json!("TCP"));
            let number = port["port"].clone();
            default_field(port, "targetPort", number);
        }
    }
    if type_ == "ExternalName" {
        if let Some(spec) = spec.as_object_mut() {
            for field in [
                "clusterIP",
                "clusterIPs",
                "ipFamilies",
                "ipFamilyPolicy",
                "internalTrafficPolicy",
            ] {
                spec.remove(field);
            }
        }
    } else {
        default_field(spec, "internalTrafficPolicy", json!("Cluster"));
        default_field(spec, "ipFamilies", json!(["IPv4"]));
        default_field(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    if matches!(type_.as_str(), "NodePort" | "LoadBalancer") {
        default_field(spec, "externalTrafficPolicy", json!("Cluster"));
    } else if let Some(spec) = spec.as_object_mut() {
        spec.remove("externalTrafficPolicy");
    }
    if type_ == "LoadBalancer" {
        default_field(spec, "allocateLoadBalancerNodePorts", json!(true));
    } else if let Some(spec) = spec.as_object_mut() {
        spec.remove("allocateLoadBalancerNodePorts");
    }
    default_field(service, "status", json!({"loadBalancer": {}}));
}

/// Whether a stored Service lacks an address its type needs: a cluster IP
/// (unless ExternalName), or a node port.
pub(crate) fn lacks_addresses(service: &Value) -> bool {
    let no_ip = service_type(service) != "ExternalName"
        && service["spec"]["clusterIP"]
            .as_str()
            .is_none_or(str::is_empty);
    let no_node_port = needs_node_ports(service)
        && service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["nodePort"].as_u64().is_none_or(|n| n == 0));
    let no_health_check = needs_health_check(service)
        && service["spec"]["healthCheckNodePort"]
            .as_u64()
            .is_none_or(|n| n == 0);
    no_ip || no_node_port || no_health_check
}

/// Whether the Service gets a `healthCheckNodePort`: a LoadBalancer whose
/// external traffic stays on nodes with a local endpoint.
fn needs_health_check(service: &Value) -> bool {
    service_type(service) == "LoadBalancer" && service["spec"]["externalTrafficPolicy"] == "Local"
}

/// Whether the Service's ports get node ports.
fn needs_node_ports(service: &Value) -> bool {
    match service_type(service) {
        "NodePort" => true,
        "LoadBalancer" => service["spec"]["allocateLoadBalancerNodePorts"] != false,
        _ => false,
    }
}

impl ServiceRanges {
    /// Defaults `service` (new when `current` is None, else replacing
    /// `current`), checks what it asks for and allocates what it lacks;
    /// returns the record writes and deletes that must go in the
    /// transaction writing it. A record taken meanwhile fails that
    /// transaction as a conflict: the caller prepares again from a fresh
    /// read.
    pub(crate) async fn prepare(
        &self,
        store: &dyn Store,
        current: Option<&Value>,
        service: &mut Value,
        picked: &mut Picked,
    ) -> Result<Vec<Op>> {
        let before = current.map(Held::of).unwrap_or_default();
        if let Some(current) = current {
            keep_allocated(current, service)?;
        }
        default_spec(service);
        let mut ops = Vec::new();
        let mut after = Held::default();
        if service_type(service) != "ExternalName" {
            let ip = self
                .cluster_ip(store, &before, service, &mut picked.ips, &mut ops)
                .await?;
            after.ip = ip;
        }
        if needs_node_ports(service) || needs_health_check(service) {
            after.node_ports = self
                .node_ports(store, &before, service, &mut picked.ports, &mut ops)
                .await?;
        }
        if !needs_node_ports(service)
            && let Some(ports) = service["spec"]["ports"].as_array_mut()
        {
            for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                port.remove("nodePort");
            }
        }
        if !needs_health_check(service)
            && let Some(spec) = service["spec"].as_object_mut()
        {
            spec.remove("healthCheckNodePort");
        }
        ops.extend(before.released(&after));
        Ok(ops)
    }

    /// The Service's cluster IP: the one it has, the one it asks for, or a
    /// free one; `None` for a headless Service. Sets `clusterIP` and
    /// `clusterIPs`.
    async fn cluster_ip(
        &self,
        store: &dyn Store,
        before: &Held,
        service: &mut Value,
        picked: &mut BTreeSet<Ipv4Addr>,
        ops: &mut Vec<Op>,
    ) -> Result<Option<Ipv4Addr>> {
        let asked = match &service["spec"]["clusterIP"] {
            Value::String(ip) if !ip.is_empty() => Some(ip.clone()),
            Value::Null | Value::String(_) => service["spec"]["clusterIPs"][0]
                .as_str()
                .filter(|ip| !ip.is_empty())
                .map(str::to_string),
            other => {
                return Err(Error::Invalid(format!(
                    "spec.clusterIP: Invalid value: {other}: must be a string"
                )));
            }
        };
        if let Some(ips) = service["spec"]["clusterIPs"].as_array() {
            let first = ips.first().and_then(Value::as_str).unwrap_or_default();
            if ips.len() > 1 || (asked.is_some() && Some(first) != asked.as_deref()) {
                return Err(Error::Invalid(format!(
                    "spec.clusterIPs: Invalid value: {}: must hold one address (IPv4 only), the same as spec.clusterIP",
                    service["spec"]["clusterIPs"]
                )));
            }
        }
        let ip = match asked.as_deref() {
            Some("None") => {
                if service_type(service) != "ClusterIP" {
                    return Err(Error::Invalid(format!(
                        "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for {} services",
                        service_type(service)
                    )));
                }
                None
            }
            Some(text) => {
                let ip: Ipv4Addr = text.parse().map_err(|_| {
                    Error::Invalid(format!(
                        "spec.clusterIPs[0]: Invalid value: {text:?}: must be a valid IPv4 address"
                    ))
                })?;
                if before.ip != Some(ip) {
                    self.take_ip(store, ip, service, picked, ops).await?;
                }
                Some(ip)
            }
            None => {
                let ip = self.free_ip(store, picked).await?;
                ops.push(Op::put(
                    &ip_key(ip),
                    record(&ip.to_string(), service),
                    Precondition::Absent,
                ));
                Some(ip)
            }
        };
        let text = ip.map_or_else(|| "None".to_string(), |ip| ip.to_string());
        let spec = crate::json::object_at(service, &["spec"])?;
        spec.insert("clusterIP".into(), json!(text));
        spec.insert("clusterIPs".into(), json!([text]));
        Ok(ip)
    }

    /// Takes the address a Service asked for, or refuses as Kubernetes does.
    async fn take_ip(
        &self,
        store: &dyn Store,
        ip: Ipv4Addr,
        service: &Value,
        picked: &mut BTreeSet<Ipv4Addr>,
        ops: &mut Vec<Op>,
    ) -> Result<()> {
        if !self.contains(ip) {
            return Err(Error::Invalid(format!(
                "spec.clusterIPs[0]: Invalid value: {:?}: failed to allocate IP {ip}: provided IP is not in the valid range. The range of valid IPs is {}",
                ip.to_string(),
                self.cidr()
            )));
        }
        let taken = match held_by(store, &ip_key(ip), service).await? {
            Some(mine) => !mine,
            None => picked.contains(&ip),
        };
        if taken {
            return Err(Error::Invalid(format!(
                "spec.clusterIPs[0]: Invalid value: {:?}: failed to allocate IP {ip}: provided IP is already allocated",
                ip.to_string()
            )));
        }
        picked.insert(ip);
        ops.push(Op::put(
            &ip_key(ip),
            record(&ip.to_string(), service),
            Precondition::Absent,
        ));
        Ok(())
    }

    /// A free address: random picks in the upper band, then a scan of
    /// the whole range, the upper band first (the first address is the
    /// `kubernetes` Service's).
    async fn free_ip(
        &self,
        store: &dyn Store,
        picked: &mut BTreeSet<Ipv4Addr>,
    ) -> Result<Ipv4Addr> {
        let (first, last) = self.bounds();
        let upper = self.upper_band();
        let bands = [
            upper..=last,
            first.saturating_add(1)..=upper.saturating_sub(1),
        ];
        free(store, IP_RECORDS, &bands, Ipv4Addr::from, picked)
            .await?
            .ok_or_else(|| {
                Error::RangeFull(format!(
                    "failed to allocate a serviceIP: range is full ({})",
                    self.cidr()
                ))
            })
    }

    /// Each port's node port, and a LoadBalancer's with
    /// `externalTrafficPolicy: Local` its `healthCheckNodePort`: the one it
    /// has, the one it asks for, or a free one. Ports of one Service may
    /// share a node port (TCP and UDP).
    async fn node_ports(
        &self,
        store: &dyn Store,
        before: &Held,
        service: &mut Value,
        picked: &mut BTreeSet<u16>,
        ops: &mut Vec<Op>,
    ) -> Result<BTreeSet<u16>> {
        let mut mine = BTreeSet::new();
        let count = match needs_node_ports(service) {
            true => service["spec"]["ports"].as_array().map_or(0, Vec::len),
            false => 0,
        };
        for i in 0..count {
            let path = format!("spec.ports[{i}].nodePort");
            let asked = service["spec"]["ports"][i]["nodePort"].clone();
            let port = self
                .node_port(store, &path, &asked, before, &mine, service, picked, ops)
                .await?;
            if let Some(entry) = service["spec"]["ports"]
                .get_mut(i)
                .and_then(Value::as_object_mut)
            {
                entry.insert("nodePort".into(), json!(port));
            }
            mine.insert(port);
        }
        if needs_health_check(service) {
            let asked = service["spec"]["healthCheckNodePort"].clone();
            let path = "spec.healthCheckNodePort";
            let port = self
                .node_port(store, path, &asked, before, &mine, service, picked, ops)
                .await?;
            crate::json::set_path(service, &["spec", "healthCheckNodePort"], json!(port))?;
            mine.insert(port);
        }
        Ok(mine)
    }

    /// One node port (at `path`): `asked` if held already (by the Service
    /// before, or another of its ports), else taken if free and in range,
    /// else a free one when none is asked.
    #[allow(clippy::too_many_arguments)]
    async fn node_port(
        &self,
        store: &dyn Store,
        path: &str,
        asked: &Value,
        before: &Held,
        mine: &BTreeSet<u16>,
        service: &Value,
        picked: &mut BTreeSet<u16>,
        ops: &mut Vec<Op>,
    ) -> Result<u16> {
        let out_of_range = |value: &dyn std::fmt::Display| {
            Error::Invalid(format!(
                "{path}: Invalid value: {value}: provided port is not in the valid range. The range of valid ports is {}-{}",
                self.node_ports.start(),
                self.node_ports.end()
            ))
        };
        let asked = match asked {
            Value::Null => None,
            value => match value.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(0) => None,
                Some(port) => Some(port),
                None => return Err(out_of_range(value)),
            },
        };
        let port = match asked {
            Some(port) if mine.contains(&port) || before.node_ports.contains(&port) => {
                return Ok(port);
            }
            Some(port) => {
                if !self.node_ports.contains(&port) {
                    return Err(out_of_range(&port));
                }
                let taken = match held_by(store, &port_key(port), service).await? {
                    Some(held) => !held,
                    None => picked.contains(&port),
                };
                if taken {
                    return Err(Error::Invalid(format!(
                        "{path}: Invalid value: {port}: provided port is already allocated"
                    )));
                }
                picked.insert(port);
                port
            }
            None => self.free_port(store, picked).await?,
        };
        ops.push(Op::put(
            &port_key(port),
            record(&port.to_string(), service),
            Precondition::Absent,
        ));
        Ok(port)
    }

    async fn free_port(&self, store: &dyn Store, picked: &mut BTreeSet<u16>) -> Result<u16> {
        let (low, high) = (*self.node_ports.start(), *self.node_ports.end());
        let bands = [u32::from(low)..=u32::from(high)];
        let to_port = |n: u32| u16::try_from(n).unwrap_or(high);
        free(store, PORT_RECORDS, &bands, to_port, picked)
            .await?
            .ok_or_else(|| {
                Error::RangeFull(format!(
                    "failed to allocate a nodePort: range is full ({low}-{high})"
                ))
            })
    }
}

/// A value of `bands` (numbered, made values by `to`) that has no record
/// under `prefix` and that this transaction did not pick: random picks in
/// the first band, then a scan of the records and a random one of the
/// free values of the first band that has any (so that concurrent creates
/// seldom pick the same); None when every band is full.
async fn free<T>(
    store: &dyn Store,
    prefix: &str,
    bands: &[RangeInclusive<u32>],
    to: impl Fn(u32) -> T,
    picked: &mut BTreeSet<T>,
) -> Result<Option<T>>
where
    T: Ord + Copy + std::fmt::Display + std::str::FromStr,
{
    if let Some(band) = bands.first().filter(|band| !band.is_empty()) {
        for _ in 0..RANDOM_TRIES {
            let candidate = to(band.start() + random_below(band.end() - band.start() + 1));
            if !picked.contains(&candidate)
                && store.get(&format!("{prefix}{candidate}")).await?.is_none()
            {
                picked.insert(candidate);
                return Ok(Some(candidate));
            }
        }
    }
    let (records, _) = store.range(prefix).await?;
    let taken: BTreeSet<T> = records
        .iter()
        .filter_map(|kv| kv.key.strip_prefix(prefix)?.parse().ok())
        .chain(picked.iter().copied())
        .collect();
    for band in bands {
        let free: Vec<T> = band
            .clone()
            .map(&to)
            .filter(|value| !taken.contains(value))
            .collect();
        if let Some(value) = pick(&free) {
            picked.insert(value);
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// What an update of `current` may not change, and what it keeps when it
/// leaves it unset (kube-apiserver's `patchAllocatedValues`): the cluster
/// IP, the health check node port, and each node port of a port kept (same
/// number and protocol).
fn keep_allocated(current: &Value, service: &mut Value) -> Result<()> {
    if service_type(service) == "ExternalName" {
        return Ok(());
    }
    if !service["spec"].is_object() {
        service["spec"] = json!({});
    }
    let had = current["spec"]["clusterIP"].as_str().unwrap_or_default();
    if !had.is_empty() {
        let asked = service["spec"]["clusterIP"].as_str().unwrap_or_default();
        if asked.is_empty() {
            let spec = crate::json::object_at(service, &["spec"])?;
            spec.insert("clusterIP".into(), json!(had));
            spec.insert("clusterIPs".into(), json!([had]));
        } else if asked != had {
            return Err(Error::Invalid(format!(
                "spec.clusterIPs[0]: Invalid value: [{asked:?}]: may not change once set"
            )));
        }
    }
    let health = &current["spec"]["healthCheckNodePort"];
    if health.as_u64().is_some_and(|port| port != 0)
        && service["spec"]["healthCheckNodePort"]
            .as_u64()
            .is_none_or(|port| port == 0)
    {
        crate::json::set_path(service, &["spec", "healthCheckNodePort"], health.clone())?;
    }
    if !needs_node_ports(current) {
        return Ok(());
    }
    let old: Vec<(Value, Value, Value)> = current["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["port"].clone(),
                p["protocol"].clone(),
                p["nodePort"].clone(),
            )
        })
        .collect();
    if let Some(ports) = service["spec"]["ports"].as_array_mut() {
        for port in ports.iter_mut().filter(|p| p.is_object()) {
            if !matches!(port["nodePort"], Value::Null) && port["nodePort"] != 0 {
                continue;
            }
            let protocol = match &port["protocol"] {
                Value::Null => json!("TCP"),
                protocol => protocol.clone(),
            };
            if let Some((_, _, node_port)) = old
                .iter()
                .find(|(number, proto, _)| *number == port["port"] && *proto == protocol)
            {
                port["nodePort"] = node_port.clone();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
