//! Image store tests on real files: layouts written here, archives made by
//! `skopeo`, overlay whiteouts checked on disk.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use oci_spec::image::{Config, ConfigBuilder};

use super::*;
use crate::layout::add_executable;

fn config() -> Config {
    ConfigBuilder::default()
        .cmd(vec!["/bin/sh".to_string()])
        .build()
        .unwrap()
}

/// A tar entry written with raw header bytes, so that even paths the `tar`
/// crate refuses to write (`..`) can be tested.
fn entry(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
) {
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_entry_type(kind);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    header.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

fn layer(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, link, data) in entries {
        entry(&mut builder, path, *kind, link, data);
    }
    builder.into_inner().unwrap()
}

use tar::EntryType::{Directory as D, Regular as F, Symlink as S};

fn base_layer() -> Vec<u8> {
    layer(&[
        ("etc/", D, "", b""),
        ("etc/hostname", F, "", b"base\n"),
        ("etc/motd", F, "", b"hello\n"),
        ("data/", D, "", b""),
        ("data/old", F, "", b"old\n"),
        ("bin/", D, "", b""),
        ("bin/sh", F, "", b"#!fake\n"),
    ])
}

fn layout(dir: &Path, tag: &str, layers: &[Vec<u8>]) -> String {
    write_oci_layout(dir, tag, layers, config()).unwrap()
}

