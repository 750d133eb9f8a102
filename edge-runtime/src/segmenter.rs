//! What the edge segments with: one model, or an ensemble of models that share one
//! preprocessing contract, optionally with flip test-time augmentation (TTA). Per slice it
//! returns the lesion probability on the model grid, averaged over every member and every
//! augmentation, which `SliceMasker::mask_probability` turns into the mask exactly as for
//! a single model.
//!
//! Memory: besides each member's own tract state (fixed per model), four buffers sized
//! once per study (`C · H · W` flipped input, `K · H · W` logits, two `H · W` probability
//! planes), whatever the number of slices.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use strokeseg_shared::model_meta::ModelMetadata;
use strokeseg_shared::postprocess::lesion_probability_from_logits;

use crate::error::ModelError;
use crate::model::SegModel;

/// Test-time augmentation: which extra views of each slice every member also sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Tta {
    /// The slice as it is.
    #[default]
    None,
    /// The slice and its left–right mirror (flipped along the model grid's x axis, the
    /// patient's left–right), the mirror's probability flipped back before averaging.
    Flip,
}

impl Tta {
    /// Runs per member and slice.
    pub fn n_views(self) -> usize {
        match self {
            Tta::None => 1,
            Tta::Flip => 2,
        }
    }
}

/// One member of an ensemble, as the report names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSummary {
    /// A path, or `embedded default model`.
    pub source: String,
    /// SHA-256 of the member's ONNX bytes (hex).
    pub sha256: String,
}

/// One or more [`SegModel`]s with the same metadata contract, and a [`Tta`].
#[derive(Debug)]
pub struct Segmenter {
    members: Vec<SegModel>,
    tta: Tta,
    flipped: Vec<f32>,
    logits: Vec<f32>,
    prob: Vec<f32>,
}

impl From<SegModel> for Segmenter {
    fn from(model: SegModel) -> Self {
        Segmenter::with_buffers(vec![model], Tta::None)
    }
}

impl Segmenter {
    /// An ensemble of `members` (at least one) run with `tta`. Every member must take the
    /// same input and give the same output as the first: preprocessing, input shape, class
    /// names and postprocessing equal, or [`ModelError::EnsembleMismatch`] names the member
    /// and what differs.
    pub fn new(members: Vec<SegModel>, tta: Tta) -> Result<Segmenter, ModelError> {
        let first = members.first().ok_or(ModelError::NoModel)?;
        let meta = first.metadata();
        for other in &members[1..] {
            if let Some(what) = contract_difference(meta, other.metadata()) {
                return Err(ModelError::EnsembleMismatch {
                    first: first.source().to_owned(),
                    other: other.source().to_owned(),
                    what,
                });
            }
        }
        Ok(Segmenter::with_buffers(members, tta))
    }

    /// The segmenter with its per-study buffers; `members` is not empty and its contracts
    /// agree (checked by the callers).
    fn with_buffers(members: Vec<SegModel>, tta: Tta) -> Segmenter {
        let (input_len, plane, n_classes) = members.first().map_or((0, 0, 0), |m| {
            let [_, _, h, w] = m.metadata().input_shape;
            (m.input_len(), h * w, m.n_classes())
        });
        Segmenter {
            flipped: vec![0.0; if tta == Tta::Flip { input_len } else { 0 }],
            logits: vec![0.0; n_classes * plane],
            prob: vec![0.0; plane],
            members,
            tta,
        }
    }

    /// Loads every file of `paths` (`None` alone: the embedded default model) and builds
    /// the ensemble.
    pub fn load(paths: &[PathBuf], tta: Tta) -> Result<Segmenter, ModelError> {
        let members = if paths.is_empty() {
            vec![SegModel::embedded()?]
        } else {
            paths
                .iter()
                .map(|p| SegModel::from_path(p))
                .collect::<Result<Vec<_>, _>>()?
        };
        Segmenter::new(members, tta)
    }

