//! The `oci` driver against the real kernel, runc/crun and conmon, with a
//! busybox image built here from Debian's `busybox-static` (no registry):
//! what only this driver promises (isolation, security defaults, its
//! overlay and cgroups). What every driver promises is checked by the
//! conformance suite (`c4m-core/tests/conformance/`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use oci_spec::image::ConfigBuilder;

use super::*;
use c4m_core::{ContainerState, TerminalSize};
use c4m_image::{tar_directory, write_busybox_rootfs, write_oci_layout};

use crate::read_to_string;

const BUSYBOX: &str = "/bin/busybox";
const WAIT: Duration = Duration::from_secs(30);

/// Writes the busybox root file system of the test image.
fn busybox_rootfs(root: &Path) {
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} is missing: apt-get install busybox-static"
    );
    write_busybox_rootfs(Path::new(BUSYBOX), root).unwrap();
}

struct Fixture {
    temp: tempfile::TempDir,
    store: Arc<ImageStore>,
    runtime: OciRuntime,
    prefix: String,
}

impl Fixture {
    async fn new(name: &str) -> Fixture {
        assert!(
            find_oci_binaries().is_some(),
            "runc (or crun) and conmon are required: apt-get install runc conmon"
        );
        let temp = tempfile::tempdir().unwrap();
        let rootfs = temp.path().join("rootfs");
        busybox_rootfs(&rootfs);
        let config = ConfigBuilder::default()
            .entrypoint(vec!["/bin/sh".to_string(), "-c".to_string()])
            .cmd(vec![
                r#"echo "$FOO $BAR $(pwd) $(id -u):$(id -g)""#.to_string(),
            ])
            .env(vec![
                "PATH=/bin".to_string(),
                "FOO=image-foo".to_string(),
                "BAR=image-bar".to_string(),
            ])
            .working_dir("/srv")
            .user("app")
            .build()
            .unwrap();
        let layout = temp.path().join("layout");
        write_oci_layout(&layout, "1", &[tar_directory(&rootfs).unwrap()], config).unwrap();
        let store = Arc::new(ImageStore::open(temp.path().join("images")).unwrap());
        store.import(&layout, Some("bb")).unwrap();
        let runtime = OciRuntime::new(&temp.path().join("oci"), store.clone()).unwrap();
        Fixture {
            temp,
            store,
            runtime,
            prefix: format!("oci-{name}-{}", std::process::id()),
        }
    }

