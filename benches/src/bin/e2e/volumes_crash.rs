//! `c4m-e2e-bench volumes-crash` (root): a long random crash run of the
//! node's volumes through the real agent and control plane, on one oci node
//! with local volumes (loop + ext4).
//!
//! Each round restarts the agent armed with a random c4m-storage fail point
//! (`name@K`: it SIGKILLs itself the K-th time it gets there), drives a
//! random mix of claims (Immediate, or WaitForFirstConsumer with their
//! pod), pods writing and fsyncing a line on their volume, snapshots,
//! restores, expansions and deletions through the API, starts the agent
//! again whenever it killed itself (sometimes armed again, so it dies while
//! recovering), and sometimes SIGKILLs the control plane while claims
//! provision and starts it again on the same data. Then the declared state
//! must come back: claims Bound at their size, pods Ready, snapshots
//! readyToUse, every line a pod fsynced read back from its volume, and on
//! the node exactly the loop devices (by backing file), mounts, volume and
//! snapshot records and pods' claim records the objects account for. The
//! end deletes everything: nothing may be left.
//!
//! The seed is printed: the same seed draws the same fail points and
//! workloads again (when the processes die still depends on timing).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use c4m_core::volumes::{LOCAL_DRIVER, snapshot_handle_for};
use c4m_storage::testing::{CleanupGuard, LOCAL_PROGRAMS, XorShift, leaks, require_root_and};
use c4m_storage::{ArmedFailPoint, FAIL_ACTION_ENV, FAIL_POINT_ENV, FAIL_POINTS, REACHED_PREFIX};
use serde_json::{Value, json};

use super::volumes::{claim, clean_up, loops_under, pod};
use super::{ControlPlane, Daemon, import_busybox, is_ready, kind};

const NODE: &str = "crash";
const AGENT_FLAGS: &[&str] = &[
    "--name",
    NODE,
    "--cpu",
    "64",
    "--memory",
    "64Gi",
    "--max-instances",
    "100",
    "--default-driver",
    "oci",
];
/// The class of claims bound before any pod uses them; the others use the
/// default class (WaitForFirstConsumer), created with their first pod.
const IMMEDIATE_CLASS: &str = "crash-now";
/// Bounds on what is alive at once, so rounds stay short.
const MAX_CLAIMS: usize = 6;
const MAX_PODS: usize = 4;
const MAX_SNAPSHOTS: usize = 3;
const SIZES_MIB: [u64; 2] = [16, 32];
const EXPAND_STEP_MIB: u64 = 16;
const MAX_SIZE_MIB: u64 = 96;
/// How long a round may take to come back to its declared state (an agent
/// retries a failed step after 5 s); past it the run fails.
const SETTLE_LIMIT: Duration = Duration::from_secs(300);
/// How often the declared state is compared with the cluster.
const POLL: Duration = Duration::from_millis(250);
/// How often the node is watched for the moment to kill the control plane
/// (a volume just provisioned, its claim not yet bound).
const WATCH_POLL: Duration = Duration::from_millis(10);
/// How many times in a round a crashed agent may be started armed again.
const REARMS: usize = 2;
/// The file each pod appends its line to on its volume.
const DATA_FILE: &str = "log";

/// A claim as the run declared it.
#[derive(Clone, Debug)]
struct ClaimState {
    size_mib: u64,
    /// The lines its volume holds: its snapshot's, then one per pod that
    /// used it (each pod's name, written and fsynced before it is Ready).
    lines: Vec<String>,
    /// The pod using it.
    pod: Option<String>,
}

/// A snapshot as the run declared it: its claim's size and lines then.
#[derive(Clone, Debug)]
struct SnapshotState {
    size_mib: u64,
    lines: Vec<String>,
}

/// What the objects must be once a round has settled.
#[derive(Clone, Debug, Default)]
struct Model {
    claims: BTreeMap<String, ClaimState>,
    /// Pod name -> its claim.
    pods: BTreeMap<String, String>,
    snapshots: BTreeMap<String, SnapshotState>,
    /// The number in the next new object's name.
    next: usize,
}

/// One step of the workload, through the API.
#[derive(Clone, Debug)]
enum Op {
    /// A claim of the Immediate class (or, with `pod`, sometimes of the
    /// default WaitForFirstConsumer one), restored from `from` if set.
    CreateClaim {
        claim: String,
        size_mib: u64,
        immediate: bool,
        from: Option<String>,
        pod: Option<String>,
    },
    StartPod {
        pod: String,
        claim: String,
    },
    DeletePod {
        pod: String,
        claim: String,
    },
    /// The pod deleted and its claim at once after it.
    DeletePodAndClaim {
        pod: String,
        claim: String,
    },
    Snapshot {
        snapshot: String,
        claim: String,
    },
    /// Grows the claim; with a pod using it, the node restarts the pod to
    /// grow the volume offline.
    Expand {
        claim: String,
        size_mib: u64,
        in_use: bool,
    },
    DeleteClaim {
        claim: String,
    },
    DeleteSnapshot {
        snapshot: String,
    },
}

