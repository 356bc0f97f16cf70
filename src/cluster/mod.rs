//! The cluster view: what every node's agent says about its VMs, asked concurrently with the peer
//! client (`GET /v1/vms` on each peer, bounded by its timeout), and merged per VM — where it
//! runs, its state and lock on each node, and whether it runs on several nodes (judged by
//! `invariants::running_on_several`, the one place that decides it). A peer that cannot be asked
//! is kept, with why: never silently left out.
//!
//! Asking is the effect (here, `ask`); merging is pure (`merge`). The collector feeds what it
//! learned to the invariants (`PeerAnswer::as_invariant_input`); `GET /v1/cluster/vms` and
//! `vmwarden ctl vms --cluster` serve the merge.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::rest::{VmInfo, VmListReply};
use crate::config::Config;
use crate::invariants::PeerVms;
use crate::secret::Secret;

/// What one peer answered (or why it could not be asked).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerAnswer {
    pub node: String,
    pub vms: Result<Vec<VmInfo>, String>,
}

impl PeerAnswer {
    /// The invariants' input: the VMs running there (`invariants::counts_as_running`).
    pub fn as_invariant_input(&self) -> PeerVms {
        PeerVms {
            node: self.node.clone(),
            active: self.vms.as_ref().map_err(Clone::clone).map(|vms| {
                vms.iter()
                    .filter(|v| runs(v))
                    .map(|v| v.name.clone())
                    .collect()
            }),
        }
    }
}

fn runs(v: &VmInfo) -> bool {
    crate::invariants::counts_as_running(&v.state, &v.reason, v.active)
}

/// How long one peer may take: its `[actions] peer_timeout_seconds`, but no longer than this
/// node's own collection may (plus a second for the peer's own), so a hung peer never holds a
/// scrape longer than a hung local collector would.
pub fn peer_timeout(cfg: &Config) -> Duration {
    Duration::from_secs_f64(
        cfg.actions
            .peer_timeout_seconds
            .min(cfg.agent.collector_timeout_seconds + 1.0)
            .max(0.1),
    )
}

/// Ask every configured peer for its VMs at once; one answer per peer, in config order.
/// `secret`: the credential peers accept (the cluster secret); `Err(why)` when this process has
/// none, and then every peer is reported as not asked, with why.
pub async fn ask(cfg: &Config, secret: Result<&Secret, &str>) -> Vec<PeerAnswer> {
    let peers = &cfg.cluster.peers;
    let secret = match secret {
        Ok(s) => s.clone(),
        Err(why) => {
            return peers
                .iter()
                .map(|p| PeerAnswer {
                    node: p.name.clone(),
                    vms: Err(why.to_string()),
                })
                .collect()
        }
    };
    let timeout = peer_timeout(cfg);
    let mut set = tokio::task::JoinSet::new();
    for (i, p) in peers.iter().enumerate() {
        let (url, secret) = (p.url.clone(), secret.clone());
        set.spawn(async move {
            let r: Result<VmListReply, _> =
                crate::api::peer::get(&url, "/v1/vms", &secret, timeout).await;
            (i, r.map(|l| l.vms).map_err(|e| e.to_string()))
        });
    }
    let mut out: Vec<PeerAnswer> = peers
        .iter()
        .map(|p| PeerAnswer {
            node: p.name.clone(),
            vms: Err("the request to it did not finish".into()),
        })
        .collect();
    while let Some(done) = set.join_next().await {
        if let Ok((i, vms)) = done {
            if let Some(slot) = out.get_mut(i) {
                slot.vms = vms;
            }
        }
    }
    out
}

/// One node of the cluster view.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeReach {
    pub node: String,
    /// Its agent answered with its VMs.
    pub reachable: bool,
    /// Why not, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One VM across the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterVm {
    pub name: String,
    /// The nodes where it runs (a qemu process exists, the paused end of a live migration
    /// aside), sorted.
    pub running_on: Vec<String>,
    /// The `running_on_several_nodes` violation's message when it runs on more than one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violation: Option<String>,
    /// It as each node that defines it sees it (state, lock held there, action), in node order.
    pub nodes: Vec<VmInfo>,
}

/// `GET /v1/cluster/vms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterReply {
    /// The node that answered (and merged).
    pub node: String,
    /// This node first, then every peer in config order, reachable or not.
    pub nodes: Vec<NodeReach>,
    /// Every VM any reachable node defines, by name.
    pub vms: Vec<ClusterVm>,
}

