//! Gateway API and Ingress objects into one [`RouteConfig`].

mod gateway;
mod ingress;
mod objects;
mod refs;
mod rules;
mod validate;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use super::action::{ObjectRef, RateLimit, RouteAction};
use super::error::{Problem, RouteError};
use super::host::HostPattern;
use super::table::{ActionId, RouteTable, RouteTableBuilder};
use crate::proxy::api::{Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant};

pub use ingress::DEFAULT_CLASS_ANNOTATION;
pub use objects::{ClusterObjects, Decoded, TRANSLATED_KINDS};
pub use rules::{CompiledRule, compile_grpc_rules, compile_http_rules};
pub use validate::validate;

/// The `controllerName` of c4m's GatewayClasses.
pub const GATEWAY_CONTROLLER: &str = "c4m.io/gateway";
/// The `controller` of c4m's IngressClasses.
pub const INGRESS_CONTROLLER: &str = "c4m.io/ingress";

/// The annotation giving a route (HTTPRoute, GRPCRoute or Ingress) a rate
/// limit: `N/s`, `N/m` or `N/h`. Gateway API has no rate limit yet.
pub const RATE_LIMIT_ANNOTATION: &str = "c4m.io/rate-limit";
/// The annotation giving the burst of [`RATE_LIMIT_ANNOTATION`]: how many
/// requests pass at once after a quiet period (1 by default).
pub const RATE_LIMIT_BURST_ANNOTATION: &str = "c4m.io/rate-limit-burst";
/// The annotation turning off an Ingress' redirect from HTTP to HTTPS for
/// its TLS hosts (`"false"`); on by default, as in ingress-nginx.
pub const SSL_REDIRECT_ANNOTATION: &str = "c4m.io/ssl-redirect";

/// The ports Ingress objects are served on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngressPorts {
    /// Plain HTTP (80 by default).
    pub http: u16,
    /// HTTPS, for Ingresses with `tls` (443 by default).
    pub https: u16,
}

impl Default for IngressPorts {
    fn default() -> Self {
        IngressPorts {
            http: 80,
            https: 443,
        }
    }
}

/// Everything the translation reads: the objects of the cluster that
/// concern the gateway. Objects of other controllers are ignored.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The `controllerName` of GatewayClasses this gateway serves, e.g.
    /// [`GATEWAY_CONTROLLER`].
    pub controller_name: &'a str,
    /// The `controller` of IngressClasses this gateway serves, e.g.
    /// [`INGRESS_CONTROLLER`].
    pub ingress_controller_name: &'a str,
    /// GatewayClasses.
    pub gateway_classes: &'a [GatewayClass],
    /// Gateways.
    pub gateways: &'a [Gateway],
    /// HTTPRoutes.
    pub http_routes: &'a [HttpRoute],
    /// GRPCRoutes.
    pub grpc_routes: &'a [GrpcRoute],
    /// ReferenceGrants.
    pub reference_grants: &'a [ReferenceGrant],
    /// IngressClasses.
    pub ingress_classes: &'a [IngressClass],
    /// Ingresses.
    pub ingresses: &'a [Ingress],
    /// The Secrets certificates may come from (`kubernetes.io/tls`).
    pub secrets: &'a [Secret],
    /// Namespaces, for `allowedRoutes.namespaces.selector`.
    pub namespaces: &'a [Namespace],
    /// Where Ingresses are served.
    pub ingress_ports: IngressPorts,
}

impl<'a> Inputs<'a> {
    /// No objects, for GatewayClasses and IngressClasses both of
    /// `controller_name`.
    pub fn new(controller_name: &'a str) -> Self {
        Inputs {
            controller_name,
            ingress_controller_name: controller_name,
            gateway_classes: &[],
            gateways: &[],
            http_routes: &[],
            grpc_routes: &[],
            reference_grants: &[],
            ingress_classes: &[],
            ingresses: &[],
            secrets: &[],
            namespaces: &[],
            ingress_ports: IngressPorts::default(),
        }
    }
}

