//! Image references (`busybox`, `127.0.0.1:5000/bb:1`, `repo@sha256:...`),
//! normalized as Docker and containerd do: `busybox` is
//! `docker.io/library/busybox:latest`.

use std::fmt;

/// The prefix of the only digest algorithm c4m takes.
pub const SHA256_PREFIX: &str = "sha256:";

/// The hex of a `sha256:<64 lowercase hex>` digest, or None when `digest`
/// is not one.
pub fn sha256_hex(digest: &str) -> Option<&str> {
    digest.strip_prefix(SHA256_PREFIX).filter(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// An image reference that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {text:?}: {reason}")]
pub struct InvalidReference {
    /// The reference as written.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The registry of references that name none.
const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag of references that give neither a tag nor a digest.
const DEFAULT_TAG: &str = "latest";

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (with port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path within the registry, e.g. `library/busybox`.
    pub repository: String,
    /// Tag, if any (`latest` when neither a tag nor a digest is given).
    pub tag: Option<String>,
    /// Manifest digest (`sha256:...`), if given.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalizes `text`.
    pub fn parse(text: &str) -> Result<Reference, InvalidReference> {
        let invalid = |reason: &'static str| InvalidReference {
            text: text.to_string(),
            reason,
        };
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => {
                sha256_hex(digest).ok_or_else(|| invalid("bad digest"))?;
                (name, Some(digest.to_string()))
            }
            None => (text, None),
        };
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(colon) => (
                &name[..last_slash + colon],
                Some(name[last_slash + colon + 1..].to_string()),
            ),
            None => (name, None),
        };
        if let Some(tag) = &tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !valid {
                return Err(invalid("bad tag"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ if name.contains('/') => (DEFAULT_REGISTRY.to_string(), name.to_string()),
            _ => (DEFAULT_REGISTRY.to_string(), format!("library/{name}")),
        };
        let repository_valid = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                    })
            });
        if !repository_valid || registry.is_empty() {
            return Err(invalid(
                "bad repository name (lowercase letters, digits, '.', '_', '-', '/')",
            ));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some(DEFAULT_TAG.to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, if the reference has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|tag| format!("{}:{tag}", self.name()))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let parse = |s: &str| Reference::parse(s).unwrap().to_string();
        assert_eq!(parse("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(parse("bb:1.36"), "docker.io/library/bb:1.36");
        assert_eq!(parse("me/app"), "docker.io/me/app:latest");
        assert_eq!(parse("127.0.0.1:5000/bb:t1"), "127.0.0.1:5000/bb:t1");
        assert_eq!(parse("localhost/x/y"), "localhost/x/y:latest");
        let digest = format!("sha256:{}", "a".repeat(64));
        let by_digest = Reference::parse(&format!("127.0.0.1:5000/bb@{digest}")).unwrap();
        assert_eq!(by_digest.tag, None);
        assert_eq!(by_digest.digest.as_deref(), Some(digest.as_str()));
        assert_eq!(by_digest.tagged(), None);
        for bad in ["", "Upper/case", "bb:", "bb@sha256:zz", "a//b"] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
