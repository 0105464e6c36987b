//! Cluster DNS: an authoritative server for the cluster domains (`cluster.local` by default, and
//! always `c4m`), answered from the service registry.
//!
//! Names follow Kubernetes' DNS specification (schema 1.0.1,
//! <https://github.com/kubernetes/dns/blob/master/docs/specification.md>), in every domain served:
//!
//! - `NAME.NAMESPACE.svc.<domain>` A: a Service's cluster IP; a headless Service's (or a
//!   Microservice's) ready endpoints, NXDOMAIN while it has none; for `type: ExternalName`, a
//!   CNAME to `spec.externalName`, followed when that name is in a served domain. AAAA of an
//!   IPv4 service is NODATA, not NXDOMAIN.
//! - `_PORT._PROTO.NAME.NAMESPACE.svc.<domain>` SRV: the named port, targeting the Service's own
//!   name (cluster IP) or each ready endpoint's name (headless), with their addresses in the
//!   additional section; `NAME.NAMESPACE.svc.<domain>` SRV gives every port so.
//! - `HOSTNAME.NAME.NAMESPACE.svc.<domain>` A: a headless service's endpoint, by its `hostname`
//!   (a pod's `spec.hostname` with `spec.subdomain` naming the Service) or its instance name.
//! - `dns-version.<domain>` TXT: the schema version; `A-B-C-D.NAMESPACE.pod.<domain>` A: the
//!   deprecated pod records (2.6).
//!
//! - `D.C.B.A.in-addr.arpa` PTR: the Service whose cluster IP, or the headless service endpoint
//!   whose address, `A.B.C.D` is, named in the configured domain; other addresses are refused.
//!
//! The server keeps no cache: every query asks the
//! [`ServiceLookup`], so registry changes are visible to the next query, and records carry a
//! short TTL ([`RECORD_TTL_SECS`]) so clients don't hold on to them either. Queries outside the
//! domains are refused: this is not a recursive resolver, so an ExternalName pointing outside
//! the cluster answers its CNAME alone.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_server::Server;
use hickory_server::net::NetError;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, LowerQuery, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use c4m_core::BoxError;

use crate::lookup::{DnsEndpoint, DnsService, DnsServiceKind, ServiceLookup};

/// TTL of every record served, in seconds: short, because endpoints come and go.
pub const RECORD_TTL_SECS: u32 = 5;

/// The version of Kubernetes' DNS schema served, the TXT record of `dns-version.<domain>`.
pub const DNS_SCHEMA_VERSION: &str = "1.0.1";

/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Responses queued per TCP connection before the connection applies backpressure.
const TCP_RESPONSE_BUFFER: usize = 32;

/// How often `bind` retries when an ephemeral port free for UDP is taken for TCP.
const EPHEMERAL_BIND_ATTEMPTS: usize = 16;

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A configured cluster domain is not a usable domain name.
    #[error("invalid cluster domain {zone:?}: {source}")]
    InvalidZone {
        /// The zone as configured.
        zone: String,
        /// Why it was rejected (the name parser's error, or why a valid
        /// name cannot be served).
        #[source]
        source: BoxError,
    },
    /// A UDP or TCP socket could not be bound.
    #[error("cannot bind dns server to {addr}: {source}")]
    Bind {
        /// The address that was being bound.
        addr: SocketAddr,
        /// The underlying socket error.
        #[source]
        source: std::io::Error,
    },
    /// A server task failed (a socket closed unexpectedly or a task panicked).
    #[error("dns server failed: {0}")]
    Serve(#[source] NetError),
}

/// A DNS server for the cluster domains, listening on UDP and TCP on the same address.
///
/// Queries are answered as soon as [`DnsServer::bind`] returns; [`DnsServer::run`] keeps the
/// server alive until shutdown is requested.
pub struct DnsServer {
    server: Server<ZoneHandler>,
    local_addr: SocketAddr,
}

impl fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0 allowed: query [`DnsServer::local_addr`]) and starts
    /// answering for the cluster `domains` (e.g. `["cluster.local", "c4m"]`) from `lookup`.
    pub async fn bind(
        addr: SocketAddr,
        domains: &[&str],
        lookup: Arc<dyn ServiceLookup>,
    ) -> Result<Self, DnsError> {
        let handler = ZoneHandler::new(domains, lookup)?;
        let (udp, tcp) = bind_udp_and_tcp(addr).await?;
        let local_addr = udp
            .local_addr()
            .map_err(|source| DnsError::Bind { addr, source })?;

        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        debug!(%local_addr, ?domains, "dns server listening");
        Ok(Self { server, local_addr })
    }

    /// The address the server listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled, then stops gracefully: the listeners stop accepting
    /// and this returns once the server's tasks have ended.
    ///
    /// Returns an error if a server task failed, including one that failed before shutdown.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), DnsError> {
        // Cancelling hickory's own token is its graceful shutdown (what `shutdown_gracefully`
        // does); we keep polling the same `block_until_done` future so an error a task returned
        // before shutdown is still reported.
        let server_shutdown = self.server.shutdown_token().clone();
        let all_tasks_done = self.server.block_until_done();
        tokio::pin!(all_tasks_done);
        tokio::select! {
            result = &mut all_tasks_done => {
                warn!(local_addr = %self.local_addr, "dns server stopped before shutdown");
                return result.map_err(DnsError::Serve);
            }
            () = shutdown.cancelled() => server_shutdown.cancel(),
        }
        all_tasks_done.await.map_err(DnsError::Serve)?;
        debug!(local_addr = %self.local_addr, "dns server stopped");
        Ok(())
    }
}

/// Binds a UDP socket and a TCP listener on the same address (and port, if it was 0).
async fn bind_udp_and_tcp(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let mut attempts_left = EPHEMERAL_BIND_ATTEMPTS;
    loop {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::Bind { addr, source })?;
        let udp_addr = udp
            .local_addr()
            .map_err(|source| DnsError::Bind { addr, source })?;
        match TcpListener::bind(udp_addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // The port the OS picked for UDP may be in use for TCP: let it pick another.
            Err(source)
                if addr.port() == 0
                    && source.kind() == std::io::ErrorKind::AddrInUse
                    && attempts_left > 1 =>
            {
                attempts_left -= 1;
            }
            Err(source) => {
                return Err(DnsError::Bind {
                    addr: udp_addr,
                    source,
                });
            }
        }
    }
}

/// One cluster domain the server is authoritative for.
#[derive(Clone)]
struct Zone {
    /// The apex (the cluster domain), lowercase and fully qualified.
    apex: Name,
    /// The apex's labels, lowercase, most specific first (as [`Name::iter`] yields them).
    labels: Vec<Vec<u8>>,
    /// The synthetic SOA put in the authority section of negative answers.
    soa: Record,
}

impl Zone {
    fn new(domain: &str) -> Result<Self, DnsError> {
        let invalid = |source: BoxError| DnsError::InvalidZone {
            zone: domain.to_owned(),
            source,
        };
        let mut apex = Name::from_ascii(domain)
            .map_err(|error| invalid(error.into()))?
            .to_lowercase();
        apex.set_fqdn(true);
        if apex.is_root() {
            return Err(invalid("the root zone cannot be served".into()));
        }
        let soa_name = |prefix: &str| {
            Name::from_ascii(prefix)
                .and_then(|name| name.append_domain(&apex))
                .map_err(|error| invalid(error.into()))
        };
        // Serial: bind time, like CoreDNS; nothing transfers this zone, it only has to be valid.
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |elapsed| elapsed.as_secs() as u32);
        let soa = SOA::new(
            soa_name("ns.dns")?,
            soa_name("hostmaster")?,
            serial,
            7200,
            1800,
            86400,
            // Negative answers are cached for min(SOA TTL, minimum): keep it as short as records.
            RECORD_TTL_SECS,
        );
        // The longest name below the apex is `_PORT._PROTO.NAME.NAMESPACE.svc`.
        soa_name("_a._b.c.d.svc")?;
        Ok(Zone {
            labels: apex.iter().map(<[u8]>::to_vec).collect(),
            soa: Record::from_rdata(apex.clone(), RECORD_TTL_SECS, RData::SOA(soa)),
            apex,
        })
    }

    /// `LABELS...<apex>`, or `None` if that is no valid name.
    fn name(&self, labels: &[&str]) -> Option<Name> {
        let labels: Vec<String> = labels.iter().map(|l| l.to_ascii_lowercase()).collect();
        Name::from_labels(labels.iter().map(String::as_str))
            .and_then(|relative| relative.append_domain(&self.apex))
            .ok()
    }
}

