//! What the kubelet writes into a pod's `/etc`: its host name
//! (`spec.hostname`, `spec.subdomain`), `/etc/hosts` (with
//! `spec.hostAliases`) and `/etc/resolv.conf` (`spec.dnsPolicy`,
//! `spec.dnsConfig`), as Kubernetes derives them (`kubelet_pods.go`,
//! `network/dns/dns.go`). Pure: the agent writes the files.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

/// The most nameservers a resolver reads (Kubernetes' `MaxDNSNameservers`).
pub const MAX_NAMESERVERS: usize = 3;
/// The most search domains kept (Kubernetes' `MaxDNSSearchPaths`).
pub const MAX_SEARCHES: usize = 32;
/// The longest a host name is (a DNS label).
const MAX_HOSTNAME: usize = 63;

/// The pod's host name, as the kubelet gives it: `spec.hostname`, else
/// the pod's name cut to 63 characters (without a trailing `-` or `.`).
pub fn pod_hostname(pod: &Pod) -> String {
    if let Some(hostname) = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
    {
        return hostname.to_string();
    }
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let cut = &name[..name
        .char_indices()
        .nth(MAX_HOSTNAME)
        .map_or(name.len(), |(i, _)| i)];
    cut.trim_end_matches(['-', '.']).to_string()
}

/// The pod's domain when it names a `spec.subdomain`:
/// `SUBDOMAIN.NAMESPACE.svc.CLUSTER_DOMAIN`.
pub fn pod_domain(pod: &Pod, cluster_domain: &str) -> Option<String> {
    let subdomain = pod
        .spec
        .as_ref()
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    Some(format!("{subdomain}.{namespace}.svc.{cluster_domain}"))
}

/// The host name the container's kernel reports: the fully qualified one
/// when `spec.setHostnameAsFQDN` asks and the pod has a domain.
pub fn uts_hostname(pod: &Pod, cluster_domain: &str) -> String {
    let hostname = pod_hostname(pod);
    let as_fqdn = pod
        .spec
        .as_ref()
        .and_then(|s| s.set_hostname_as_fqdn)
        .unwrap_or(false);
    match pod_domain(pod, cluster_domain) {
        Some(domain) if as_fqdn => format!("{hostname}.{domain}"),
        _ => hostname,
    }
}

/// The kubelet's managed `/etc/hosts`: localhost, the pod's addresses
/// with its host name (fully qualified first when it has a subdomain),
/// then `spec.hostAliases`.
pub fn hosts_file(pod: &Pod, addresses: &[IpAddr], cluster_domain: &str) -> String {
    let hostname = pod_hostname(pod);
    let mut hosts = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    let names = match pod_domain(pod, cluster_domain) {
        Some(domain) => format!("{hostname}.{domain}\t{hostname}"),
        None => hostname,
    };
    for address in addresses {
        hosts.push_str(&format!("{address}\t{names}\n"));
    }
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.as_deref())
        .unwrap_or_default();
    if !aliases.is_empty() {
        hosts.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let names = alias.hostnames.as_deref().unwrap_or_default().join("\t");
            hosts.push_str(&format!("{}\t{names}\n", alias.ip));
        }
    }
    hosts
}

