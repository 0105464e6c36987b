//! The README's quickstart, run as a new user would: `scripts/quickstart.sh`
//! starts `c4m up` with instance networking, builds the example's image from
//! busybox-static and c4m-demo, and deploys examples/shop in oci containers.
//! Every instance must end up Running and Ready in a container of its own
//! (its own address in the VPC, its own host name and processes), web must
//! reach catalog by DNS name from inside its container, and the follow-up
//! commands the README lists must work on those containers. Needs root,
//! runc (or crun), conmon and busybox-static, as the quickstart does.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

/// The default VPC of the test's `c4m up` (its instances get the first
/// /24); apart from the ranges other tests use.
const VPC_CIDR: &str = "10.99.176.0/20";

#[test]
#[ignore = "needs root + runc + conmon + nftables + curl"]
fn quickstart_deploys_the_example_in_containers() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the quickstart runs oci containers: this test needs root"
    );
    let home = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let bin_dir = Path::new(C4M).parent().unwrap();
    let (api, grpc, dns) = (free_port(), free_port(), free_port());
    let up_args = format!(
        "--api 127.0.0.1:{api} --grpc 127.0.0.1:{grpc} --dns 127.0.0.1:{dns} --name quickstart --default-vpc-cidr {VPC_CIDR}"
    );
    let output = Command::new("bash")
        .arg(repo.join("scripts/quickstart.sh"))
        .env("C4M_HOME", home.path())
        .env("C4M_BIN_DIR", bin_dir)
        .env("C4M_UP_ARGS", &up_args)
        .env_remove("C4M_ENDPOINT_URL")
        .env_remove("C4M_ACCESS_TOKEN")
        .env_remove("C4M_SECRET_KEY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let pid: i32 = std::fs::read_to_string(home.path().join("c4m.pid"))
        .unwrap_or_else(|e| panic!("no c4m.pid ({e}):\n{stdout}\n{stderr}"))
        .trim()
        .parse()
        .unwrap();
    let guard = Stop {
        pid,
        home: home.path().to_path_buf(),
        repo: repo.to_path_buf(),
    };
    assert!(
        output.status.success(),
        "quickstart failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("imported docker.io/library/shop:1 sha256:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("all workloads in namespace default are ready"),
        "{stdout}"
    );
    let c4m = C4mCli {
        home: home.path().to_path_buf(),
    };

    // Four instances, each Running and Ready in an oci container with an
    // address of its own in the VPC.
    let list: Value = serde_json::from_str(&c4m.ok(&["get", "instances", "-o", "json"])).unwrap();
    let pods = list["items"].as_array().unwrap();
    assert_eq!(pods.len(), 4, "2 catalog + 2 web: {list:#}");
    assert!(pods.iter().all(is_ready), "{list:#}");
    let vpc: ipnet::Ipv4Net = VPC_CIDR.parse().unwrap();
    let mut addresses = BTreeSet::new();
    for pod in pods {
        assert_eq!(pod["spec"]["runtimeClassName"], "oci", "{pod:#}");
        let ip: Ipv4Addr = pod["status"]["podIP"]
            .as_str()
            .and_then(|ip| ip.parse().ok())
            .unwrap_or_else(|| panic!("no podIP: {pod:#}"));
        assert!(vpc.contains(&ip), "{ip} is outside {VPC_CIDR}");
        addresses.insert(ip);
    }
    assert_eq!(addresses.len(), 4, "addresses are distinct: {addresses:?}");
    let table = c4m.ok(&["get", "instances"]);
    let running: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("Running") && l.contains("1/1"))
        .collect();
    assert_eq!(running.len(), 4, "{table}");
    // What the quickstart printed shows the instances' own addresses.
    for ip in &addresses {
        assert!(stdout.contains(&format!("{ip}:8080")), "{ip}: {stdout}");
    }

    // Each is a container: its host name is the instance's name and it sees
    // only its own processes (the service as pid 1, and the ps).
    let name_of = |pod: &Value| pod["metadata"]["name"].as_str().unwrap().to_string();
    let names: Vec<String> = pods.iter().map(name_of).collect();
    for name in &names {
        assert_eq!(
            c4m.ok(&["exec", name, "--", "hostname"]),
            format!("{name}\n")
        );
        let ps = c4m.ok(&["exec", name, "--", "ps", "-o", "pid,args"]);
        let processes: Vec<&str> = ps.lines().skip(1).map(str::trim).collect();
        assert_eq!(processes.len(), 2, "{name}: {ps}");
        assert!(processes[0].starts_with("1 c4m-demo --name "), "{ps}");
        assert!(processes[1].ends_with("ps -o pid,args"), "{ps}");
    }

    // web reaches catalog by DNS name from inside its container: the answer
    // comes from a catalog instance, at its address.
    let catalogs: Vec<&Value> = pods
        .iter()
        .filter(|p| name_of(p).starts_with("catalog-"))
        .collect();
    let webs: Vec<String> = names
        .iter()
        .filter(|n| n.starts_with("web-"))
        .cloned()
        .collect();
    assert_eq!((catalogs.len(), webs.len()), (2, 2), "{names:?}");
    let from_catalog = |answer: &str| {
        catalogs.iter().any(|catalog| {
            answer.starts_with(&format!(
                "catalog ({}, pid 1) via http://",
                name_of(catalog)
            )) && answer.contains(&format!(
                "via http://{}:8080/",
                catalog["status"]["podIP"].as_str().unwrap()
            ))
        })
    };
    let called = c4m.ok(&["exec", &webs[0], "--", "c4m-demo", "--call", "catalog"]);
    assert!(from_catalog(&called), "{called}");
    // The script showed the same call, and web's own answer through it.
    assert!(
        stdout.lines().any(from_catalog),
        "the quickstart shows web calling catalog: {stdout}"
    );
    let web_answer = stdout
        .lines()
        .find(|l| l.starts_with("web (web-"))
        .unwrap_or_else(|| panic!("the quickstart shows web's answer: {stdout}"));
    let (_, backend) = web_answer.split_once(" -> ").unwrap();
    assert!(from_catalog(backend), "{web_answer}");

    // The README's follow-up commands, on these containers.
    let logs = c4m.ok(&["logs", &webs[1]]);
    assert!(logs.contains("listening on 0.0.0.0:8080"), "{logs}");
    let exit = c4m.run(&["exec", &webs[1], "--", "sh", "-c", "exit 3"]);
    assert_eq!(exit.status.code(), Some(3));
    let described = c4m.ok(&["describe", "instance", &webs[1]]);
    assert!(described.contains("Driver:           oci"), "{described}");
    let microservices = c4m.ok(&["get", "microservices"]);
    assert!(microservices.contains("catalog"), "{microservices}");
    let status = c4m.ok(&["status", &webs[1]]);
    assert!(status.contains(&webs[1]), "{status}");

    // A hostPort of a VPC instance is published on the node's address, and
    // reported as such beside the instance's own address.
    let host_port = free_port();
    c4m.apply(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: front}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: front}}}}
  template:
    metadata: {{labels: {{app: front}}}}
    spec:
      runtimeClassName: oci
      containers:
        - name: front
          image: shop:1
          command: [c4m-demo, --name, front, --address, 0.0.0.0]
          ports: [{{containerPort: 8080, hostPort: {host_port}}}]
          # Ready only once it serves: the host port is tried right after.
          readinessProbe:
            httpGet: {{path: /healthz, port: 8080}}
            periodSeconds: 1
