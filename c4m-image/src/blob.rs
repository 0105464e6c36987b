//! Content-addressed blobs: `blobs/sha256/<hex>`, written through a
//! temporary file and renamed into place only once the content matches its
//! digest, so the store never holds a blob under a wrong name.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use c4m_core::{SHA256_PREFIX, sha256_hex};
use sha2::{Digest as _, Sha256};

use crate::{Error, Result};

/// The hex part of a `sha256:<64 lowercase hex>` digest; anything else
/// (other algorithms, path characters) is refused, so a digest is always
/// safe to use as a file name.
pub(crate) fn digest_hex(digest: &str) -> Result<&str> {
    sha256_hex(digest)
        .ok_or_else(|| Error::Invalid(format!("unsupported or malformed digest {digest:?}")))
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn digest_of(bytes: &[u8]) -> String {
    format!("{SHA256_PREFIX}{}", hex::encode(Sha256::digest(bytes)))
}

/// A reader that hashes what passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads what is left, then returns `sha256:<hex>` and the byte count.
    pub(crate) fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let digest = format!("{SHA256_PREFIX}{}", hex::encode(self.hasher.finalize()));
        Ok((digest, self.bytes))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The blob directory of a store.
#[derive(Debug, Clone)]
pub(crate) struct Blobs {
    dir: PathBuf,
    tmp: PathBuf,
}

impl Blobs {
    pub(crate) fn new(root: &Path, tmp: &Path) -> Result<Blobs> {
        let dir = root.join("blobs").join("sha256");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        Ok(Blobs {
            dir,
            tmp: tmp.to_path_buf(),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where blob `digest` is (or would be) stored.
    pub(crate) fn path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.dir.join(digest_hex(digest)?))
    }

    /// Stores `reader`'s content under `expected`; refused (and nothing
    /// kept) if the content has another digest.
    pub(crate) fn write(&self, expected: &str, reader: impl Read) -> Result<PathBuf> {
        let path = self.path(expected)?;
        if path.is_file() {
            return Ok(path);
        }
        let (digest, _, temp) = self.write_temp(reader)?;
        persist_verified(expected, &digest, temp, path)
    }

    /// Moves the downloaded file `temp` (in the store's `tmp/`) into place
    /// as blob `expected` once its content has that digest: the content is
    /// read once to hash it, never copied. Refused (and `temp` dropped) on
    /// a mismatch.
    pub(crate) fn adopt(&self, expected: &str, temp: tempfile::NamedTempFile) -> Result<PathBuf> {
        let path = self.path(expected)?;
        let file = temp
            .reopen()
            .map_err(|e| Error::io(format!("open {}", temp.path().display()), e))?;
        let (digest, _) = HashingReader::new(file)
            .finish()
            .map_err(|e| Error::io("read a downloaded blob", e))?;
        persist_verified(expected, &digest, temp, path)
    }

    /// Stores `reader`'s content under its own digest, which it returns with
    /// the size.
    pub(crate) fn write_unknown(&self, reader: impl Read) -> Result<(String, u64)> {
        let (digest, size, temp) = self.write_temp(reader)?;
        let path = self.path(&digest)?;
        temp.persist(&path)
            .map_err(|e| Error::io(format!("store blob {}", path.display()), e.error))?;
        Ok((digest, size))
    }

    pub(crate) fn read(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.path(digest)?;
        std::fs::read(&path).map_err(|e| Error::io(format!("read blob {digest}"), e))
    }

    pub(crate) fn open(&self, digest: &str) -> Result<File> {
        let path = self.path(digest)?;
        File::open(&path).map_err(|e| Error::io(format!("open blob {digest}"), e))
    }

    fn write_temp(&self, reader: impl Read) -> Result<(String, u64, tempfile::NamedTempFile)> {
        let mut temp = tempfile::NamedTempFile::new_in(&self.tmp).map_err(|e| {
            Error::io(
                format!("create a temporary file in {}", self.tmp.display()),
                e,
            )
        })?;
        let mut hashing = HashingReader::new(reader);
        io::copy(&mut hashing, &mut temp)
            .and_then(|_| temp.flush())
            .map_err(|e| Error::io("write blob", e))?;
        let (digest, size) = hashing.finish().map_err(|e| Error::io("write blob", e))?;
        Ok((digest, size, temp))
    }
}

/// Names `temp` blob `path` if its content's `digest` is the `expected`
/// one; refuses it (and `temp` goes) otherwise.
fn persist_verified(
    expected: &str,
    digest: &str,
    temp: tempfile::NamedTempFile,
    path: PathBuf,
) -> Result<PathBuf> {
    if digest != expected {
        return Err(Error::Invalid(format!(
            "blob {expected} is corrupt: its content has digest {digest}"
        )));
    }
    temp.persist(&path)
        .map_err(|e| Error::io(format!("store blob {}", path.display()), e.error))?;
    Ok(path)
}
