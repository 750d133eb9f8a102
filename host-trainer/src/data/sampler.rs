//! Batch composition with lesion oversampling: most ISLES slices hold no lesion, so each batch
//! reserves a share of its slots for slices that do.
//!
//! An epoch has `ceil(n_train / batch_size)` batches of exactly `batch_size` slices. In each
//! batch, `round(lesion_fraction · batch_size)` slots are filled from a shuffled queue of the
//! lesion slices and the rest from a shuffled queue of all training slices (lesion or not), so
//! at least that fraction of every batch shows lesion. A queue that runs out is reshuffled and
//! restarted. The order is a pure function of `(seed, epoch)`.

use crate::rng::{Rng, stream};

/// Plans the batches of each epoch.
#[derive(Debug, Clone)]
pub struct LesionSampler {
    all: Vec<usize>,
    lesion: Vec<usize>,
    batch_size: usize,
    lesion_fraction: f64,
    seed: u64,
}

/// A shuffled queue that refills itself from `items`.
struct Queue<'a> {
    items: &'a [usize],
    order: Vec<usize>,
    next: usize,
}

impl<'a> Queue<'a> {
    fn new(items: &'a [usize], rng: &mut Rng) -> Queue<'a> {
        let mut order = items.to_vec();
        rng.shuffle(&mut order);
        Queue {
            items,
            order,
            next: 0,
        }
    }

    fn pop(&mut self, rng: &mut Rng) -> Option<usize> {
        if self.items.is_empty() {
            return None;
        }
        if self.next >= self.order.len() {
            self.order.clear();
            self.order.extend_from_slice(self.items);
            rng.shuffle(&mut self.order);
            self.next = 0;
        }
        let item = self.order.get(self.next).copied();
        self.next += 1;
        item
    }
}

impl LesionSampler {
    /// A sampler over the training slices `train` (global slice indices), of which
    /// `lesion` hold lesion. `lesion_fraction` is clamped to `[0, 1]`; `batch_size ≥ 1`.
    pub fn new(
        train: Vec<usize>,
        lesion: Vec<usize>,
        batch_size: usize,
        lesion_fraction: f64,
        seed: u64,
    ) -> LesionSampler {
        let lesion_fraction = if lesion_fraction.is_finite() {
            lesion_fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        LesionSampler {
            all: train,
            lesion,
            batch_size: batch_size.max(1),
            lesion_fraction,
            seed,
        }
    }

    /// Batches per epoch: `ceil(n_train / batch_size)`.
    pub fn batches_per_epoch(&self) -> usize {
        self.all.len().div_ceil(self.batch_size)
    }

    /// Slots per batch reserved for lesion slices (0 when there are none).
    pub fn lesion_slots(&self) -> usize {
        if self.lesion.is_empty() {
            0
        } else {
            ((self.lesion_fraction * self.batch_size as f64).round() as usize).min(self.batch_size)
        }
    }

    /// The batches of `epoch` (0-based), each `batch_size` global slice indices.
    pub fn epoch_batches(&self, epoch: u32) -> Vec<Vec<usize>> {
        let mut rng = Rng::stream(self.seed, &[stream::SAMPLER, u64::from(epoch)]);
        let mut all = Queue::new(&self.all, &mut rng);
        let mut lesion = Queue::new(&self.lesion, &mut rng);
        let k = self.lesion_slots();
        (0..self.batches_per_epoch())
            .map(|_| {
                let mut batch: Vec<usize> = (0..k).filter_map(|_| lesion.pop(&mut rng)).collect();
                while batch.len() < self.batch_size {
                    match all.pop(&mut rng) {
                        Some(s) => batch.push(s),
                        None => break,
                    }
                }
                rng.shuffle(&mut batch);
                batch
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_the_lesion_share_and_are_reproducible() {
        let train: Vec<usize> = (100..150).collect();
        let lesion: Vec<usize> = (100..105).collect();
        let s = LesionSampler::new(train.clone(), lesion.clone(), 8, 0.5, 3);
        let batches = s.epoch_batches(0);
        assert_eq!(batches.len(), 7);
        for b in &batches {
            assert_eq!(b.len(), 8);
            assert!(b.iter().filter(|i| lesion.contains(i)).count() >= 4);
            assert!(b.iter().all(|i| train.contains(i)));
        }
        assert_eq!(batches, s.epoch_batches(0));
        assert_ne!(batches, s.epoch_batches(1));
        // Without lesion slices the batches are plain shuffles covering every slice.
        let plain = LesionSampler::new(train.clone(), vec![], 10, 0.5, 3);
        let mut seen: Vec<usize> = plain.epoch_batches(2).concat();
        seen.sort_unstable();
        assert_eq!(seen, train);
    }
}