/// A `resolv.conf`: nameservers, search domains and options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<String>,
    /// The `search` line's domains.
    pub searches: Vec<String>,
    /// The `options` line's options (`ndots:5`, `edns0`).
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Reads a resolver configuration as the kubelet reads the node's:
    /// `nameserver`, `search` (the last one wins) and `options` lines;
    /// comments and other lines are skipped.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => conf.nameservers.extend(words.next().map(str::to_string)),
                Some("search") => conf.searches = words.map(str::to_string).collect(),
                Some("options") => conf.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        conf
    }

    /// The file's text, as containerd writes a pod's (search, nameservers,
    /// options).
    pub fn render(&self) -> String {
        let mut text = String::new();
        if !self.searches.is_empty() {
            text.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for nameserver in &self.nameservers {
            text.push_str(&format!("nameserver {nameserver}\n"));
        }
        if !self.options.is_empty() {
            text.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        text
    }
}

/// The search domains of the cluster for Kubernetes namespace `namespace`:
/// `NAMESPACE.svc.DOMAIN svc.DOMAIN DOMAIN`.
pub fn cluster_searches(namespace: &str, cluster_domain: &str) -> Vec<String> {
    vec![
        format!("{namespace}.svc.{cluster_domain}"),
        format!("svc.{cluster_domain}"),
        cluster_domain.to_string(),
    ]
}

/// The pod's `resolv.conf`, as the kubelet derives it from
/// `spec.dnsPolicy` (`ClusterFirst` by default), `spec.dnsConfig`, the
/// cluster's DNS server (`cluster_dns`, where the pod reaches it) and the
/// node's own configuration (`node`, for `Default`):
/// - `ClusterFirst` (and `ClusterFirstWithHostNet`): the cluster DNS only,
///   searching the cluster's domains then the node's, `ndots:5`; without a
///   cluster DNS it falls back to `Default`, as the kubelet does;
/// - `Default`: the node's configuration;
/// - `None`: nothing but `dnsConfig`.
///
/// `dnsConfig` then adds nameservers and searches (duplicates dropped) and
/// sets options by name; at most [`MAX_NAMESERVERS`] nameservers and
/// [`MAX_SEARCHES`] searches are kept.
pub fn resolv_conf(
    pod: &Pod,
    cluster_dns: Option<IpAddr>,
    cluster_domain: &str,
    node: &ResolvConf,
) -> ResolvConf {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let mut conf = match (policy, cluster_dns) {
        ("None", _) => ResolvConf::default(),
        ("ClusterFirst", _) if host_network => node.clone(),
        ("ClusterFirst" | "ClusterFirstWithHostNet", Some(dns)) => {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            let mut searches = cluster_searches(namespace, cluster_domain);
            searches.extend(node.searches.iter().cloned());
            ResolvConf {
                nameservers: vec![dns.to_string()],
                searches: without_duplicates(searches),
                options: vec!["ndots:5".into()],
            }
        }
        _ => node.clone(),
    };
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        conf.nameservers
            .extend(config.nameservers.iter().flatten().cloned());
        conf.nameservers = without_duplicates(std::mem::take(&mut conf.nameservers));
        conf.searches
            .extend(config.searches.iter().flatten().cloned());
        conf.searches = without_duplicates(std::mem::take(&mut conf.searches));
        for option in config.options.iter().flatten() {
            let Some(name) = option.name.as_deref() else {
                continue;
            };
            let text = match option.value.as_deref() {
                Some(value) if !value.is_empty() => format!("{name}:{value}"),
                _ => name.to_string(),
            };
            match conf
                .options
                .iter_mut()
                .find(|o| o.split(':').next() == Some(name))
            {
                Some(existing) => *existing = text,
                None => conf.options.push(text),
            }
        }
    }
    conf.nameservers.truncate(MAX_NAMESERVERS);
    conf.searches.truncate(MAX_SEARCHES);
    conf
}

/// The drivers whose containers have their own network namespace, into
/// which the agent mounts the files above, and join the pod's IPC and PID
/// namespaces; the others run on the node's network, `/etc/hosts` and
/// `resolv.conf` (`process`, `docker`, `cri`).
pub const DRIVERS_WITH_POD_FILES: [&str; 2] = ["oci", "containerd"];

/// The first pod spec field `driver` cannot honour because its containers
/// share the node's host name, `/etc/hosts` and `resolv.conf`, or have a
/// process namespace each (`shareProcessNamespace`): as
/// `(field, why)`, the field relative to the pod spec. Unknown drivers
/// (an embedder's) are not judged.
pub fn unsupported_by_driver(
    driver: &str,
    spec: &k8s_openapi::api::core::v1::PodSpec,
) -> Option<(&'static str, String)> {
    if !judged_without_pod_namespaces(driver) {
        return None;
    }
    // `hostname` and `subdomain` alone are not refused: controllers set
    // them (an Indexed Job's pods, `<job>-<index>`), and the pod's DNS
    // name still answers; its containers see the node's host name.
    let fields = [
        (
            "setHostnameAsFQDN",
            spec.set_hostname_as_fqdn == Some(true),
            "the node's host name",
        ),
        (
            "hostAliases",
            spec.host_aliases.as_ref().is_some_and(|a| !a.is_empty()),
            "the node's /etc/hosts",
        ),
        (
            "dnsConfig",
            spec.dns_config.is_some(),
            "the node's /etc/resolv.conf",
        ),
        (
            "dnsPolicy",
            spec.dns_policy.as_deref() == Some("None"),
            "the node's /etc/resolv.conf",
        ),
        (
            "shareProcessNamespace",
            spec.share_process_namespace == Some(true),
            "a process namespace each",
        ),
    ];
    fields
        .into_iter()
        .find(|(_, set, _)| *set)
        .map(|(field, _, shares)| {
            (
                field,
                format!(
                    "the {driver} driver cannot honour it: its containers use {shares} (drivers that can: {})",
                    DRIVERS_WITH_POD_FILES.join(", ")
                ),
            )
        })
}