"#
    ));
    let front = wait_for("front to be ready", Duration::from_secs(60), || {
        let list: Value =
            serde_json::from_str(&c4m.ok(&["get", "instances", "-l", "app=front", "-o", "json"]))
                .ok()?;
        list["items"]
            .as_array()?
            .first()
            .filter(|pod| is_ready(pod))
            .cloned()
    });
    let front_name = name_of(&front);
    let front_ip = front["status"]["podIP"].as_str().unwrap().to_string();
    let row = wait_for(
        "the host binding to be reported",
        Duration::from_secs(30),
        || {
            let table = c4m.ok(&["get", "instances", "-l", "app=front"]);
            let row = table
                .lines()
                .find(|l| l.starts_with(&front_name))?
                .to_string();
            row.contains(&format!("127.0.0.1:{host_port}->8080"))
                .then_some(row)
        },
    );
    assert!(
        row.contains(&format!("{front_ip}:8080,127.0.0.1:{host_port}->8080")),
        "{row}"
    );
    let (code, body) =
        http_get(&format!("127.0.0.1:{host_port}"), "/").expect("the host port answers");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(&format!("front ({front_name}, pid 1)")),
        "{body}"
    );
    c4m.ok(&["delete", "deployment", "front"]);

    // Removing the example stops its instances.
    let deleted = c4m.ok(&["delete", "-f", repo.join("examples/shop").to_str().unwrap()]);
    assert!(
        deleted.contains("microservice/catalog deleted")
            && deleted.contains("deployment/web deleted"),
        "{deleted}"
    );
    wait_for(
        "the example's instances to go",
        Duration::from_secs(60),
        || {
            let list: Value =
                serde_json::from_str(&c4m.ok(&["get", "instances", "-o", "json"])).ok()?;
            list["items"].as_array()?.is_empty().then_some(())
        },
    );
    // With its last instance, the VPC leaves the node (its bridge, and the
    // instances' namespaces and veths on it).
    let bridge = c4m_mesh::VpcNetwork {
        name: String::new(),
        subnet: vpc.subnets(24).unwrap().next().unwrap(),
    }
    .bridge_name();
    wait_for("the VPC's bridge to go", Duration::from_secs(60), || {
        let links = Command::new("ip").args(["-o", "link"]).output().ok()?;
        (!String::from_utf8_lossy(&links.stdout).contains(&bridge)).then_some(())
    });
    drop(guard);
}

