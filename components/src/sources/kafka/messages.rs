//! What the polling threads and the task say to each other, and the names they
//! share for a partition.

use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Instant;

use rdkafka::error::KafkaError;

use crate::event::RawMessage;

/// One partition of a topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct PartitionKey {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl PartitionKey {
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        PartitionKey {
            topic: topic.into(),
            partition,
        }
    }
}

/// A partition as one group member owns it: with `concurrency` above 1 two
/// members may briefly both hold the same partition during a rebalance.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct MemberPartition {
    pub member: usize,
    pub partition: PartitionKey,
}

/// Consecutive messages of one partition, polled together.
pub(super) struct Polled {
    pub partition: PartitionKey,
    /// The partition's epoch when the messages were fetched (see `Shared::epochs`).
    pub epoch: u64,
    pub first: i64,
    pub last: i64,
    /// Payload bytes of `messages`.
    pub bytes: usize,
    pub messages: Vec<RawMessage>,
}

/// From a polling thread (or its rebalance callbacks) to the task.
pub(super) enum FromMember {
    Messages {
        member: usize,
        chunks: Vec<Polled>,
    },
    /// Each partition with its new epoch.
    Assigned {
        member: usize,
        partitions: Vec<(PartitionKey, u64)>,
    },
    /// The member's thread waits (up to the deadline) for `done` before committing.
    Revoke {
        member: usize,
        partitions: Vec<PartitionKey>,
        deadline: Instant,
        done: std_mpsc::SyncSender<()>,
    },
    /// A consumer error, kept typed so the task can tell what it is by its code.
    Error {
        member: usize,
        error: KafkaError,
        fatal: bool,
    },
}

/// From the task to one polling thread.
pub(super) enum ToMember {
    /// Re-deliver from `offset`, if the partition is still at `from_epoch`.
    Seek {
        partition: PartitionKey,
        offset: i64,
        from_epoch: u64,
    },
}
