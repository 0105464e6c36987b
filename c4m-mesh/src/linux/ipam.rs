//! Address allocation of one VPC on this node, kept in a JSON file so a
//! restarted agent keeps every instance's address.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::VpcNetwork;
use crate::{Error, Result};

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IpamFile {
    subnet: Ipv4Net,
    /// Instance id → its address.
    allocations: BTreeMap<String, Ipv4Addr>,
}

/// The allocations of one VPC, written through to `path` on every change.
#[derive(Debug)]
pub(crate) struct Ipam {
    path: PathBuf,
    vpc: VpcNetwork,
    allocations: BTreeMap<String, Ipv4Addr>,
}

impl Ipam {
    /// A new, empty allocation table for `vpc`, written at once so the VPC
    /// is known after a restart.
    pub(crate) fn create(path: PathBuf, vpc: VpcNetwork) -> Result<Ipam> {
        validate_subnet(&vpc)?;
        let ipam = Ipam {
            path,
            vpc,
            allocations: BTreeMap::new(),
        };
        ipam.save()?;
        Ok(ipam)
    }

    /// The table stored at `path` for the VPC named `name`.
    pub(crate) fn load(path: PathBuf, name: &str) -> Result<Ipam> {
        let text = std::fs::read(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let file: IpamFile = serde_json::from_slice(&text).map_err(|e| {
            Error::failed(format!("{}: not an allocation table", path.display()), e)
        })?;
        let vpc = VpcNetwork {
            name: name.to_string(),
            subnet: file.subnet,
        };
        validate_subnet(&vpc)?;
        for (instance, address) in &file.allocations {
            if !host_range(&vpc.subnet).contains(&u32::from(*address)) {
                return Err(network_error(
                    &path,
                    format!("{instance} holds {address}, outside {}", vpc.subnet),
                ));
            }
        }
        Ok(Ipam {
            path,
            vpc,
            allocations: file.allocations,
        })
    }

    pub(crate) fn vpc(&self) -> &VpcNetwork {
        &self.vpc
    }

    pub(crate) fn lookup(&self, instance: &str) -> Option<Ipv4Addr> {
        self.allocations.get(instance).copied()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.allocations.is_empty()
    }

    /// The instance's address: the one it holds, else the lowest free one.
    pub(crate) fn allocate(&mut self, instance: &str) -> Result<Ipv4Addr> {
        if let Some(address) = self.lookup(instance) {
            return Ok(address);
        }
        let taken: std::collections::BTreeSet<u32> =
            self.allocations.values().map(|a| u32::from(*a)).collect();
        let free = host_range(&self.vpc.subnet)
            .find(|a| !taken.contains(a))
            .ok_or_else(|| {
                network_error(
                    &self.path,
                    format!(
                        "no free address left in {} ({} instances)",
                        self.vpc.subnet,
                        self.allocations.len()
                    ),
                )
            })?;
        let address = Ipv4Addr::from(free);
        self.allocations.insert(instance.to_string(), address);
        if let Err(e) = self.save() {
            self.allocations.remove(instance);
            return Err(e);
        }
        Ok(address)
    }

    /// Frees the instance's address; false when it held none.
    pub(crate) fn release(&mut self, instance: &str) -> Result<bool> {
        let Some(address) = self.allocations.remove(instance) else {
            return Ok(false);
        };
        if let Err(e) = self.save() {
            self.allocations.insert(instance.to_string(), address);
            return Err(e);
        }
        Ok(true)
    }

    /// Writes the table atomically (a temporary file renamed over it), so a
    /// crash leaves the old table or the new one, never half of one.
    fn save(&self) -> Result<()> {
        let file = IpamFile {
            subnet: self.vpc.subnet,
            allocations: self.allocations.clone(),
        };
        let text = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::failed(format!("{}: encoding", self.path.display()), e))?;
        write_atomically(&self.path, &text)
    }

    /// Deletes the file (the VPC is gone from the node).
    pub(crate) fn delete(self) -> Result<()> {
        super::remove_file_if_present(&self.path)
    }
}

