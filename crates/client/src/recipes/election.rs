//! Leader election: Curator's `LeaderLatch` recipe.
//!
//! Algorithm: each candidate creates a protected ephemeral-sequential node `<dir>/_c_<guid>-latch-<seq>`
//! holding its id. The lowest sequence number is the leader; every other candidate watches only the node
//! just below its own and re-checks when that one changes or goes. The leader watches its own node, to
//! notice if someone deletes it (it then joins again, at the back of the line).
//!
//! Connection loss and expiry: a leader cannot know whether a server it cannot reach is expiring its
//! session, so the role becomes [`Role::Suspended`] (not leader) as soon as the client is Disconnected —
//! Curator's `LeaderLatch` does the same on SUSPENDED with its default (standard) error policy. The
//! candidacy is kept: the node belongs to the session, which survives a reconnection within the session
//! timeout, so after reconnecting we re-check with the same node (and its place in line) and may be leader
//! again at once — nobody else could have become leader meanwhile, since our node was there all along.
//! (Curator instead deletes and re-creates its node on RECONNECTED, losing its place.) When the session
//! ends the role becomes [`Role::Lost`] for good: the client is dead, join again with a new one.

use tokio::sync::{mpsc, oneshot, watch};

use crate::recipes::protected::{child_path, node_name, sort_by_sequence, ProtectedNode};
use crate::recipes::retry::{is_terminal, retry, session_end_error};
use crate::{Acl, Client, Error, EventType, Result, State, StateStream, Watch};

/// What precedes the sequence number in a candidate's node name (Curator's `LeaderLatch`).
const LATCH_NAME: &str = "latch-";

/// An election in a directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    client: Client,
    dir: String,
    acl: Vec<Acl>,
}

/// A candidate's node, as found in the election's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub path: String,
    /// The id the candidate joined with.
    pub id: Vec<u8>,
    /// The lowest node: the leader.
    pub is_leader: bool,
}

/// A candidate's role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Waiting for the candidates before us.
    Follower,
    Leader,
    /// The connection is down: not leader (see the module doc); the candidacy is kept if the session
    /// survives, and the role is re-checked on reconnection.
    Suspended,
    /// [`Candidacy::resign`] or a drop ended the candidacy; its node is deleted.
    Resigned,
    /// The candidacy ended on this error: the session ended (SessionExpired, Closed, AuthFailed) or the
    /// server refused a call.
    Lost(Error),
}

impl Role {
    /// No more changes after this one.
    pub fn is_final(&self) -> bool {
        matches!(self, Role::Resigned | Role::Lost(_))
    }
}

impl LeaderElection {
    /// An election whose nodes live in `dir` (created, as containers, on first use).
    pub fn new(client: &Client, dir: &str) -> LeaderElection {
        LeaderElection {
            client: client.clone(),
            dir: dir.to_string(),
            acl: crate::acl::open_unsafe(),
        }
    }

    /// The ACL of each candidate's node (open by default).
    pub fn with_acl(mut self, acl: &[Acl]) -> LeaderElection {
        self.acl = acl.to_vec();
        self
    }

    /// Becomes a candidate with `id` (the data of our node, what [`LeaderElection::leader`] reports).
    /// Returns once our role is known.
    pub async fn join(&self, id: &[u8]) -> Result<Candidacy> {
        let (role_tx, role) = watch::channel(Role::Follower);
        let (path_tx, path) = watch::channel(String::new());
        let (resign_tx, resign_rx) = mpsc::channel(1);
        let (ready_tx, ready) = oneshot::channel();
        let runner = Runner {
            client: self.client.clone(),
            node: ProtectedNode::new(&self.dir, LATCH_NAME),
            id: id.to_vec(),
            acl: self.acl.clone(),
            role_tx,
            path_tx,
            resign_rx,
            ready: Some(ready_tx),
        };
        // Subscribed before our node exists, so that no transition after it is missed.
        let states = self.client.state_stream();
        tokio::spawn(runner.run(states));
        ready.await.unwrap_or(Err(Error::Closed))?;
        Ok(Candidacy {
            election: self.clone(),
            role,
            path,
            resign_tx,
        })
    }