/// A certificate and key for TLS termination, chosen by SNI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCertificate {
    /// The names it serves: the listener's hostname or the Ingress TLS
    /// host; [`HostPattern::Any`] for the port's default.
    pub hostname: HostPattern,
    /// The Secret it came from.
    pub secret: ObjectRef,
    /// `tls.crt`: the PEM chain, leaf first.
    pub chain_pem: Vec<u8>,
    /// `tls.key`: the PEM private key.
    pub key_pem: Vec<u8>,
}

/// The routes of one port.
#[derive(Clone, Debug)]
pub struct ListenerRoutes {
    /// The port.
    pub port: u16,
    /// For HTTPS: the certificates; `None` for plain HTTP.
    pub tls: Option<Vec<TlsCertificate>>,
    /// The route table.
    pub table: RouteTable,
}

/// A validated configuration: listeners by port, each with its route table,
/// and the actions their entries point at.
#[derive(Clone, Debug, Default)]
pub struct RouteConfig {
    /// The listeners, by port.
    pub listeners: Vec<ListenerRoutes>,
    /// What matched entries do; indexed by [`ActionId`].
    pub actions: Vec<RouteAction>,
}

impl RouteConfig {
    /// The listener on `port`.
    pub fn listener(&self, port: u16) -> Option<&ListenerRoutes> {
        self.listeners.iter().find(|l| l.port == port)
    }

    /// The action of an entry.
    pub fn action(&self, id: ActionId) -> &RouteAction {
        &self.actions[id.0 as usize]
    }
}

/// The result of [`translate`]: the configuration of everything valid, and
/// an error for every object or field left out (for the objects' status).
#[derive(Debug, Default)]
pub struct Translation {
    /// The configuration.
    pub config: RouteConfig,
    /// What was refused, and why.
    pub errors: Vec<RouteError>,
    /// For each parentRef of an HTTPRoute or GRPCRoute that names a
    /// Gateway of this controller: whether the route attached there.
    pub parents: Vec<ParentAttachment>,
    /// How many routes attached to each listener, by Gateway and listener
    /// name (listeners without any are absent).
    pub attached_routes: BTreeMap<(ObjectRef, String), u32>,
    /// The Ingresses of this controller's IngressClasses, served or refused.
    pub ingresses: Vec<ObjectRef>,
}

/// How one parentRef of a route fared: its `status.parents[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentAttachment {
    /// The HTTPRoute or GRPCRoute.
    pub route: ObjectRef,
    /// The index of the parentRef in `spec.parentRefs`.
    pub index: usize,
    /// The outcome.
    pub attachment: Attachment,
}

/// Whether a route attached to a parent, in Gateway API's reasons for the
/// `Accepted` condition of `status.parents[]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// Attached to at least one listener.
    Accepted,
    /// The route was refused whole (its errors say why).
    UnsupportedValue,
    /// No listener of the parent admits the route's kind and namespace.
    NotAllowedByListeners,
    /// Admitted, but no hostname in common with the listeners.
    NoMatchingListenerHostname,
    /// No usable listener matches the parentRef (its sectionName or port).
    NoMatchingParent,
}

impl Attachment {
    /// The condition's `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Attachment::Accepted => "Accepted",
            Attachment::UnsupportedValue => "UnsupportedValue",
            Attachment::NotAllowedByListeners => "NotAllowedByListeners",
            Attachment::NoMatchingListenerHostname => "NoMatchingListenerHostname",
            Attachment::NoMatchingParent => "NoMatchingParent",
        }
    }
}

/// Validates and translates the objects into one configuration.
///
/// An invalid route is left out whole; an invalid or forbidden backend
/// reference keeps its route, its share of requests answered 500 (Gateway
/// API's rule); an invalid listener or certificate leaves out that listener
/// or certificate. Each is reported in [`Translation::errors`].
pub fn translate(inputs: &Inputs<'_>) -> Translation {
    let mut builder = ConfigBuilder::default();
    let grants = refs::Grants::new(inputs.reference_grants);
    gateway::translate(inputs, &grants, &mut builder);
    ingress::translate(inputs, &mut builder);
    builder.finish()
}