#[test]
#[ignore = "needs root: layers keep their owners, whiteouts are device nodes"]
fn imports_a_layout_with_whiteouts_and_shares_layers() {
    let temp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(temp.path().join("store")).unwrap();
    let top = layer(&[
        ("etc/.wh.motd", F, "", b""),
        ("data/", D, "", b""),
        ("data/.wh..wh..opq", F, "", b""),
        ("data/new", F, "", b"new\n"),
        ("./etc/hostname", F, "", b"top\n"),
    ]);
    let one = temp.path().join("one");
    let digest = layout(&one, "1", &[base_layer(), top]);
    let images = store.import(&one, Some("bb")).unwrap();
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert_eq!(image.digest, digest);
    assert_eq!(image.names, vec!["docker.io/library/bb:1".to_string()]);
    for reference in [
        "bb:1",
        "docker.io/library/bb:1",
        &digest,
        &digest[7..7 + SHORT_ID_LEN],
    ] {
        assert_eq!(
            store.resolve(reference).unwrap().digest,
            digest,
            "{reference}"
        );
    }
    assert!(matches!(store.resolve("bb:2"), Err(Error::NotFound(_))));
    assert_eq!(
        store
            .config(image)
            .unwrap()
            .config()
            .as_ref()
            .unwrap()
            .cmd()
            .as_ref()
            .unwrap()[0],
        "/bin/sh"
    );

    let dirs = store.layer_dirs(image).unwrap();
    assert_eq!(dirs.len(), 2);
    assert_eq!(
        std::fs::read_to_string(dirs[0].join("etc/motd")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(dirs[1].join("etc/hostname")).unwrap(),
        "top\n"
    );
    let whiteout = std::fs::symlink_metadata(dirs[1].join("etc/motd")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    assert!(!dirs[1].join("etc/.wh.motd").exists());
    assert_eq!(
        xattr::get(dirs[1].join("data"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    assert!(!dirs[1].join("data/.wh..wh..opq").exists());

    // A second image on the same base layer shares its directory.
    let two = temp.path().join("two");
    let extra = layer(&[("extra", F, "", b"x")]);
    layout(&two, "2", &[base_layer(), extra]);
    let second = store.import(&two, Some("bb")).unwrap().remove(0);
    let second_dirs = store.layer_dirs(&second).unwrap();
    assert_eq!(second_dirs[0], dirs[0]);
    assert_eq!(
        std::fs::read_dir(store.layers_dir.as_path())
            .unwrap()
            .count(),
        3
    );
    assert_eq!(store.list().unwrap().len(), 2);

    // Removing the first image and collecting garbage keeps the shared
    // layer; a lease keeps the removed image's own layer.
    store.lease("c1", image).unwrap();
    store.remove("bb:1").unwrap();
    assert!(matches!(store.resolve("bb:1"), Err(Error::NotFound(_))));
    let report = store.gc().unwrap();
    assert_eq!(
        report,
        GcReport {
            blobs: 3,
            layers: 0
        },
        "manifest, config, top layer blob"
    );
    assert!(dirs[1].is_dir());
    store.release("c1").unwrap();
    assert_eq!(
        store.gc().unwrap(),
        GcReport {
            blobs: 0,
            layers: 1
        }
    );
    assert!(!dirs[1].exists());
    assert!(dirs[0].is_dir());
    assert_eq!(store.layer_dirs(&second).unwrap(), second_dirs);
    // Removing by digest removes every name.
    store.remove(&second.digest).unwrap();
    assert!(store.list().unwrap().is_empty());
    store.gc().unwrap();
    assert_eq!(std::fs::read_dir(store.blobs.dir()).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(store.layers_dir.as_path())
            .unwrap()
            .count(),
        0
    );
}

#[test]
#[ignore = "needs root: layers keep their owners"]
fn a_tag_moves_to_the_newer_image() {
    let temp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(temp.path().join("store")).unwrap();
    let (a, b) = (temp.path().join("a"), temp.path().join("b"));
    let first = layout(&a, "latest", &[base_layer()]);
    let second = layout(&b, "latest", &[layer(&[("f", F, "", b"1")])]);
    store.import(&a, Some("app")).unwrap();
    store.import(&b, Some("app")).unwrap();
    assert_eq!(store.resolve("app").unwrap().digest, second);
    // The older one is still there, by digest, without names.
    assert!(store.resolve(&first).unwrap().names.is_empty());
}

fn skopeo(args: &[&str]) {
    let status = Command::new("skopeo")
        .args(args)
        .status()
        .expect("skopeo is required (apt-get install skopeo)");
    assert!(status.success(), "skopeo {args:?} failed");
}

#[test]
#[ignore = "needs root + skopeo: layers keep their owners"]
fn imports_layout_tars_and_docker_archives() {
    let temp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(temp.path().join("store")).unwrap();
    let dir = temp.path().join("bb");
    layout(&dir, "7", &[base_layer()]);
    // A tar of the layout; the name comes from the file name.
    let tar_path = temp.path().join("shop.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&tar_path)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let from_tar = store.import(&tar_path, None).unwrap().remove(0);
    assert_eq!(from_tar.names, vec!["docker.io/library/shop:7".to_string()]);

    // A docker archive written by skopeo (uncompressed layers, its own
    // manifest, names in RepoTags).
    let archive = temp.path().join("docker.tar");
    skopeo(&[
        "copy",
        "--quiet",
        &format!("oci:{}:7", dir.display()),
        &format!("docker-archive:{}:example.com/team/bb:7", archive.display()),
    ]);
    let from_docker = store.import(&archive, None).unwrap().remove(0);
    assert_eq!(from_docker.names, vec!["example.com/team/bb:7".to_string()]);
    // The same content unpacks to the same layer directory.
    assert_eq!(from_docker.layers[0].diff_id, from_tar.layers[0].diff_id);
    assert_eq!(
        store.layer_dirs(&from_docker).unwrap(),
        store.layer_dirs(&from_tar).unwrap()
    );
    assert_eq!(store.list().unwrap().len(), 2);
}

#[test]
fn corrupt_blobs_are_refused_and_nothing_is_kept() {
    let temp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(temp.path().join("store")).unwrap();
    let dir = temp.path().join("bad");
    let digest = layout(&dir, "1", &[base_layer()]);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("blobs/sha256").join(&digest[7..])).unwrap(),
    )
    .unwrap();
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let layer_path = dir.join("blobs/sha256").join(&layer_digest[7..]);
    let mut bytes = std::fs::read(&layer_path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&layer_path, bytes).unwrap();
    let error = store.import(&dir, Some("bad")).unwrap_err().to_string();
    assert!(
        error.contains(&format!("blob {layer_digest} is corrupt")),
        "{error}"
    );
    assert!(store.list().unwrap().is_empty());
    assert!(!store.blobs.path(layer_digest).unwrap().exists());
}

/// Imports a one-layer image; returns the error.
fn import_layer_error(temp: &Path, name: &str, tar: Vec<u8>) -> String {
    let store = ImageStore::open(temp.join(format!("store-{name}"))).unwrap();
    let dir = temp.join(name);
    layout(&dir, "1", &[tar]);
    let error = store.import(&dir, Some(name)).unwrap_err().to_string();
    assert!(store.list().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(store.layers_dir.as_path())
            .unwrap()
            .count(),
        0
    );
    error
}

#[test]
#[ignore = "needs root: layers keep their owners"]
fn layers_cannot_write_outside_their_directory() {
    let temp = tempfile::tempdir().unwrap();
    let outside = temp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let outside_str = outside.to_str().unwrap();

    let error = import_layer_error(
        temp.path(),
        "dotdot",
        layer(&[("../../escaped", F, "", b"x")]),
    );
    assert!(error.contains("path leaves the layer"), "{error}");

    // A symlink to a host directory, then a file through it.
    let error = import_layer_error(
        temp.path(),
        "through-symlink",
        layer(&[("link", S, outside_str, b""), ("link/planted", F, "", b"x")]),
    );
    assert!(error.contains("link/planted"), "{error}");
    // A whiteout through it.
    let error = import_layer_error(
        temp.path(),
        "whiteout-symlink",
        layer(&[
            ("link", S, outside_str, b""),
            ("link/.wh.victim", F, "", b""),
        ]),
    );
    assert!(error.contains("path leaves the layer"), "{error}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );

    // An absolute symlink inside the layer is fine: it is the container's.
    let store = ImageStore::open(temp.path().join("store-ok")).unwrap();
    let dir = temp.path().join("ok");
    layout(
        &dir,
        "1",
        &[layer(&[
            ("bin/", D, "", b""),
            ("bin/ls", S, "/bin/busybox", b""),
        ])],
    );
    let image = store.import(&dir, Some("ok")).unwrap().remove(0);
    let layer_dir = &store.layer_dirs(&image).unwrap()[0];
    assert_eq!(
        std::fs::read_link(layer_dir.join("bin/ls")).unwrap(),
        Path::new("/bin/busybox")
    );
}

#[test]
#[ignore = "needs root: layers keep their owners"]
fn a_layer_that_does_not_match_its_diff_id_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(temp.path().join("store")).unwrap();
    let dir = temp.path().join("lie");
    layout(&dir, "1", &[base_layer()]);
    // Rewrite the config's diff-id (and everything above it) consistently,
    // so only the diff-id check can catch it.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| dir.join("blobs/sha256").join(&d[7..]);
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest_digest)).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&config_digest)).unwrap()).unwrap();
    config["rootfs"]["diff_ids"][0] = format!("sha256:{}", "0".repeat(64)).into();
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let new_config = blob::digest_of(&config_bytes);
    std::fs::write(blob(&new_config), &config_bytes).unwrap();
    manifest["config"]["digest"] = new_config.clone().into();
    manifest["config"]["size"] = config_bytes.len().into();
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let new_manifest = blob::digest_of(&manifest_bytes);
    std::fs::write(blob(&new_manifest), &manifest_bytes).unwrap();
    let mut index = index;
    index["manifests"][0]["digest"] = new_manifest.into();
    index["manifests"][0]["size"] = manifest_bytes.len().into();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let error = store.import(&dir, Some("lie")).unwrap_err().to_string();
    assert!(error.contains("content does not match"), "{error}");
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn ldd_listings_give_the_library_files() {
    let listing = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f03)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f02)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f01)\n";
    assert_eq!(
        layout::shared_libraries(listing).unwrap(),
        [
            "/lib/x86_64-linux-gnu/libgcc_s.so.1",
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib64/ld-linux-x86-64.so.2"
        ]
        .map(std::path::PathBuf::from)
    );
    assert_eq!(
        layout::shared_libraries("\tlibfoo.so.1 => not found\n").unwrap_err(),
        "libfoo.so.1 not found"
    );
}

