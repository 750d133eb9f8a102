//! Which device to run on: the `--device auto|cpu|cuda:N` flag, parsed, then resolved against the
//! devices libtorch sees.

use std::fmt;
use std::str::FromStr;

/// What the user asked for with `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first CUDA device when libtorch sees one, the CPU otherwise.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The CUDA device with this ordinal (`cuda` alone means ordinal 0).
    Cuda {
        /// 0-based index among the visible CUDA devices.
        ordinal: usize,
    },
}

/// Why a `--device` value could not be parsed or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The text is none of `auto`, `cpu`, `cuda`, `cuda:N`.
    #[error("unknown device `{input}`: expected auto, cpu, cuda or cuda:N")]
    Unknown {
        /// The text as given.
        input: String,
    },
    /// A CUDA device was asked for, but libtorch sees none (CPU-only build or no driver).
    #[error("cuda:{ordinal} requested but CUDA is not available to libtorch")]
    CudaUnavailable {
        /// The ordinal asked for.
        ordinal: usize,
    },
    /// The CUDA ordinal is past the last visible device.
    #[error("cuda:{ordinal} requested but only {n_devices} CUDA device(s) are visible")]
    NoSuchCudaDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// How many CUDA devices libtorch sees.
        n_devices: usize,
    },
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.trim().to_ascii_lowercase();
        let unknown = || DeviceError::Unknown {
            input: input.to_owned(),
        };
        match text.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda { ordinal: 0 }),
            _ => {
                let ordinal = text.strip_prefix("cuda:").ok_or_else(unknown)?;
                // `usize::from_str` accepts a leading `+`; a device ordinal is plain digits.
                if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(unknown());
                }
                let ordinal = ordinal.parse().map_err(|_| unknown())?;
                Ok(Self::Cuda { ordinal })
            }
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda { ordinal } => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl DeviceChoice {
    /// The tch device for this choice, given what libtorch sees on this machine.
    pub fn resolve(self) -> Result<tch::Device, DeviceError> {
        let n_devices = if tch::Cuda::is_available() {
            usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
        } else {
            0
        };
        self.resolve_with(n_devices)
    }

    /// [`Self::resolve`] for a machine with `n_cuda_devices` visible CUDA devices.
    pub fn resolve_with(self, n_cuda_devices: usize) -> Result<tch::Device, DeviceError> {
        match self {
            Self::Cpu => Ok(tch::Device::Cpu),
            Self::Auto if n_cuda_devices > 0 => Ok(tch::Device::Cuda(0)),
            Self::Auto => Ok(tch::Device::Cpu),
            Self::Cuda { ordinal } if n_cuda_devices == 0 => {
                Err(DeviceError::CudaUnavailable { ordinal })
            }
            Self::Cuda { ordinal } if ordinal >= n_cuda_devices => {
                Err(DeviceError::NoSuchCudaDevice {
                    ordinal,
                    n_devices: n_cuda_devices,
                })
            }
            Self::Cuda { ordinal } => Ok(tch::Device::Cuda(ordinal)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() -> Result<(), DeviceError> {
        assert_eq!("auto".parse::<DeviceChoice>()?, DeviceChoice::Auto);
        assert_eq!("CPU".parse::<DeviceChoice>()?, DeviceChoice::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceChoice>()?,
            DeviceChoice::Cuda { ordinal: 0 }
        );
        assert_eq!(
            " cuda:3 ".parse::<DeviceChoice>()?,
            DeviceChoice::Cuda { ordinal: 3 }
        );
        Ok(())
    }

    #[test]
    fn rejects_malformed_devices() {
        for bad in [
            "", "gpu", "cuda:", "cuda:x", "cuda:+1", "cuda:-1", "cuda:1:2", "mps",
        ] {
            assert_eq!(
                bad.parse::<DeviceChoice>(),
                Err(DeviceError::Unknown {
                    input: bad.to_owned()
                }),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn display_round_trips() -> Result<(), DeviceError> {
        for choice in [
            DeviceChoice::Auto,
            DeviceChoice::Cpu,
            DeviceChoice::Cuda { ordinal: 2 },
        ] {
            assert_eq!(choice.to_string().parse::<DeviceChoice>()?, choice);
        }
        Ok(())
    }

    #[test]
    fn resolves_against_the_visible_devices() {
        assert_eq!(DeviceChoice::Auto.resolve_with(0), Ok(tch::Device::Cpu));
        assert_eq!(DeviceChoice::Auto.resolve_with(2), Ok(tch::Device::Cuda(0)));
        assert_eq!(DeviceChoice::Cpu.resolve_with(2), Ok(tch::Device::Cpu));
        assert_eq!(
            DeviceChoice::Cuda { ordinal: 1 }.resolve_with(2),
            Ok(tch::Device::Cuda(1))
        );
        assert_eq!(
            DeviceChoice::Cuda { ordinal: 2 }.resolve_with(2),
            Err(DeviceError::NoSuchCudaDevice {
                ordinal: 2,
                n_devices: 2
            })
        );
        assert_eq!(
            DeviceChoice::Cuda { ordinal: 0 }.resolve_with(0),
            Err(DeviceError::CudaUnavailable { ordinal: 0 })
        );
    }
}