    /// Every candidate, leader first.
    pub async fn participants(&self) -> Result<Vec<Participant>> {
        let children = match retry(|| self.client.get_children(&self.dir)).await {
            Ok(c) => c,
            Err(Error::NoNode) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out: Vec<Participant> = Vec::new();
        for child in sort_by_sequence(children, LATCH_NAME) {
            let path = child_path(&self.dir, &child);
            match retry(|| self.client.get_data(&path)).await {
                Ok((id, _)) => out.push(Participant {
                    path,
                    id,
                    is_leader: out.is_empty(),
                }),
                Err(Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The current leader as the server sees it (`None` if there are no candidates).
    pub async fn leader(&self) -> Result<Option<Participant>> {
        loop {
            let children = match retry(|| self.client.get_children(&self.dir)).await {
                Ok(c) => c,
                Err(Error::NoNode) => return Ok(None),
                Err(e) => return Err(e),
            };
            let Some(first) = sort_by_sequence(children, LATCH_NAME).into_iter().next() else {
                return Ok(None);
            };
            let path = child_path(&self.dir, &first);
            match retry(|| self.client.get_data(&path)).await {
                Ok((id, _)) => {
                    return Ok(Some(Participant {
                        path,
                        id,
                        is_leader: true,
                    }))
                }
                // It just left: look again.
                Err(Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// One candidate in an election. Dropping it resigns (in the background).
#[derive(Debug)]
pub struct Candidacy {
    election: LeaderElection,
    role: watch::Receiver<Role>,
    path: watch::Receiver<String>,
    resign_tx: mpsc::Sender<ResignReply>,
}

type ResignReply = oneshot::Sender<Result<()>>;

impl Candidacy {
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    pub fn is_leader(&self) -> bool {
        *self.role.borrow() == Role::Leader
    }

    /// Every role change from now on.
    pub fn roles(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Waits until we are leader; fails if the candidacy ends first (`Closed` after a resignation).
    pub async fn wait_leader(&self) -> Result<()> {
        let mut role = self.role.clone();
        loop {
            match &*role.borrow_and_update() {
                Role::Leader => return Ok(()),
                Role::Lost(e) => return Err(e.clone()),
                Role::Resigned => return Err(Error::Closed),
                _ => {}
            }
            if role.changed().await.is_err() {
                // The task ended: the final role is in the channel.
                if let Role::Lost(e) = &*role.borrow() {
                    return Err(e.clone());
                }
                return Err(Error::Closed);
            }
        }
    }

    /// Our node's path (a new one only if someone deleted ours and we joined again).
    pub fn path(&self) -> String {
        self.path.borrow().clone()
    }

    /// The current leader, as the server sees it.
    pub async fn leader(&self) -> Result<Option<Participant>> {
        self.election.leader().await
    }

    /// The current leader's id (`None` if there are no candidates).
    pub async fn leader_id(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.election.leader().await?.map(|p| p.id))
    }

    /// Leaves the election: our node is deleted (retrying after connection loss) before this returns.
    pub async fn resign(self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        if self.resign_tx.send(reply).await.is_err() {
            // Already over: resigned or lost, and the task cleaned up what it could.
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }
}

/// How a campaign ended.
enum End {
    /// A resignation (with whom to tell), or the handle was dropped (`None`).
    Resign(Option<ResignReply>),
    Lost(Error),
}

/// Why a wait ended early.
enum Wake {
    End(End),
    /// Connected again while suspended: re-check.
    Reconnected,
}

/// The task running one candidacy.
struct Runner {
    client: Client,
    node: ProtectedNode,
    id: Vec<u8>,
    acl: Vec<Acl>,
    role_tx: watch::Sender<Role>,
    path_tx: watch::Sender<String>,
    resign_rx: mpsc::Receiver<ResignReply>,
    /// Told once the first role is known (or the join failed).
    ready: Option<oneshot::Sender<Result<()>>>,
}

/// What a leadership check found.
enum Check {
    /// Ours is the lowest node; the watch is on it (fires if someone deletes it).
    Leader(Watch),
    /// The watch is on the node just below ours.
    Follower(Watch),
    /// Our node is gone while the session lives: someone deleted it.
    Missing,
}

impl Runner {
    async fn run(mut self, mut states: StateStream) {
        let end = self.campaign(&mut states).await;
        match end {
            End::Resign(reply) => {
                let r = match self.node.delete_ours(&self.client).await {
                    // The session's end took the node with it.
                    Err(e) if is_terminal(&e) => Ok(()),
                    r => r,
                };
                self.publish(Role::Resigned);
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            End::Lost(e) => {
                if !is_terminal(&e) {
                    let _ = self.node.delete_ours(&self.client).await;
                }
                tracing::debug!(dir = %self.node.dir(), error = %e, "candidacy lost");
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Err(e.clone()));
                }
                self.publish(Role::Lost(e));
            }
        }
    }

    fn publish(&self, role: Role) {
        self.role_tx.send_if_modified(|r| {
            if *r == role {
                return false;
            }
            tracing::debug!(dir = %self.node.dir(), ?role, "election role");
            *r = role;
            true
        });
    }

    async fn campaign(&mut self, states: &mut StateStream) -> End {
        loop {
            let create = {
                let (client, node) = (self.client.clone(), self.node.clone());
                let (id, acl) = (self.id.clone(), self.acl.clone());
                async move { node.create(&client, &id, &acl).await }
            };
            let ours = match self.attend(states, create, false).await {
                Ok(Ok(path)) => path,
                Ok(Err(e)) => return End::Lost(e),
                Err(Wake::End(end)) => return end,
                Err(Wake::Reconnected) => unreachable!("not woken on reconnection"),
            };
            self.path_tx.send_replace(ours.clone());
            let our_name = node_name(&ours).to_string();
            loop {
                let check = {
                    let (client, node) = (self.client.clone(), self.node.clone());
                    let our_name = our_name.clone();
                    async move { check(&client, &node, &our_name).await }
                };
                let (role, watch) = match self.attend(states, check, false).await {
                    Ok(Ok(Check::Leader(w))) => (Role::Leader, w),
                    Ok(Ok(Check::Follower(w))) => (Role::Follower, w),
                    Ok(Ok(Check::Missing)) => {
                        tracing::warn!(path = %ours, "our candidate node was deleted; joining again");
                        break;
                    }
                    Ok(Err(e)) => return End::Lost(e),
                    Err(Wake::End(end)) => return end,
                    Err(Wake::Reconnected) => unreachable!("not woken on reconnection"),
                };
                // A reply may arrive just before the connection drops: never claim leadership offline.
                let role = if self.client.state() == State::Connected {
                    role
                } else {
                    Role::Suspended
                };
                self.publish(role);
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Ok(()));
                }
                match self.attend(states, watch, true).await {
                    Ok(event) if event.event_type == EventType::None => {
                        return End::Lost(session_end_error(event.state))
                    }
                    Ok(_) | Err(Wake::Reconnected) => {}
                    Err(Wake::End(end)) => return end,
                }
            }
        }
    }

    /// Awaits `fut` while attending to what cannot wait: a resignation ends the campaign, a disconnection
    /// makes us [`Role::Suspended`] at once, the session's end loses the candidacy. With `wake_on_reconnect`,
    /// a reconnection while suspended ends the wait too.
    async fn attend<T>(
        &mut self,
        states: &mut StateStream,
        fut: impl std::future::Future<Output = T>,
        wake_on_reconnect: bool,
    ) -> std::result::Result<T, Wake> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                v = &mut fut => return Ok(v),
                reply = self.resign_rx.recv() => return Err(Wake::End(End::Resign(reply))),
                s = states.next() => match s {
                    None => return Err(Wake::End(End::Lost(state_error(self.client.state())))),
                    Some(s) if s.is_terminal() => return Err(Wake::End(End::Lost(state_error(s)))),
                    Some(State::Connected) => {
                        if wake_on_reconnect && *self.role_tx.borrow() == Role::Suspended {
                            return Err(Wake::Reconnected);
                        }
                    }
                    Some(_) => self.publish(Role::Suspended),
                },
            }
        }
    }
}

/// Lists the candidates and sets the watch our role calls for.
async fn check(client: &Client, node: &ProtectedNode, our_name: &str) -> Result<Check> {
    let dir = node.dir();
    loop {
        let children = match retry(|| client.get_children(dir)).await {
            Ok(c) => c,
            Err(Error::NoNode) => return Ok(Check::Missing),
            Err(e) => return Err(e),
        };
        let sorted = sort_by_sequence(children, node.name());
        let Some(i) = sorted.iter().position(|c| c == our_name) else {
            return Ok(Check::Missing);
        };
        let (target, leader) = if i == 0 {
            (our_name, true)
        } else {
            (sorted[i - 1].as_str(), false)
        };
        let path = child_path(dir, target);
        match retry(|| client.get_data_w(&path)).await {
            Ok((_, _, w)) if leader => return Ok(Check::Leader(w)),
            Ok((_, _, w)) => return Ok(Check::Follower(w)),
            Err(Error::NoNode) if leader => return Ok(Check::Missing),
            // The one before us just left: look again.
            Err(Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The error a final state stands for.
fn state_error(state: State) -> Error {
    match state {
        State::Expired => Error::SessionExpired,
        State::AuthFailed => Error::AuthFailed,
        _ => Error::Closed,
    }
}
