//! Batch composition with lesion oversampling: most ISLES slices hold no lesion, so each batch
//! reserves a share of its slots for slices that do, and those slots are shared out by lesion
//! size, so that small lesions are not drowned by big ones nor the other way round.
//!
//! An epoch has `ceil(n_train / batch_size)` batches of exactly `batch_size` slices. In each
//! batch, `round(lesion_fraction · batch_size)` slots are filled with lesion slices and the rest
//! from a shuffled queue of all training slices (lesion or not), so at least that fraction of
//! every batch shows lesion. A queue that runs out is reshuffled and restarted. The order is a
//! pure function of `(seed, epoch)`.
//!
//! Lesion size strata ([`size_strata`]): the lesion slices are binned by their lesion area on
//! the model grid into `n_strata` bins of equal width in log area between the smallest and the
//! largest area; sweeping from the smallest areas up, a bin with fewer than
//! `ceil(n_lesion / (4 · n_strata))` slices is merged into the next (the last into the one
//! before). Each lesion slot picks a stratum uniformly, then the next slice of that stratum's
//! shuffled queue. So every stratum gets an equal share of the lesion slots, and no slice is
//! drawn more than 4 times as often as uniform sampling over the lesion slices would draw it.
//! One stratum is uniform sampling over the lesion slices (the recipe before strata existed,
//! draw for draw).

use crate::rng::{Rng, stream};

/// A training slice that holds lesion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LesionSlice {
    /// Global slice index.
    pub slice: usize,
    /// Lesion pixels on the model grid (≥ 1).
    pub lesion_pixels: u64,
}

