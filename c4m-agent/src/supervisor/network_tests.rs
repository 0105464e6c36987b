//! The supervisor with instance networking, against the real kernel: an
//! instance of a driver that takes a network namespace is attached before
//! it starts, reports its VPC address, reaches the control plane's DNS
//! through its gateway, and is detached once removed. Needs root and `nft`.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use c4m_api::agent::InstanceStatus;
use c4m_core::{
    ContainerRuntime, ContainerSpec, ContainerState, ContainerStatus, ExecOutput, Instance,
    LogOptions, ResourceUsage,
};
use c4m_mesh::testing::reversing_udp_server;
use c4m_mesh::{
    InstanceNetwork, LinuxNetwork, Network, NetworkConfig, VpcNetwork, enter_network_namespace,
};
use futures::stream::BoxStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Restarts, Supervisor};

/// A driver that takes a network namespace and runs nothing: it records
/// the specs it was asked to start.
#[derive(Default)]
struct NamespacedRuntime {
    containers: Mutex<HashMap<String, ContainerStatus>>,
}

#[async_trait]
impl ContainerRuntime for NamespacedRuntime {
    fn name(&self) -> &str {
        "namespaced"
    }
    fn version(&self) -> String {
        "1".into()
    }
    fn takes_network_namespace(&self) -> bool {
        true
    }
    async fn start(&self, spec: &ContainerSpec) -> c4m_core::Result<ContainerStatus> {
        let status = ContainerStatus {
            id: spec.id.clone(),
            spec: spec.clone(),
            state: ContainerState::Running {
                pid: std::process::id(),
                started_at: SystemTime::now(),
            },
            ports: Vec::new(),
        };
        self.containers
            .lock()
            .unwrap()
            .insert(spec.id.clone(), status.clone());
        Ok(status)
    }
    async fn status(&self, id: &str) -> c4m_core::Result<ContainerStatus> {
        self.containers
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| c4m_core::Error::ContainerNotFound(id.into()))
    }
    async fn list(&self) -> c4m_core::Result<Vec<ContainerStatus>> {
        Ok(self.containers.lock().unwrap().values().cloned().collect())
    }
    async fn stop(&self, _id: &str, _grace: Duration) -> c4m_core::Result<()> {
        Ok(())
    }
    async fn remove(&self, id: &str) -> c4m_core::Result<()> {
        self.containers.lock().unwrap().remove(id);
        Ok(())
    }
    async fn stats(&self, _id: &str) -> c4m_core::Result<ResourceUsage> {
        Ok(ResourceUsage::default())
    }
    async fn logs(
        &self,
        _id: &str,
        _options: LogOptions,
    ) -> c4m_core::Result<BoxStream<'static, c4m_core::Result<Bytes>>> {
        Ok(Box::pin(futures::stream::empty()))
    }
    async fn exec(
        &self,
        id: &str,
        _command: &[String],
        _timeout: Duration,
    ) -> c4m_core::Result<ExecOutput> {
        Err(c4m_core::Error::ContainerNotFound(id.into()))
    }
}

fn pod(name: &str, host_port: u16) -> Instance {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name, "namespace": "shop", "uid": "0123456789",
            "annotations": {"c4m.io/vpc": "agent-blue", "c4m.io/vpc-cidr": "10.99.32.0/20"},
        },
        "spec": {
            "runtimeClassName": "namespaced",
            "containers": [{"name": "web", "image": "busybox", "ports": [{"containerPort": 8080, "hostPort": host_port}]}],
        },
    }))
    .unwrap()
}

async fn wait_for_status(
    statuses: &mut watch::Receiver<Arc<Vec<InstanceStatus>>>,
    done: impl Fn(&[InstanceStatus]) -> bool,
) -> Vec<InstanceStatus> {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let current = statuses.borrow_and_update().clone();
            if done(&current) {
                return current.to_vec();
            }
            statuses.changed().await.expect("the supervisor runs");
        }
    })
    .await
    .expect("the supervisor reported in time")
}