/// The CLI with no flags, finding the control plane `up` started.
struct C4mCli {
    home: PathBuf,
}

impl C4mCli {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(C4M)
            .args(args)
            .env("C4M_HOME", &self.home)
            .env_remove("C4M_ENDPOINT_URL")
            .env_remove("C4M_ACCESS_TOKEN")
            .env_remove("C4M_SECRET_KEY")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "c4m {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn apply(&self, manifest: &str) {
        let file = self.home.join("extra.yaml");
        std::fs::write(&file, manifest).unwrap();
        self.ok(&["apply", "-f", file.to_str().unwrap()]);
    }
}

/// Removes what the quickstart deployed (so the containers and their VPC
/// leave the node), then stops the `c4m up` it started; on a failure, shows
/// its log.
struct Stop {
    pid: i32,
    home: PathBuf,
    repo: PathBuf,
}

impl Drop for Stop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.home.join("c4m.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("----- c4m.log (last 60 lines) -----");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
            let cli = C4mCli {
                home: self.home.clone(),
            };
            let shop = self.repo.join("examples/shop");
            cli.run(&["delete", "-f", shop.to_str().unwrap_or_default()]);
            cli.run(&["delete", "deployment", "front"]);
            for _ in 0..100 {
                let listed = cli.run(&["get", "instances"]);
                if !listed.status.success()
                    || String::from_utf8_lossy(&listed.stdout).lines().count() <= 1
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if nix::sys::signal::kill(pid, None).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        kill_instances(&self.home);
    }
}

/// Without root the quickstart cannot run containers: it says so and stops
/// before building or starting anything.
#[test]
#[ignore = "needs root: runs the quickstart as another user"]
fn quickstart_without_root_says_why_it_stops() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test drops to an unprivileged user with setpriv: it needs root"
    );
    let home = tempfile::tempdir().unwrap();
    // The unprivileged user could make C4M_HOME here: the check below
    // then says the script did not.
    std::os::unix::fs::chown(home.path(), Some(65534), Some(65534)).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash"])
        .arg(repo.join("scripts/quickstart.sh"))
        .env("C4M_HOME", home.path().join("home"))
        .output()
        .expect("setpriv (util-linux) runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the quickstart runs real containers, which needs root"),
        "{stderr}"
    );
    assert!(!home.path().join("home").exists(), "nothing was started");
}