/// How many ExternalName CNAMEs an answer follows inside the served zones.
const MAX_CNAME_CHAIN: usize = 8;

/// Answers queries for the cluster domains from a [`ServiceLookup`].
struct ZoneHandler {
    /// The domains served, the most specific first.
    zones: Vec<Zone>,
    /// The configured cluster domain (the first given): PTR records name it.
    primary: Zone,
    lookup: Arc<dyn ServiceLookup>,
}

impl ZoneHandler {
    fn new(domains: &[&str], lookup: Arc<dyn ServiceLookup>) -> Result<Self, DnsError> {
        let mut zones: Vec<Zone> = Vec::with_capacity(domains.len());
        for domain in domains {
            let zone = Zone::new(domain)?;
            if !zones.iter().any(|known| known.apex == zone.apex) {
                zones.push(zone);
            }
        }
        let Some(primary) = zones.first().cloned() else {
            return Err(DnsError::InvalidZone {
                zone: String::new(),
                source: "no cluster domain to serve".into(),
            });
        };
        // The most specific zone first, so a domain below another is found before it.
        zones.sort_by_key(|zone| std::cmp::Reverse(zone.labels.len()));
        Ok(Self {
            zones,
            primary,
            lookup,
        })
    }

    /// The zone `name` is in, and its labels left of the apex; `None` outside every zone.
    fn zone_of<'n>(&self, name: &'n LowerName) -> Option<(&Zone, Vec<&'n [u8]>)> {
        let labels: Vec<&[u8]> = name.iter().collect();
        self.zones.iter().find_map(|zone| {
            let split = labels.len().checked_sub(zone.labels.len())?;
            let in_zone = labels[split..]
                .iter()
                .zip(&zone.labels)
                .all(|(label, zone_label)| label.eq_ignore_ascii_case(zone_label));
            in_zone.then(|| (zone, labels[..split].to_vec()))
        })
    }

    /// Computes the answer to one query.
    fn answer(&self, query: &LowerQuery) -> Answer {
        if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
            return Answer::error(ResponseCode::Refused);
        }
        if let Some(address) = reverse_address(query.name()) {
            return self.answer_reverse(query, address);
        }
        // Answer with the name as the client spelled it (some resolvers randomize case).
        self.answer_name(query.name(), query.original().name(), query.query_type(), 0)
    }

    /// `D.C.B.A.in-addr.arpa` PTR (2.3.3, 2.4.3): the names at `A.B.C.D` in the configured
    /// domain. An address the registry has no name at is refused, as names outside the domains
    /// are: the server is authoritative for the cluster's addresses only.
    fn answer_reverse(&self, query: &LowerQuery, address: Option<IpAddr>) -> Answer {
        let mut names = address.map_or_else(Vec::new, |ip| self.lookup.names_of(ip));
        names.sort();
        names.dedup();
        let owner = query.original().name();
        let answers: Vec<Record> = names
            .iter()
            .filter_map(|name| {
                let mut labels: Vec<&str> = name.endpoint.iter().map(String::as_str).collect();
                labels.extend([name.service.as_str(), name.namespace.as_str(), "svc"]);
                self.primary.name(&labels)
            })
            .map(|target| {
                Record::from_rdata(owner.clone(), RECORD_TTL_SECS, RData::PTR(PTR(target)))
            })
            .collect();
        if answers.is_empty() {
            return Answer::error(ResponseCode::Refused);
        }
        let answers = match query.query_type() {
            RecordType::PTR | RecordType::ANY => answers,
            _ => Vec::new(),
        };
        Answer {
            response_code: ResponseCode::NoError,
            authoritative: true,
            answers,
            soa: Vec::new(),
            additionals: Vec::new(),
        }
    }

    /// The answer for `name` (spelled `owner`), having followed `depth` CNAMEs to it.
    fn answer_name(
        &self,
        name: &LowerName,
        owner: &Name,
        qtype: RecordType,
        depth: usize,
    ) -> Answer {
        let Some((zone, labels)) = self.zone_of(name) else {
            return Answer::error(ResponseCode::Refused);
        };
        // Non-UTF-8 labels can't name anything in the registry.
        let Some(labels) = labels
            .into_iter()
            .map(|label| std::str::from_utf8(label).ok())
            .collect::<Option<Vec<&str>>>()
        else {
            return zone.nxdomain();
        };
        let query = Query {
            zone,
            owner,
            qtype,
            depth,
        };

        // `name` is lowercase: so are its labels.
        match labels.as_slice() {
            [] if matches!(qtype, RecordType::SOA | RecordType::ANY) => {
                zone.records(vec![zone.soa.clone()], Vec::new())
            }
            ["dns-version"] if matches!(qtype, RecordType::TXT | RecordType::ANY) => {
                let txt = TXT::new(vec![DNS_SCHEMA_VERSION.to_owned()]);
                let record = Record::from_rdata(owner.clone(), RECORD_TTL_SECS, RData::TXT(txt));
                zone.records(vec![record], Vec::new())
            }
            // The apex, its fixed names, and a namespace (which exists whenever a service in it
            // does, and we can't list services: an NXDOMAIN could make resolvers give up on
            // every name below it, RFC 8020).
            [] | ["dns-version" | "svc" | "pod"] | [_, "svc" | "pod"] => zone.nodata(),
            [service, namespace, "svc"] => self.answer_service(&query, namespace, service),
            // `_PROTO.NAME.NAMESPACE`: an empty non-terminal above the named-port SRV records.
            [proto, service, namespace, "svc"] if proto.starts_with('_') => {
                match self.lookup.service(namespace, service) {
                    Some(found) if has_names_below(&found) => zone.nodata(),
                    _ => zone.nxdomain(),
                }
            }
            [endpoint, service, namespace, "svc"] => {
                self.answer_endpoint(&query, namespace, service, endpoint)
            }
            [port, proto, service, namespace, "svc"] => {
                match (port.strip_prefix('_'), proto.strip_prefix('_')) {
                    (Some(port), Some(proto)) => {
                        self.answer_named_port(&query, namespace, service, port, proto)
                    }
                    _ => zone.nxdomain(),
                }
            }
            // `A-B-C-D.NAMESPACE.pod`: the deprecated pod records the specification still asks
            // for (2.6), answered for any IPv4 address as kube-dns did.
            [dashed, _namespace, "pod"] => match dashed.replace('-', ".").parse::<Ipv4Addr>() {
                Ok(ip) if dashed.split('-').count() == 4 => {
                    zone.records(address_records(owner, qtype, [IpAddr::V4(ip)]), Vec::new())
                }
                _ => zone.nxdomain(),
            },
            _ => zone.nxdomain(),
        }
    }

    /// `NAME.NAMESPACE.svc.<zone>`: the cluster IP, the ready endpoints' addresses (headless),
    /// or a CNAME (ExternalName); SRV records for every port.
    fn answer_service(&self, query: &Query<'_>, namespace: &str, service: &str) -> Answer {
        let Query {
            zone, owner, qtype, ..
        } = *query;
        let Some(found) = self.lookup.service(namespace, service) else {
            return zone.nxdomain();
        };
        match &found.kind {
            DnsServiceKind::ExternalName(target) => self.cname(query, target),
            DnsServiceKind::ClusterIp { ips, ports } => {
                let mut answers = address_records(owner, qtype, ips.iter().copied());
                let mut additionals = Vec::new();
                if matches!(qtype, RecordType::SRV | RecordType::ANY) {
                    let (srv, glue) =
                        cluster_ip_srv(zone, owner, namespace, service, ips, ports, |_, _| true);
                    answers.extend(srv);
                    additionals = glue;
                }
                zone.records(answers, additionals)
            }
            // A headless service without ready endpoints has no records at all (2.4.1).
            DnsServiceKind::Endpoints if found.endpoints.is_empty() => zone.nxdomain(),
            DnsServiceKind::Endpoints => {
                let mut answers =
                    address_records(owner, qtype, found.endpoints.iter().map(|e| e.ip));
                let mut additionals = Vec::new();
                if matches!(qtype, RecordType::SRV | RecordType::ANY) {
                    let (srv, glue) =
                        endpoint_srv(zone, owner, namespace, service, &found.endpoints, |_, _| {
                            true
                        });
                    answers.extend(srv);
                    additionals = glue;
                }
                zone.records(answers, additionals)
            }
        }
    }

    /// `_PORT._PROTO.NAME.NAMESPACE.svc.<zone>`: SRV records for one named port.
    fn answer_named_port(
        &self,
        query: &Query<'_>,
        namespace: &str,
        service: &str,
        port_name: &str,
        protocol: &str,
    ) -> Answer {
        let Query {
            zone, owner, qtype, ..
        } = *query;
        let wanted = |name: &str, proto: &str| {
            name.eq_ignore_ascii_case(port_name) && proto.eq_ignore_ascii_case(protocol)
        };
        let (srv, glue) = match self.lookup.service(namespace, service) {
            Some(DnsService {
                kind: DnsServiceKind::ClusterIp { ips, ports },
                ..
            }) => cluster_ip_srv(zone, owner, namespace, service, &ips, &ports, wanted),
            Some(DnsService {
                kind: DnsServiceKind::Endpoints,
                endpoints,
            }) => endpoint_srv(zone, owner, namespace, service, &endpoints, wanted),
            Some(DnsService {
                kind: DnsServiceKind::ExternalName(_),
                ..
            })
            | None => return zone.nxdomain(),
        };
        if srv.is_empty() {
            return zone.nxdomain();
        }
        match qtype {
            RecordType::SRV | RecordType::ANY => zone.records(srv, glue),
            _ => zone.nodata(),
        }
    }

    /// `ENDPOINT.NAME.NAMESPACE.svc.<zone>`: the address of the endpoint with that hostname or
    /// instance name, for a service answering its endpoints.
    fn answer_endpoint(
        &self,
        query: &Query<'_>,
        namespace: &str,
        service: &str,
        label: &str,
    ) -> Answer {
        let Some(DnsService {
            kind: DnsServiceKind::Endpoints,
            endpoints,
        }) = self.lookup.service(namespace, service)
        else {
            return query.zone.nxdomain();
        };
        let ips: Vec<IpAddr> = endpoints
            .iter()
            .filter(|endpoint| endpoint.is_named(label))
            .map(|endpoint| endpoint.ip)
            .collect();
        if ips.is_empty() {
            return query.zone.nxdomain();
        }
        query
            .zone
            .records(address_records(query.owner, query.qtype, ips), Vec::new())
    }

    /// The CNAME of an ExternalName service to `target`; when the target is in a served zone,
    /// followed by what the target answers (as a recursive resolver would give it).
    fn cname(&self, query: &Query<'_>, target: &str) -> Answer {
        let Ok(mut target) = Name::from_ascii(target) else {
            warn!(target, "externalName is not a valid dns name");
            return Answer::error(ResponseCode::ServFail);
        };
        target.set_fqdn(true);
        let record = Record::from_rdata(
            query.owner.clone(),
            RECORD_TTL_SECS,
            RData::CNAME(CNAME(target.clone())),
        );
        if query.qtype == RecordType::CNAME {
            return query.zone.records(vec![record], Vec::new());
        }
        let lower = LowerName::new(&target);
        if query.depth >= MAX_CNAME_CHAIN || self.zone_of(&lower).is_none() {
            return query.zone.records(vec![record], Vec::new());
        }
        let mut chased = self.answer_name(&lower, &target, query.qtype, query.depth + 1);
        chased.answers.insert(0, record);
        chased
    }
}