const STAGE: &[&str] = &["attach.loop", "mount.staged", "mount.published"];
const UNSTAGE: &[&str] = &[
    "unmount.unpublished",
    "unmount.unstaged",
    "unmount.detached",
];
const DELETE: &[&str] = &["delete.marked", "delete.image"];

impl Op {
    /// A short name, for the counts.
    fn label(&self) -> &'static str {
        match self {
            Op::CreateClaim { from: Some(_), .. } => "restore",
            Op::CreateClaim { pod: Some(_), .. } => "create with pod",
            Op::CreateClaim { .. } => "create",
            Op::StartPod { .. } => "start pod",
            Op::DeletePod { .. } => "delete pod",
            Op::DeletePodAndClaim { .. } => "delete pod and claim",
            Op::Snapshot { .. } => "snapshot",
            Op::Expand { .. } => "expand",
            Op::DeleteClaim { .. } => "delete claim",
            Op::DeleteSnapshot { .. } => "delete snapshot",
        }
    }

    /// Whether the node passes the fail point `point` doing this.
    fn reaches(&self, point: &str) -> bool {
        let lists: Vec<&[&str]> = match self {
            Op::CreateClaim { from, pod, .. } => {
                let made: &[&str] = match from {
                    Some(_) => &["restore.copied"],
                    None => &["create.image", "create.format"],
                };
                if pod.is_some() {
                    vec![made, STAGE]
                } else {
                    vec![made]
                }
            }
            Op::StartPod { .. } => vec![STAGE],
            Op::DeletePod { .. } => vec![UNSTAGE],
            Op::DeletePodAndClaim { .. } => vec![UNSTAGE, DELETE],
            Op::Snapshot { .. } => vec![&["snapshot.frozen", "snapshot.copied"]],
            Op::Expand { in_use: true, .. } => vec![&["expand.grown"], UNSTAGE, STAGE],
            Op::Expand { .. } => vec![&["expand.grown"]],
            Op::DeleteClaim { .. } => vec![DELETE],
            Op::DeleteSnapshot { .. } => vec![],
        };
        lists.iter().any(|points| points.contains(&point))
    }

    /// The claims and snapshots it changes (each at most once a round).
    fn touches(&self) -> Vec<&str> {
        match self {
            Op::CreateClaim { claim, from, .. } => [Some(claim.as_str()), from.as_deref()]
                .into_iter()
                .flatten()
                .collect(),
            Op::StartPod { claim, .. }
            | Op::DeletePod { claim, .. }
            | Op::DeletePodAndClaim { claim, .. }
            | Op::Expand { claim, .. }
            | Op::DeleteClaim { claim } => vec![claim],
            Op::Snapshot { snapshot, claim } => vec![snapshot, claim],
            Op::DeleteSnapshot { snapshot } => vec![snapshot],
        }
    }

    fn creates_claim(&self) -> bool {
        matches!(self, Op::CreateClaim { .. })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateClaim {
                claim,
                size_mib,
                immediate,
                from,
                pod,
            } => {
                let class = if *immediate { "Immediate" } else { "WFFC" };
                write!(f, "claim {claim} {size_mib}Mi {class}")?;
                if let Some(from) = from {
                    write!(f, " from {from}")?;
                }
                if let Some(pod) = pod {
                    write!(f, " + pod {pod}")?;
                }
                Ok(())
            }
            Op::StartPod { pod, claim } => write!(f, "pod {pod} on {claim}"),
            Op::DeletePod { pod, .. } => write!(f, "delete pod {pod}"),
            Op::DeletePodAndClaim { pod, claim } => write!(f, "delete pod {pod} + claim {claim}"),
            Op::Snapshot { snapshot, claim } => write!(f, "snapshot {snapshot} of {claim}"),
            Op::Expand {
                claim, size_mib, ..
            } => write!(f, "expand {claim} to {size_mib}Mi"),
            Op::DeleteClaim { claim } => write!(f, "delete claim {claim}"),
            Op::DeleteSnapshot { snapshot } => write!(f, "delete snapshot {snapshot}"),
        }
    }
}