/// Writes `contents` to `path` through a temporary file and a rename.
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents)
        .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// The addresses instances may get: all but the network address, the
/// gateway and the broadcast address.
fn host_range(subnet: &Ipv4Net) -> std::ops::Range<u32> {
    let network = u32::from(subnet.network());
    let broadcast = u32::from(subnet.broadcast());
    network + 2..broadcast
}

/// A VPC name is a file name and an nftables identifier: DNS-label-like.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(Error::Network {
            what: format!("vpc {name:?}"),
            message: "a name is 1 to 63 lowercase letters, digits or '-', not starting with '-'"
                .into(),
        })
    }
}

fn validate_subnet(vpc: &VpcNetwork) -> Result<()> {
    validate_name(&vpc.name)?;
    if vpc.subnet.prefix_len() > 30 {
        return Err(Error::Network {
            what: format!("vpc {}", vpc.name),
            message: format!("subnet {} is too small: at most /30", vpc.subnet),
        });
    }
    if vpc.subnet != vpc.subnet.trunc() {
        return Err(Error::Network {
            what: format!("vpc {}", vpc.name),
            message: format!(
                "subnet {} has host bits set (did you mean {}?)",
                vpc.subnet,
                vpc.subnet.trunc()
            ),
        });
    }
    Ok(())
}

fn network_error(path: &Path, message: String) -> Error {
    Error::Network {
        what: path.display().to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vpc(subnet: &str) -> VpcNetwork {
        VpcNetwork {
            name: "blue".into(),
            subnet: subnet.parse().unwrap(),
        }
    }

    #[test]
    fn allocations_skip_the_gateway_survive_a_reload_and_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blue.json");
        let mut ipam = Ipam::create(path.clone(), vpc("10.99.7.0/24")).unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 99, 7, 2));
        assert_eq!(ipam.allocate("b").unwrap(), Ipv4Addr::new(10, 99, 7, 3));
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 99, 7, 2));

        let mut reloaded = Ipam::load(path.clone(), "blue").unwrap();
        assert_eq!(reloaded.lookup("b"), Some(Ipv4Addr::new(10, 99, 7, 3)));
        assert!(reloaded.release("a").unwrap());
        assert!(!reloaded.release("a").unwrap());
        // The freed lowest address goes to the next instance.
        assert_eq!(reloaded.allocate("c").unwrap(), Ipv4Addr::new(10, 99, 7, 2));
        let reloaded = Ipam::load(path, "blue").unwrap();
        assert_eq!(reloaded.lookup("c"), Some(Ipv4Addr::new(10, 99, 7, 2)));
        assert_eq!(reloaded.lookup("a"), None);
    }

    #[test]
    fn a_full_subnet_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::create(dir.path().join("blue.json"), vpc("10.99.7.0/30")).unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 99, 7, 2));
        let error = ipam.allocate("b").unwrap_err().to_string();
        assert!(
            error.contains("no free address left in 10.99.7.0/30"),
            "{error}"
        );
    }

    #[test]
    fn bad_subnets_names_and_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blue.json");
        let error = Ipam::create(path.clone(), vpc("10.99.7.1/24")).unwrap_err();
        assert!(
            error.to_string().contains("did you mean 10.99.7.0/24"),
            "{error}"
        );
        assert!(Ipam::create(path.clone(), vpc("10.99.7.0/31")).is_err());
        let bad_name = VpcNetwork {
            name: "Blue_1".into(),
            subnet: "10.99.7.0/24".parse().unwrap(),
        };
        assert!(Ipam::create(path.clone(), bad_name).is_err());

        std::fs::write(&path, b"{not json").unwrap();
        let error = Ipam::load(path.clone(), "blue").unwrap_err().to_string();
        assert!(error.contains("not an allocation table"), "{error}");
        std::fs::write(
            &path,
            br#"{"subnet":"10.99.7.0/24","allocations":{"a":"10.99.8.2"}}"#,
        )
        .unwrap();
        let error = Ipam::load(path, "blue").unwrap_err().to_string();
        assert!(error.contains("outside 10.99.7.0/24"), "{error}");
    }
}