/// Merge this node's VMs (`here`; `Err(why)` when its libvirt could not be read) with the peers'
/// answers. Pure.
pub fn merge(here: &str, local: Result<Vec<VmInfo>, String>, peers: &[PeerAnswer]) -> ClusterReply {
    let mut nodes = Vec::with_capacity(peers.len() + 1);
    let mut by_vm: BTreeMap<String, Vec<VmInfo>> = BTreeMap::new();
    let answers =
        std::iter::once((here, &local)).chain(peers.iter().map(|p| (p.node.as_str(), &p.vms)));
    for (node, vms) in answers {
        match vms {
            Ok(vms) => {
                nodes.push(NodeReach {
                    node: node.to_string(),
                    reachable: true,
                    error: None,
                });
                for v in vms {
                    let mut v = v.clone();
                    // What the node says is where it is; a peer naming another node is not trusted
                    // to place the VM elsewhere.
                    v.node = node.to_string();
                    by_vm.entry(v.name.clone()).or_default().push(v);
                }
            }
            Err(why) => nodes.push(NodeReach {
                node: node.to_string(),
                reachable: false,
                error: Some(why.clone()),
            }),
        }
    }
    let vms = by_vm
        .into_iter()
        .map(|(name, placements)| {
            let mut running_on: Vec<String> = placements
                .iter()
                .filter(|v| runs(v))
                .map(|v| v.node.clone())
                .collect();
            running_on.sort();
            running_on.dedup();
            let violation =
                crate::invariants::running_on_several(&name, &running_on).map(|v| v.message);
            ClusterVm {
                name,
                running_on,
                violation,
                nodes: placements,
            }
        })
        .collect();
    ClusterReply {
        node: here.to_string(),
        nodes,
        vms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, node: &str, active: bool) -> VmInfo {
        VmInfo {
            name: name.into(),
            node: node.into(),
            state: if active { "running" } else { "shutoff" }.into(),
            reason: "booted".into(),
            active,
            lock: if active { "exclusive" } else { "none" }.into(),
            intent: None,
            status_word: None,
            action: None,
        }
    }

    #[test]
    fn merges_every_node_and_flags_a_vm_running_twice() {
        let peers = [
            PeerAnswer {
                node: "n2".into(),
                vms: Ok(vec![vm("a", "n2", true), vm("b", "n2", false)]),
            },
            PeerAnswer {
                node: "n3".into(),
                vms: Err("cannot reach the agent at http://n3:10177: refused".into()),
            },
        ];
        let r = merge(
            "n1",
            Ok(vec![
                vm("a", "n1", true),
                vm("b", "n1", true),
                vm("c", "n1", false),
            ]),
            &peers,
        );
        let reach: Vec<(&str, bool)> = r
            .nodes
            .iter()
            .map(|n| (n.node.as_str(), n.reachable))
            .collect();
        assert_eq!(reach, [("n1", true), ("n2", true), ("n3", false)]);
        assert!(r.nodes[2].error.as_deref().unwrap().contains("refused"));
        let a = &r.vms[0];
        assert_eq!(
            (a.name.as_str(), a.running_on.clone()),
            ("a", vec!["n1".to_string(), "n2".into()])
        );
        let msg = a.violation.as_deref().unwrap();
        assert!(msg.contains("a runs on n1 and n2 at once"), "{msg}");
        let b = &r.vms[1];
        assert_eq!(b.running_on, ["n1"]);
        assert!(b.violation.is_none());
        assert_eq!(b.nodes.len(), 2);
        assert_eq!(r.vms[2].running_on, Vec::<String>::new());
        // The invariants' input: active VMs only; the unreachable peer with why.
        let inp: Vec<PeerVms> = peers.iter().map(PeerAnswer::as_invariant_input).collect();
        assert_eq!(inp[0].active, Ok(vec!["a".to_string()]));
        assert!(inp[1].active.is_err());
    }

    #[test]
    fn a_node_that_cannot_read_libvirt_is_reported() {
        let r = merge("n1", Err("libvirt could not be read: timeout".into()), &[]);
        assert_eq!(r.nodes.len(), 1);
        assert!(!r.nodes[0].reachable);
        assert!(r.vms.is_empty());
    }
}
