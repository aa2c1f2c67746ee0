//! The scheduler's GPU book (subprocess runner): which GPUs each job that
//! may hold a slot was given, which are free, and which to give a launch.
//!
//! A GPU is held by a job from its launch until its trainer has exited:
//! the same jobs that hold slots (running, being launched, or a trainer
//! the runner still watches, whatever its job's status). Assignments come
//! from the database (`assigned_gpus`, written before the trainer starts),
//! so a restarted daemon rebuilds the book from re-adopted jobs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use uuid::Uuid;

use crate::gpus::Gpus;
use crate::model::{AssignedGpu, Job};

/// Assignments of the jobs that may hold GPUs.
pub struct GpuBook {
    gpus: Arc<Gpus>,
    held: HashMap<Uuid, Vec<AssignedGpu>>,
}

impl GpuBook {
    /// An empty book over the daemon's GPUs.
    pub fn new(gpus: Arc<Gpus>) -> Self {
        Self {
            gpus,
            held: HashMap::new(),
        }
    }

    /// Takes in the assignment a job's row records (a running job, or an
    /// ended one whose trainer still runs).
    pub fn note(&mut self, job: &Job) {
        if !job.sched.assigned_gpus.is_empty() {
            self.held.insert(job.id, job.sched.assigned_gpus.clone());
        }
    }

    /// Whether `id`'s assignment is known.
    pub fn knows(&self, id: Uuid) -> bool {
        self.held.contains_key(&id)
    }

    /// Forgets jobs that hold nothing any more.
    pub fn retain(&mut self, holding: &HashSet<Uuid>) {
        self.held.retain(|id, _| holding.contains(id));
    }

    /// Indices held by any of `holding`, with their holder.
    fn taken(&self, holding: &HashSet<Uuid>) -> HashMap<u32, Uuid> {
        let mut taken = HashMap::new();
        for (id, gpus) in self.held.iter().filter(|(id, _)| holding.contains(id)) {
            for g in gpus {
                taken.insert(g.index, *id);
            }
        }
        taken
    }

    /// How many GPUs none of `holding` holds.
    pub fn free(&self, holding: &HashSet<Uuid>) -> u32 {
        let taken = self.taken(holding);
        let free = self
            .gpus
            .inventory()
            .iter()
            .filter(|g| !taken.contains_key(&g.index))
            .count();
        u32::try_from(free).unwrap_or(u32::MAX)
    }

    /// Gives launch `id` `n` free GPUs (lowest indices first) and books
    /// them; `None` when fewer are free (the decision never asks for that).
    pub fn allocate(
        &mut self,
        id: Uuid,
        n: u32,
        holding: &HashSet<Uuid>,
    ) -> Option<Vec<AssignedGpu>> {
        let taken = self.taken(holding);
        let given: Vec<AssignedGpu> = self
            .gpus
            .inventory()
            .iter()
            .filter(|g| !taken.contains_key(&g.index))
            .take(n as usize)
            .map(|g| g.assigned())
            .collect();
        if given.len() < n as usize {
            return None;
        }
        self.held.insert(id, given.clone());
        Some(given)
    }

    /// Tells the shared view (API, `/metrics`, telemetry) who holds what.
    pub fn publish(&self, holding: &HashSet<Uuid>) {
        self.gpus.set_holders(self.taken(holding));
    }
}