    /// The metadata every member shares (the first member's name and version).
    pub fn metadata(&self) -> &ModelMetadata {
        self.first().metadata()
    }
    /// The members, in the order given.
    pub fn members(&self) -> &[SegModel] {
        &self.members
    }
    /// The test-time augmentation.
    pub fn tta(&self) -> Tta {
        self.tta
    }
    /// Where the models came from: the one source, or the members' joined by ` + `.
    pub fn source(&self) -> String {
        let sources: Vec<&str> = self.members.iter().map(SegModel::source).collect();
        sources.join(" + ")
    }
    /// `fp32` or `int8` as the members' metadata say; `mixed` when they differ.
    pub fn precision(&self) -> String {
        let first = &self.metadata().precision;
        if self
            .members
            .iter()
            .all(|m| &m.metadata().precision == first)
        {
            first.clone()
        } else {
            "mixed".to_owned()
        }
    }
    /// The SHA-256 (hex) that identifies what segments: a single model's file hash; for an
    /// ensemble, the SHA-256 of its members' hex hashes, one per line in member order.
    pub fn sha256(&self) -> String {
        match self.members.as_slice() {
            [only] => only.sha256().to_owned(),
            members => {
                let lines: String = members
                    .iter()
                    .map(|m| format!("{}\n", m.sha256()))
                    .collect();
                strokeseg_io::sha256_hex(lines.as_bytes())
            }
        }
    }
    /// The members as the report lists them (empty for a single model).
    pub fn member_summaries(&self) -> Vec<MemberSummary> {
        if self.members.len() < 2 {
            return Vec::new();
        }
        self.members
            .iter()
            .map(|m| MemberSummary {
                source: m.source().to_owned(),
                sha256: m.sha256().to_owned(),
            })
            .collect()
    }
    /// Values in one input, `C · H · W`.
    pub fn input_len(&self) -> usize {
        self.first().input_len()
    }
    /// Network runs per slice: members × views.
    pub fn runs_per_slice(&self) -> usize {
        self.members.len() * self.tta.n_views()
    }

    fn first(&self) -> &SegModel {
        // `new` refuses an empty member list.
        &self.members[0]
    }

    /// Runs one slice: `input` is `[C, H, W]` (the output of `prepare_model_input`); the
    /// mean lesion probability `[H, W]` over members and views is written into `prob_out`.
    pub fn lesion_probability(
        &mut self,
        slice_idx: usize,
        input: &[f32],
        prob_out: &mut [f32],
    ) -> Result<(), ModelError> {
        let [_, c, h, w] = self.first().metadata().input_shape;
        let plane = h * w;
        if prob_out.len() != plane || input.len() != c * plane {
            return Err(ModelError::Inference {
                source_name: self.source(),
                slice_idx,
                reason: format!(
                    "buffers of {} input and {} output values, the models take {} and give {plane}",
                    input.len(),
                    prob_out.len(),
                    c * plane
                ),
            });
        }
        if self.tta == Tta::Flip {
            flip_rows(input, w, &mut self.flipped);
        }
        prob_out.fill(0.0);
        for member in &mut self.members {
            let n_classes = member.n_classes();
            for view in 0..self.tta.n_views() {
                let flipped = view == 1;
                let x = if flipped { &self.flipped } else { input };
                member.run_slice(slice_idx, x, &mut self.logits)?;
                lesion_probability_from_logits(&self.logits, n_classes, plane, &mut self.prob)
                    .map_err(|e| ModelError::Inference {
                        source_name: member.source().to_owned(),
                        slice_idx,
                        reason: e.to_string(),
                    })?;
                if flipped {
                    for (dst, src) in prob_out.chunks_exact_mut(w).zip(self.prob.chunks_exact(w)) {
                        for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                            *d += s;
                        }
                    }
                } else {
                    for (d, s) in prob_out.iter_mut().zip(&self.prob) {
                        *d += s;
                    }
                }
            }
        }
        let scale = 1.0 / self.runs_per_slice() as f32;
        for p in prob_out.iter_mut() {
            *p *= scale;
        }
        Ok(())
    }
}

/// `src` `[…, W]` with every row of `w` values reversed, into `dst` (same length).
fn flip_rows(src: &[f32], w: usize, dst: &mut [f32]) {
    for (d, s) in dst.chunks_exact_mut(w).zip(src.chunks_exact(w)) {
        for (a, b) in d.iter_mut().zip(s.iter().rev()) {
            *a = *b;
        }
    }
}