/// For a name in `in-addr.arpa`, the IPv4 address it stands for (`None` if it names none, e.g.
/// `10.in-addr.arpa`); `None` for every other name.
fn reverse_address(name: &LowerName) -> Option<Option<IpAddr>> {
    let labels: Vec<&[u8]> = name.iter().collect();
    let (arpa, labels) = labels.split_last()?;
    let (in_addr, octets) = labels.split_last()?;
    if *arpa != b"arpa" || *in_addr != b"in-addr" {
        return None;
    }
    let octet = |label: &[u8]| {
        let digits = std::str::from_utf8(label).ok()?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse::<u8>().ok())?
    };
    let address = match octets {
        [d, c, b, a] => match (octet(a), octet(b), octet(c), octet(d)) {
            (Some(a), Some(b), Some(c), Some(d)) => Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d))),
            _ => None,
        },
        _ => None,
    };
    Some(address)
}

/// One query as the handlers see it.
struct Query<'q> {
    zone: &'q Zone,
    /// The queried name as the client spelled it.
    owner: &'q Name,
    qtype: RecordType,
    /// How many CNAMEs were followed to this name.
    depth: usize,
}

/// Whether names exist below the service's own (its `_PORT._PROTO` SRV records).
fn has_names_below(service: &DnsService) -> bool {
    match &service.kind {
        DnsServiceKind::ClusterIp { ports, .. } => !ports.is_empty(),
        DnsServiceKind::Endpoints => !service.endpoints.is_empty(),
        DnsServiceKind::ExternalName(_) => false,
    }
}

/// SRV records (owned by `owner`) for the Service ports accepted by `wanted(name, proto)`, each
/// targeting the Service's own name, and that name's address records for the additional section.
fn cluster_ip_srv(
    zone: &Zone,
    owner: &Name,
    namespace: &str,
    service: &str,
    ips: &[IpAddr],
    ports: &[(String, String, u16)],
    wanted: impl Fn(&str, &str) -> bool,
) -> (Vec<Record>, Vec<Record>) {
    let Some(target) = zone.name(&[service, namespace, "svc"]) else {
        return (Vec::new(), Vec::new());
    };
    let mut numbers: Vec<u16> = ports
        .iter()
        .filter(|(name, proto, _)| wanted(name, proto))
        .map(|&(_, _, port)| port)
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    if numbers.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let srv = srv_set(
        owner,
        numbers.into_iter().map(|port| (port, target.clone())),
    );
    let glue = address_records(&target, RecordType::ANY, ips.iter().copied());
    (srv, glue)
}

