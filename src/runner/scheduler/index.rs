//! The scheduler's in-memory view of pending jobs: one ordered set per
//! queue (highest priority first, then oldest), rebuilt from the database
//! at start-up and kept by committed-change events, and the launch
//! decision over it. Deciding never touches the database, so it stays
//! cheap with thousands of pending jobs (see `benches/scheduler.rs`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::Job;

/// Ordering key within a queue: priority (high first), job number
/// (creation order), id.
type Key = (Reverse<u8>, i64, Uuid);

/// A pending job as the decision needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The job.
    pub id: Uuid,
    /// Its queue.
    pub queue: String,
    /// Who submitted it (per-user limits).
    pub user: String,
    /// 0–100.
    pub priority: u8,
    /// Creation order.
    pub number: i64,
    /// Not before this (a retry's backoff).
    pub not_before: Option<DateTime<Utc>>,
    /// Jobs that must complete first.
    pub after: Vec<Uuid>,
    /// GPUs it needs free to launch.
    pub gpus: u32,
}

impl Entry {
    /// The entry of a pending `job`.
    pub fn of(job: &Job) -> Self {
        Self {
            id: job.id,
            queue: job.sched.queue.clone(),
            user: job.user_id.clone(),
            priority: job.sched.priority,
            number: job.number,
            not_before: job.sched.next_attempt_at,
            after: job.sched.after.clone(),
            gpus: job.sched.gpus,
        }
    }

    fn key(&self) -> Key {
        (Reverse(self.priority), self.number, self.id)
    }
}

/// Pending jobs by queue, in launch order. Each queue's entries sit in
/// its ordered map itself, so a decision walks them without lookups.
#[derive(Debug, Default)]
pub struct PendingIndex {
    queues: HashMap<String, BTreeMap<Key, Entry>>,
    /// Where each job's entry is: its queue and key.
    keys: HashMap<Uuid, (String, Key)>,
}

impl PendingIndex {
    /// Adds or replaces a pending job.
    pub fn upsert(&mut self, e: Entry) {
        if self.get(e.id) == Some(&e) {
            return;
        }
        self.remove(e.id);
        let key = e.key();
        self.keys.insert(e.id, (e.queue.clone(), key));
        self.queues
            .entry(e.queue.clone())
            .or_default()
            .insert(key, e);
    }

    /// Drops a job (it launched, ended or is gone).
    pub fn remove(&mut self, id: Uuid) -> Option<Entry> {
        let (queue, key) = self.keys.remove(&id)?;
        self.queues.get_mut(&queue)?.remove(&key)
    }

    /// The entry of pending job `id`.
    pub fn get(&self, id: Uuid) -> Option<&Entry> {
        let (queue, key) = self.keys.get(&id)?;
        self.queues.get(queue)?.get(key)
    }

    /// Every pending entry (any order).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.queues.values().flat_map(BTreeMap::values)
    }

    /// How many jobs are pending in all.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no job is pending.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many are pending in `queue`.
    pub fn pending_in(&self, queue: &str) -> usize {
        self.queues.get(queue).map_or(0, BTreeMap::len)
    }

    /// Forgets everything (before a rebuild).
    pub fn clear(&mut self) {
        self.queues.clear();
        self.keys.clear();
    }
}

/// One queue's limits as the decision sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLimit {
    /// The queue.
    pub name: String,
    /// Most slots at once (0: unlimited).
    pub max_concurrent: u32,
    /// Most slots of one user at once.
    pub max_per_user: Option<u32>,
    /// Launch nothing.
    pub paused: bool,
}

/// Slots taken, per queue and per (queue, user).
#[derive(Debug, Default, Clone)]
pub struct Usage {
    per_queue: HashMap<String, u32>,
    per_user: HashMap<(String, String), u32>,
    /// GPUs free for launches; `None`: GPUs are not counted (Kubernetes).
    pub free_gpus: Option<u32>,
}

impl Usage {
    /// Counts one slot of `user` in `queue`.
    pub fn take(&mut self, queue: &str, user: &str) {
        *self.per_queue.entry(queue.to_string()).or_default() += 1;
        *self
            .per_user
            .entry((queue.to_string(), user.to_string()))
            .or_default() += 1;
    }

    /// Slots taken in `queue`.
    pub fn in_queue(&self, queue: &str) -> u32 {
        self.per_queue.get(queue).copied().unwrap_or(0)
    }

