//! The README's quickstart, run as a new user would: `scripts/quickstart.sh`
//! starts `c4m up` and deploys examples/shop; every instance must end up
//! Running and Ready, and web must reach catalog by DNS name.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn quickstart_deploys_the_example() {
    let home = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let bin_dir = Path::new(C4M).parent().unwrap();
    let (api, grpc, dns) = (free_port(), free_port(), free_port());
    let up_args = format!(
        "--api 127.0.0.1:{api} --grpc 127.0.0.1:{grpc} --dns 127.0.0.1:{dns} --name quickstart"
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
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let guard = Stop {
        pid,
        home: home.path().to_path_buf(),
    };
    assert!(
        output.status.success(),
        "quickstart failed:\n{stdout}\n{stderr}\n{}",
        std::fs::read_to_string(home.path().join("c4m.log")).unwrap_or_default()
    );
    assert!(
        stdout.contains("all workloads in namespace default are ready"),
        "{stdout}"
    );
    // web answered through catalog, which it found by DNS name.
    assert!(stdout.contains("-> catalog (catalog-"), "{stdout}");

    // The CLI with no flags finds the control plane `up` started.
    let get = |args: &[&str]| {
        let output = Command::new(C4M)
            .args(args)
            .env("C4M_HOME", home.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let list: Value = serde_json::from_str(&get(&["get", "instances", "-o", "json"])).unwrap();
    let pods = list["items"].as_array().unwrap();
    assert_eq!(pods.len(), 4, "2 catalog + 2 web");
    assert!(pods.iter().all(is_ready), "{list:#}");
    let table = get(&["get", "instances"]);
    assert_eq!(
        table
            .lines()
            .filter(|l| l.contains("Running") && l.contains("1/1"))
            .count(),
        4,
        "{table}"
    );

    // Removing the example stops its instances.
    let deleted = get(&["delete", "-f", repo.join("examples/shop").to_str().unwrap()]);
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
                serde_json::from_str(&get(&["get", "instances", "-o", "json"])).ok()?;
            list["items"].as_array()?.is_empty().then_some(())
        },
    );
    drop(guard);
}

/// Stops the `c4m up` the quickstart started, and its instances.
struct Stop {
    pid: i32,
    home: std::path::PathBuf,
}

impl Drop for Stop {
    fn drop(&mut self) {
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
