//! The trainer's stream labels for the project's one PRNG (`strokeseg_shared::rng`): fold
//! assignment, batch order, lesion oversampling and every augmentation parameter come from
//! `Rng::stream(seed, &[purpose, …])`, never from libtorch's process-global generator, so a
//! run is a pure function of its seed on every device and a resumed run draws exactly what
//! the uninterrupted run would have drawn (streams are derived, not advanced: skipping ahead
//! costs nothing).

pub use strokeseg_shared::rng::Rng;

/// Purposes of derived streams (the first word of [`Rng::stream`]'s path).
pub mod stream {
    /// Fold assignment of patients.
    pub const FOLDS: u64 = 1;
    /// Batch composition of one epoch.
    pub const SAMPLER: u64 = 2;
    /// Augmentation parameters of one training step.
    pub const AUGMENT: u64 = 3;
    /// Weight initialisation (seeds libtorch once, before the network is built).
    pub const INIT: u64 = 4;
}
