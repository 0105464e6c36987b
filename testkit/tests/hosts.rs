//! Simulated hosts reach each other and the root namespace, and leave no
//! namespace or link behind.

use std::process::Command;

use c4m_testkit::Hosts;

fn ip_lists(args: &[&str], needle: &str) -> bool {
    let output = Command::new("ip").args(args).output().unwrap();
    String::from_utf8_lossy(&output.stdout).contains(needle)
}

#[test]
#[ignore = "needs root: network namespaces"]
fn hosts_reach_each_other_and_the_root_namespace_then_go() {
    assert!(
        std::path::Path::new("/bin/busybox").is_file(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
    let hosts = Hosts::create([10, 99, 252], 2);
    // Host 1 reaches the root namespace and host 2, over the switch.
    for to in [hosts.gateway(), hosts.address(2)] {
        let pinged = hosts
            .command(1, "/bin/busybox")
            .args(["ping", "-c", "1", "-W", "3", &to.to_string()])
            .output()
            .unwrap();
        assert!(
            pinged.status.success(),
            "host 1 cannot reach {to}: {}",
            String::from_utf8_lossy(&pinged.stdout)
        );
    }
    let namespace = hosts.namespace(1).to_string();
    assert!(ip_lists(&["netns", "list"], &namespace));
    drop(hosts);
    assert!(!ip_lists(&["netns", "list"], &namespace));
    assert!(!ip_lists(&["-o", "addr"], "10.99.252.1/24"));
}
