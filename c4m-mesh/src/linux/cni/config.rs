//! The network configuration list (`.conflist`, CNI spec 1.0.0): parsed
//! and checked as a whole before any plugin runs, with errors naming the
//! file and the field.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{Error, Result};

/// The `cniVersion`s c4m speaks: their results have the same shape (0.4.0
/// adds a `version` to each IP, which c4m ignores), and both have CHECK.
pub(crate) const SUPPORTED_VERSIONS: &[&str] = &["1.0.0", "0.4.0"];

/// The top-level fields of a configuration list.
const LIST_FIELDS: &[&str] = &["cniVersion", "name", "disableCheck", "plugins"];

/// A checked network configuration list.
#[derive(Debug, Clone)]
pub(crate) struct NetworkConfigList {
    /// The file it came from, for messages.
    pub(crate) file: PathBuf,
    /// The `cniVersion` every plugin is called with.
    pub(crate) cni_version: String,
    /// The network's `name`.
    pub(crate) name: String,
    /// `disableCheck`: CHECK is not run.
    pub(crate) disable_check: bool,
    /// The chain, in ADD order.
    pub(crate) plugins: Vec<PluginConfig>,
    /// The list as written, kept with each attachment so that its DEL and
    /// CHECK run with the configuration its ADD ran with.
    pub(crate) raw: Value,
}

/// One plugin of the chain.
#[derive(Debug, Clone)]
pub(crate) struct PluginConfig {
    /// Its `type`: the executable's name.
    pub(crate) plugin_type: String,
    /// The executable found in the plugin directories.
    pub(crate) binary: PathBuf,
    /// The capabilities it asks for (`capabilities` entries set to true).
    pub(crate) capabilities: BTreeSet<String>,
    /// Its configuration object as written.
    pub(crate) config: Map<String, Value>,
}

impl NetworkConfigList {
    /// Reads and checks the list in `file`, finding each plugin (and each
    /// delegated IPAM plugin) in `bin_dirs`.
    pub(crate) fn load(file: &Path, bin_dirs: &[PathBuf]) -> Result<NetworkConfigList> {
        let text = std::fs::read(file)
            .map_err(|e| Error::io(format!("reading cni config {}", file.display()), e))?;
        NetworkConfigList::parse(file, &text, bin_dirs)
    }