/// A dynamic executable added to an otherwise empty root runs there: its
/// libraries and loader came with it. (`chroot` needs root.)
#[test]
#[ignore = "needs root: chroot"]
fn an_added_executable_runs_in_its_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test chroots: it needs root"
    );
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("root");
    add_executable(&root, Path::new("/usr/bin/dash")).unwrap();
    let ran = Command::new("chroot")
        .arg(&root)
        .args(["/bin/dash", "-c", "echo ran-inside"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "ran-inside\n",
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    // A static one brings nothing but itself; a non-file is refused.
    add_executable(&root, Path::new("/bin/busybox")).unwrap();
    assert!(root.join("bin/busybox").is_file());
    let error = add_executable(&root, Path::new("/no/such/tool")).unwrap_err();
    assert!(error.to_string().contains("/no/such/tool"), "{error}");
}

#[test]
fn garbage_collection_waits_for_blobs_not_yet_in_the_catalog() {
    let temp = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(ImageStore::open(temp.path().join("store")).unwrap());
    // A pull or import in flight: its blob is written, its image not yet
    // registered.
    let fence = store.gc_fence().unwrap();
    let (digest, _) = store.blobs.write_unknown(&b"in flight"[..]).unwrap();
    let collector = {
        let store = std::sync::Arc::clone(&store);
        std::thread::spawn(move || store.gc().unwrap())
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !collector.is_finished(),
        "gc ran while a pull was in flight"
    );
    assert!(store.has_blob(&digest));
    drop(fence);
    // Nothing references the blob once the pull gave up: now it goes.
    assert_eq!(collector.join().unwrap().blobs, 1);
    assert!(!store.has_blob(&digest));
}