/// Removes the VPC's bridge, table and namespaces if the test stops early.
struct Leftovers {
    run_dir: PathBuf,
    bridge: String,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        use std::process::Command;
        if let Ok(entries) = std::fs::read_dir(self.run_dir.join("netns")) {
            for entry in entries.flatten() {
                let _ = Command::new("umount").arg("-l").arg(entry.path()).status();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        let table = format!("c4m_{}", self.bridge);
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &table])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + nftables: network namespaces and a bridge"]
async fn a_namespaced_instance_gets_a_vpc_address_dns_and_is_detached() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, links, nftables)"
    );
    let run_dir = tempfile::tempdir().unwrap();
    // Node slice 2 of the VPC's /20: 10.99.34.0/24.
    let vpc = VpcNetwork {
        name: "agent-blue".into(),
        subnet: "10.99.34.0/24".parse().unwrap(),
    };
    let _leftovers = Leftovers {
        run_dir: run_dir.path().to_path_buf(),
        bridge: vpc.bridge_name(),
    };
    let linux = Arc::new(LinuxNetwork::open(run_dir.path()).unwrap());

    let shutdown = CancellationToken::new();
    let upstream_addr = reversing_udp_server(shutdown.clone()).await;
    let (_dns_tx, dns_rx) = watch::channel(upstream_addr.to_string());
    let network = InstanceNetwork::new(
        linux.clone(),
        NetworkConfig {
            default_vpc_cidr: "10.99.48.0/20".parse().unwrap(),
            dns_port: 10053,
            host_address: Ipv4Addr::LOCALHOST.into(),
            cni: None,
            cluster_domain: c4m_mesh::DEFAULT_CLUSTER_DOMAIN.into(),
        },
        dns_rx.clone(),
        watch::channel(Some(2)).1,
        shutdown.clone(),
    );
    let runtime = Arc::new(NamespacedRuntime::default());
    let (assignments_tx, assignments_rx) = watch::channel(None);
    let (statuses_tx, mut statuses_rx) = watch::channel(Arc::new(Vec::new()));
    let supervisor = Supervisor {
        runtimes: vec![runtime.clone()],
        assignments: assignments_rx,
        statuses: statuses_tx,
        directory: Arc::default(),
        dns_address: dns_rx,
        network: Some(Arc::new(network)),
        pod_namespaces: None,
        holders: None,
        volumes: None,
        restarts: Restarts::default(),
        prober: Arc::new(c4m_runtime::DefaultProber),
        backoff: super::RestartBackoff::default(),
        pod_etc: crate::pod_etc::PodEtc {
            dir: run_dir.path().join("pods"),
            cluster_domain: "c4m".into(),
            node_resolv_conf: run_dir.path().join("node-resolv.conf"),
        },
    };
    let running = tokio::spawn(supervisor.run(shutdown.clone()));

    let host_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assignments_tx.send_replace(Some(Arc::new(vec![Arc::new(pod("web-1", host_port))])));
    let statuses = wait_for_status(&mut statuses_rx, |s| {
        s.first().is_some_and(|s| s.phase == "Running")
    })
    .await;
    let status = &statuses[0];
    assert_eq!(status.pod_ip, "10.99.34.2");
    assert_eq!(status.ports[0].host_ip, "10.99.34.2");
    assert_eq!(status.ports[0].host_port, 8080);
    // The published hostPort is reported too: the node's address and port.
    assert_eq!(status.ports.len(), 2, "{:?}", status.ports);
    assert_eq!(
        (
            status.ports[1].host_ip.as_str(),
            status.ports[1].host_port,
            status.ports[1].container_port
        ),
        ("127.0.0.1", i32::from(host_port), 8080)
    );
    let started = runtime.list().await.unwrap().remove(0);
    // Its DNS server is the relay on its gateway (the control plane's own
    // address is on the node's loopback, out of its reach), given once.
    let dns_servers: Vec<&str> = started
        .spec
        .env
        .iter()
        .filter(|(name, _)| name == "C4M_DNS_SERVER")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(dns_servers, ["10.99.34.1:10053"]);
    let namespace = started
        .spec
        .network_namespace
        .expect("started in a namespace");
    let attachment = linux
        .attachment(&started.id)
        .await
        .unwrap()
        .expect("attached");
    assert_eq!(namespace, attachment.network_namespace);
    // The pod's own resolv.conf (the kubelet's ClusterFirst), hosts and
    // host name, naming its gateway and address.
    let resolv_conf = std::fs::read_to_string(started.spec.resolv_conf.unwrap()).unwrap();
    assert_eq!(
        resolv_conf,
        "search shop.svc.c4m svc.c4m c4m\nnameserver 10.99.34.1\noptions ndots:5\n"
    );
    let hosts = std::fs::read_to_string(started.spec.hosts_file.unwrap()).unwrap();
    assert!(hosts.ends_with("\n10.99.34.2\tweb-1\n"), "{hosts}");
    assert_eq!(attachment.vpc, "agent-blue");
    assert_eq!(attachment.address, Ipv4Addr::new(10, 99, 34, 2));

    // DNS from inside the instance: to its gateway, relayed to loopback.
    let gateway = SocketAddr::from((attachment.gateway, 10053));
    let answer = enter_network_namespace(&namespace, move || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        socket.send_to(b"where-is-web", gateway)?;
        let mut answer = [0u8; 64];
        let (n, _) = socket.recv_from(&mut answer)?;
        Ok::<_, std::io::Error>(answer[..n].to_vec())
    })
    .unwrap()
    .expect("an answer through the gateway's relay");
    assert_eq!(answer, b"bew-si-erehw");
    // And over TCP, to the same port of the control plane's DNS.
    let tcp_upstream = tokio::net::TcpListener::bind(upstream_addr)
        .await
        .expect("the stand-in DNS's port is free for TCP too");
    tokio::spawn(async move {
        if let Ok((mut stream, _)) = tcp_upstream.accept().await {
            let _ = stream.write_all(b"tcp answer").await;
        }
    });
    let tcp_answer = enter_network_namespace(&namespace, move || {
        let mut stream = std::net::TcpStream::connect_timeout(&gateway, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer)?;
        Ok::<_, std::io::Error>(answer)
    })
    .unwrap()
    .expect("an answer over TCP through the gateway");
    assert_eq!(tcp_answer, "tcp answer");

    // The host port reaches the instance's port 8080 in its namespace.
    let address = attachment.address;
    let server = enter_network_namespace(&namespace, move || {
        std::net::TcpListener::bind((address, 8080))
    })
    .unwrap()
    .unwrap();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = server.accept() {
            let _ = Write::write_all(&mut stream, b"hello from the instance");
        }
    });
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", host_port))
        .await
        .expect("the host port is published");
    let mut greeting = String::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_string(&mut greeting))
        .await
        .expect("the instance answered through the host port")
        .unwrap();
    assert_eq!(greeting, "hello from the instance");

    assignments_tx.send_replace(Some(Arc::new(Vec::new())));
    wait_for_status(&mut statuses_rx, <[InstanceStatus]>::is_empty).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while linux.attachment(&started.id).await.unwrap().is_some()
            || namespace.exists()
            || std::net::TcpStream::connect(("127.0.0.1", host_port)).is_ok()
            // The VPC leaves the node just after its last instance.
            || !linux.vpcs().await.unwrap().is_empty()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the instance was detached after its removal");
    // Its last instance gone, the VPC left the node (bridge and rules).
    assert!(linux.vpcs().await.unwrap().is_empty());
    let bridge = std::process::Command::new("ip")
        .args(["link", "show", &vpc.bridge_name()])
        .output()
        .unwrap();
    assert!(!bridge.status.success(), "the bridge is left");
    shutdown.cancel();
    running.await.unwrap();
}