    /// Checks the list `text`, read from `file`.
    pub(crate) fn parse(
        file: &Path,
        text: &[u8],
        bin_dirs: &[PathBuf],
    ) -> Result<NetworkConfigList> {
        let invalid = |field: &str, message: String| Error::CniConfig {
            file: file.to_path_buf(),
            field: field.to_string(),
            message,
            source: None,
        };
        let value: Value = serde_json::from_slice(text).map_err(|e| Error::CniConfig {
            file: file.to_path_buf(),
            field: "-".into(),
            message: "not JSON".into(),
            source: Some(e.into()),
        })?;
        let Value::Object(list) = &value else {
            return Err(invalid("-", "is not a JSON object".into()));
        };
        if list.contains_key("type") && !list.contains_key("plugins") {
            return Err(invalid(
                "plugins",
                "missing: this is a single network configuration (.conf); c4m takes a \
                 configuration list (.conflist) with the plugins in plugins[]"
                    .into(),
            ));
        }
        if let Some(unknown) = list.keys().find(|k| !LIST_FIELDS.contains(&k.as_str())) {
            return Err(invalid(
                unknown,
                format!("unknown field (a list has {})", LIST_FIELDS.join(", ")),
            ));
        }
        let cni_version =
            required_string(list, "cniVersion").map_err(|m| invalid("cniVersion", m))?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(invalid(
                "cniVersion",
                format!(
                    "{cni_version:?} is not supported (c4m speaks {})",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        let name = required_string(list, "name").map_err(|m| invalid("name", m))?;
        validate_identifier(&name).map_err(|m| invalid("name", m))?;
        let disable_check = match list.get("disableCheck") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(invalid(
                    "disableCheck",
                    format!("must be true or false, not {other}"),
                ));
            }
        };
        let plugins = match list.get("plugins") {
            Some(Value::Array(plugins)) if !plugins.is_empty() => plugins,
            Some(Value::Array(_)) => return Err(invalid("plugins", "is empty".into())),
            Some(_) => return Err(invalid("plugins", "must be an array of objects".into())),
            None => return Err(invalid("plugins", "missing".into())),
        };
        let plugins = plugins
            .iter()
            .enumerate()
            .map(|(index, plugin)| {
                let at = format!("plugins[{index}]");
                plugin_config(plugin, bin_dirs)
                    .map_err(|(field, message)| invalid(&format!("{at}{field}"), message))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(NetworkConfigList {
            file: file.to_path_buf(),
            cni_version,
            name,
            disable_check,
            plugins,
            raw: value,
        })
    }
}

/// Checks one plugin object; errors are (field below the plugin, message).
fn plugin_config(
    plugin: &Value,
    bin_dirs: &[PathBuf],
) -> std::result::Result<PluginConfig, (String, String)> {
    let Value::Object(config) = plugin else {
        return Err((String::new(), "must be an object".into()));
    };
    let plugin_type = required_string(config, "type").map_err(|m| (".type".into(), m))?;
    let binary = find_plugin(&plugin_type, bin_dirs).map_err(|m| (".type".into(), m))?;
    // A plugin that delegates address management runs its IPAM plugin
    // from the same directories: a missing one is this file's error too.
    if let Some(ipam) = config.get("ipam") {
        let Value::Object(ipam) = ipam else {
            return Err((".ipam".into(), "must be an object".into()));
        };
        if ipam.contains_key("type") {
            let ipam_type = required_string(ipam, "type").map_err(|m| (".ipam.type".into(), m))?;
            find_plugin(&ipam_type, bin_dirs).map_err(|m| (".ipam.type".into(), m))?;
        }
    }
    let mut capabilities = BTreeSet::new();
    match config.get("capabilities") {
        None => {}
        Some(Value::Object(asked)) => {
            for (capability, enabled) in asked {
                match enabled {
                    Value::Bool(true) => {
                        capabilities.insert(capability.clone());
                    }
                    Value::Bool(false) => {}
                    other => {
                        return Err((
                            format!(".capabilities.{capability}"),
                            format!("must be true or false, not {other}"),
                        ));
                    }
                }
            }
        }
        Some(_) => {
            return Err((
                ".capabilities".into(),
                "must be an object of capability names to true or false".into(),
            ));
        }
    }
    Ok(PluginConfig {
        plugin_type,
        binary,
        capabilities,
        config: config.clone(),
    })
}

fn required_string(
    object: &Map<String, Value>,
    field: &str,
) -> std::result::Result<String, String> {
    match object.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err("is empty".into()),
        Some(other) => Err(format!("must be a string, not {other}")),
        None => Err("missing".into()),
    }
}

/// The spec's rule for network names and container ids: an alphanumeric
/// first character, then alphanumerics, `_`, `.` or `-`.
pub(crate) fn validate_identifier(text: &str) -> std::result::Result<(), String> {
    let mut bytes = text.bytes();
    let valid = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not a CNI identifier (a letter or digit, then letters, digits, '_', '.' or '-')"
        ))
    }
}