/// What differs between two members' contracts, if anything.
fn contract_difference(a: &ModelMetadata, b: &ModelMetadata) -> Option<String> {
    if a.input_shape != b.input_shape {
        return Some(format!(
            "input shape {:?} vs {:?}",
            a.input_shape, b.input_shape
        ));
    }
    if a.class_names != b.class_names {
        return Some(format!(
            "class names {:?} vs {:?}",
            a.class_names, b.class_names
        ));
    }
    if a.preprocess != b.preprocess {
        return Some("preprocessing (channels, normalisation or grid) differs".to_owned());
    }
    if a.postprocess != b.postprocess {
        return Some(format!(
            "postprocessing {:?} vs {:?}",
            a.postprocess, b.postprocess
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use strokeseg_model::fixture::{FixtureOptions, fixture_model};

    fn fixture(options: &FixtureOptions) -> SegModel {
        SegModel::from_bytes(&fixture_model(options), "fixture").unwrap()
    }

    /// An input whose CBF and Tmax say "lesion" on the left third of the grid only.
    fn left_lesion_input(seg: &Segmenter) -> Vec<f32> {
        let [_, c, h, w] = seg.metadata().input_shape;
        let config = &seg.metadata().preprocess;
        let mut input = vec![0.3f32; c * h * w];
        let cbf = config
            .channel_index(strokeseg_shared::Modality::Cbf)
            .unwrap();
        let tmax = config
            .channel_index(strokeseg_shared::Modality::Tmax)
            .unwrap();
        for y in 0..h {
            for x in 0..w / 3 {
                input[cbf * h * w + y * w + x] = 0.02;
                input[tmax * h * w + y * w + x] = 0.9;
            }
        }
        input
    }

    #[test]
    fn flip_tta_and_an_ensemble_of_copies_give_the_single_model_probability_where_it_is_sure() {
        let options = FixtureOptions::default();
        let mut single = Segmenter::from(fixture(&options));
        let input = left_lesion_input(&single);
        let [_, _, h, w] = single.metadata().input_shape;
        let mut p1 = vec![0f32; h * w];
        single.lesion_probability(0, &input, &mut p1).unwrap();
        let mut tta =
            Segmenter::new(vec![fixture(&options), fixture(&options)], Tta::Flip).unwrap();
        assert_eq!(tta.runs_per_slice(), 4);
        let mut p4 = vec![0f32; h * w];
        tta.lesion_probability(0, &input, &mut p4).unwrap();
        // The fixture is a per-pixel rule: the mirrored view, flipped back, agrees with the
        // plain one away from the lesion border, so the mean equals the single run there.
        let row = h / 2;
        for x in [2, w / 6, w / 2, w - 3] {
            let (a, b) = (p1[row * w + x], p4[row * w + x]);
            assert!(
                (a - b).abs() < 1e-3,
                "x {x}: single {a} vs ensemble+flip {b}"
            );
        }
        assert!(p4[row * w + 2] > 0.9 && p4[row * w + w - 3] < 0.1);
        assert_eq!(tta.member_summaries().len(), 2);
        assert_ne!(tta.sha256(), single.sha256());
        assert!(single.member_summaries().is_empty());
    }

    #[test]
    fn flip_tta_mirrors_back_what_the_mirrored_view_saw() {
        // Without the flip back, the mirrored view would put lesion on the right side.
        let mut tta = Segmenter::new(vec![fixture(&FixtureOptions::default())], Tta::Flip).unwrap();
        let input = left_lesion_input(&tta);
        let [_, _, h, w] = tta.metadata().input_shape;
        let mut p = vec![0f32; h * w];
        tta.lesion_probability(0, &input, &mut p).unwrap();
        let row = h / 2;
        assert!(p[row * w + 1] > 0.9, "left {}", p[row * w + 1]);
        assert!(p[row * w + w - 2] < 0.1, "right {}", p[row * w + w - 2]);
    }

    #[test]
    fn members_with_different_contracts_are_refused_naming_what_differs() {
        let a = fixture(&FixtureOptions::default());
        let b = fixture(&FixtureOptions {
            preprocess: strokeseg_shared::PreprocessConfig {
                input_height: 96,
                input_width: 96,
                ..strokeseg_shared::PreprocessConfig::default()
            },
            ..FixtureOptions::default()
        });
        let err = Segmenter::new(vec![a, b], Tta::None).unwrap_err();
        assert!(
            matches!(&err, ModelError::EnsembleMismatch { what, .. } if what.contains("input shape")),
            "{err}"
        );
        assert!(matches!(
            Segmenter::new(Vec::new(), Tta::None),
            Err(ModelError::NoModel)
        ));
    }

    #[test]
    fn wrong_buffer_lengths_are_an_inference_error() {
        let mut seg = Segmenter::from(fixture(&FixtureOptions::default()));
        let mut p = vec![0f32; 10];
        assert!(matches!(
            seg.lesion_probability(4, &[0.0; 10], &mut p),
            Err(ModelError::Inference { slice_idx: 4, .. })
        ));
    }
}
