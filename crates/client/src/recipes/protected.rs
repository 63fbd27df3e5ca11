//! Protected ephemeral-sequential nodes, as Curator's `withProtection()`: the name carries a GUID
//! (`_c_<guid>-<name><sequence>`), so that after a create whose reply was lost we can list the directory and
//! find the node we may have created instead of creating a second one. A duplicate would belong to our own
//! session and never be deleted while it lives: a lock waiter would then wait for itself forever.

use crate::recipes::retry::{retry, Backoff};
use crate::{Acl, Client, CreateMode, Error, Result};

/// Curator's marker of a protected name.
const PROTECTED_PREFIX: &str = "_c_";

/// How many times a create may find its directory gone (a container removed by the server when it was
/// empty) before we give up.
const DIR_RECREATE_ATTEMPTS_MAX: u32 = 10;

/// One participant's node in a directory of sequential nodes named `<tag><name><sequence>`.
#[derive(Debug, Clone)]
pub(crate) struct ProtectedNode {
    dir: String,
    /// What precedes the sequence number, e.g. `lock-`.
    name: &'static str,
    /// `_c_<guid>-`: every node this participant creates starts with it.
    tag: String,
}

impl ProtectedNode {
    pub fn new(dir: &str, name: &'static str) -> ProtectedNode {
        ProtectedNode {
            dir: dir.to_string(),
            name,
            tag: format!("{PROTECTED_PREFIX}{}-", new_guid()),
        }
    }

    pub fn dir(&self) -> &str {
        &self.dir
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn is_ours(&self, child: &str) -> bool {
        child.starts_with(&self.tag)
    }

    /// Creates our ephemeral-sequential node (and the directory, as containers, if missing) and returns its
    /// path. After a connection loss the node is looked for first: the lost reply may have been a success.
    pub async fn create(&self, client: &Client, data: &[u8], acl: &[Acl]) -> Result<String> {
        let path = child_path(&self.dir, &format!("{}{}", self.tag, self.name));
        let mut backoff = Backoff::new();
        let mut may_exist = false;
        let mut dir_attempts = 0;
        loop {
            if may_exist {
                if let Some(found) = self.find(client).await? {
                    tracing::debug!(path = %found, "found the node of a create whose reply was lost");
                    return Ok(found);
                }
            }
            match client
                .create(&path, data, acl, CreateMode::EphemeralSequential)
                .await
            {
                Ok((created, _)) => return Ok(created),
                Err(e) if e.is_retryable() => {
                    may_exist = true;
                    backoff.wait().await;
                }
                Err(Error::NoNode) if dir_attempts < DIR_RECREATE_ATTEMPTS_MAX => {
                    dir_attempts += 1;
                    ensure_dir(client, &self.dir).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Our node's path, if the directory holds one.
    pub async fn find(&self, client: &Client) -> Result<Option<String>> {
        let children = match retry(|| client.get_children(&self.dir)).await {
            Ok(c) => c,
            Err(Error::NoNode) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(children
            .into_iter()
            .find(|c| self.is_ours(c))
            .map(|c| child_path(&self.dir, &c)))
    }

    /// Deletes every node of ours in the directory (an abandoned attempt's, whether or not its create
    /// reply arrived). Requests of one session run in order, so a create sent before this is seen by it.
    pub async fn delete_ours(&self, client: &Client) -> Result<()> {
        let children = match retry(|| client.get_children(&self.dir)).await {
            Ok(c) => c,
            Err(Error::NoNode) => return Ok(()),
            Err(e) => return Err(e),
        };
        for child in children.into_iter().filter(|c| self.is_ours(c)) {
            delete_if_exists(client, &child_path(&self.dir, &child)).await?;
        }
        Ok(())
    }
}

/// Deletes `path` (any version), retrying after connection loss; a node already gone is success.
pub(crate) async fn delete_if_exists(client: &Client, path: &str) -> Result<()> {
    match retry(|| client.delete(path, crate::ANY_VERSION)).await {
        Ok(()) | Err(Error::NoNode) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `dir/child`.
pub(crate) fn child_path(dir: &str, child: &str) -> String {
    if dir == "/" {
        format!("/{child}")
    } else {
        format!("{dir}/{child}")
    }
}

/// The last component of `path`.
pub(crate) fn node_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The sequence number of a child named `...<name><sequence>`, as Curator's `fixForSorting` reads it (after
/// the last occurrence of `name`); `None` for a child that is not a participant.
pub(crate) fn sequence(child: &str, name: &str) -> Option<i64> {
    let at = child.rfind(name)?;
    child[at + name.len()..].parse().ok()
}

/// The participants among `children`, lowest sequence number first.
pub(crate) fn sort_by_sequence(children: Vec<String>, name: &str) -> Vec<String> {
    let mut numbered: Vec<(i64, String)> = children
        .into_iter()
        .filter_map(|c| sequence(&c, name).map(|s| (s, c)))
        .collect();
    numbered.sort();
    numbered.into_iter().map(|(_, c)| c).collect()
}

/// Creates `dir` and its missing ancestors as containers (the server removes them once empty, as Curator's
/// `creatingParentContainersIfNeeded`).
pub(crate) async fn ensure_dir(client: &Client, dir: &str) -> Result<()> {
    if dir == "/" {
        return Ok(());
    }
    let acl = crate::acl::open_unsafe();
    let create = |path: String| {
        let acl = acl.clone();
        async move {
            match retry(|| client.create(&path, b"", &acl, CreateMode::Container)).await {
                // NodeExists after a lost reply too: it was ours, or someone else's; either way it is there.
                Ok(_) | Err(Error::NodeExists) => Ok(()),
                Err(e) => Err(e),
            }
        }
    };
    match create(dir.to_string()).await {
        Err(Error::NoNode) => {}
        r => return r,
    }
    let mut prefix = String::new();
    for component in dir.split('/').filter(|c| !c.is_empty()) {
        prefix.push('/');
        prefix.push_str(component);
        create(prefix.clone()).await?;
    }
    Ok(())
}

/// A random (version 4) UUID in its usual text form, as Curator's protected names carry.
fn new_guid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_sort_numerically_and_ignore_strangers() {
        let children = vec![
            "_c_b-lock-0000000010".to_string(),
            "other".to_string(),
            "_c_a-lock-0000000002".to_string(),
            "lock-0000000007".to_string(),
            "_c_c-latch-0000000001".to_string(),
        ];
        assert_eq!(
            sort_by_sequence(children, "lock-"),
            vec![
                "_c_a-lock-0000000002",
                "lock-0000000007",
                "_c_b-lock-0000000010"
            ]
        );
        assert_eq!(sequence("_c_x-lock-lock-0000000003", "lock-"), Some(3));
    }

    #[test]
    fn protected_names_carry_a_guid() {
        let a = ProtectedNode::new("/l", "lock-");
        let b = ProtectedNode::new("/l", "lock-");
        assert_ne!(a.tag, b.tag);
        assert_eq!(a.tag.len(), PROTECTED_PREFIX.len() + 36 + 1);
        assert!(a.is_ours(&format!("{}lock-0000000001", a.tag)));
        assert!(!b.is_ours(&format!("{}lock-0000000001", a.tag)));
    }

    #[test]
    fn paths() {
        assert_eq!(child_path("/", "a"), "/a");
        assert_eq!(child_path("/x/y", "a"), "/x/y/a");
        assert_eq!(node_name("/x/y/a"), "a");
    }
}