/// The executable named `plugin_type` in the first of `bin_dirs` holding one.
fn find_plugin(plugin_type: &str, bin_dirs: &[PathBuf]) -> std::result::Result<PathBuf, String> {
    if plugin_type.contains('/') || plugin_type == "." || plugin_type == ".." {
        return Err(format!(
            "{plugin_type:?} is not a plugin name (a file name in the plugin directories)"
        ));
    }
    bin_dirs
        .iter()
        .map(|dir| dir.join(plugin_type))
        .find(|path| {
            std::fs::metadata(path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            let dirs: Vec<String> = bin_dirs.iter().map(|d| d.display().to_string()).collect();
            format!(
                "plugin {plugin_type:?} not found in {} (is containernetworking-plugins installed, or --cni-bin-dir right?)",
                dirs.join(":")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin directory with executables named `names`.
    fn bin_dir(names: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in names {
            let path = dir.path().join(name);
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    fn parse(text: &str, dir: &tempfile::TempDir) -> Result<NetworkConfigList> {
        NetworkConfigList::parse(
            Path::new("/etc/cni/net.d/10-c4m.conflist"),
            text.as_bytes(),
            &[dir.path().to_path_buf()],
        )
    }

    fn error(text: &str, dir: &tempfile::TempDir) -> String {
        parse(text, dir).unwrap_err().to_string()
    }

    #[test]
    fn a_list_parses_with_its_plugins_and_capabilities() {
        let dir = bin_dir(&["bridge", "host-local", "portmap"]);
        let list = parse(
            r#"{"cniVersion":"1.0.0","name":"c4m-net","plugins":[
                {"type":"bridge","bridge":"cni-c4m","ipam":{"type":"host-local","ranges":[[{"subnet":"10.99.0.0/24"}]]}},
                {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}}]}"#,
            &dir,
        )
        .unwrap();
        assert_eq!(list.name, "c4m-net");
        assert_eq!(list.cni_version, "1.0.0");
        assert!(!list.disable_check);
        let types: Vec<&str> = list
            .plugins
            .iter()
            .map(|p| p.plugin_type.as_str())
            .collect();
        assert_eq!(types, ["bridge", "portmap"]);
        assert_eq!(list.plugins[0].binary, dir.path().join("bridge"));
        assert!(list.plugins[0].capabilities.is_empty());
        assert_eq!(
            list.plugins[1].capabilities.iter().collect::<Vec<_>>(),
            ["portMappings"]
        );
        assert_eq!(list.plugins[0].config["bridge"], "cni-c4m");
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let dir = bin_dir(&["bridge", "host-local"]);
        let cases = [
            ("{not json", "10-c4m.conflist: -: not JSON"),
            ("[]", "-: is not a JSON object"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#,
                "plugins: missing: this is a single network configuration (.conf)",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugin":[]}"#,
                "plugin: unknown field",
            ),
            (r#"{"name":"n","plugins":[]}"#, "cniVersion: missing"),
            (
                r#"{"cniVersion":"2.0.0","name":"n","plugins":[]}"#,
                "cniVersion: \"2.0.0\" is not supported (c4m speaks 1.0.0, 0.4.0)",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"no spaces","plugins":[]}"#,
                "name: \"no spaces\" is not a CNI identifier",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","disableCheck":"yes","plugins":[]}"#,
                "disableCheck: must be true or false",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "plugins: is empty",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"bridge":"x"}]}"#,
                "plugins[1].type: missing",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"flannel"}]}"#,
                "plugins[0].type: plugin \"flannel\" not found in",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../bin/sh"}]}"#,
                "plugins[0].type: \"../bin/sh\" is not a plugin name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipam":{"type":"dhcp"}}]}"#,
                "plugins[0].ipam.type: plugin \"dhcp\" not found",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","capabilities":{"portMappings":1}}]}"#,
                "plugins[0].capabilities.portMappings: must be true or false",
            ),
        ];
        for (text, expected) in cases {
            let message = error(text, &dir);
            assert!(message.contains(expected), "{text}: {message}");
            assert!(
                message.starts_with("cni config /etc/cni/net.d/10-c4m.conflist: "),
                "{message}"
            );
        }
    }

    #[test]
    fn identifiers_follow_the_spec() {
        assert!(validate_identifier("a1_b.c-d").is_ok());
        assert!(validate_identifier("").is_err());
        assert!(validate_identifier("-a").is_err());
        assert!(validate_identifier("a/b").is_err());
    }
}
