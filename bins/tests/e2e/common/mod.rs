//! A test harness that runs real c4m binaries: a control plane, agents, and
//! the CLI, each its own process on loopback with its own data dir.

#![allow(dead_code)]

pub(crate) mod kubectl;
pub(crate) mod oci;
pub(crate) mod volumes;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) const C4M: &str = env!("CARGO_BIN_EXE_c4m");
/// The agent alone, as nodes run it (`c4m agent` is the same agent).
pub(crate) const C4M_AGENT: &str = env!("CARGO_BIN_EXE_c4m-agent");
pub(crate) const DEMO: &str = env!("CARGO_BIN_EXE_c4m-demo");
pub(crate) const ACCESS_TOKEN: &str = "test-access";
pub(crate) const SECRET_KEY: &str = "test-secret";

pub(crate) use c4m_testkit::{free_port, wait_for};

/// PATH with the demo binary's folder first, so manifests can run `c4m-demo`.
pub(crate) fn path_with_bins() -> String {
    let bins = Path::new(DEMO).parent().unwrap().display().to_string();
    format!("{bins}:{}", std::env::var("PATH").unwrap_or_default())
}

/// `GET http://127.0.0.1:{port}{path}`: (status code, body). Test-only
/// plain HTTP/1.0 so checks need no async runtime.
pub(crate) fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// Kills the pod namespace holders the agents under `dir` started (their
/// command line names their pods directory).
pub(crate) fn kill_pod_holders(dir: &Path) {
    let dir = dir.as_os_str().as_encoded_bytes();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        let holder = args.next() == Some(c4m_agent::HOLDER_NAME.as_bytes())
            && args.nth(1).is_some_and(|pods| pods.starts_with(dir));
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok())
            && holder
        {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Kills every instance process recorded in a driver state dir, so a test
/// leaves nothing running (instances outlive agents by design).
pub(crate) fn kill_instances(dir: &Path) {
    fn pids(value: &Value, out: &mut Vec<i32>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    if key == "pid" {
                        if let Some(pid) = value.as_i64() {
                            out.push(pid as i32);
                        }
                    } else {
                        pids(value, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| pids(v, out)),
            _ => {}
        }
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            kill_instances(&path);
        } else if path.file_name().is_some_and(|n| n == "state.json") {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(value) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let mut found = Vec::new();
            pids(&value, &mut found);
            for pid in found {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            // An oci container's overlay root file system.
            if let Some(rootfs) = path.parent().map(|dir| dir.join("rootfs")) {
                let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Unmounts whatever is mounted under `dir` (instances' network
/// namespaces, root file systems), deepest first, so the directory can go.
pub(crate) fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort();
    for point in points.iter().rev() {
        let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Detaches the loop devices whose backing files are under `dir` (the
/// local volumes of agents that were killed with them attached), so their
/// space is freed once the directory goes.
pub(crate) fn detach_loops_under(dir: &Path) {
    let Ok(devices) = std::fs::read_dir("/sys/block") else {
        return;
    };
    for device in devices.flatten() {
        let name = device.file_name().to_string_lossy().to_string();
        let Ok(backing) = std::fs::read_to_string(device.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim().trim_end_matches(" (deleted)");
        if Path::new(backing).starts_with(dir) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &format!("/dev/{name}")])
                .status();
        }
    }
}

/// A cluster of real processes.
pub(crate) struct Cluster {
    pub dir: tempfile::TempDir,
    pub api: u16,
    pub grpc: u16,
    pub dns: u16,
    /// Where agents reach the control plane (its gRPC and DNS listen there).
    pub listen: String,
    control: Option<Child>,
    /// A control plane run in this process instead of `c4m control`.
    embedded: Option<EmbeddedControl>,
    agents: BTreeMap<String, Child>,
    /// More flags for `c4m control`.
    control_flags: Vec<String>,
    /// The soft open-file limit `c4m control` starts under (`ulimit -Sn`),
    /// when not the test's own.
    control_open_files: Option<u64>,
}

/// A control plane run by the test process itself, on a runtime of its own.
struct EmbeddedControl {
    shutdown: tokio_util::sync::CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

impl Cluster {
    /// Starts a control plane (fast failure detection for tests).
    pub(crate) fn start() -> Cluster {
        Cluster::start_listening_on("127.0.0.1")
    }

    /// [`Cluster::start`] with the agents' gRPC and the DNS on `address`
    /// (the API stays on loopback, for the CLI).
    pub(crate) fn start_listening_on(address: &str) -> Cluster {
        Cluster::start_with(address, &[])
    }

    /// [`Cluster::start`] with more `c4m control` flags.
    pub(crate) fn start_with_control_flags(flags: &[&str]) -> Cluster {
        Cluster::start_with("127.0.0.1", flags)
    }

    /// [`Cluster::start_with_control_flags`], the control plane started
    /// under a soft open-file limit of `limit` (`sh -c 'ulimit -Sn LIMIT;
    /// exec c4m control ...'`).
    pub(crate) fn start_with_open_files_limit(limit: u64, flags: &[&str]) -> Cluster {
        Cluster::start_limited("127.0.0.1", flags, Some(limit))
    }

    fn start_with(address: &str, flags: &[&str]) -> Cluster {
        Cluster::start_limited(address, flags, None)
    }

    fn start_limited(address: &str, flags: &[&str], open_files: Option<u64>) -> Cluster {
        // A free port found now may be taken by a parallel test before the
        // control plane binds it: then it exits, and a fresh set is tried.
        for _ in 0..3 {
            let mut cluster = Cluster::unstarted(address);
            cluster.control_open_files = open_files;
            cluster.control_flags = flags.iter().map(|f| f.to_string()).collect();
            if cluster.try_start_control() {
                return cluster;
            }
        }
        panic!("the control plane exited at start three times (ports taken?)");
    }

    /// A cluster whose control plane is not started yet, with free ports.
    fn unstarted(address: &str) -> Cluster {
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            api: free_port(),
            grpc: free_port(),
            dns: free_port(),
            listen: address.to_string(),
            control: None,
            embedded: None,
            agents: BTreeMap::new(),
            control_flags: Vec::new(),
            control_open_files: None,
        }
    }

    /// A cluster whose control plane the test embeds, as another Rust
    /// service would, with `extend` adding to its extension points (the
    /// store is a `RedbStore` in the cluster's dir). Agents and the CLI are
    /// the real binaries, as with [`Cluster::start`].
    pub(crate) fn start_embedded(
        extend: impl FnOnce(c4m_plugin::ControlPlaneExtensions) -> c4m_plugin::ControlPlaneExtensions
        + Send
        + 'static,
    ) -> Cluster {
        let mut cluster = Cluster::unstarted("127.0.0.1");
        let store_dir = cluster.dir.path().join("control");
        std::fs::create_dir_all(&store_dir).unwrap();
        let config = c4m_control::ControlPlaneConfig {
            api_addr: ([127, 0, 0, 1], cluster.api).into(),
            grpc_addr: ([127, 0, 0, 1], cluster.grpc).into(),
            dns_addr: Some(([127, 0, 0, 1], cluster.dns).into()),
            token: Some(
                c4m_api::Credentials {
                    access_token: ACCESS_TOKEN.into(),
                    secret_key: SECRET_KEY.into(),
                }
                .bearer(),
            ),
            heartbeat_interval: Duration::from_millis(500),
            node_grace: Duration::from_secs(3),
            eviction_delay: Duration::from_secs(1),
            ..c4m_control::ControlPlaneConfig::default()
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let store = c4m_state::RedbStore::open(&store_dir.join("store.redb")).unwrap();
                let extensions = extend(c4m_plugin::ControlPlaneExtensions::new(
                    std::sync::Arc::new(store),
                ));
                let control = c4m_control::ControlPlane::bind(config, extensions)
                    .await
                    .expect("bind the embedded control plane");
                bound_tx.send(()).unwrap();
                control
                    .run(stop)
                    .await
                    .expect("the embedded control plane runs");
            });
        });
        bound_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the embedded control plane binds");
        cluster.embedded = Some(EmbeddedControl { shutdown, thread });
        cluster
    }

    fn api_bind(&self) -> &str {
        if self.listen == "127.0.0.1" {
            "127.0.0.1"
        } else {
            "0.0.0.0"
        }
    }

    /// The pid of the control plane process.
    pub(crate) fn control_pid(&self) -> u32 {
        self.control.as_ref().expect("a control plane process").id()
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.api)
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap()
    }

    /// Starts (or restarts) the control plane on the same data dir and ports.
    pub(crate) fn start_control(&mut self) {
        assert!(
            self.try_start_control(),
            "the control plane exited at start"
        );
    }

    /// Starts the control plane and waits until its API answers; false if
    /// it exited first.
    fn try_start_control(&mut self) -> bool {
        let mut command = match self.control_open_files {
            // `exec`: the shell becomes the control plane, keeping its pid.
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell
                    .args(["-c", "ulimit -Sn \"$0\" && exec \"$@\""])
                    .arg(limit.to_string())
                    .arg(C4M);
                shell
            }
            None => Command::new(C4M),
        };
        let child = command
            .args(["control", "--data-dir"])
            .arg(self.dir.path().join("control"))
            // On every address when the agents are elsewhere (simulated
            // hosts), so instances reach it through the `kubernetes` Service.
            .args(["--api", &format!("{}:{}", self.api_bind(), self.api)])
            .args(["--grpc", &format!("{}:{}", self.listen, self.grpc)])
            .args(["--dns", &format!("{}:{}", self.listen, self.dns)])
            .args([
                "--node-grace",
                "3s",
                "--eviction-delay",
                "1s",
                "--heartbeat",
                "500ms",
            ])
            .args(&self.control_flags)
            .env("C4M_ACCESS_TOKEN", ACCESS_TOKEN)
            .env("C4M_SECRET_KEY", SECRET_KEY)
            .env("RUST_LOG", "info")
            .stdout(self.log("control"))
            .stderr(self.log("control"))
            .spawn()
            .expect("start the control plane");
        self.control = Some(child);
        let endpoint = format!("127.0.0.1:{}", self.api);
        wait_for("the control plane API", Duration::from_secs(30), || {
            if let Some(control) = self.control.as_mut()
                && control.try_wait().ok().flatten().is_some()
            {
                return Some(false);
            }
            http_get(&endpoint, "/healthz")
                .filter(|(code, _)| *code == 200)
                .map(|_| true)
        })
    }

    pub(crate) fn agent_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("agent-{name}"))
    }

    /// Starts an agent advertising `cpu` and `memory`.
    pub(crate) fn start_agent(&mut self, name: &str, cpu: &str, memory: &str) -> u32 {
        self.start_agent_with(name, cpu, memory, &[]);
        self.agent_pid(name)
    }

    /// [`Cluster::start_agent`] with more agent flags.
    pub(crate) fn start_agent_with(&mut self, name: &str, cpu: &str, memory: &str, flags: &[&str]) {
        self.start_agent_from(Command::new(C4M_AGENT), name, cpu, memory, flags);
    }

    /// [`Cluster::start_agent_with`] run by `command`: `c4m-agent` (or
    /// `c4m agent`), possibly through a wrapper such as `nsenter`.
    pub(crate) fn start_agent_from(
        &mut self,
        command: Command,
        name: &str,
        cpu: &str,
        memory: &str,
        flags: &[&str],
    ) {
        let data_dir = self.agent_dir(name).display().to_string();
        let mut extra = vec!["--data-dir", &data_dir];
        // Most tests run host processes and name images no node has; the
        // agent's own default (a container driver where one works) is
        // asked for with `--default-driver auto`.
        if !flags.contains(&"--default-driver") {
            extra.extend(["--default-driver", c4m_core::DEFAULT_DRIVER]);
        }
        extra.extend_from_slice(flags);
        self.spawn_agent_from(command, name, cpu, memory, &extra);
        wait_for(
            &format!("node {name} Ready"),
            Duration::from_secs(30),
            || self.node_ready(name).then_some(()),
        );
    }

    /// Starts one `c4m agent --hollow COUNT` process simulating nodes
    /// `{name}-0..{name}-{count - 1}`, each advertising `cpu` and `memory`,
    /// and waits until all of them are Ready. `kill_agent(name)` ends it.
    pub(crate) fn start_hollow_agents(
        &mut self,
        name: &str,
        count: usize,
        cpu: &str,
        memory: &str,
    ) {
        self.start_labelled_hollow_agents(name, count, cpu, memory, &[]);
    }

    /// [`Cluster::start_hollow_agents`] with node labels (`KEY=VALUE`).
    pub(crate) fn start_labelled_hollow_agents(
        &mut self,
        name: &str,
        count: usize,
        cpu: &str,
        memory: &str,
        labels: &[&str],
    ) {
        let mut flags: Vec<&str> = Vec::new();
        for label in labels {
            flags.extend(["--label", *label]);
        }
        self.start_hollow_agents_with(name, count, cpu, memory, &flags);
    }

    /// [`Cluster::start_hollow_agents`] with more `c4m agent` flags.
    pub(crate) fn start_hollow_agents_with(
        &mut self,
        name: &str,
        count: usize,
        cpu: &str,
        memory: &str,
        flags: &[&str],
    ) {
        let count_text = count.to_string();
        let mut extra = vec!["--hollow", &count_text];
        extra.extend(flags);
        self.spawn_agent(name, cpu, memory, &extra);
        let prefix = format!("{name}-");
        wait_for(
            &format!("{count} hollow nodes Ready"),
            Duration::from_secs(30),
            || (self.ready_nodes(&prefix).len() == count).then_some(()),
        );
    }

    /// Runs `c4m agent --name NAME --cpu CPU --memory MEMORY EXTRA...`
    /// against this cluster, logging to `agent-{name}.log`. (Hollow nodes
    /// run by the `c4m agent` subcommand; real ones by `c4m-agent`.)
    fn spawn_agent(&mut self, name: &str, cpu: &str, memory: &str, extra: &[&str]) -> u32 {
        let mut command = Command::new(C4M);
        command.arg("agent");
        self.spawn_agent_from(command, name, cpu, memory, extra)
    }

    fn spawn_agent_from(
        &mut self,
        mut command: Command,
        name: &str,
        cpu: &str,
        memory: &str,
        extra: &[&str],
    ) -> u32 {
        let child = command
            .args(["--name", name, "--cpu", cpu, "--memory", memory])
            .args(extra)
            .args([
                "--control-plane",
                &format!("http://{}:{}", self.listen, self.grpc),
            ])
            .env("C4M_ACCESS_TOKEN", ACCESS_TOKEN)
            .env("C4M_SECRET_KEY", SECRET_KEY)
            .env("PATH", path_with_bins())
            .env("RUST_LOG", "info")
            .stdout(self.log(&format!("agent-{name}")))
            .stderr(self.log(&format!("agent-{name}")))
            .spawn()
            .expect("start an agent");
        let pid = child.id();
        self.agents.insert(name.to_string(), child);
        pid
    }

    pub(crate) fn agent_pid(&self, name: &str) -> u32 {
        self.agents[name].id()
    }

    /// Whether agent `name` has exited (reaped if so).
    pub(crate) fn agent_exited(&mut self, name: &str) -> bool {
        self.agents
            .get_mut(name)
            .is_some_and(|child| child.try_wait().ok().flatten().is_some())
    }

    /// SIGKILLs an agent: it gets no chance to say goodbye.
    pub(crate) fn kill_agent(&mut self, name: &str) {
        let mut child = self.agents.remove(name).expect("agent running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends `signal` to an agent and waits for it to exit.
    pub(crate) fn signal_agent(
        &mut self,
        name: &str,
        signal: nix::sys::signal::Signal,
    ) -> std::process::ExitStatus {
        let mut child = self.agents.remove(name).expect("agent running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        wait_exit(&mut child, Duration::from_secs(15))
    }

    /// SIGKILLs the control plane.
    pub(crate) fn kill_control(&mut self) {
        let mut child = self.control.take().expect("control plane running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends `signal` to the control plane and waits for it to exit.
    pub(crate) fn signal_control(
        &mut self,
        signal: nix::sys::signal::Signal,
    ) -> std::process::ExitStatus {
        let mut child = self.control.take().expect("control plane running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        wait_exit(&mut child, Duration::from_secs(15))
    }

    /// An API client with the cluster's credentials.
    pub(crate) fn client(&self) -> c4m_api::Client {
        let credentials = c4m_api::Credentials {
            access_token: ACCESS_TOKEN.into(),
            secret_key: SECRET_KEY.into(),
        };
        c4m_api::Client::new(&self.endpoint(), Some(&credentials)).unwrap()
    }

    /// Runs the CLI against this cluster.
    pub(crate) fn c4m(&self, args: &[&str]) -> Output {
        self.c4m_with_stdin(args, "")
    }

    /// The CLI with this cluster's endpoint and credentials.
    pub(crate) fn c4m_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(C4M);
        command
            .args(args)
            .env("C4M_ENDPOINT_URL", self.endpoint())
            .env("C4M_ACCESS_TOKEN", ACCESS_TOKEN)
            .env("C4M_SECRET_KEY", SECRET_KEY)
            .env("C4M_HOME", self.dir.path().join("cli-home"));
        command
    }

    pub(crate) fn c4m_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .c4m_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs the CLI and insists it succeeds; returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let output = self.c4m(args);
        assert!(
            output.status.success(),
            "c4m {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// `c4m apply -f -` with `yaml`; insists it succeeds.
    pub(crate) fn apply(&self, yaml: &str) -> String {
        let output = self.c4m_with_stdin(&["apply", "-f", "-"], yaml);
        assert!(
            output.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// `c4m get KIND -o json` items.
    pub(crate) fn list(&self, kind: &str) -> Vec<Value> {
        let text = self.ok(&["get", kind, "-A", "-o", "json"]);
        let list: Value = serde_json::from_str(&text).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// The first node's entry (`DRIVER=VERSION`) for `driver` in its
    /// drivers annotation; fails if the node does not offer it.
    pub(crate) fn offered_driver(&self, driver: &str) -> String {
        let node = self.list("nodes").remove(0);
        let drivers = node["metadata"]["annotations"][c4m_core::annotations::DRIVERS]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let prefix = format!("{driver}=");
        drivers
            .split(',')
            .find(|d| d.starts_with(&prefix))
            .unwrap_or_else(|| panic!("the node does not offer the {driver} driver: {drivers}"))
            .to_string()
    }

    pub(crate) fn node_ready(&self, name: &str) -> bool {
        let output = self.c4m(&["get", "nodes", name, "-o", "json"]);
        output.status.success()
            && serde_json::from_slice::<Value>(&output.stdout)
                .ok()
                .is_some_and(|node| node_is_ready(&node))
    }

    /// Names of the Ready nodes whose names start with `prefix`.
    pub(crate) fn ready_nodes(&self, prefix: &str) -> Vec<String> {
        self.list("nodes")
            .iter()
            .filter(|node| node_is_ready(node))
            .filter_map(|node| node["metadata"]["name"].as_str())
            .filter(|name| name.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    /// Instances with a label `key=value`.
    pub(crate) fn instances_of(&self, selector: &str) -> Vec<Value> {
        let text = self.ok(&["get", "instances", "-l", selector, "-o", "json"]);
        serde_json::from_str::<Value>(&text).unwrap()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `count` instances matching `selector` run and are ready.
    pub(crate) fn wait_ready(&self, selector: &str, count: usize, timeout: Duration) -> Vec<Value> {
        wait_for(
            &format!("{count} ready instances of {selector}"),
            timeout,
            || {
                let pods = self.instances_of(selector);
                let ready: Vec<Value> = pods.iter().filter(|p| is_ready(p)).cloned().collect();
                (ready.len() == count && pods.len() == count).then_some(ready)
            },
        )
    }

    /// Waits until no instance matches `selector`.
    pub(crate) fn wait_gone(&self, selector: &str, timeout: Duration) {
        wait_for(
            &format!("the instances of {selector} to go"),
            timeout,
            || self.instances_of(selector).is_empty().then_some(()),
        );
    }

    pub(crate) fn log_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

/// Whether a node's Ready condition is True.
pub(crate) fn node_is_ready(node: &Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

pub(crate) fn is_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// host:port where an instance's first port is published.
pub(crate) fn instance_addr(pod: &Value) -> String {
    let ports: Vec<Value> = serde_json::from_str(
        pod["metadata"]["annotations"]["c4m.io/ports"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    format!(
        "{}:{}",
        pod["status"]["podIP"].as_str().unwrap(),
        ports[0]["hostPort"]
    )
}

/// The pid an instance of c4m-demo reports in its answer.
pub(crate) fn demo_pid(addr: &str) -> Option<i32> {
    let (code, body) = http_get(addr, "/")?;
    if code != 200 {
        return None;
    }
    body.split("pid ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

pub(crate) fn restarts(pod: &Value) -> i64 {
    pod["status"]["containerStatuses"][0]["restartCount"]
        .as_i64()
        .unwrap_or(0)
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.agents) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut child) = self.control.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(embedded) = self.embedded.take() {
            embedded.shutdown.cancel();
            let _ = embedded.thread.join();
        }
        kill_instances(self.dir.path());
        kill_pod_holders(self.dir.path());
        unmount_under(self.dir.path());
        detach_loops_under(self.dir.path());
        if std::thread::panicking() {
            for name in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = name.path();
                if path.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    eprintln!("----- {} (last 40 lines) -----", path.display());
                    for line in tail.into_iter().rev() {
                        eprintln!("{line}");
                    }
                }
            }
        }
    }
}

/// Pushes busybox twice to `registry`: as `c4m/busybox:1` (cmd `/bin/sh`)
/// and as the CRI sandbox image `c4m/pause:1` (sleeping for ever).
pub(crate) fn push_busybox_and_pause(dir: &Path, registry: &c4m_testkit::Registry) {
    for (name, cmd) in [
        ("busybox", &["/bin/sh"][..]),
        ("pause", &["/bin/sleep", "2147483647"][..]),
    ] {
        let layout = busybox_layout(dir, &format!("{name}-layout"), cmd);
        registry.push_oci_layout(&layout, "1", &format!("c4m/{name}:1"));
    }
}

/// Debian's static busybox, which the test images are made of.
fn busybox() -> &'static Path {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
    busybox
}

/// An OCI layout of busybox (tag `1`, `PATH=/bin`, cmd `cmd`) written to
/// `dir/name`; its path.
pub(crate) fn busybox_layout(dir: &Path, name: &str, cmd: &[&str]) -> PathBuf {
    let busybox = busybox();
    let config = oci_spec::image::ConfigBuilder::default()
        .cmd(cmd.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .env(vec!["PATH=/bin".to_string()])
        .build()
        .unwrap();
    let layout = dir.join(name);
    c4m_image::write_busybox_image(busybox, &layout, "1", config).unwrap();
    layout
}

/// A one-replica Deployment running `script` with driver `driver`
/// (`runtimeClassName`), a port and limits; in VPC `vpc` if given.
pub(crate) fn driver_deployment(
    driver: &str,
    name: &str,
    image: &str,
    script: &str,
    vpc: Option<&str>,
) -> String {
    deployment_of(driver, name, image, 1, vpc, script, "")
}

/// A Deployment of driver `driver`: `replicas` instances of `image` running `script`
/// (with `$POD` their name), declaring port 8080, in VPC `vpc` (the
/// default if None). `pod_spec` adds to the pod spec: YAML lines each
/// starting with six spaces, or empty.
pub(crate) fn deployment_of(
    driver: &str,
    name: &str,
    image: &str,
    replicas: usize,
    vpc: Option<&str>,
    script: &str,
    pod_spec: &str,
) -> String {
    let annotations = vpc
        .map(|vpc| format!("\n      annotations: {{c4m.io/vpc: {vpc}}}"))
        .unwrap_or_default();
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}{annotations}
    spec:
      runtimeClassName: {driver}
{pod_spec}      containers:
        - name: main
          image: {image}
          command: ["sh", "-c", {script:?}]
          env: [{{name: POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
          ports: [{{containerPort: 8080}}]
          resources: {{limits: {{cpu: 500m, memory: 64Mi}}}}
"#
    )
}

/// A busybox image tagged `1` (cmd `/bin/sh`, `PATH=/bin`) as an OCI
/// layout tar, written to `dir/busybox.tar`; its path.
pub(crate) fn busybox_image_tar(dir: &Path) -> PathBuf {
    busybox_image_tar_with(dir, "busybox", &[])
}

/// [`busybox_image_tar`] with the host's `executables` (and the libraries
/// they load) in `/bin`, written to `dir/NAME.tar`: a database image made
/// of the host's binaries.
pub(crate) fn busybox_image_tar_with(dir: &Path, name: &str, executables: &[&Path]) -> PathBuf {
    let tar = dir.join(format!("{name}.tar"));
    std::fs::write(
        &tar,
        c4m_image::busybox_image_tar(busybox(), executables, "1").unwrap(),
    )
    .unwrap();
    tar
}

/// Starts agents `h1`, `h2`, ... in the network namespaces of `hosts`, each
/// on its host's address, with an instance network whose default VPC is
/// `vpc`, and `flags`.
pub(crate) fn start_host_agents(
    cluster: &mut Cluster,
    hosts: &c4m_testkit::Hosts,
    cpu: &str,
    memory: &str,
    vpc: &str,
    flags: &[&str],
) {
    for index in 1..=hosts.count() {
        start_host_agent(cluster, hosts, index, [cpu, memory], vpc, flags);
    }
}

/// Starts (or starts again) agent `h<index>` as [`start_host_agents`] does,
/// advertising `capacity` (CPU, memory).
pub(crate) fn start_host_agent(
    cluster: &mut Cluster,
    hosts: &c4m_testkit::Hosts,
    index: usize,
    capacity: [&str; 2],
    vpc: &str,
    flags: &[&str],
) {
    let name = format!("h{index}");
    start_named_host_agent(cluster, hosts, index, &name, capacity, vpc, flags);
}

/// [`start_host_agent`] for a node named `name` rather than `h<index>`.
pub(crate) fn start_named_host_agent(
    cluster: &mut Cluster,
    hosts: &c4m_testkit::Hosts,
    index: usize,
    name: &str,
    capacity: [&str; 2],
    vpc: &str,
    flags: &[&str],
) {
    let address = hosts.address(index).to_string();
    let listen = format!("{address}:0");
    let mut all = vec![
        "--instance-network",
        "--default-vpc-cidr",
        vpc,
        "--address",
        &address,
        "--listen",
        &listen,
    ];
    all.extend_from_slice(flags);
    let [cpu, memory] = capacity;
    cluster.start_agent_from(hosts.command(index, C4M_AGENT), name, cpu, memory, &all);
}

/// An instance's name.
pub(crate) fn name_of(pod: &Value) -> String {
    pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The node an instance is bound to.
pub(crate) fn node_of(pod: &Value) -> String {
    pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// An instance's address (`status.podIP`).
pub(crate) fn ip_of(pod: &Value) -> String {
    pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Imports the busybox fixture as image `name` on each of `nodes`.
pub(crate) fn import_busybox(cluster: &Cluster, name: &str, nodes: &[&str]) {
    let tar = busybox_image_tar(cluster.dir.path());
    for node in nodes {
        cluster.ok(&[
            "image",
            "import",
            tar.to_str().unwrap(),
            "--name",
            name,
            "--node",
            node,
        ]);
    }
}

/// The twelve services of `examples/k8s-realistic`.
pub(crate) const BOOKSHOP: [&str; 12] = [
    "frontend",
    "gateway",
    "catalog",
    "search",
    "cart",
    "checkout",
    "payments",
    "shipping",
    "notifications",
    "reviews",
    "inventory",
    "accounts",
];