/// SRV records (owned by `owner`) for the endpoints' ports accepted by `wanted(name, proto)`,
/// each targeting its endpoint's name, and the targets' address records for the additional
/// section.
fn endpoint_srv(
    zone: &Zone,
    owner: &Name,
    namespace: &str,
    service: &str,
    endpoints: &[DnsEndpoint],
    wanted: impl Fn(&str, &str) -> bool,
) -> (Vec<Record>, Vec<Record>) {
    let mut targets: Vec<(u16, Name)> = Vec::new();
    let mut glue = Vec::new();
    for endpoint in endpoints {
        let mut ports: Vec<u16> = endpoint
            .ports
            .iter()
            .filter(|(name, proto, _)| wanted(name, proto))
            .map(|&(_, _, port)| port)
            .collect();
        if ports.is_empty() {
            continue;
        }
        let label = endpoint.dns_label();
        let Some(target) = zone.name(&[label, service, namespace, "svc"]) else {
            warn!(
                endpoint = label,
                service, namespace, "endpoint name is not a valid dns label, skipped"
            );
            continue;
        };
        ports.sort_unstable();
        ports.dedup();
        targets.extend(ports.into_iter().map(|port| (port, target.clone())));
        glue.extend(address_records(&target, RecordType::ANY, [endpoint.ip]));
    }
    (srv_set(owner, targets.into_iter()), glue)
}

/// SRV records owned by `owner`, one per `(port, target)`.
fn srv_set(owner: &Name, targets: impl ExactSizeIterator<Item = (u16, Name)>) -> Vec<Record> {
    // Equal weights summing to about 100, as CoreDNS does; never 0 (0 means "last resort").
    let weight = u16::try_from(100 / targets.len().max(1)).map_or(1, |weight| weight.max(1));
    targets
        .map(|(port, target)| {
            let rdata = SRV::new(0, weight, port, target);
            Record::from_rdata(owner.clone(), RECORD_TTL_SECS, RData::SRV(rdata))
        })
        .collect()
}

impl Zone {
    /// A positive answer (or NODATA, with the SOA, if `answers` is empty).
    fn records(&self, answers: Vec<Record>, additionals: Vec<Record>) -> Answer {
        if answers.is_empty() {
            return self.nodata();
        }
        Answer {
            response_code: ResponseCode::NoError,
            authoritative: true,
            answers,
            soa: Vec::new(),
            additionals,
        }
    }

    /// The name exists but has no records of the queried type.
    fn nodata(&self) -> Answer {
        self.negative(ResponseCode::NoError)
    }

    /// The name does not exist.
    fn nxdomain(&self) -> Answer {
        self.negative(ResponseCode::NXDomain)
    }

    fn negative(&self, response_code: ResponseCode) -> Answer {
        Answer {
            response_code,
            authoritative: true,
            answers: Vec::new(),
            soa: vec![self.soa.clone()],
            additionals: Vec::new(),
        }
    }
}

/// A/AAAA records for the distinct `ips` that `qtype` asks for (`ANY`: both families).
fn address_records(
    owner: &Name,
    qtype: RecordType,
    ips: impl IntoIterator<Item = IpAddr>,
) -> Vec<Record> {
    let mut distinct: Vec<IpAddr> = Vec::new();
    for ip in ips {
        if !distinct.contains(&ip) {
            distinct.push(ip);
        }
    }
    distinct
        .into_iter()
        .filter_map(|ip| {
            let rdata = match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
                _ => return None,
            };
            Some(Record::from_rdata(owner.clone(), RECORD_TTL_SECS, rdata))
        })
        .collect()
}

/// The sections of a response, before encoding.
struct Answer {
    response_code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    soa: Vec<Record>,
    additionals: Vec<Record>,
}