    fn of_user(&self, queue: &str, user: &str) -> u32 {
        // Looking up with a borrowed pair would need an owned key anyway.
        self.per_user
            .get(&(queue.to_string(), user.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

/// Unlimited queues launch at most this many jobs per decision, so one
/// decision stays short; the next one (on the launches' events) goes on.
pub const UNLIMITED_BATCH: u32 = 64;

/// The jobs to launch now, in order: per queue that is not paused, the
/// highest-priority oldest jobs that are ready (past their backoff, not
/// `busy`, every dependency in `completed`) while the queue has free slots
/// and their user is under the queue's per-user limit.
///
/// When GPUs are counted ([`Usage::free_gpus`]), a ready job whose GPUs
/// are not free stops its own queue there (no smaller job of that queue
/// overtakes it, so it is never starved), while other queues go on.
pub fn decide(
    index: &PendingIndex,
    limits: &[QueueLimit],
    usage: &Usage,
    now: DateTime<Utc>,
    busy: &HashSet<Uuid>,
    completed: &HashSet<Uuid>,
) -> Vec<Uuid> {
    let mut out = Vec::new();
    let mut gpus_left = usage.free_gpus;
    for q in limits.iter().filter(|q| !q.paused) {
        let Some(entries) = index.queues.get(&q.name) else {
            continue;
        };
        let taken = usage.in_queue(&q.name);
        let mut free = match q.max_concurrent {
            0 => UNLIMITED_BATCH,
            n => n.saturating_sub(taken),
        };
        let mut users: HashMap<&str, u32> = HashMap::new();
        for e in entries.values() {
            if free == 0 {
                break;
            }
            if e.not_before.is_some_and(|t| t > now)
                || (!busy.is_empty() && busy.contains(&e.id))
                || !e.after.iter().all(|d| completed.contains(d))
            {
                continue;
            }
            let mut user_count = None;
            if let Some(max) = q.max_per_user {
                let n = users
                    .entry(e.user.as_str())
                    .or_insert_with(|| usage.of_user(&q.name, &e.user));
                if *n >= max {
                    continue;
                }
                user_count = Some(n);
            }
            match gpus_left.as_mut() {
                Some(left) if e.gpus > *left => break,
                Some(left) => *left -= e.gpus,
                None => {}
            }
            if let Some(n) = user_count {
                *n += 1;
            }
            free -= 1;
            out.push(e.id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(queue: &str, user: &str, priority: u8, number: i64) -> Entry {
        Entry {
            id: Uuid::now_v7(),
            queue: queue.into(),
            user: user.into(),
            priority,
            number,
            not_before: None,
            after: Vec::new(),
            gpus: 0,
        }
    }

    fn limit(name: &str, max: u32, per_user: Option<u32>) -> QueueLimit {
        QueueLimit {
            name: name.into(),
            max_concurrent: max,
            max_per_user: per_user,
            paused: false,
        }
    }

    #[test]
    fn highest_priority_first_then_oldest() {
        let mut ix = PendingIndex::default();
        let low = entry("default", "a", 10, 1);
        let high_new = entry("default", "a", 90, 3);
        let high_old = entry("default", "a", 90, 2);
        for e in [&low, &high_new, &high_old] {
            ix.upsert(e.clone());
        }
        let none = HashSet::new();
        let got = decide(
            &ix,
            &[limit("default", 2, None)],
            &Usage::default(),
            Utc::now(),
            &none,
            &none,
        );
        assert_eq!(got, [high_old.id, high_new.id]);
        // A priority change re-sorts.
        let mut raised = low.clone();
        raised.priority = 100;
        ix.upsert(raised);
        let got = decide(
            &ix,
            &[limit("default", 1, None)],
            &Usage::default(),
            Utc::now(),
            &none,
            &none,
        );
        assert_eq!(got, [low.id]);
    }

    #[test]
    fn queue_and_user_limits_paused_queues_backoffs_and_dependencies() {
        let mut ix = PendingIndex::default();
        let a1 = entry("gpu", "alice", 50, 1);
        let a2 = entry("gpu", "alice", 50, 2);
        let b1 = entry("gpu", "bob", 50, 3);
        let mut waiting = entry("cpu", "bob", 50, 4);
        waiting.after = vec![a1.id];
        let mut backing_off = entry("cpu", "bob", 50, 5);
        backing_off.not_before = Some(Utc::now() + chrono::Duration::seconds(60));
        for e in [&a1, &a2, &b1, &waiting, &backing_off] {
            ix.upsert(e.clone());
        }
        let mut usage = Usage::default();
        usage.take("gpu", "bob");
        let none = HashSet::new();
        let limits = [limit("gpu", 3, Some(1)), limit("cpu", 0, None)];
        let got = decide(&ix, &limits, &usage, Utc::now(), &none, &none);
        // bob already has his one gpu slot; alice gets one.
        assert_eq!(got, [a1.id]);
        let done = HashSet::from([a1.id]);
        let got = decide(&ix, &limits, &usage, Utc::now(), &none, &done);
        assert_eq!(got, [a1.id, waiting.id]);
        let mut paused = limits.clone();
        paused[0].paused = true;
        let got = decide(&ix, &paused, &usage, Utc::now(), &none, &done);
        assert_eq!(got, [waiting.id]);
        assert_eq!((ix.len(), ix.pending_in("gpu")), (5, 3));
        ix.remove(a1.id);
        assert_eq!(ix.pending_in("gpu"), 2);
    }

    #[test]
    fn a_job_waiting_for_gpus_blocks_its_own_queue_only() {
        let mut ix = PendingIndex::default();
        let mut big = entry("a", "u", 90, 1);
        big.gpus = 3;
        let mut small = entry("a", "u", 50, 2);
        small.gpus = 1;
        let mut other = entry("b", "u", 50, 3);
        other.gpus = 2;
        let mut cpu = entry("b", "u", 40, 4);
        cpu.gpus = 0;
        for e in [&big, &small, &other, &cpu] {
            ix.upsert(e.clone());
        }
        let none = HashSet::new();
        let limits = [limit("a", 0, None), limit("b", 0, None)];
        let mut usage = Usage {
            free_gpus: Some(2),
            ..Usage::default()
        };
        let got = decide(&ix, &limits, &usage, Utc::now(), &none, &none);
        // `big` does not fit: `small` waits behind it; queue b goes on.
        assert_eq!(got, [other.id, cpu.id]);
        usage.free_gpus = Some(4);
        let got = decide(&ix, &limits, &usage, Utc::now(), &none, &none);
        // Queue b's head now waits for GPUs queue a took.
        assert_eq!(got, [big.id, small.id]);
        usage.free_gpus = None;
        let got = decide(&ix, &limits, &usage, Utc::now(), &none, &none);
        assert_eq!(got.len(), 4);
    }
}
