//! `Vpc` (`c4m.io/v1`, cluster-scoped): an address range whose instances
//! reach each other and no other VPC's. Each node serves a /24 slice of it
//! (see `c4m_core::node_slice`).

use ipnet::Ipv4Net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The VPC instances join when their Microservice names none.
pub const DEFAULT_VPC: &str = "default";

/// Shortest prefix a VPC may have (a /8 holds 65,536 node slices).
const SHORTEST_PREFIX: u8 = 8;
/// Longest prefix a VPC may have (a /28 still holds 13 instances).
const LONGEST_PREFIX: u8 = 28;

/// A VPC object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vpc {
    /// Always `c4m.io/v1`.
    #[serde(default = "Vpc::default_api_version")]
    pub api_version: String,
    /// Always `Vpc`.
    #[serde(default = "Vpc::default_kind")]
    pub kind: String,
    /// Its name (what a Microservice's `spec.vpc` says).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Its address range.
    #[serde(default)]
    pub spec: VpcSpec,
}

/// What a VPC is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpcSpec {
    /// IPv4 CIDR of the VPC, `10.99.0.0/16`.
    pub cidr: String,
}

impl Vpc {
    /// The `apiVersion` VPCs carry.
    pub const API_VERSION: &'static str = "c4m.io/v1";
    /// The `kind` VPCs carry.
    pub const KIND: &'static str = "Vpc";

    /// A VPC named `name` over `cidr`.
    pub fn new(name: impl Into<String>, cidr: impl Into<String>) -> Self {
        Vpc {
            api_version: Self::API_VERSION.into(),
            kind: Self::KIND.into(),
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: VpcSpec { cidr: cidr.into() },
        }
    }

    fn default_api_version() -> String {
        Self::API_VERSION.to_string()
    }

    fn default_kind() -> String {
        Self::KIND.to_string()
    }
}

/// Parses a VPC's CIDR; the error says why it is refused.
pub fn parse_vpc_cidr(text: &str) -> Result<Ipv4Net, String> {
    if text.is_empty() {
        return Err("required field is missing".into());
    }
    let cidr: Ipv4Net = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IPv4 CIDR such as 10.99.0.0/16"))?;
    if cidr != cidr.trunc() {
        return Err(format!(
            "{text:?} has host bits set (did you mean {}?)",
            cidr.trunc()
        ));
    }
    if !(SHORTEST_PREFIX..=LONGEST_PREFIX).contains(&cidr.prefix_len()) {
        return Err(format!(
            "{text:?}: the prefix must be /{SHORTEST_PREFIX} to /{LONGEST_PREFIX}"
        ));
    }
    Ok(cidr)
}

/// Whether two ranges share an address.
pub fn cidrs_overlap(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_checked_with_reasons() {
        assert_eq!(
            parse_vpc_cidr("10.99.0.0/16").unwrap().to_string(),
            "10.99.0.0/16"
        );
        for (text, reason) in [
            ("", "required"),
            ("10.99.0.0", "not an IPv4 CIDR"),
            ("fd00::/64", "not an IPv4 CIDR"),
            ("10.99.0.1/16", "did you mean 10.99.0.0/16"),
            ("10.0.0.0/7", "/8 to /28"),
            ("10.99.0.0/30", "/8 to /28"),
        ] {
            let error = parse_vpc_cidr(text).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
        let wide: Ipv4Net = "10.99.0.0/16".parse().unwrap();
        let inner: Ipv4Net = "10.99.4.0/24".parse().unwrap();
        let apart: Ipv4Net = "10.98.0.0/16".parse().unwrap();
        assert!(cidrs_overlap(&wide, &inner) && cidrs_overlap(&inner, &wide));
        assert!(!cidrs_overlap(&wide, &apart));
    }
}
