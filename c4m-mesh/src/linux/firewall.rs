//! The nftables rules of one VPC: a table of its own (`inet c4m_BRIDGE`),
//! loaded and replaced in one `nft -f -` transaction, deleted with the VPC.
//!
//! Every c4m bridge is named `c4b…`, so a VPC's table drops forwarded
//! traffic between its bridge and any other c4m bridge, both ways: two VPCs
//! stay apart even while only one of them has its rules loaded. Traffic
//! inside a VPC stays on its bridge and is never matched. What leaves
//! through the overlay to another node keeps its address (it is not
//! masqueraded): the overlay's own table keeps it within its VPC.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::vxlan::OVERLAY_DEVICE;
use crate::VpcNetwork;
use crate::{Error, Result};

/// The prefix of every c4m bridge name (`VpcNetwork::bridge_name`).
pub(crate) const BRIDGE_PREFIX: &str = "c4b";

/// The nftables table of the VPC's bridge.
pub(crate) fn table_name(vpc: &VpcNetwork) -> String {
    format!("c4m_{}", vpc.bridge_name())
}

/// A script that replaces table `inet TABLE` with one holding `chains`
/// (one transaction: the table is never missing in between).
pub(crate) fn replace_table(table: &str, chains: &str) -> String {
    format!("{}table inet {table} {{\n{chains}}}\n", delete_table(table))
}

/// A script that deletes table `inet TABLE`, absent or not.
pub(crate) fn delete_table(table: &str) -> String {
    format!("table inet {table} {{}}\ndelete table inet {table}\n")
}

/// The VPC's whole ruleset, replacing any earlier version of its table.
fn ruleset(vpc: &VpcNetwork) -> String {
    let bridge = vpc.bridge_name();
    let subnet = vpc.subnet;
    let others = format!("{BRIDGE_PREFIX}*");
    let chains = format!(
        "\tchain forward {{\n\
         \t\ttype filter hook forward priority filter - 10; policy accept;\n\
         \t\tiifname \"{bridge}\" oifname != \"{bridge}\" oifname \"{others}\" drop\n\
         \t\toifname \"{bridge}\" iifname != \"{bridge}\" iifname \"{others}\" drop\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {subnet} oifname != \"{others}\" oifname != \"{OVERLAY_DEVICE}\" masquerade\n\
         \t}}\n"
    );
    replace_table(&table_name(vpc), &chains)
}

/// Loads (or replaces) the VPC's table.
pub(crate) async fn apply(vpc: &VpcNetwork) -> Result<()> {
    load(&rules_of(vpc), &ruleset(vpc)).await
}

/// Deletes the VPC's table; absent is Ok.
pub(crate) async fn remove(vpc: &VpcNetwork) -> Result<()> {
    load(&rules_of(vpc), &delete_table(&table_name(vpc))).await
}

fn rules_of(vpc: &VpcNetwork) -> String {
    format!("vpc {} rules", vpc.name)
}

/// Runs `script` through `nft -f -` (one transaction); `what` names the
/// rules in errors.
pub(crate) async fn load(what: &str, script: &str) -> Result<()> {
    nft(&["nft".to_string()], &["-f", "-"], what, Some(script))
        .await
        .map(drop)
}

/// Runs `command` (`nft`, or a wrapper such as `nsenter --net=PATH nft`)
/// with `args`, writing `script` to its standard input; returns what it
/// printed. `what` names the rules in errors.
pub(crate) async fn nft(
    command: &[String],
    args: &[&str],
    what: &str,
    script: Option<&str>,
) -> Result<String> {
    let failed = |message: String| Error::Network {
        what: what.to_string(),
        message,
    };
    let (program, wrapper_args) = command
        .split_first()
        .ok_or_else(|| failed("no nft command".into()))?;
    let mut child = tokio::process::Command::new(program)
        .args(wrapper_args)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::failed(
                format!("{what}: running {program} (is the nftables package installed?)"),
                e,
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.unwrap_or_default().as_bytes())
            .await
            .map_err(|e| Error::failed(format!("{what}: writing to nft"), e))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| Error::failed(format!("{what}: waiting for nft"), e))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(failed(format!(
            "nft {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_names_only_its_own_table_and_bridge() {
        let vpc = VpcNetwork {
            name: "blue".into(),
            subnet: "10.99.3.0/24".parse().unwrap(),
        };
        let rules = ruleset(&vpc);
        assert!(
            rules.starts_with("table inet c4m_c4b0a630301 {}\ndelete table inet c4m_c4b0a630301\n")
        );
        assert!(
            rules.contains(
                "iifname \"c4b0a630301\" oifname != \"c4b0a630301\" oifname \"c4b*\" drop"
            )
        );
        assert!(rules.contains(
            "ip saddr 10.99.3.0/24 oifname != \"c4b*\" oifname != \"c4overlay\" masquerade"
        ));
    }
}