impl Model {
    /// Every op possible now, grouped by kind, leaving out claims and
    /// snapshots in `touched`.
    fn candidates(&self, touched: &BTreeSet<String>) -> Vec<Vec<Op>> {
        let id = self.next;
        let free = |name: &String| !touched.contains(name);
        let room_for_claim = self.claims.len() < MAX_CLAIMS;
        let room_for_pod = self.pods.len() < MAX_PODS;
        // (immediate, with a pod)
        let mut shapes = vec![(true, false)];
        if room_for_pod {
            shapes.extend([(true, true), (false, true)]);
        }
        let create = |size_mib: u64, from: Option<&String>| {
            shapes
                .iter()
                .map(|&(immediate, with_pod)| Op::CreateClaim {
                    claim: format!("c-{id}"),
                    size_mib,
                    immediate,
                    from: from.cloned(),
                    pod: with_pod.then(|| format!("p-{id}")),
                })
                .collect::<Vec<_>>()
        };
        let mut creates = Vec::new();
        let mut restores = Vec::new();
        if room_for_claim {
            for size in SIZES_MIB {
                creates.extend(create(size, None));
            }
            for (name, snapshot) in self.snapshots.iter().filter(|(n, _)| free(n)) {
                for size in [snapshot.size_mib, snapshot.size_mib + EXPAND_STEP_MIB] {
                    restores.extend(create(size, Some(name)));
                }
            }
        }
        let claims: Vec<(&String, &ClaimState)> =
            self.claims.iter().filter(|(n, _)| free(n)).collect();
        let mut groups = vec![creates, restores];
        groups.push(if room_for_pod {
            claims
                .iter()
                .filter(|(_, c)| c.pod.is_none())
                .map(|(name, _)| Op::StartPod {
                    pod: format!("p-{id}"),
                    claim: name.to_string(),
                })
                .collect()
        } else {
            Vec::new()
        });
        let used: Vec<(&String, &String)> = claims
            .iter()
            .filter_map(|(name, c)| c.pod.as_ref().map(|pod| (pod, *name)))
            .collect();
        groups.push(
            used.iter()
                .map(|(pod, claim)| Op::DeletePod {
                    pod: pod.to_string(),
                    claim: claim.to_string(),
                })
                .collect(),
        );
        groups.push(
            used.iter()
                .map(|(pod, claim)| Op::DeletePodAndClaim {
                    pod: pod.to_string(),
                    claim: claim.to_string(),
                })
                .collect(),
        );
        groups.push(if self.snapshots.len() < MAX_SNAPSHOTS {
            claims
                .iter()
                .map(|(name, _)| Op::Snapshot {
                    snapshot: format!("s-{id}"),
                    claim: name.to_string(),
                })
                .collect()
        } else {
            Vec::new()
        });
        groups.push(
            claims
                .iter()
                .filter(|(_, c)| c.size_mib + EXPAND_STEP_MIB <= MAX_SIZE_MIB)
                .map(|(name, c)| Op::Expand {
                    claim: name.to_string(),
                    size_mib: c.size_mib + EXPAND_STEP_MIB,
                    in_use: c.pod.is_some(),
                })
                .collect(),
        );
        groups.push(
            claims
                .iter()
                .filter(|(_, c)| c.pod.is_none())
                .map(|(name, _)| Op::DeleteClaim {
                    claim: name.to_string(),
                })
                .collect(),
        );
        groups.push(
            self.snapshots
                .keys()
                .filter(|n| free(n))
                .map(|name| Op::DeleteSnapshot {
                    snapshot: name.clone(),
                })
                .collect(),
        );
        groups
    }

    /// A random op (a kind first, then one of its ops), one reaching
    /// `point` if set; None when there is none.
    fn pick(
        &self,
        rng: &mut XorShift,
        touched: &BTreeSet<String>,
        point: Option<&str>,
    ) -> Option<Op> {
        let groups: Vec<Vec<Op>> = self
            .candidates(touched)
            .into_iter()
            .map(|ops| {
                ops.into_iter()
                    .filter(|op| point.is_none_or(|point| op.reaches(point)))
                    .collect::<Vec<_>>()
            })
            .filter(|ops| !ops.is_empty())
            .collect();
        rng.pick(&groups).and_then(|ops| rng.pick(ops)).cloned()
    }

    /// The state once `op` is done.
    fn apply(&mut self, op: &Op) {
        match op {
            Op::CreateClaim {
                claim,
                size_mib,
                from,
                pod,
                ..
            } => {
                let mut lines = from
                    .as_ref()
                    .and_then(|s| self.snapshots.get(s))
                    .map_or_else(Vec::new, |s| s.lines.clone());
                lines.extend(pod.iter().cloned());
                self.claims.insert(
                    claim.clone(),
                    ClaimState {
                        size_mib: *size_mib,
                        lines,
                        pod: pod.clone(),
                    },
                );
                if let Some(pod) = pod {
                    self.pods.insert(pod.clone(), claim.clone());
                }
                self.next += 1;
            }
            Op::StartPod { pod, claim } => {
                if let Some(state) = self.claims.get_mut(claim) {
                    state.pod = Some(pod.clone());
                    state.lines.push(pod.clone());
                }
                self.pods.insert(pod.clone(), claim.clone());
                self.next += 1;
            }
            Op::DeletePod { pod, claim } => {
                self.pods.remove(pod);
                if let Some(state) = self.claims.get_mut(claim) {
                    state.pod = None;
                }
            }
            Op::DeletePodAndClaim { pod, claim } => {
                self.pods.remove(pod);
                self.claims.remove(claim);
            }
            Op::Snapshot { snapshot, claim } => {
                if let Some(state) = self.claims.get(claim) {
                    let taken = SnapshotState {
                        size_mib: state.size_mib,
                        lines: state.lines.clone(),
                    };
                    self.snapshots.insert(snapshot.clone(), taken);
                }
                self.next += 1;
            }
            Op::Expand {
                claim, size_mib, ..
            } => {
                if let Some(state) = self.claims.get_mut(claim) {
                    state.size_mib = *size_mib;
                }
            }
            Op::DeleteClaim { claim } => {
                self.claims.remove(claim);
            }
            Op::DeleteSnapshot { snapshot } => {
                self.snapshots.remove(snapshot);
            }
        }
    }
}