/// Collects listeners, entries and actions while translating.
#[derive(Default)]
pub(crate) struct ConfigBuilder {
    actions: Vec<RouteAction>,
    ports: BTreeMap<u16, PortBuilder>,
    errors: Vec<RouteError>,
    parents: Vec<ParentAttachment>,
    attached_routes: BTreeMap<(ObjectRef, String), u32>,
    ingresses: Vec<ObjectRef>,
}

struct PortBuilder {
    tls: bool,
    /// The object that opened the port, for conflict errors.
    owner: ObjectRef,
    certificates: Vec<TlsCertificate>,
    table: RouteTableBuilder,
}

impl ConfigBuilder {
    fn error(&mut self, error: RouteError) {
        self.errors.push(error);
    }

    fn action(&mut self, action: RouteAction) -> ActionId {
        self.actions.push(action);
        ActionId((self.actions.len() - 1) as u32)
    }

    /// Opens `port` for `owner`; an error if another object opened it with
    /// the other protocol.
    fn open_port(
        &mut self,
        port: u16,
        tls: bool,
        owner: &ObjectRef,
        field: &str,
    ) -> Result<(), RouteError> {
        match self.ports.get(&port) {
            Some(existing) if existing.tls != tls => Err(RouteError::new(
                owner,
                field,
                Problem::Invalid(format!(
                    "port {port} is already served as {} by {}",
                    if existing.tls { "HTTPS" } else { "HTTP" },
                    existing.owner
                )),
            )),
            Some(_) => Ok(()),
            None => {
                self.ports.insert(
                    port,
                    PortBuilder {
                        tls,
                        owner: owner.clone(),
                        certificates: Vec::new(),
                        table: RouteTableBuilder::default(),
                    },
                );
                Ok(())
            }
        }
    }

    fn port(&mut self, port: u16) -> &mut PortBuilder {
        self.ports
            .get_mut(&port)
            .expect("ports are opened before use")
    }

    fn finish(self) -> Translation {
        let listeners = self
            .ports
            .into_iter()
            .map(|(port, p)| ListenerRoutes {
                port,
                tls: p.tls.then_some(p.certificates),
                table: p.table.build(),
            })
            .collect();
        Translation {
            config: RouteConfig {
                listeners,
                actions: self.actions,
            },
            errors: self.errors,
            parents: self.parents,
            attached_routes: self.attached_routes,
            ingresses: self.ingresses,
        }
    }
}

/// Parses a Gateway API duration (`1h`, `10s`, `1m30s`, `500ms`: up to four
/// parts of at most five digits each); `0s` means "none".
pub fn parse_duration(text: &str) -> Result<Option<Duration>, String> {
    let bad = || format!("{text:?} is not a duration such as 10s, 1m30s or 500ms");
    let mut rest = text;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += unit * value as u32;
        parts += 1;
        if parts > 4 {
            return Err(bad());
        }
    }
    if parts == 0 {
        return Err(bad());
    }
    Ok((!total.is_zero()).then_some(total))
}

/// The rate limit an object's annotations ask for, if any.
fn rate_limit(
    object: &ObjectRef,
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<Option<RateLimit>, RouteError> {
    let Some(annotations) = annotations else {
        return Ok(None);
    };
    let Some(spec) = annotations.get(RATE_LIMIT_ANNOTATION) else {
        return Ok(None);
    };
    let field = format!("metadata.annotations[{RATE_LIMIT_ANNOTATION:?}]");
    let invalid = |why: String| RouteError::new(object, &field, Problem::Invalid(why));
    let (count, unit) = spec
        .split_once('/')
        .ok_or_else(|| invalid(format!("{spec:?} is not N/s, N/m or N/h")))?;
    let requests: u32 = count
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| invalid(format!("{count:?} is not a positive request count")))?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => return Err(invalid(format!("unit {other:?} is not s, m or h"))),
    };
    let burst = match annotations.get(RATE_LIMIT_BURST_ANNOTATION) {
        None => 1,
        Some(b) => b.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            RouteError::new(
                object,
                format!("metadata.annotations[{RATE_LIMIT_BURST_ANNOTATION:?}]"),
                Problem::Invalid(format!("{b:?} is not a positive burst")),
            )
        })?,
    };
    Ok(Some(RateLimit {
        requests,
        per,
        burst,
    }))
}

#[cfg(test)]
mod tests;