/// Why `driver` cannot run an ephemeral container (`kubectl debug`): its
/// containers join no pod namespaces. `None` for `oci`, `containerd` and
/// drivers c4m does not know (an embedder's).
pub fn refuses_ephemeral_containers(driver: &str) -> Option<String> {
    judged_without_pod_namespaces(driver).then(|| {
        format!(
            "the {driver} driver cannot run ephemeral containers: its containers join no pod namespaces (drivers that can: {})",
            DRIVERS_WITH_POD_FILES.join(", ")
        )
    })
}

/// Whether `driver` is one c4m knows whose containers join no pod
/// namespaces (not one of [`DRIVERS_WITH_POD_FILES`]); an embedder's
/// drivers are not judged.
fn judged_without_pod_namespaces(driver: &str) -> bool {
    let known = crate::CONTAINER_DRIVERS.contains(&driver) || driver == crate::DEFAULT_DRIVER;
    known && !DRIVERS_WITH_POD_FILES.contains(&driver)
}

fn without_duplicates(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(item.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn host_names_follow_the_kubelet() {
        let plain = pod("metadata: {name: web-0, namespace: shop}\nspec: {containers: []}");
        assert_eq!(pod_hostname(&plain), "web-0");
        assert_eq!(pod_domain(&plain, "cluster.local"), None);
        let long = pod(&format!(
            "metadata: {{name: {}-x}}\nspec: {{containers: []}}",
            "a".repeat(62)
        ));
        assert_eq!(pod_hostname(&long), "a".repeat(62), "cut at 63, no dash");
        let named = pod(
            "metadata: {name: web-0, namespace: shop}\nspec: {hostname: db, subdomain: nodes, containers: []}",
        );
        assert_eq!(pod_hostname(&named), "db");
        assert_eq!(
            pod_domain(&named, "c4m.local").as_deref(),
            Some("nodes.shop.svc.c4m.local")
        );
        assert_eq!(uts_hostname(&named, "c4m.local"), "db");
        let fqdn = pod(
            "metadata: {name: web-0, namespace: shop}\nspec: {hostname: db, subdomain: nodes, setHostnameAsFQDN: true, containers: []}",
        );
        assert_eq!(
            uts_hostname(&fqdn, "cluster.local"),
            "db.nodes.shop.svc.cluster.local"
        );
    }

    #[test]
    fn hosts_file_is_the_kubelets() {
        let named = pod(r#"
metadata: {name: web-0, namespace: shop}
spec:
  hostname: db
  subdomain: nodes
  hostAliases:
  - {ip: 10.1.2.3, hostnames: [foo.local, bar.local]}
  - {ip: "::2", hostnames: [six]}
  containers: []
"#);
        assert_eq!(
            hosts_file(&named, &[ip("10.9.0.4")], "cluster.local"),
            "# Kubernetes-managed hosts file.\n\
             127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\n\
             fe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n\
             10.9.0.4\tdb.nodes.shop.svc.cluster.local\tdb\n\
             \n\
             # Entries added by HostAliases.\n\
             10.1.2.3\tfoo.local\tbar.local\n\
             ::2\tsix\n"
        );
        let plain = pod("metadata: {name: web-0}\nspec: {containers: []}");
        let hosts = hosts_file(&plain, &[ip("10.9.0.5")], "cluster.local");
        assert!(
            hosts.ends_with("fe00::2\tip6-allrouters\n10.9.0.5\tweb-0\n"),
            "{hosts}"
        );
        let without_address = hosts_file(&plain, &[], "cluster.local");
        assert!(
            without_address.ends_with("ip6-allrouters\n"),
            "{without_address}"
        );
    }

    #[test]
    fn resolv_conf_reads_and_writes_as_resolvers_do() {
        let node = ResolvConf::parse(
            "# from dhcp\nnameserver 10.0.0.2\nsearch old.example\nsearch corp.example lab.example\nnameserver 10.0.0.3 ; second\noptions edns0 ndots:2\nsortlist 1.2.3.4\n",
        );
        assert_eq!(
            node,
            ResolvConf {
                nameservers: vec!["10.0.0.2".into(), "10.0.0.3".into()],
                searches: vec!["corp.example".into(), "lab.example".into()],
                options: vec!["edns0".into(), "ndots:2".into()],
            }
        );
        assert_eq!(
            node.render(),
            "search corp.example lab.example\nnameserver 10.0.0.2\nnameserver 10.0.0.3\noptions edns0 ndots:2\n"
        );
        assert_eq!(ResolvConf::default().render(), "");
    }

    #[test]
    fn drivers_on_the_nodes_network_refuse_what_they_cannot_honour() {
        let spec = |yaml: &str| {
            pod(&format!("spec: {{containers: [], {yaml}}}"))
                .spec
                .unwrap()
        };
        let aliases = spec("hostAliases: [{ip: 10.0.0.1, hostnames: [a]}]");
        let (field, why) = unsupported_by_driver("process", &aliases).unwrap();
        assert_eq!(field, "hostAliases");
        assert_eq!(
            why,
            "the process driver cannot honour it: its containers use the node's /etc/hosts (drivers that can: oci, containerd)"
        );
        assert_eq!(unsupported_by_driver("oci", &aliases), None);
        assert_eq!(unsupported_by_driver("containerd", &aliases), None);
        assert_eq!(unsupported_by_driver("my-own", &aliases), None);
        for (driver, yaml, field) in [
            ("docker", "setHostnameAsFQDN: true", "setHostnameAsFQDN"),
            ("cri", "hostAliases: [{ip: 10.0.0.3}]", "hostAliases"),
            (
                "process",
                "dnsPolicy: None, dnsConfig: {nameservers: [1.1.1.1]}",
                "dnsConfig",
            ),
            ("docker", "dnsPolicy: None", "dnsPolicy"),
            (
                "cri",
                "shareProcessNamespace: true",
                "shareProcessNamespace",
            ),
        ] {
            assert_eq!(
                unsupported_by_driver(driver, &spec(yaml)).map(|(f, _)| f),
                Some(field)
            );
        }
        for yaml in [
            "dnsPolicy: ClusterFirst",
            "dnsPolicy: Default",
            "restartPolicy: Never",
            "hostname: indexed-0, subdomain: s",
            "shareProcessNamespace: false",
        ] {
            assert_eq!(
                unsupported_by_driver("process", &spec(yaml)),
                None,
                "{yaml}"
            );
        }
    }

    #[test]
    fn only_drivers_with_pod_namespaces_run_ephemeral_containers() {
        for driver in ["oci", "containerd", "my-own"] {
            assert_eq!(refuses_ephemeral_containers(driver), None, "{driver}");
        }
        for driver in ["process", "docker", "cri"] {
            let why = refuses_ephemeral_containers(driver).unwrap();
            assert!(
                why.starts_with(&format!(
                    "the {driver} driver cannot run ephemeral containers"
                )),
                "{why}"
            );
        }
    }

    #[test]
    fn dns_policies_are_the_kubelets() {
        let node = ResolvConf::parse("nameserver 10.0.0.2\nsearch corp.example\noptions edns0\n");
        let dns = Some(ip("10.96.0.10"));
        let with = |spec: &str| {
            pod(&format!(
                "metadata: {{name: p, namespace: shop}}\nspec: {{containers: [], {spec}}}"
            ))
        };
        // ClusterFirst, the default: the cluster DNS alone, its searches
        // then the node's.
        let cluster = resolv_conf(&with("restartPolicy: Always"), dns, "cluster.local", &node);
        assert_eq!(
            cluster.render(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        // Without a cluster DNS it falls back to Default, as the kubelet does;
        // a host-network pod uses the node's too.
        assert_eq!(
            resolv_conf(
                &with("dnsPolicy: ClusterFirst"),
                None,
                "cluster.local",
                &node
            ),
            node
        );
        assert_eq!(
            resolv_conf(&with("hostNetwork: true"), dns, "cluster.local", &node),
            node
        );
        assert_eq!(
            resolv_conf(
                &with("hostNetwork: true, dnsPolicy: ClusterFirstWithHostNet"),
                dns,
                "cluster.local",
                &node
            )
            .nameservers,
            ["10.96.0.10"]
        );
        assert_eq!(
            resolv_conf(&with("dnsPolicy: Default"), dns, "cluster.local", &node),
            node
        );
        // None: dnsConfig only.
        let none = resolv_conf(
            &with(
                "dnsPolicy: None, dnsConfig: {nameservers: [1.1.1.1], searches: [a.example], options: [{name: ndots, value: '1'}, {name: rotate}]}",
            ),
            dns,
            "cluster.local",
            &node,
        );
        assert_eq!(
            none.render(),
            "search a.example\nnameserver 1.1.1.1\noptions ndots:1 rotate\n"
        );
        // dnsConfig adds to a policy: duplicates dropped, options set by
        // name, at most three nameservers.
        let added = resolv_conf(
            &with(
                "dnsConfig: {nameservers: [10.96.0.10, 8.8.8.8, 9.9.9.9, 4.4.4.4], searches: [corp.example, x.example], options: [{name: ndots, value: '2'}, {name: edns0}]}",
            ),
            dns,
            "cluster.local",
            &node,
        );
        assert_eq!(added.nameservers, ["10.96.0.10", "8.8.8.8", "9.9.9.9"]);
        assert_eq!(
            added.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
                "x.example"
            ]
        );
        assert_eq!(added.options, ["ndots:2", "edns0"]);
    }
}