/// What a round does, drawn before it starts so a seed replays it whatever
/// the processes' timing.
#[derive(Debug)]
struct RoundPlan {
    armed: ArmedFailPoint,
    /// The fail points of the agents started after a crash, in turn; None
    /// starts it disarmed.
    rearm: Vec<Option<ArmedFailPoint>>,
    ops: Vec<Op>,
    /// SIGKILL the control plane once the node is provisioning.
    kill_control: bool,
}

/// Adds `op` to a round: the model moves on, its claims and snapshots are
/// taken for the round.
fn add_op(op: Op, model: &mut Model, touched: &mut BTreeSet<String>, ops: &mut Vec<Op>) {
    touched.extend(op.touches().into_iter().map(str::to_string));
    model.apply(&op);
    ops.push(op);
}

/// A random fail point, its first hit most often.
fn random_point(rng: &mut XorShift) -> Result<ArmedFailPoint> {
    let name = rng.pick(FAIL_POINTS).context("no fail point")?;
    let hit = match rng.below(4) {
        0 | 1 => 1,
        2 => 2,
        _ => 3,
    };
    Ok(ArmedFailPoint { name, hit })
}

/// Draws a round and moves `model` to the state it declares.
fn plan_round(rng: &mut XorShift, model: &mut Model) -> Result<RoundPlan> {
    let armed = random_point(rng)?;
    let mut rearm = Vec::with_capacity(REARMS);
    for _ in 0..REARMS {
        rearm.push(if rng.one_in(4) {
            Some(random_point(rng)?)
        } else {
            None
        });
    }
    let mut touched = BTreeSet::new();
    let mut ops: Vec<Op> = Vec::new();
    for _ in 0..=rng.below(4) {
        if let Some(op) = model.pick(rng, &touched, None) {
            add_op(op, model, &mut touched, &mut ops);
        }
    }
    // Make the armed point likely to be reached: ops passing it as often
    // as its hit count asks, where the model allows them.
    while ops.iter().filter(|op| op.reaches(armed.name)).count() < armed.hit as usize
        && let Some(op) = model.pick(rng, &touched, Some(armed.name))
    {
        add_op(op, model, &mut touched, &mut ops);
    }
    let kill_control = ops.iter().any(Op::creates_claim) && rng.one_in(3);
    Ok(RoundPlan {
        armed,
        rearm,
        ops,
        kill_control,
    })
}

/// What the run counts.
#[derive(Debug, Default)]
struct Stats {
    armed: BTreeMap<&'static str, usize>,
    crashed: BTreeMap<&'static str, usize>,
    control_kills: usize,
    ops: BTreeMap<&'static str, usize>,
}

/// The agent of the run's one node.
struct Agent {
    daemon: Option<Daemon>,
    armed: Option<ArmedFailPoint>,
    /// Its stderr.
    log: PathBuf,
    starts: usize,
}

struct Bench {
    // Dropped in this order: the agent, then its mounts and loop devices,
    // then the control plane and the directory.
    agent: Agent,
    _cleanup: CleanupGuard,
    control: ControlPlane,
    rng: XorShift,
    model: Model,
    stats: Stats,
    /// The agent's data directory, its local pool and its claims' directory
    /// (canonical: the kernel names loop devices' backing files so).
    agent_dir: PathBuf,
    pool: PathBuf,
    claims: PathBuf,
    /// The fail points of the agents to start after a crash this round.
    rearm: Vec<Option<ArmedFailPoint>>,
    crashes_this_round: usize,
}

pub(super) async fn run(rounds: usize, seed: Option<u64>) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the volumes-crash bench needs root (loop devices, mounts, oci containers)");
    }
    require_root_and(LOCAL_PROGRAMS).map_err(anyhow::Error::msg)?;
    let seed = seed.unwrap_or_else(XorShift::seed_from_clock);
    println!(
        "seed {seed} (run again with: c4m-e2e-bench volumes-crash --rounds {rounds} --seed {seed})"
    );
    let control = ControlPlane::start().await?;
    let dir = std::fs::canonicalize(control.dir.path())?;
    let agent_dir = dir.join("agent");
    let mut bench = Bench {
        agent: Agent {
            daemon: None,
            armed: None,
            log: PathBuf::new(),
            starts: 0,
        },
        _cleanup: CleanupGuard::new([dir.clone()]),
        control,
        rng: XorShift::new(seed),
        model: Model::default(),
        stats: Stats::default(),
        pool: agent_dir.join("volumes"),
        claims: agent_dir.join("claims"),
        agent_dir,
        rearm: Vec::new(),
        crashes_this_round: 0,
    };
    let started = Instant::now();
    let outcome = bench.drive(rounds).await;
    let took = started.elapsed();
    if let Err(error) = outcome {
        let logs = bench.keep_logs(seed);
        // Best effort: stop the containers and release the volumes.
        let _ = bench.start_agent(None);
        let _ = tokio::time::timeout(Duration::from_secs(120), clean_up(&bench.control)).await;
        return Err(error.context(format!(
            "volumes-crash failed (seed {seed}: run again with --seed {seed}; logs in {})",
            logs.display()
        )));
    }
    bench.report(rounds, took);
    Ok(())
}