/// The lesion slices grouped into at most `n_strata` strata of similar lesion area, smallest
/// areas first (see the module docs); each stratum keeps the input order of its slices and
/// holds at least `ceil(n / (4 · n_strata))` of them. Empty input gives no strata; one stratum
/// (or fewer than two slices, or a single area) gives all slices in one.
pub fn size_strata(lesion: &[LesionSlice], n_strata: usize) -> Vec<Vec<usize>> {
    if lesion.is_empty() {
        return Vec::new();
    }
    let n_strata = n_strata.max(1);
    let log_area = |s: &LesionSlice| (s.lesion_pixels.max(1) as f64).ln();
    let lo = lesion.iter().map(log_area).fold(f64::INFINITY, f64::min);
    let hi = lesion
        .iter()
        .map(log_area)
        .fold(f64::NEG_INFINITY, f64::max);
    if n_strata == 1 || hi - lo < 1e-9 {
        return vec![lesion.iter().map(|s| s.slice).collect()];
    }
    let mut bins = vec![Vec::new(); n_strata];
    for s in lesion {
        let k = ((log_area(s) - lo) / (hi - lo) * n_strata as f64) as usize;
        if let Some(bin) = bins.get_mut(k.min(n_strata - 1)) {
            bin.push(s.slice);
        }
    }
    let min_count = lesion.len().div_ceil(4 * n_strata);
    let mut strata: Vec<Vec<usize>> = Vec::new();
    let mut current = Vec::new();
    for bin in bins {
        current.extend(bin);
        if current.len() >= min_count {
            strata.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        match strata.last_mut() {
            Some(last) => last.extend(current),
            None => strata.push(current),
        }
    }
    strata
}

/// Plans the batches of each epoch.
#[derive(Debug, Clone)]
pub struct LesionSampler {
    all: Vec<usize>,
    /// Lesion slices by size stratum, smallest areas first.
    strata: Vec<Vec<usize>>,
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
    /// A sampler over the training slices `train` (global slice indices), of which `lesion`
    /// hold lesion, sampled in `n_strata` lesion size strata ([`size_strata`]; 1: uniformly).
    /// `lesion_fraction` is clamped to `[0, 1]`; `batch_size ≥ 1`.
    pub fn new(
        train: Vec<usize>,
        lesion: &[LesionSlice],
        n_strata: usize,
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
            strata: size_strata(lesion, n_strata),
            batch_size: batch_size.max(1),
            lesion_fraction,
            seed,
        }
    }

    /// Batches per epoch: `ceil(n_train / batch_size)`.
    pub fn batches_per_epoch(&self) -> usize {
        self.all.len().div_ceil(self.batch_size)
    }

    /// The lesion slices by size stratum, smallest areas first.
    pub fn strata(&self) -> &[Vec<usize>] {
        &self.strata
    }

    /// Slots per batch reserved for lesion slices (0 when there are none).
    pub fn lesion_slots(&self) -> usize {
        if self.strata.is_empty() {
            0
        } else {
            ((self.lesion_fraction * self.batch_size as f64).round() as usize).min(self.batch_size)
        }
    }

    /// The batches of `epoch` (0-based), each `batch_size` global slice indices.
    pub fn epoch_batches(&self, epoch: u32) -> Vec<Vec<usize>> {
        let mut rng = Rng::stream(self.seed, &[stream::SAMPLER, u64::from(epoch)]);
        let mut all = Queue::new(&self.all, &mut rng);
        let mut strata: Vec<Queue<'_>> = self
            .strata
            .iter()
            .map(|s| Queue::new(s, &mut rng))
            .collect();
        let n_strata = strata.len();
        let k = self.lesion_slots();
        (0..self.batches_per_epoch())
            .map(|_| {
                let mut batch: Vec<usize> = (0..k)
                    .filter_map(|_| {
                        // One stratum draws nothing: the uniform recipe, draw for draw.
                        let pick = if n_strata > 1 { rng.below(n_strata) } else { 0 };
                        strata.get_mut(pick).and_then(|q| q.pop(&mut rng))
                    })
                    .collect();
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

    fn with_area(slices: &[usize], area: impl Fn(usize) -> u64) -> Vec<LesionSlice> {
        slices
            .iter()
            .map(|&slice| LesionSlice {
                slice,
                lesion_pixels: area(slice),
            })
            .collect()
    }

    /// How often each lesion slice is drawn over `epochs` epochs by a sampler whose slots are
    /// all lesion slots (`lesion_fraction` 1, the training slices are the lesion slices).
    fn lesion_draws(lesion: &[LesionSlice], n_strata: usize, epochs: u32) -> Vec<(usize, u64)> {
        let train: Vec<usize> = lesion.iter().map(|s| s.slice).collect();
        let sampler = LesionSampler::new(train, lesion, n_strata, 10, 1.0, 17);
        let mut counts: Vec<(usize, u64)> = lesion.iter().map(|s| (s.slice, 0)).collect();
        for epoch in 0..epochs {
            for slice in sampler.epoch_batches(epoch).concat() {
                if let Some(c) = counts.iter_mut().find(|(s, _)| *s == slice) {
                    c.1 += 1;
                }
            }
        }
        counts
    }

    #[test]
    fn size_strata_share_the_lesion_slots_equally() {
        // 90 slices of big lesions (500–2000 px) and 10 of small ones (5–20 px).
        let slices: Vec<usize> = (0..100).collect();
        let area = |s: usize| {
            if s % 10 == 3 {
                5 + (s as u64 % 16)
            } else {
                500 + 15 * s as u64
            }
        };
        let lesion = with_area(&slices, area);
        let strata = size_strata(&lesion, 3);
        // Log-area bins: the small ones, (none in the middle), the big ones.
        assert_eq!(strata.len(), 2);
        assert_eq!(strata[0].len(), 10);
        assert!(strata[0].iter().all(|&s| area(s) <= 20));
        assert!(strata[1].iter().all(|&s| area(s) >= 500));
        let draws = lesion_draws(&lesion, 3, 200);
        let total: u64 = draws.iter().map(|d| d.1).sum();
        let small: u64 = draws.iter().filter(|d| area(d.0) <= 20).map(|d| d.1).sum();
        let share = small as f64 / total as f64;
        // Uniform over slices would give the small lesions 10 %; the strata give them half.
        assert!((share - 0.5).abs() < 0.03, "small-lesion share {share}");
        let uniform = lesion_draws(&lesion, 1, 200);
        let small_uniform: u64 = uniform
            .iter()
            .filter(|d| area(d.0) <= 20)
            .map(|d| d.1)
            .sum();
        let share_uniform = small_uniform as f64 / total as f64;
        assert!((share_uniform - 0.1).abs() < 0.01, "{share_uniform}");
        // Inside a stratum the slices are drawn about equally often (a fresh queue per epoch;
        // the big stratum gets about 0.55 passes per epoch, hence the spread).
        for stratum in &strata {
            let counts: Vec<u64> = draws
                .iter()
                .filter(|d| stratum.contains(&d.0))
                .map(|d| d.1)
                .collect();
            let mean = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
            assert!(
                counts
                    .iter()
                    .all(|&c| (c as f64 - mean).abs() <= 0.25 * mean)
            );
        }
    }

    #[test]
    fn a_lone_outlier_is_merged_and_never_drawn_more_than_four_times_uniform() {
        // One 1-pixel slice among 59 big ones, and three equal strata of 20 in log area.
        let slices: Vec<usize> = (0..60).collect();
        let outlier = with_area(&slices, |s| if s == 0 { 1 } else { 1000 + s as u64 });
        let strata = size_strata(&outlier, 3);
        let min_count = 60usize.div_ceil(12);
        assert!(strata.iter().all(|s| s.len() >= min_count), "{strata:?}");
        assert_eq!(strata.iter().map(Vec::len).sum::<usize>(), 60);
        let draws = lesion_draws(&outlier, 3, 100);
        let total: u64 = draws.iter().map(|d| d.1).sum();
        let uniform_rate = total as f64 / 60.0;
        let max = draws.iter().map(|d| d.1).max().unwrap_or(0) as f64;
        assert!(max <= 4.0 * uniform_rate + 1.0, "{max} vs {uniform_rate}");

        let spread = with_area(&slices, |s| [10, 100, 1000][s % 3] + s as u64 % 3);
        let strata = size_strata(&spread, 3);
        assert_eq!(
            strata.iter().map(Vec::len).collect::<Vec<_>>(),
            [20, 20, 20]
        );
        // Degenerate inputs: nothing, one area, one stratum.
        assert!(size_strata(&[], 3).is_empty());
        assert_eq!(size_strata(&with_area(&slices, |_| 7), 3).len(), 1);
        assert_eq!(size_strata(&spread, 1), [slices]);
    }

    #[test]
    fn batches_hold_the_lesion_share_and_are_reproducible() {
        let train: Vec<usize> = (100..150).collect();
        let lesion: Vec<usize> = (100..105).collect();
        let s = LesionSampler::new(train.clone(), &with_area(&lesion, |_| 40), 3, 8, 0.5, 3);
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
        let plain = LesionSampler::new(train.clone(), &[], 3, 10, 0.5, 3);
        let mut seen: Vec<usize> = plain.epoch_batches(2).concat();
        seen.sort_unstable();
        assert_eq!(seen, train);
    }

    #[test]
    fn a_train_config_without_the_setting_reads_one_stratum() {
        let config = crate::run::TrainConfig::default();
        assert_eq!(config.lesion_size_strata, 3);
        let mut old = serde_json::to_value(&config).unwrap();
        let fields = old.as_object_mut().unwrap();
        assert!(fields.remove("lesion_size_strata").is_some());
        let read: crate::run::TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!(read.lesion_size_strata, 1);
        let zero = crate::run::TrainConfig {
            lesion_size_strata: 0,
            ..config
        };
        assert!(zero.validate().is_err());
    }
}