    fn id(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn spec(&self, name: &str, command: &[&str]) -> ContainerSpec {
        ContainerSpec {
            id: self.id(name),
            image: Some("bb:1".into()),
            command: command.iter().map(|s| s.to_string()).collect(),
            user: Some(0),
            ..ContainerSpec::default()
        }
    }

    async fn wait_exit(&self, id: &str) -> ContainerState {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.runtime.status(id).await.unwrap();
            if matches!(status.state, ContainerState::Exited { .. }) {
                return status.state;
            }
            assert!(Instant::now() < deadline, "{id} did not exit: {status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn logs(&self, id: &str, options: LogOptions) -> String {
        let mut stream = self.runtime.logs(id, options).await.unwrap();
        let mut text = Vec::new();
        while let Some(chunk) = stream.next().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        String::from_utf8(text).unwrap()
    }

    async fn run_to_exit(&self, spec: &ContainerSpec) -> (Option<i32>, String) {
        self.runtime.start(spec).await.unwrap();
        let ContainerState::Exited { exit_code, .. } = self.wait_exit(&spec.id).await else {
            unreachable!()
        };
        (exit_code, self.logs(&spec.id, LogOptions::default()).await)
    }

    async fn exec(&self, id: &str, script: &str) -> ExecOutput {
        let command = ["sh", "-c", script].map(String::from);
        self.runtime
            .exec(id, &command, Duration::from_secs(20))
            .await
            .unwrap()
    }
}

impl Drop for Fixture {
    /// Whatever a failed test left: containers, mounts, cgroups.
    fn drop(&mut self) {
        let data = self.temp.path().join("oci");
        let Ok(entries) = std::fs::read_dir(data.join("containers")) else {
            return;
        };
        let (runtime, _) = find_oci_binaries().unwrap();
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            let _ = std::process::Command::new(&runtime)
                .arg("--root")
                .arg(data.join("runtime"))
                .args(["delete", "--force", &id])
                .output();
            let _ = nix::mount::umount2(&entry.path().join("rootfs"), MntFlags::MNT_DETACH);
            for dir in self.runtime.inner.group(&id).dirs() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
#[ignore = "needs root + runc + conmon"]
async fn a_container_is_isolated_and_its_writes_stay_in_its_own_layer() {
    let f = Fixture::new("isolated").await;
    let spec = ContainerSpec {
        hostname: Some("box-instance".into()),
        ..f.spec("box", &["sleep", "1000"])
    };
    let id = spec.id.clone();
    let status = f.runtime.start(&spec).await.unwrap();
    assert!(matches!(status.state, ContainerState::Running { .. }));
    assert!(f.runtime.start(&spec).await.is_err(), "started twice");

    // The host name the spec gives (the instance's name).
    assert_eq!(
        text(&f.exec(&id, "hostname").await.stdout),
        "box-instance\n"
    );
    // Its own pid namespace: the sleep as pid 1 and the ps.
    let ps = text(&f.exec(&id, "ps -o pid,comm").await.stdout);
    let processes: Vec<&str> = ps.lines().skip(1).map(str::trim).collect();
    assert_eq!(processes.len(), 2, "{ps}");
    assert_eq!(processes[0], "1 sleep", "{ps}");
    // A new network namespace with only loopback.
    let interfaces = text(
        &f.exec(&id, "tail -n +3 /proc/net/dev | cut -d: -f1")
            .await
            .stdout,
    );
    assert_eq!(interfaces.trim(), "lo");
    // The image's root file system; writes go to the container's layer.
    assert_eq!(
        text(&f.exec(&id, "cat /etc/marker").await.stdout),
        "from-image\n"
    );
    let write = f
        .exec(&id, "echo changed > /etc/marker && cat /etc/marker")
        .await;
    assert_eq!(text(&write.stdout), "changed\n");
    let image = f.store.resolve("bb:1").unwrap();
    let layer = &f.store.layer_dirs(&image).unwrap()[0];
    assert_eq!(
        std::fs::read_to_string(layer.join("etc/marker")).unwrap(),
        "from-image\n"
    );
    // Security defaults: no mount, no module loading, /proc/kcore masked,
    // /proc/sys read-only.
    let mount = f.exec(&id, "mount -t tmpfs none /mnt").await;
    assert_ne!(mount.exit_code, 0);
    assert!(
        text(&mount.stderr).contains("denied") || text(&mount.stderr).contains("not permitted"),
        "{mount:?}"
    );
    let module = f
        .exec(&id, "echo junk > /tmp/m.ko && insmod /tmp/m.ko")
        .await;
    assert_ne!(module.exit_code, 0);
    assert!(text(&module.stderr).contains("not permitted"), "{module:?}");
    let kcore = f.exec(&id, "cat /proc/kcore | wc -c").await;
    assert_eq!(text(&kcore.stdout).trim(), "0", "{kcore:?}");
    assert_ne!(
        f.exec(&id, "echo 1 > /proc/sys/kernel/domainname")
            .await
            .exit_code,
        0
    );
    let exit = f.exec(&id, "exit 3").await;
    assert_eq!(exit.exit_code, 3);

    let usage = f.runtime.stats(&id).await.unwrap();
    assert!(usage.pids >= 1, "{usage:?}");
    assert!(usage.memory_bytes > 0, "{usage:?}");

    // Remove: process, mount, cgroup and state all go.
    let rootfs = f
        .temp
        .path()
        .join("oci/containers")
        .join(&id)
        .join("rootfs");
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(rootfs.to_str().unwrap())
    };
    assert!(mounted());
    f.runtime.remove(&id).await.unwrap();
    assert!(!mounted());
    assert!(
        f.runtime
            .inner
            .group(&id)
            .dirs()
            .iter()
            .all(|d| !d.exists())
    );
    assert!(matches!(
        f.runtime.status(&id).await,
        Err(Error::ContainerNotFound(_))
    ));
    f.runtime.remove(&id).await.unwrap();
    // Its layers were leased; with the image gone they can now be collected.
    f.store.remove("bb:1").unwrap();
    assert_eq!(f.store.gc().unwrap().layers, 1);
}

#[tokio::test]
#[ignore = "needs root + runc + conmon"]
async fn privileged_mode_and_read_only_root_are_explicit() {
    let f = Fixture::new("modes").await;
    let mut privileged = f.spec(
        "privileged",
        &["sh", "-c", "mount -t tmpfs none /mnt && echo mounted"],
    );
    privileged.privileged = true;
    assert_eq!(
        f.run_to_exit(&privileged).await,
        (Some(0), "mounted\n".into())
    );
    let mut read_only = f.spec(
        "ro",
        &[
            "sh",
            "-c",
            "touch /x 2>&1; echo tmp > /tmp/x || echo no-tmp",
        ],
    );
    read_only.read_only_root_filesystem = true;
    let (code, logs) = f.run_to_exit(&read_only).await;
    assert_eq!(code, Some(0));
    assert!(logs.contains("Read-only file system"), "{logs}");
    for spec in [privileged, read_only] {
        f.runtime.remove(&spec.id).await.unwrap();
    }
}

#[tokio::test]
#[ignore = "needs root + runc + conmon"]
async fn logs_tail_and_follow() {
    let f = Fixture::new("logs").await;
    let spec = f.spec(
        "talker",
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do echo line$i; sleep 0.1; done; printf partial; echo err >&2",
        ],
    );
    f.runtime.start(&spec).await.unwrap();
    let followed = f
        .logs(
            &spec.id,
            LogOptions {
                follow: true,
                tail_lines: None,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(followed, "line1\nline2\nline3\nline4\nline5\npartialerr\n");
    let tail = f
        .logs(
            &spec.id,
            LogOptions {
                follow: false,
                tail_lines: Some(2),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(tail, "partialerr\n");
    f.runtime.remove(&spec.id).await.unwrap();
}

/// What the conformance suite leaves to the driver: runc passes resizes
/// on to the command's own terminal, and a dropped session kills the
/// command, not only runc.
#[tokio::test]
#[ignore = "needs root + runc + conmon"]
async fn interactive_exec_resizes_and_a_dropped_session_kills_the_command() {
    let f = Fixture::new("iexec").await;
    let spec = f.spec("box", &["sleep", "1000"]);
    let id = spec.id.clone();
    f.runtime.start(&spec).await.unwrap();

    // A terminal: the command sees one, of the size set.
    let request = ExecRequest {
        command: vec![
            "sh".into(),
            "-c".into(),
            // runc sizes the command's terminal just after starting it.
            "test -t 0 && echo on-tty; for i in 1 2 3 4 5 6 7 8 9 10; do \
             size=$(stty size 2>&1); case $size in [1-9]*) break;; esac; sleep 0.2; done; echo $size; exit 5"
                .into(),
        ],
        stdin: true,
        tty: true,
    };
    let session = f.runtime.exec_interactive(&id, request).await.unwrap();
    assert!(session.stderr.is_none());
    let resize = session.resize.expect("a terminal can be resized");
    resize(TerminalSize {
        width: 132,
        height: 43,
    })
    .unwrap();
    let output = tokio::time::timeout(WAIT, read_to_string(session.stdout))
        .await
        .expect("the terminal's output ends when the command exits");
    let code = session.exit.await.unwrap();
    // runc clears ONLCR on the command's terminal once it has received it,
    // leaving the translation to the terminal it relays to (ours, which it
    // makes raw but for output processing): a line the command writes
    // before that is translated by both (CR CR LF, shown as CR LF).
    let output = output.replace("\r\r\n", "\r\n");
    assert!(output.contains("on-tty\r\n"), "{output:?} {code}");
    assert!(output.contains("43 132\r\n"), "{output:?} {code}");
    assert_eq!(code, 5);

    // Dropping the session before the command ends kills it.
    let request = ExecRequest {
        command: vec!["sleep".into(), "999".into()],
        stdin: false,
        tty: false,
    };
    let session = f.runtime.exec_interactive(&id, request).await.unwrap();
    let sleeping = || async {
        let ps = f.exec(&id, "ps -o comm").await;
        text(&ps.stdout).matches("sleep").count()
    };
    let deadline = Instant::now() + WAIT;
    while sleeping().await < 2 {
        assert!(Instant::now() < deadline, "the exec'd sleep never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(session);
    while sleeping().await > 1 {
        assert!(Instant::now() < deadline, "a dropped exec was not killed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Not in a container that is not running.
    f.runtime.stop(&id, Duration::from_secs(1)).await.unwrap();
    let request = ExecRequest {
        command: vec!["true".into()],
        ..ExecRequest::default()
    };
    let error = f.runtime.exec_interactive(&id, request).await.unwrap_err();
    assert!(error.to_string().contains("not running"), "{error}");
    f.runtime.remove(&id).await.unwrap();
}

/// An exec that outlives its timeout is killed inside the container, not
/// only runc.
#[tokio::test]
#[ignore = "needs root + runc + conmon"]
async fn a_timed_out_exec_is_killed_inside() {
    let f = Fixture::new("exectimeout").await;
    let spec = f.spec("box", &["sleep", "1000"]);
    let id = spec.id.clone();
    f.runtime.start(&spec).await.unwrap();
    let command = ["sleep", "999"].map(String::from);
    let error = f
        .runtime
        .exec(&id, &command, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("timed out"), "{error}");
    let deadline = Instant::now() + WAIT;
    loop {
        let ps = text(&f.exec(&id, "ps -o args").await.stdout);
        if !ps.contains("sleep 999") {
            break;
        }
        assert!(Instant::now() < deadline, "still running: {ps}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.runtime.remove(&id).await.unwrap();
}