impl Bench {
    /// The rounds, then every claim read back and everything deleted.
    async fn drive(&mut self, rounds: usize) -> Result<()> {
        self.start_agent(None)?;
        let daemon = self
            .agent
            .daemon
            .as_mut()
            .context("the agent is not running")?;
        self.control.wait_nodes_ready(daemon, 1).await?;
        import_busybox(&self.control, NODE).await?;
        self.control
            .apply(
                vec![
                    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                    "metadata": {"name": IMMEDIATE_CLASS}, "provisioner": LOCAL_DRIVER,
                    "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
                    "allowVolumeExpansion": true}),
                ],
                1,
            )
            .await?;
        for round in 1..=rounds {
            self.round(round, rounds)
                .await
                .with_context(|| format!("round {round}"))?;
        }
        // Every claim read back once more by a pod of its own, then
        // everything deleted, by an agent that does not crash.
        self.start_agent(None)?;
        let idle: Vec<String> = self
            .model
            .claims
            .iter()
            .filter(|(_, c)| c.pod.is_none())
            .map(|(name, _)| name.clone())
            .collect();
        for claim in idle {
            let op = Op::StartPod {
                pod: format!("p-{}", self.model.next),
                claim,
            };
            self.model.apply(&op);
            self.execute(&op).await?;
        }
        self.settle(false).await.context("the final read back")?;
        clean_up(&self.control).await?;
        self.model = Model::default();
        self.settle(true)
            .await
            .context("after deleting everything")?;
        Ok(())
    }

    async fn round(&mut self, round: usize, rounds: usize) -> Result<()> {
        let started = Instant::now();
        let plan = plan_round(&mut self.rng, &mut self.model)?;
        self.rearm = plan.rearm.clone();
        self.crashes_this_round = 0;
        self.start_agent(Some(plan.armed))?;
        let records = json_stems(&self.pool.join("records/volumes"));
        for op in &plan.ops {
            *self.stats.ops.entry(op.label()).or_default() += 1;
            self.execute(op).await.with_context(|| op.to_string())?;
            self.check_agent()?;
        }
        if plan.kill_control {
            self.wait_until("a new volume on the node", |bench| {
                json_stems(&bench.pool.join("records/volumes"))
                    .difference(&records)
                    .next()
                    .is_some()
            })
            .await?;
            self.control.restart().await?;
            self.stats.control_kills += 1;
        }
        self.settle(false).await?;
        let ops: Vec<String> = plan.ops.iter().map(Op::to_string).collect();
        println!(
            "round {round}/{rounds}: armed {}: {}{}; {}; back as declared in {:.1} s",
            plan.armed,
            match self.crashes_this_round {
                0 => "not reached".to_string(),
                1 => "1 crash".to_string(),
                n => format!("{n} crashes"),
            },
            if plan.kill_control {
                ", control plane killed"
            } else {
                ""
            },
            ops.join(", "),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// SIGKILLs the running agent, if any, and starts one, armed with
    /// `armed` (it SIGKILLs itself there).
    fn start_agent(&mut self, armed: Option<ArmedFailPoint>) -> Result<()> {
        // Dropping the daemon SIGKILLs it.
        self.agent.daemon = None;
        self.agent.starts += 1;
        self.agent.log = self
            .agent_dir
            .with_file_name(format!("agent-{}.log", self.agent.starts));
        let mut command =
            self.control
                .agent_command(Command::new(&self.control.agent_bin), "agent", AGENT_FLAGS);
        command
            .env("RUST_LOG", "info")
            .env(FAIL_ACTION_ENV, "kill")
            .stderr(std::fs::File::create(&self.agent.log)?);
        if let Some(armed) = armed {
            command.env(FAIL_POINT_ENV, armed.to_string());
            *self.stats.armed.entry(armed.name).or_default() += 1;
        }
        self.agent.daemon = Some(Daemon(command.spawn()?));
        self.agent.armed = armed;
        Ok(())
    }

    /// Starts the agent again if it killed itself at its fail point (armed
    /// with the round's next one, if any); fails if it died any other way.
    fn check_agent(&mut self) -> Result<()> {
        let Some(daemon) = self.agent.daemon.as_mut() else {
            bail!("the agent is not running");
        };
        let Some(status) = daemon.0.try_wait()? else {
            return Ok(());
        };
        let log = std::fs::read_to_string(&self.agent.log).unwrap_or_default();
        let reached = self
            .agent
            .armed
            .filter(|armed| log.contains(&format!("{REACHED_PREFIX}{armed} reached")));
        let killed = status.signal() == Some(nix::sys::signal::Signal::SIGKILL as i32);
        let Some(armed) = reached.filter(|_| killed) else {
            bail!(
                "the agent (armed: {}) exited with {status}; the end of {}:\n{}",
                self.agent
                    .armed
                    .map_or("nothing".to_string(), |a| a.to_string()),
                self.agent.log.display(),
                tail(&log, 20)
            );
        };
        *self.stats.crashed.entry(armed.name).or_default() += 1;
        let next = self.rearm.get(self.crashes_this_round).copied().flatten();
        self.crashes_this_round += 1;
        self.start_agent(next)
    }

    /// Polls `done` (checking the agent between) until it holds; fails after
    /// [`SETTLE_LIMIT`].
    async fn wait_until(&mut self, what: &str, done: impl Fn(&Bench) -> bool) -> Result<()> {
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            self.check_agent()?;
            if done(self) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{what}: not within {SETTLE_LIMIT:?}");
            }
            tokio::time::sleep(WATCH_POLL).await;
        }
    }

    /// Does `op` through the API.
    async fn execute(&self, op: &Op) -> Result<()> {
        let client = &self.control.client;
        let (pods, claims, snapshots) = (
            kind("pods")?,
            kind("persistentvolumeclaims")?,
            kind("volumesnapshots")?,
        );
        let ns = Some("default");
        match op {
            Op::CreateClaim {
                claim: name,
                size_mib,
                immediate,
                from,
                pod: with_pod,
            } => {
                let mut objects = vec![claim(
                    name,
                    &format!("{size_mib}Mi"),
                    immediate.then_some(IMMEDIATE_CLASS),
                )];
                if let Some(snapshot) = from {
                    objects[0]["spec"]["dataSource"] = json!({"name": snapshot,
                        "kind": "VolumeSnapshot", "apiGroup": "snapshot.storage.k8s.io"});
                }
                if let Some(pod_name) = with_pod {
                    objects.push(writer(pod_name, name));
                }
                let count = objects.len();
                self.control.apply(objects, count).await?;
            }
            Op::StartPod { pod, claim } => {
                self.control.apply(vec![writer(pod, claim)], 1).await?;
            }
            Op::DeletePod { pod, .. } => {
                client.delete(pods, ns, pod).await?;
            }
            Op::DeletePodAndClaim { pod, claim } => {
                client.delete(pods, ns, pod).await?;
                client.delete(claims, ns, claim).await?;
            }
            Op::Snapshot { snapshot, claim } => {
                self.control
                    .apply(
                        vec![json!({"apiVersion": "snapshot.storage.k8s.io/v1",
                            "kind": "VolumeSnapshot",
                            "metadata": {"name": snapshot, "namespace": "default"},
                            "spec": {"source": {"persistentVolumeClaimName": claim}}})],
                        1,
                    )
                    .await?;
            }
            Op::Expand {
                claim, size_mib, ..
            } => {
                // Compare-and-swap: the controllers write the claim too.
                let mut tries = 0;
                loop {
                    let mut object = client.get(claims, ns, claim).await?;
                    object["spec"]["resources"]["requests"]["storage"] =
                        json!(format!("{size_mib}Mi"));
                    match client.replace(claims, ns, claim, &object).await {
                        Ok(_) => break,
                        Err(c4m_api::Error::Api { code: 409, .. }) if tries < 20 => tries += 1,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Op::DeleteClaim { claim } => {
                client.delete(claims, ns, claim).await?;
            }
            Op::DeleteSnapshot { snapshot } => {
                client.delete(snapshots, ns, snapshot).await?;
            }
        }
        Ok(())
    }

    /// Waits until the objects and the node are as the model declares
    /// (`all_gone`: nothing at all, and no mount anywhere under the run's
    /// directory); fails after [`SETTLE_LIMIT`] naming every difference.
    async fn settle(&mut self, all_gone: bool) -> Result<()> {
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            self.check_agent()?;
            let gaps = self.gaps(all_gone).await?;
            if gaps.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{gaps}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// How the cluster differs from the model now.
    async fn gaps(&self, all_gone: bool) -> Result<Gaps> {
        let mut gaps = Gaps::default();
        let client = &self.control.client;
        let list = |plural: &'static str| async move {
            let namespace = (!plural.starts_with("persistentvolumes")
                && plural != "volumesnapshotcontents")
                .then_some("default");
            let listed = client.list(kind(plural)?, namespace, None).await?;
            let items = listed["items"].as_array().cloned().unwrap_or_default();
            anyhow::Ok(
                items
                    .into_iter()
                    .filter_map(|item| Some((item["metadata"]["name"].as_str()?.to_string(), item)))
                    .collect::<BTreeMap<String, Value>>(),
            )
        };
        let model = &self.model;

        // The objects.
        let claims = list("persistentvolumeclaims").await?;
        let mut handles = BTreeMap::new();
        names_match(&mut gaps.api, "claims", &claims, &model.claims);
        for (name, state) in &model.claims {
            let Some(object) = claims.get(name) else {
                continue;
            };
            if object["status"]["phase"] != "Bound" {
                gaps.api.push(format!("claim {name} not Bound"));
                continue;
            }
            let capacity = object["status"]["capacity"]["storage"]
                .as_str()
                .and_then(|q| c4m_core::parse_memory_bytes(q).ok());
            if capacity != Some(state.size_mib << 20) {
                gaps.api.push(format!(
                    "claim {name} has capacity {}, not {}Mi",
                    object["status"]["capacity"]["storage"], state.size_mib
                ));
            }
            if let Some(handle) = object["spec"]["volumeName"].as_str() {
                handles.insert(name.clone(), handle.to_string());
            }
        }
        let pods = list("pods").await?;
        names_match(&mut gaps.api, "pods", &pods, &model.pods);
        let mut pod_uids = BTreeSet::new();
        for name in model.pods.keys() {
            let Some(object) = pods.get(name) else {
                continue;
            };
            if !is_ready(object) {
                gaps.api.push(format!("pod {name} not Ready"));
            }
            if let Some(uid) = object["metadata"]["uid"].as_str() {
                pod_uids.insert(uid.to_string());
            }
        }
        let snapshots = list("volumesnapshots").await?;
        names_match(&mut gaps.api, "snapshots", &snapshots, &model.snapshots);
        let mut snapshot_handles = BTreeSet::new();
        for name in model.snapshots.keys() {
            let Some(object) = snapshots.get(name) else {
                continue;
            };
            if object["status"]["readyToUse"] != true {
                gaps.api.push(format!("snapshot {name} not readyToUse"));
            }
            if let Some(uid) = object["metadata"]["uid"].as_str() {
                snapshot_handles.insert(snapshot_handle_for(uid));
            }
        }
        let volumes: BTreeSet<String> = list("persistentvolumes").await?.into_keys().collect();
        let bound: BTreeSet<String> = handles.values().cloned().collect();
        if volumes != bound {
            gaps.api.push(format!(
                "PersistentVolumes {volumes:?}, not those of the claims {bound:?}"
            ));
        }
        let contents = list("volumesnapshotcontents").await?;
        if contents.len() != model.snapshots.len() {
            gaps.api.push(format!(
                "{} VolumeSnapshotContents for {} snapshots",
                contents.len(),
                model.snapshots.len()
            ));
        }
        if !gaps.api.is_empty() {
            // The node is compared with the objects once they are right.
            return Ok(gaps);
        }

        // The node's records.
        let records = json_stems(&self.pool.join("records/volumes"));
        if records != bound {
            gaps.node.push(format!(
                "volume records {records:?}, not the bound volumes {bound:?}"
            ));
        }
        let records = json_stems(&self.pool.join("records/snapshots"));
        if records != snapshot_handles {
            gaps.node.push(format!(
                "snapshot records {records:?}, not the snapshots {snapshot_handles:?}"
            ));
        }
        let pod_records = json_stems(&self.claims.join("pods"));
        if pod_records != pod_uids {
            gaps.node.push(format!(
                "pods' claim records {pod_records:?}, not the pods {pod_uids:?}"
            ));
        }

        // Loop devices: one per volume in use, backed by its image.
        let in_use: BTreeSet<&String> = model
            .claims
            .iter()
            .filter(|(_, c)| c.pod.is_some())
            .filter_map(|(name, _)| handles.get(name))
            .collect();
        let mut wanted_loops: BTreeMap<String, usize> = in_use
            .iter()
            .map(|h| (self.image_of(h).display().to_string(), 0))
            .collect();
        for (device, backing) in loops_under(&self.pool) {
            match wanted_loops.get_mut(&backing) {
                Some(count) if *count == 0 => *count += 1,
                _ => gaps
                    .node
                    .push(format!("loop device {device} backed by {backing}")),
            }
        }
        for (image, count) in &wanted_loops {
            if *count == 0 {
                gaps.node.push(format!("no loop device for {image}"));
            }
        }

        // Mounts: each volume in use at its staging path and at its pods'
        // targets; nothing else of the pool's devices nor under the claims.
        let mut wanted_mounts: BTreeSet<PathBuf> =
            in_use.iter().map(|h| self.staging_of(h)).collect();
        for uid in pod_records.intersection(&pod_uids) {
            match self.pod_targets(uid) {
                Ok(targets) => wanted_mounts.extend(targets),
                Err(e) => gaps.node.push(format!("{e:#}")),
            }
        }
        let scope = if all_gone {
            self.agent_dir.parent().unwrap_or(&self.agent_dir)
        } else {
            &self.claims
        };
        let found: BTreeSet<PathBuf> = leaks(&self.pool, scope).await?.mounts.into_iter().collect();
        for extra in found.difference(&wanted_mounts) {
            gaps.node.push(format!("mount at {}", extra.display()));
        }
        for missing in wanted_mounts.difference(&found) {
            gaps.node.push(format!("no mount at {}", missing.display()));
        }
        if !gaps.node.is_empty() {
            return Ok(gaps);
        }

        // What every pod fsynced, read back from its volume.
        for (claim, state) in model.claims.iter().filter(|(_, c)| c.pod.is_some()) {
            let Some(handle) = handles.get(claim) else {
                continue;
            };
            let file = self.staging_of(handle).join(DATA_FILE);
            let read = std::fs::read_to_string(&file).unwrap_or_default();
            let lines: Vec<&str> = read.lines().collect();
            if lines != state.lines {
                gaps.data.push(format!(
                    "claim {claim}: {} holds {lines:?}, not {:?}",
                    file.display(),
                    state.lines
                ));
            }
        }
        Ok(gaps)
    }

    fn image_of(&self, handle: &str) -> PathBuf {
        self.pool.join("images").join(format!("{handle}.img"))
    }

    /// Where the node stages a local volume (`ClaimPaths::staging_of`).
    fn staging_of(&self, handle: &str) -> PathBuf {
        self.claims
            .join("staging")
            .join(LOCAL_DRIVER.replace('/', "_"))
            .join(handle)
    }

    /// The targets a pod's claim record lists.
    fn pod_targets(&self, uid: &str) -> Result<Vec<PathBuf>> {
        let path = self.claims.join("pods").join(format!("{uid}.json"));
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let entries: Vec<Value> =
            serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        Ok(entries
            .iter()
            .filter_map(|e| e["target"].as_str().map(PathBuf::from))
            .collect())
    }

    /// Copies the agents' logs out of the run's directory (removed at the
    /// end); returns where.
    fn keep_logs(&self, seed: u64) -> PathBuf {
        let kept = std::env::temp_dir().join(format!("c4m-volumes-crash-{seed}"));
        let _ = std::fs::create_dir_all(&kept);
        for start in 1..=self.agent.starts {
            let name = format!("agent-{start}.log");
            let _ = std::fs::copy(self.agent_dir.with_file_name(&name), kept.join(&name));
        }
        kept
    }

    fn report(&self, rounds: usize, took: Duration) {
        let crashes: usize = self.stats.crashed.values().sum();
        println!(
            "volumes-crash: {rounds} rounds in {:.1} s: {crashes} agent crashes at fail points, {} control plane kills; 0 leaks, every fsynced line read back",
            took.as_secs_f64(),
            self.stats.control_kills
        );
        let per_point: Vec<String> = FAIL_POINTS
            .iter()
            .filter_map(|point| {
                let armed = self.stats.armed.get(point).copied().unwrap_or(0);
                let crashed = self.stats.crashed.get(point).copied().unwrap_or(0);
                (armed + crashed > 0).then(|| format!("{point} {crashed}/{armed}"))
            })
            .collect();
        println!("  crashes/armings per fail point: {}", per_point.join(", "));
        let ops: Vec<String> = self
            .stats
            .ops
            .iter()
            .map(|(op, count)| format!("{op} {count}"))
            .collect();
        println!("  operations: {}", ops.join(", "));
    }
}

/// How the cluster differs from the model, by kind.
#[derive(Debug, Default)]
struct Gaps {
    /// The objects (not yet as declared, or wrong).
    api: Vec<String>,
    /// The node: records, loop devices, mounts (leaked, or missing).
    node: Vec<String>,
    /// Lines a pod fsynced that its volume does not hold.
    data: Vec<String>,
}

impl Gaps {
    fn is_empty(&self) -> bool {
        self.api.is_empty() && self.node.is_empty() && self.data.is_empty()
    }
}

impl fmt::Display for Gaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (title, gaps) in [
            ("the objects never came back as declared", &self.api),
            ("the node leaked or lost", &self.node),
            ("data lost", &self.data),
        ] {
            if !gaps.is_empty() {
                writeln!(f, "{title}:")?;
                for gap in gaps {
                    writeln!(f, "  {gap}")?;
                }
            }
        }
        Ok(())
    }
}

/// Notes in `gaps` where the names of `found` and `wanted` differ.
fn names_match<T>(
    gaps: &mut Vec<String>,
    what: &str,
    found: &BTreeMap<String, Value>,
    wanted: &BTreeMap<String, T>,
) {
    let found: BTreeSet<&String> = found.keys().collect();
    let wanted: BTreeSet<&String> = wanted.keys().collect();
    if found != wanted {
        gaps.push(format!("{what} {found:?}, not {wanted:?}"));
    }
}

/// The stems of the `.json` files in `dir`.
fn json_stems(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .collect()
}

/// A pod appending its name to its claim's volume (once, however often it
/// restarts) and fsyncing it before it is Ready.
fn writer(name: &str, claim: &str) -> Value {
    pod(
        name,
        Some(claim),
        &format!(
            "(grep -qx {name} /data/{DATA_FILE} || echo {name} >> /data/{DATA_FILE}) && sync /data/{DATA_FILE}"
        ),
        true,
    )
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