impl Answer {
    /// An error with no records and no claim of authority (e.g. REFUSED, FORMERR).
    fn error(response_code: ResponseCode) -> Self {
        Self {
            response_code,
            authoritative: false,
            answers: Vec::new(),
            soa: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for ZoneHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // EDNS (RFC 6891): answer in kind, honouring the client's UDP payload size.
        let response_edns = request.edns.as_ref().map(|request_edns| {
            let mut edns = Edns::new();
            edns.set_max_payload(request_edns.max_payload().max(512));
            edns.set_version(0);
            edns
        });

        let answer = if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
            Answer::error(ResponseCode::BADVERS)
        } else if request.metadata.op_code != OpCode::Query {
            Answer::error(ResponseCode::NotImp)
        } else {
            match request.queries.queries() {
                [query] => self.answer(query),
                _ => Answer::error(ResponseCode::FormErr),
            }
        };

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = answer.response_code;
        metadata.authoritative = answer.authoritative;
        let response = MessageResponseBuilder::new(&request.queries, response_edns.as_ref()).build(
            metadata,
            answer.answers.iter(),
            [],
            answer.soa.iter(),
            answer.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                warn!(%error, src = %request.src(), "cannot send dns response");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// A resolver that asks only the c4m DNS server at `addr` (UDP, falling
/// back to TCP for truncated answers), without caching: for instances and
/// tools that look services up by name.
pub fn cluster_resolver(addr: SocketAddr) -> hickory_resolver::TokioResolver {
    use hickory_resolver::config::{
        ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
    };
    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
        .into_iter()
        .map(|mut connection| {
            connection.port = addr.port();
            connection
        })
        .collect();
    let name_server = NameServerConfig::new(addr.ip(), true, connections);
    let mut options = ResolverOpts::default();
    options.cache_size = 0;
    options.use_hosts_file = ResolveHosts::Never;
    hickory_resolver::TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![name_server]),
        hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
    )
    .with_options(options)
    .build()
    .expect("a resolver with one name server and default options always builds")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::str::FromStr;
    use std::sync::Mutex;

    use hickory_resolver::TokioResolver;
    use hickory_resolver::config::{
        ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
    };
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use hickory_server::proto::op::{Message, Query};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    /// What the control plane serves by default.
    const DOMAINS: &[&str] = &["cluster.local", "c4m"];

    /// A registry stand-in: services by (namespace, name), editable while the server runs.
    #[derive(Default)]
    struct FakeRegistry {
        services: Mutex<HashMap<(String, String), DnsService>>,
    }

    impl FakeRegistry {
        /// A service answering its ready `endpoints` (headless).
        fn set(&self, namespace: &str, name: &str, endpoints: Vec<DnsEndpoint>) {
            self.set_service(namespace, name, DnsService::endpoints(endpoints));
        }

        fn set_service(&self, namespace: &str, name: &str, service: DnsService) {
            self.services
                .lock()
                .unwrap()
                .insert((namespace.to_owned(), name.to_owned()), service);
        }
    }

    impl ServiceLookup for FakeRegistry {
        fn service(&self, namespace: &str, name: &str) -> Option<DnsService> {
            self.services
                .lock()
                .unwrap()
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned()
        }

        fn names_of(&self, ip: IpAddr) -> Vec<crate::DnsName> {
            let services = self.services.lock().unwrap();
            services
                .iter()
                .flat_map(|((namespace, name), service)| service.names_at(namespace, name, ip))
                .collect()
        }
    }

    fn endpoint(instance: &str, ip: &str, ports: &[(&str, &str, u16)]) -> DnsEndpoint {
        DnsEndpoint {
            instance: instance.to_owned(),
            hostname: None,
            ip: ip.parse().unwrap(),
            ports: ports
                .iter()
                .map(|&(name, proto, port)| (name.to_owned(), proto.to_owned(), port))
                .collect(),
        }
    }

    /// `web` in `default`: three instances, two sharing a node IP, with a named and an
    /// unnamed port; `empty` in `default` has no ready endpoints; `db` in `prod` is IPv6.
    fn registry() -> Arc<FakeRegistry> {
        let registry = Arc::new(FakeRegistry::default());
        registry.set(
            "default",
            "web",
            vec![
                endpoint(
                    "web-1",
                    "10.0.0.1",
                    &[("http", "tcp", 8080), ("", "tcp", 9000)],
                ),
                endpoint(
                    "web-2",
                    "10.0.0.1",
                    &[("http", "tcp", 8081), ("", "tcp", 9001)],
                ),
                endpoint(
                    "web-3",
                    "10.0.0.2",
                    &[("http", "tcp", 8080), ("", "tcp", 9000)],
                ),
            ],
        );
        registry.set("default", "empty", Vec::new());
        registry.set(
            "prod",
            "db",
            vec![endpoint("db-0", "fd00::5", &[("pg", "tcp", 5432)])],
        );
        registry
    }

    struct Running {
        addr: SocketAddr,
        shutdown: CancellationToken,
        task: JoinHandle<Result<(), DnsError>>,
    }

    async fn start(lookup: Arc<dyn ServiceLookup>) -> Running {
        let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), DOMAINS, lookup)
            .await
            .unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Running {
            addr,
            shutdown,
            task,
        }
    }

    impl Running {
        async fn stop(self) {
            self.shutdown.cancel();
            timeout(WAIT, self.task)
                .await
                .expect("run did not return after cancel")
                .unwrap()
                .unwrap();
        }
    }

    fn query_message(name: &str, record_type: RecordType) -> Message {
        let mut message = Message::query();
        message.metadata.id = 0x4c4d;
        // `from_ascii`: `from_str` would IDNA-map the name, lowercasing it.
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
        message
    }

    async fn udp_exchange(addr: SocketAddr, request: &[u8]) -> Message {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(request, addr).await.unwrap();
        let mut buffer = vec![0; 65535];
        let (len, _) = timeout(WAIT, socket.recv_from(&mut buffer))
            .await
            .expect("no udp response")
            .unwrap();
        Message::from_vec(&buffer[..len]).unwrap()
    }

    async fn udp_query(addr: SocketAddr, name: &str, record_type: RecordType) -> Message {
        let request = query_message(name, record_type).to_vec().unwrap();
        udp_exchange(addr, &request).await
    }

    async fn tcp_query(addr: SocketAddr, name: &str, record_type: RecordType) -> Message {
        let request = query_message(name, record_type).to_vec().unwrap();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let len = u16::try_from(request.len()).unwrap();
        stream.write_all(&len.to_be_bytes()).await.unwrap();
        stream.write_all(&request).await.unwrap();
        let mut len = [0; 2];
        timeout(WAIT, stream.read_exact(&mut len))
            .await
            .expect("no tcp response")
            .unwrap();
        let mut response = vec![0; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut response).await.unwrap();
        Message::from_vec(&response).unwrap()
    }

    fn resolver(addr: SocketAddr, protocols: &[ConnectionConfig]) -> TokioResolver {
        let connections = protocols
            .iter()
            .cloned()
            .map(|mut connection| {
                connection.port = addr.port();
                connection
            })
            .collect();
        let name_server = NameServerConfig::new(addr.ip(), true, connections);
        let mut options = ResolverOpts::default();
        options.cache_size = 0;
        options.attempts = 1;
        options.timeout = WAIT;
        options.use_hosts_file = ResolveHosts::Never;
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![name_server]),
            TokioRuntimeProvider::default(),
        )
        .with_options(options)
        .build()
        .unwrap()
    }

    fn ips(records: &[Record]) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = records
            .iter()
            .filter_map(|record| match &record.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                _ => None,
            })
            .collect();
        ips.sort();
        ips
    }

    /// `(port, target)` of the SRV records, sorted, after checking priority and weight.
    fn srv_targets(records: &[Record]) -> Vec<(u16, String)> {
        let mut targets: Vec<(u16, String)> = records
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => {
                    assert_eq!(srv.priority, 0);
                    assert!(srv.weight > 0);
                    Some((srv.port, srv.target.to_ascii()))
                }
                _ => None,
            })
            .collect();
        targets.sort();
        targets
    }

    fn has_zone_soa(message: &Message) -> bool {
        message
            .authorities
            .iter()
            .any(|record| matches!(record.data, RData::SOA(_)) && record.name.to_ascii() == "c4m.")
    }

    fn v4(ip: &str) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from_str(ip).unwrap())
    }

    #[tokio::test]
    async fn service_a_records_are_deduplicated() {
        let server = start(registry()).await;
        let resolver = resolver(server.addr, &[ConnectionConfig::udp()]);

        let lookup = resolver
            .lookup("web.default.svc.c4m.", RecordType::A)
            .await
            .unwrap();
        assert_eq!(ips(lookup.answers()), [v4("10.0.0.1"), v4("10.0.0.2")]);
        assert!(lookup.answers().iter().all(|r| r.ttl == RECORD_TTL_SECS));

        let response = udp_query(server.addr, "web.default.svc.c4m.", RecordType::A).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.metadata.authoritative);
        assert_eq!(response.answers.len(), 2);
        server.stop().await;
    }

    #[tokio::test]
    async fn ipv6_endpoints_answer_aaaa_only() {
        let server = start(registry()).await;

        let response = udp_query(server.addr, "db.prod.svc.c4m.", RecordType::AAAA).await;
        assert_eq!(
            ips(&response.answers),
            [IpAddr::V6(Ipv6Addr::from_str("fd00::5").unwrap())]
        );
        let response = udp_query(server.addr, "db.prod.svc.c4m.", RecordType::A).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.answers.is_empty());
        assert!(has_zone_soa(&response));
        server.stop().await;
    }

    #[tokio::test]
    async fn srv_by_named_port_targets_instances() {
        let server = start(registry()).await;

        let response = udp_query(
            server.addr,
            "_http._tcp.web.default.svc.c4m.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            srv_targets(&response.answers),
            [
                (8080, "web-1.web.default.svc.c4m.".to_owned()),
                (8080, "web-3.web.default.svc.c4m.".to_owned()),
                (8081, "web-2.web.default.svc.c4m.".to_owned()),
            ]
        );
        // The targets' addresses come along in the additional section.
        let mut glue: Vec<(String, Vec<IpAddr>)> = response
            .additionals
            .iter()
            .map(|record| (record.name.to_ascii(), ips(std::slice::from_ref(record))))
            .collect();
        glue.sort();
        assert_eq!(
            glue,
            [
                (
                    "web-1.web.default.svc.c4m.".to_owned(),
                    vec![v4("10.0.0.1")]
                ),
                (
                    "web-2.web.default.svc.c4m.".to_owned(),
                    vec![v4("10.0.0.1")]
                ),
                (
                    "web-3.web.default.svc.c4m.".to_owned(),
                    vec![v4("10.0.0.2")]
                ),
            ]
        );

        // Through a real resolver too.
        let resolver = resolver(server.addr, &[ConnectionConfig::udp()]);
        let lookup = resolver
            .lookup("_http._tcp.web.default.svc.c4m.", RecordType::SRV)
            .await
            .unwrap();
        assert_eq!(srv_targets(lookup.answers()).len(), 3);

        // A port name the endpoints don't have, or the wrong protocol: no such name.
        for name in [
            "_grpc._tcp.web.default.svc.c4m.",
            "_http._udp.web.default.svc.c4m.",
        ] {
            let response = udp_query(server.addr, name, RecordType::SRV).await;
            assert_eq!(
                response.metadata.response_code,
                ResponseCode::NXDomain,
                "{name}"
            );
            assert!(has_zone_soa(&response));
        }
        // The `_tcp` level exists (it has names below it).
        let response = udp_query(server.addr, "_tcp.web.default.svc.c4m.", RecordType::SRV).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.answers.is_empty());
        server.stop().await;
    }

    #[tokio::test]
    async fn plain_srv_lists_all_ports_with_targets() {
        let server = start(registry()).await;

        let response = udp_query(server.addr, "web.default.svc.c4m.", RecordType::SRV).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            srv_targets(&response.answers),
            [
                (8080, "web-1.web.default.svc.c4m.".to_owned()),
                (8080, "web-3.web.default.svc.c4m.".to_owned()),
                (8081, "web-2.web.default.svc.c4m.".to_owned()),
                (9000, "web-1.web.default.svc.c4m.".to_owned()),
                (9000, "web-3.web.default.svc.c4m.".to_owned()),
                (9001, "web-2.web.default.svc.c4m.".to_owned()),
            ]
        );
        assert_eq!(response.additionals.len(), 3);
        server.stop().await;
    }

    #[tokio::test]
    async fn instance_name_resolves_to_its_endpoint() {
        let server = start(registry()).await;
        let resolver = resolver(server.addr, &[ConnectionConfig::udp()]);

        let lookup = resolver
            .lookup("web-3.web.default.svc.c4m.", RecordType::A)
            .await
            .unwrap();
        assert_eq!(ips(lookup.answers()), [v4("10.0.0.2")]);

        let response = udp_query(server.addr, "web-9.web.default.svc.c4m.", RecordType::A).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
        assert!(has_zone_soa(&response));
        server.stop().await;
    }

    #[tokio::test]
    async fn unknown_service_is_nxdomain_with_soa() {
        let server = start(registry()).await;

        for name in [
            "nope.default.svc.c4m.",
            "web.other.svc.c4m.",
            "a.b.c.d.e.svc.c4m.",
            "_http.x.web.default.svc.c4m.",
        ] {
            let response = udp_query(server.addr, name, RecordType::A).await;
            assert_eq!(
                response.metadata.response_code,
                ResponseCode::NXDomain,
                "{name}"
            );
            assert!(response.metadata.authoritative, "{name}");
            assert!(response.answers.is_empty(), "{name}");
            assert!(has_zone_soa(&response), "{name}");
        }

        let resolver = resolver(server.addr, &[ConnectionConfig::udp()]);
        let error = resolver
            .lookup("nope.default.svc.c4m.", RecordType::A)
            .await
            .unwrap_err();
        assert!(error.is_nx_domain(), "{error}");
        server.stop().await;
    }

    #[tokio::test]
    async fn headless_service_without_ready_endpoints_is_nxdomain() {
        let server = start(registry()).await;

        // Kubernetes' DNS specification, 2.4.1: no ready endpoints, no records.
        for (name, record_type) in [
            ("empty.default.svc.c4m.", RecordType::A),
            ("empty.default.svc.c4m.", RecordType::SRV),
            ("_tcp.empty.default.svc.c4m.", RecordType::SRV),
            ("_http._tcp.empty.default.svc.c4m.", RecordType::SRV),
        ] {
            let response = udp_query(server.addr, name, record_type).await;
            assert_eq!(
                response.metadata.response_code,
                ResponseCode::NXDomain,
                "{name}"
            );
            assert!(response.answers.is_empty(), "{name}");
            assert!(has_zone_soa(&response), "{name}");
        }

        let resolver = resolver(server.addr, &[ConnectionConfig::udp()]);
        let error = resolver
            .lookup("empty.default.svc.cluster.local.", RecordType::A)
            .await
            .unwrap_err();
        assert!(error.is_nx_domain(), "{error}");
        server.stop().await;
    }

    #[tokio::test]
    async fn names_outside_the_zone_are_refused() {
        let server = start(registry()).await;

        for name in [
            "example.com.",
            "local.",
            "web.default.svc.c4m.example.com.",
            "web.default.svc.cluster.",
            ".",
        ] {
            let response = udp_query(server.addr, name, RecordType::A).await;
            assert_eq!(
                response.metadata.response_code,
                ResponseCode::Refused,
                "{name}"
            );
            assert!(!response.metadata.authoritative, "{name}");
            assert!(response.answers.is_empty(), "{name}");
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn zone_apex_answers_soa() {
        let server = start(registry()).await;

        for apex in ["c4m.", "cluster.local."] {
            let response = udp_query(server.addr, apex, RecordType::SOA).await;
            assert_eq!(response.metadata.response_code, ResponseCode::NoError);
            assert!(
                matches!(response.answers[..], [ref soa] if matches!(soa.data, RData::SOA(_))),
                "{apex}"
            );
        }
        // The fixed names and a namespace exist, without records.
        for name in [
            "c4m.",
            "svc.c4m.",
            "default.svc.c4m.",
            "pod.cluster.local.",
            "default.pod.cluster.local.",
            "dns-version.c4m.",
        ] {
            let response = udp_query(server.addr, name, RecordType::A).await;
            assert_eq!(
                response.metadata.response_code,
                ResponseCode::NoError,
                "{name}"
            );
            assert!(response.answers.is_empty(), "{name}");
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn names_are_case_insensitive() {
        let server = start(registry()).await;

        let response = udp_query(server.addr, "WeB.DEFAULT.Svc.C4M.", RecordType::A).await;
        assert_eq!(ips(&response.answers), [v4("10.0.0.1"), v4("10.0.0.2")]);
        // Answers keep the client's spelling.
        assert_eq!(response.answers[0].name.to_ascii(), "WeB.DEFAULT.Svc.C4M.");

        let response = udp_query(
            server.addr,
            "_HTTP._Tcp.web.default.SVC.c4m.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(srv_targets(&response.answers).len(), 3);
        let response = udp_query(server.addr, "WEB-1.web.default.svc.c4m.", RecordType::A).await;
        assert_eq!(ips(&response.answers), [v4("10.0.0.1")]);
        server.stop().await;
    }

    #[tokio::test]
    async fn answers_over_tcp() {
        let server = start(registry()).await;

        let response = tcp_query(server.addr, "web.default.svc.c4m.", RecordType::SRV).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert_eq!(srv_targets(&response.answers).len(), 6);
        assert_eq!(response.additionals.len(), 3);

        let resolver = resolver(server.addr, &[ConnectionConfig::tcp()]);
        let lookup = resolver
            .lookup("web.default.svc.c4m.", RecordType::A)
            .await
            .unwrap();
        assert_eq!(ips(lookup.answers()), [v4("10.0.0.1"), v4("10.0.0.2")]);
        let error = resolver
            .lookup("nope.default.svc.c4m.", RecordType::A)
            .await
            .unwrap_err();
        assert!(error.is_nx_domain(), "{error}");
        server.stop().await;
    }

    #[tokio::test]
    async fn registry_changes_are_seen_by_the_next_query() {
        let registry = registry();
        let server = start(registry.clone()).await;

        let response = udp_query(server.addr, "new.default.svc.c4m.", RecordType::A).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);

        registry.set("default", "new", Vec::new());
        let response = udp_query(server.addr, "new.default.svc.c4m.", RecordType::A).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);

        registry.set("default", "new", vec![endpoint("new-1", "10.0.0.7", &[])]);
        let response = udp_query(server.addr, "new.default.svc.c4m.", RecordType::A).await;
        assert_eq!(ips(&response.answers), [v4("10.0.0.7")]);

        registry.set("default", "new", vec![endpoint("new-2", "10.0.0.8", &[])]);
        let response = udp_query(server.addr, "new.default.svc.c4m.", RecordType::A).await;
        assert_eq!(ips(&response.answers), [v4("10.0.0.8")]);

        // Given a cluster IP, the name answers it instead of the endpoints.
        registry.set_service("default", "new", cluster_ip("10.96.0.20", &[]));
        let response = udp_query(server.addr, "new.default.svc.c4m.", RecordType::A).await;
        assert_eq!(ips(&response.answers), [v4("10.96.0.20")]);
        server.stop().await;
    }

    #[tokio::test]
    async fn malformed_queries_do_not_stop_the_server() {
        let server = start(registry()).await;

        // Shorter than a header: dropped without an answer.
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket
            .send_to(&[0x12, 0x34, 0x01], server.addr)
            .await
            .unwrap();
        // A header claiming a question that isn't there: FORMERR.
        let truncated = [
            0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x03, b'w',
        ];
        let response = udp_exchange(server.addr, &truncated).await;
        assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
        // No question at all: FORMERR.
        let mut no_question = query_message("web.default.svc.c4m.", RecordType::A);
        no_question.queries.clear();
        let response = udp_exchange(server.addr, &no_question.to_vec().unwrap()).await;
        assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
        // Not a query: NOTIMP.
        let mut notify = query_message("web.default.svc.c4m.", RecordType::A);
        notify.metadata.op_code = OpCode::Notify;
        let response = udp_exchange(server.addr, &notify.to_vec().unwrap()).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NotImp);
        // Garbage over TCP.
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(&[0, 5, 1, 2, 3, 4, 5]).await.unwrap();
        drop(stream);
        // Non-UTF-8 labels inside the zone name nothing.
        let mut binary = query_message("svc.c4m.", RecordType::A);
        let binary_name =
            Name::from_labels([&b"\xff\xfe"[..], b"default", b"svc", b"c4m"]).unwrap();
        binary.queries[0].set_name(binary_name);
        let response = udp_exchange(server.addr, &binary.to_vec().unwrap()).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);

        // Still serving, on both transports.
        let response = udp_query(server.addr, "web.default.svc.c4m.", RecordType::A).await;
        assert_eq!(response.answers.len(), 2);
        let response = tcp_query(server.addr, "web.default.svc.c4m.", RecordType::A).await;
        assert_eq!(response.answers.len(), 2);
        server.stop().await;
    }

    #[tokio::test]
    async fn edns_queries_get_edns_answers() {
        let server = start(registry()).await;

        let mut request = query_message("web.default.svc.c4m.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        request.set_edns(edns);
        let response = udp_exchange(server.addr, &request.to_vec().unwrap()).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.edns.is_some());
        assert_eq!(response.answers.len(), 2);
        server.stop().await;
    }

    #[tokio::test]
    async fn large_udp_answers_are_truncated_and_complete_over_tcp() {
        let registry = registry();
        let endpoints = (0..40)
            .map(|i| {
                endpoint(
                    &format!("big-{i}"),
                    &format!("10.1.0.{i}"),
                    &[("http", "tcp", 80)],
                )
            })
            .collect();
        registry.set("default", "big", endpoints);
        let server = start(registry).await;

        // No EDNS: a UDP answer is limited to 512 bytes, so the client is told to retry on TCP.
        let response = udp_query(server.addr, "big.default.svc.c4m.", RecordType::SRV).await;
        assert!(response.metadata.truncation);
        let response = tcp_query(server.addr, "big.default.svc.c4m.", RecordType::SRV).await;
        assert!(!response.metadata.truncation);
        assert_eq!(srv_targets(&response.answers).len(), 40);
        assert_eq!(response.additionals.len(), 40);
        server.stop().await;
    }

    #[tokio::test]
    async fn endpoints_without_a_valid_instance_name_get_no_srv_target() {
        let registry = registry();
        registry.set(
            "default",
            "odd",
            vec![
                endpoint("", "10.2.0.1", &[("http", "tcp", 80)]),
                endpoint("bad name!", "10.2.0.2", &[("http", "tcp", 80)]),
                endpoint("ok", "10.2.0.3", &[("http", "tcp", 80)]),
            ],
        );
        let server = start(registry).await;

        let response = udp_query(server.addr, "odd.default.svc.c4m.", RecordType::A).await;
        assert_eq!(ips(&response.answers).len(), 3);
        let response = udp_query(server.addr, "odd.default.svc.c4m.", RecordType::SRV).await;
        assert_eq!(
            srv_targets(&response.answers),
            [(80, "ok.odd.default.svc.c4m.".to_owned())]
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn run_returns_after_cancel_and_stops_serving() {
        let server = start(registry()).await;
        let addr = server.addr;
        // Serving before shutdown, including an open idle TCP connection.
        let idle_connection = TcpStream::connect(addr).await.unwrap();
        let response = udp_query(addr, "web.default.svc.c4m.", RecordType::A).await;
        assert_eq!(response.answers.len(), 2);

        server.stop().await;

        assert!(TcpStream::connect(addr).await.is_err());
        drop(idle_connection);
        // The port is free again.
        drop(UdpSocket::bind(addr).await.unwrap());
    }

    #[tokio::test]
    async fn custom_zone_is_served() {
        let server = DnsServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            &["Cluster.Example."],
            registry(),
        )
        .await
        .unwrap();
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));

        let response = udp_query(addr, "web.default.svc.cluster.example.", RecordType::A).await;
        assert_eq!(response.answers.len(), 2);
        let response = udp_query(addr, "web.default.svc.c4m.", RecordType::A).await;
        assert_eq!(response.metadata.response_code, ResponseCode::Refused);

        shutdown.cancel();
        timeout(WAIT, task).await.unwrap().unwrap().unwrap();
    }

    #[tokio::test]
    async fn bind_rejects_bad_zones_and_busy_addresses() {
        let long = vec!["x".repeat(63); 4].join(".");
        for zone in [".", "", "a..b", &"x".repeat(64), &long] {
            let error = DnsServer::bind("127.0.0.1:0".parse().unwrap(), &[zone], registry())
                .await
                .unwrap_err();
            assert!(
                matches!(error, DnsError::InvalidZone { .. }),
                "{zone:?}: {error}"
            );
        }

        let error = DnsServer::bind("127.0.0.1:0".parse().unwrap(), &[], registry())
            .await
            .unwrap_err();
        assert!(matches!(error, DnsError::InvalidZone { .. }), "{error}");

        let server = start(registry()).await;
        let error = DnsServer::bind(server.addr, DOMAINS, registry())
            .await
            .unwrap_err();
        assert!(matches!(error, DnsError::Bind { .. }), "{error}");
        server.stop().await;
    }
    fn cluster_ip(ip: &str, ports: &[(&str, &str, u16)]) -> DnsService {
        DnsService {
            kind: DnsServiceKind::ClusterIp {
                ips: vec![ip.parse().unwrap()],
                ports: ports
                    .iter()
                    .map(|&(name, proto, port)| (name.to_owned(), proto.to_owned(), port))
                    .collect(),
            },
            // Endpoints behind a cluster IP are not answered.
            endpoints: vec![endpoint("api-1", "10.0.0.9", &[("https", "tcp", 6443)])],
        }
    }

    fn external_name(target: &str) -> DnsService {
        DnsService {
            kind: DnsServiceKind::ExternalName(target.to_owned()),
            endpoints: Vec::new(),
        }
    }

    fn cnames(records: &[Record]) -> Vec<(String, String)> {
        records
            .iter()
            .filter_map(|record| match &record.data {
                RData::CNAME(target) => Some((record.name.to_ascii(), target.0.to_ascii())),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_cluster_ip_service_answers_its_cluster_ip_in_both_domains() {
        let registry = registry();
        registry.set_service(
            "default",
            "kubernetes",
            cluster_ip("10.96.0.1", &[("https", "tcp", 443), ("", "udp", 53)]),
        );
        let server = start(registry).await;
        let resolver = resolver(server.addr, &[ConnectionConfig::udp()]);

        for name in [
            "kubernetes.default.svc.cluster.local.",
            "kubernetes.default.svc.c4m.",
        ] {
            let lookup = resolver.lookup(name, RecordType::A).await.unwrap();
            assert_eq!(ips(lookup.answers()), [v4("10.96.0.1")], "{name}");
            // An IPv4 service has no AAAA: NODATA, not NXDOMAIN.
            let response = udp_query(server.addr, name, RecordType::AAAA).await;
            assert_eq!(
                response.metadata.response_code,
                ResponseCode::NoError,
                "{name}"
            );
            assert!(response.answers.is_empty(), "{name}");
            assert!(!response.authorities.is_empty(), "{name}");
        }

        // A named port: SRV to the Service's own name, its A record as glue (2.3.2).
        let response = udp_query(
            server.addr,
            "_https._tcp.kubernetes.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            srv_targets(&response.answers),
            [(443, "kubernetes.default.svc.cluster.local.".to_owned())]
        );
        assert_eq!(ips(&response.additionals), [v4("10.96.0.1")]);
        assert_eq!(
            response.additionals[0].name.to_ascii(),
            "kubernetes.default.svc.cluster.local."
        );
        // The service's own SRV lists every port, the unnamed one too.
        let response = udp_query(server.addr, "kubernetes.default.svc.c4m.", RecordType::SRV).await;
        assert_eq!(
            srv_targets(&response.answers),
            [
                (53, "kubernetes.default.svc.c4m.".to_owned()),
                (443, "kubernetes.default.svc.c4m.".to_owned()),
            ]
        );
        // No such port, or an endpoint's name below a cluster IP: no such name.
        for name in [
            "_http._tcp.kubernetes.default.svc.cluster.local.",
            "_https._udp.kubernetes.default.svc.cluster.local.",
            "api-1.kubernetes.default.svc.cluster.local.",
        ] {
            let response = udp_query(server.addr, name, RecordType::SRV).await;
            assert_eq!(
                response.metadata.response_code,
                ResponseCode::NXDomain,
                "{name}"
            );
        }
        let response = udp_query(
            server.addr,
            "_tcp.kubernetes.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        server.stop().await;
    }

    #[tokio::test]
    async fn headless_endpoints_answer_by_hostname_and_srv_targets_it() {
        let registry = registry();
        let mut pet = endpoint("db-7f9c2", "10.0.1.5", &[("pg", "tcp", 5432)]);
        pet.hostname = Some("db-0".into());
        let other = endpoint("db-x1", "10.0.1.6", &[("pg", "tcp", 5432)]);
        registry.set("prod", "pets", vec![pet, other]);
        let server = start(registry).await;

        let response = udp_query(server.addr, "pets.prod.svc.cluster.local.", RecordType::A).await;
        assert_eq!(ips(&response.answers), [v4("10.0.1.5"), v4("10.0.1.6")]);
        for name in [
            "db-0.pets.prod.svc.cluster.local.",
            "db-7f9c2.pets.prod.svc.cluster.local.",
        ] {
            let response = udp_query(server.addr, name, RecordType::A).await;
            assert_eq!(ips(&response.answers), [v4("10.0.1.5")], "{name}");
        }
        let response = udp_query(
            server.addr,
            "_pg._tcp.pets.prod.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(
            srv_targets(&response.answers),
            [
                (5432, "db-0.pets.prod.svc.cluster.local.".to_owned()),
                (5432, "db-x1.pets.prod.svc.cluster.local.".to_owned()),
            ]
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn an_external_name_service_is_a_cname() {
        let registry = registry();
        registry.set_service("default", "mail", external_name("smtp.example.com"));
        registry.set_service(
            "default",
            "alias",
            external_name("web.default.svc.cluster.local."),
        );
        registry.set_service("default", "loop-a", external_name("loop-b.default.svc.c4m"));
        registry.set_service("default", "loop-b", external_name("loop-a.default.svc.c4m"));
        let server = start(registry).await;

        // Outside the cluster: the CNAME alone, whatever the type asked (2.5).
        for record_type in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
            let response =
                udp_query(server.addr, "mail.default.svc.cluster.local.", record_type).await;
            assert_eq!(response.metadata.response_code, ResponseCode::NoError);
            assert_eq!(
                cnames(&response.answers),
                [(
                    "mail.default.svc.cluster.local.".to_owned(),
                    "smtp.example.com.".to_owned()
                )],
                "{record_type}"
            );
            assert_eq!(response.answers.len(), 1);
        }
        // Inside: followed, as a recursive resolver would.
        let response = udp_query(server.addr, "alias.default.svc.c4m.", RecordType::A).await;
        assert_eq!(
            cnames(&response.answers),
            [(
                "alias.default.svc.c4m.".to_owned(),
                "web.default.svc.cluster.local.".to_owned()
            )]
        );
        assert_eq!(ips(&response.answers), [v4("10.0.0.1"), v4("10.0.0.2")]);
        // A loop ends.
        let response = udp_query(server.addr, "loop-a.default.svc.c4m.", RecordType::A).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert_eq!(cnames(&response.answers).len(), MAX_CNAME_CHAIN + 1);
        // Nothing below an ExternalName.
        let response = udp_query(
            server.addr,
            "_smtp._tcp.mail.default.svc.c4m.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
        server.stop().await;
    }

    #[tokio::test]
    async fn dns_version_and_pod_records_are_served() {
        let server = start(registry()).await;

        for domain in ["cluster.local.", "c4m."] {
            let response = udp_query(
                server.addr,
                &format!("dns-version.{domain}"),
                RecordType::TXT,
            )
            .await;
            let texts: Vec<String> = response
                .answers
                .iter()
                .filter_map(|record| match &record.data {
                    RData::TXT(txt) => Some(txt.to_string()),
                    _ => None,
                })
                .collect();
            assert_eq!(texts, [DNS_SCHEMA_VERSION], "{domain}");
        }

        let response = udp_query(
            server.addr,
            "10-88-0-7.default.pod.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(ips(&response.answers), [v4("10.88.0.7")]);
        for name in [
            "10-88-0.default.pod.cluster.local.",
            "10-88-0-300.default.pod.cluster.local.",
            "web.default.pod.cluster.local.",
        ] {
            let response = udp_query(server.addr, name, RecordType::A).await;
            assert_eq!(
                response.metadata.response_code,
                ResponseCode::NXDomain,
                "{name}"
            );
        }
        server.stop().await;
    }
    #[tokio::test]
    async fn ptr_records_name_cluster_ips_and_headless_endpoints() {
        let registry = registry();
        registry.set_service("default", "kubernetes", cluster_ip("10.96.0.1", &[]));
        let mut pet = endpoint("db-7f9c2", "10.0.1.5", &[]);
        pet.hostname = Some("db-0".into());
        registry.set("prod", "pets", vec![pet]);
        let server = start(registry).await;

        let ptr = |response: &Message| -> Vec<String> {
            let mut targets: Vec<String> = response
                .answers
                .iter()
                .filter_map(|record| match &record.data {
                    RData::PTR(target) => Some(target.0.to_ascii()),
                    _ => None,
                })
                .collect();
            targets.sort();
            targets
        };
        // In the configured domain (the first).
        let response = udp_query(server.addr, "1.0.96.10.in-addr.arpa.", RecordType::PTR).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert_eq!(ptr(&response), ["kubernetes.default.svc.cluster.local."]);
        let response = udp_query(server.addr, "5.1.0.10.IN-ADDR.ARPA.", RecordType::PTR).await;
        assert_eq!(ptr(&response), ["db-0.pets.prod.svc.cluster.local."]);
        // web-1 and web-2 share 10.0.0.1.
        let response = udp_query(server.addr, "1.0.0.10.in-addr.arpa.", RecordType::PTR).await;
        assert_eq!(
            ptr(&response),
            [
                "web-1.web.default.svc.cluster.local.",
                "web-2.web.default.svc.cluster.local."
            ]
        );
        // Another type at a known address: NODATA.
        let response = udp_query(server.addr, "1.0.96.10.in-addr.arpa.", RecordType::A).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.answers.is_empty());
        // Addresses of nothing in the cluster, or no address: refused.
        for name in [
            "9.9.9.9.in-addr.arpa.",
            "96.10.in-addr.arpa.",
            "x.0.96.10.in-addr.arpa.",
            "256.0.96.10.in-addr.arpa.",
        ] {
            let response = udp_query(server.addr, name, RecordType::PTR).await;
            assert_eq!(
                response.metadata.response_code,
                ResponseCode::Refused,
                "{name}"
            );
        }
        server.stop().await;
    }
}
