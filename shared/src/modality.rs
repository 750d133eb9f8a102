//! The imaging modalities of an ISLES 2018 CTP study and their on-disk conventions.

/// One image of a CTP study. ISLES 2018 names each file `SMIR.Brain.XX.O.<tag>.<id>.nii`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Modality {
    /// Plain (non-contrast) CT in Hounsfield units; ISLES stores it as int32.
    Ct,
    /// Cerebral blood flow, mL/100 g/min up to an unknown per-case gain; ISLES: uint16.
    Cbf,
    /// Cerebral blood volume, mL/100 g up to an unknown per-case gain; ISLES: uint16.
    Cbv,
    /// Mean transit time in seconds; ISLES: float64.
    Mtt,
    /// Time to maximum of the residue function in seconds; ISLES: float64.
    Tmax,
    /// The raw 4D perfusion series (X, Y, Z, 1, T); never needed for segmentation.
    Pwi,
    /// Ground-truth lesion mask (from follow-up DWI); ISLES: uint8.
    Ot,
}

impl Modality {
    /// Every modality, in ISLES order.
    pub const ALL: [Modality; 7] = [
        Modality::Ct,
        Modality::Cbf,
        Modality::Cbv,
        Modality::Mtt,
        Modality::Tmax,
        Modality::Pwi,
        Modality::Ot,
    ];

    /// The four perfusion maps.
    pub const PERFUSION_MAPS: [Modality; 4] =
        [Modality::Cbf, Modality::Cbv, Modality::Mtt, Modality::Tmax];

    /// The ISLES 2018 tag that names the file (`CT_CBF`, `OT`, …).
    pub const fn isles_tag(self) -> &'static str {
        match self {
            Modality::Ct => "CT",
            Modality::Cbf => "CT_CBF",
            Modality::Cbv => "CT_CBV",
            Modality::Mtt => "CT_MTT",
            Modality::Tmax => "CT_Tmax",
            Modality::Pwi => "CT_4DPWI",
            Modality::Ot => "OT",
        }
    }

    /// Short lowercase name for plain folders and configs (`ct`, `cbf`, `tmax`, …).
    pub const fn short_name(self) -> &'static str {
        match self {
            Modality::Ct => "ct",
            Modality::Cbf => "cbf",
            Modality::Cbv => "cbv",
            Modality::Mtt => "mtt",
            Modality::Tmax => "tmax",
            Modality::Pwi => "pwi",
            Modality::Ot => "ot",
        }
    }

    /// Parses an ISLES tag (exact, case-sensitive as in the dataset, but also accepts
    /// case-insensitive matches such as `ct_tmax`) or a short name.
    pub fn parse(name: &str) -> Option<Modality> {
        Modality::ALL.into_iter().find(|m| {
            name.eq_ignore_ascii_case(m.isles_tag()) || name.eq_ignore_ascii_case(m.short_name())
        })
    }

    /// Whether this modality is a perfusion map (non-zero inside the brain).
    pub const fn is_perfusion_map(self) -> bool {
        matches!(
            self,
            Modality::Cbf | Modality::Cbv | Modality::Mtt | Modality::Tmax
        )
    }
}

impl core::fmt::Display for Modality {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.isles_tag())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_tags_and_short_names() {
        for m in Modality::ALL {
            assert_eq!(Modality::parse(m.isles_tag()), Some(m));
            assert_eq!(Modality::parse(m.short_name()), Some(m));
        }
        assert_eq!(Modality::parse("ct_tmax"), Some(Modality::Tmax));
        assert_eq!(Modality::parse("DWI"), None);
    }
}
