//! Status pins beside the scanner: busy, done, alert and fault lines, generic over
//! `embedded_hal::digital::OutputPin` (embedded-hal 1.0), driven by the segmenter and the
//! watch daemon.
//!
//! Pin sequences (each line is one `set_*` call, in this order):
//! - [`StatusSink::reset`] (daemon start, study rolled back): busy, done, alert, fault low.
//! - [`StatusSink::start`] (a study begins): done low, alert low, fault low, busy high.
//! - [`StatusSink::succeed`] (outputs published): alert high when the lesion volume ≥ the
//!   alert threshold (else low), done high, busy low.
//! - [`StatusSink::fail`] (the study went to `failed/` or the run failed, its model could
//!   not be loaded included): fault high, busy low.
//! - The daemon cannot start because its model cannot be loaded: reset, then fail.
//!
//! A pin that is not configured is skipped; without any pins the component is a no-op.
//! Backends (`[pins] backend` in the config, [`open_pins`]):
//! - `cdev` (default): the lines of a Linux GPIO character device, [`open_cdev_pins`]
//!   (cargo feature `gpio-cdev`);
//! - `log`: no hardware, [`LogPin`]s that log every level change (an emulated board, where
//!   qemu-user has no GPIO chip, tests, dry runs), [`open_log_pins`].

use std::convert::Infallible;

use embedded_hal::digital::OutputPin;

/// What the segmenter and the daemon report; implemented by [`StatusPins`].
pub trait StatusSink {
    /// Every line low (daemon start, or a study rolled back).
    fn reset(&mut self) {}
    /// A study is being processed.
    fn start(&mut self);
    /// A study finished and its outputs are published; `alert` when the lesion volume
    /// reached the alert threshold.
    fn succeed(&mut self, alert: bool);
    /// A study failed.
    fn fail(&mut self);
}

/// A sink that does nothing (no pins configured).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoStatus;

impl StatusSink for NoStatus {
    fn start(&mut self) {}
    fn succeed(&mut self, _alert: bool) {}
    fn fail(&mut self) {}
}

/// The four status lines; each is optional.
#[derive(Debug)]
pub struct StatusPins<P: OutputPin> {
    /// High while a study is processed.
    pub busy: Option<P>,
    /// High after a study succeeded, until the next one starts.
    pub done: Option<P>,
    /// High after a study whose lesion volume reached the alert threshold.
    pub alert: Option<P>,
    /// High after a study failed, until the next one starts.
    pub fault: Option<P>,
}

impl<P: OutputPin> StatusPins<P> {
    /// Pins from the four optional lines.
    pub fn new(busy: Option<P>, done: Option<P>, alert: Option<P>, fault: Option<P>) -> Self {
        StatusPins {
            busy,
            done,
            alert,
            fault,
        }
    }

    /// Gives the pins back (tests check the mocks with them).
    pub fn into_pins(self) -> [Option<P>; 4] {
        [self.busy, self.done, self.alert, self.fault]
    }
}

/// Sets one line; a pin error is logged, never fatal (a broken lamp must not stop
/// segmentation).
fn set<P: OutputPin>(pin: &mut Option<P>, name: &str, high: bool) {
    if let Some(p) = pin.as_mut() {
        let r = if high { p.set_high() } else { p.set_low() };
        if let Err(e) = r {
            tracing::warn!(pin = name, error = ?e, "status pin could not be set");
        }
    }
}

impl<P: OutputPin> StatusSink for StatusPins<P> {
    fn reset(&mut self) {
        set(&mut self.busy, "busy", false);
        set(&mut self.done, "done", false);
        set(&mut self.alert, "alert", false);
        set(&mut self.fault, "fault", false);
    }
    fn start(&mut self) {
        set(&mut self.done, "done", false);
        set(&mut self.alert, "alert", false);
        set(&mut self.fault, "fault", false);
        set(&mut self.busy, "busy", true);
    }
    fn succeed(&mut self, alert: bool) {
        set(&mut self.alert, "alert", alert);
        set(&mut self.done, "done", true);
        set(&mut self.busy, "busy", false);
    }
    fn fail(&mut self) {
        set(&mut self.fault, "fault", true);
        set(&mut self.busy, "busy", false);
    }
}

/// Which driver the status lines use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PinBackend {
    /// The lines of a GPIO character device (`chip` and the line offsets; needs the
    /// `gpio-cdev` build feature).
    #[default]
    Cdev,
    /// No hardware: [`LogPin`]s, one log line per level change.
    Log,
}

/// Where the status lines are: a backend, a GPIO character device and one line offset per
/// pin.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PinConfig {
    /// `cdev` (default) or `log`.
    #[serde(default)]
    pub backend: PinBackend,
    /// The GPIO chip, e.g. `/dev/gpiochip0` (`cdev` only).
    pub chip: Option<std::path::PathBuf>,
    /// Line offset of the busy pin.
    pub busy: Option<u32>,
    /// Line offset of the done pin.
    pub done: Option<u32>,
    /// Line offset of the alert pin.
    pub alert: Option<u32>,
    /// Line offset of the fault pin.
    pub fault: Option<u32>,
}

impl PinConfig {
    /// Whether any line is configured.
    pub fn any(&self) -> bool {
        self.busy.is_some() || self.done.is_some() || self.alert.is_some() || self.fault.is_some()
    }
}

/// Opens the status pins `config` describes with its backend: [`open_cdev_pins`] or
/// [`open_log_pins`].
pub fn open_pins(config: &PinConfig) -> Result<Box<dyn StatusSink + Send>, crate::EdgeError> {
    match config.backend {
        PinBackend::Cdev => open_cdev_pins(config),
        PinBackend::Log => Ok(Box::new(open_log_pins(config))),
    }
}

/// The `tracing` target of [`LogPin`]'s events.
pub const PIN_LOG_TARGET: &str = "strokeseg_edge::pins";

/// An output pin without hardware, for emulated boards, tests and dry runs. It starts low
/// (as the GPIO lines are requested) and logs each level change as one `info` event with
/// target [`PIN_LOG_TARGET`], message `status pin` and fields `pin` (its role: `busy`,
/// `done`, `alert`, `fault`), `level` (`high`, `low`) and `line` (the configured offset,
/// when there is one). Setting the level it already has logs nothing, so the log is the
/// sequence of levels an observer of the line would see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPin {
    role: &'static str,
    line: Option<u32>,
    high: bool,
}

impl LogPin {
    /// A low pin named `role`, with the line offset the config gives it, if any.
    pub fn new(role: &'static str, line: Option<u32>) -> Self {
        LogPin {
            role,
            line,
            high: false,
        }
    }

    /// Whether the pin is high.
    pub fn is_high(&self) -> bool {
        self.high
    }

    fn set_level(&mut self, high: bool) {
        if self.high != high {
            self.high = high;
            let level = if high { "high" } else { "low" };
            tracing::info!(
                target: PIN_LOG_TARGET,
                pin = %self.role,
                level = %level,
                line = self.line,
                "status pin"
            );
        }
    }
}

impl embedded_hal::digital::ErrorType for LogPin {
    type Error = Infallible;
}

impl OutputPin for LogPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.set_level(false);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        self.set_level(true);
        Ok(())
    }
}

/// [`LogPin`]s for the configured lines, or for all four roles when no line is configured
/// (`[pins] backend = "log"` alone simulates a full board). `chip` is not used.
pub fn open_log_pins(config: &PinConfig) -> StatusPins<LogPin> {
    let all = !config.any();
    let pin = |role: &'static str, line: Option<u32>| {
        (all || line.is_some()).then(|| LogPin::new(role, line))
    };
    StatusPins::new(
        pin("busy", config.busy),
        pin("done", config.done),
        pin("alert", config.alert),
        pin("fault", config.fault),
    )
}

/// Opens the configured lines of `config.chip` as outputs (initially low) and returns them
/// as a boxed sink; with no lines configured, a no-op sink. The `cdev` backend of
/// [`open_pins`].
#[cfg(feature = "gpio-cdev")]
pub fn open_cdev_pins(config: &PinConfig) -> Result<Box<dyn StatusSink + Send>, crate::EdgeError> {
    use linux_embedded_hal::CdevPin;
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};

    if !config.any() {
        return Ok(Box::new(NoStatus));
    }
    let chip_path = config.chip.clone().ok_or_else(|| crate::EdgeError::Pin {
        pin: "chip",
        reason: "pin lines configured but no chip (e.g. chip = \"/dev/gpiochip0\")".into(),
    })?;
    let mut chip = Chip::new(&chip_path).map_err(|e| crate::EdgeError::Pin {
        pin: "chip",
        reason: format!("{}: {e}", chip_path.display()),
    })?;
    let mut open =
        |name: &'static str, offset: Option<u32>| -> Result<Option<CdevPin>, crate::EdgeError> {
            let Some(offset) = offset else {
                return Ok(None);
            };
            let err = |e: &dyn std::fmt::Display| crate::EdgeError::Pin {
                pin: name,
                reason: format!("{} line {offset}: {e}", chip_path.display()),
            };
            let handle = chip
                .get_line(offset)
                .and_then(|l| l.request(LineRequestFlags::OUTPUT, 0, "strokeseg-edge"))
                .map_err(|e| err(&e))?;
            CdevPin::new(handle).map(Some).map_err(|e| err(&e))
        };
    let pins = StatusPins::new(
        open("busy", config.busy)?,
        open("done", config.done)?,
        open("alert", config.alert)?,
        open("fault", config.fault)?,
    );
    Ok(Box::new(pins))
}

/// Without the `gpio-cdev` feature: a no-op when no lines are configured, else an error
/// saying how to get GPIO support.
#[cfg(not(feature = "gpio-cdev"))]
pub fn open_cdev_pins(config: &PinConfig) -> Result<Box<dyn StatusSink + Send>, crate::EdgeError> {
    if config.any() {
        return Err(crate::EdgeError::Pin {
            pin: "chip",
            reason: "status pins are configured but this build has no GPIO support; rebuild with --features gpio-cdev, or set backend = \"log\" in [pins] to log the pin levels instead".into(),
        });
    }
    Ok(Box::new(NoStatus))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_pins_keep_their_level_and_start_low() {
        let mut pins = open_log_pins(&PinConfig {
            backend: PinBackend::Log,
            ..PinConfig::default()
        });
        pins.start();
        pins.succeed(true);
        let [busy, done, alert, fault] = pins.into_pins().map(|p| p.map(|p| p.is_high()));
        assert_eq!(
            [busy, done, alert, fault],
            [Some(false), Some(true), Some(true), Some(false)]
        );
    }

    #[test]
    fn log_pins_are_the_configured_lines_when_any_are() {
        let pins = open_log_pins(&PinConfig {
            backend: PinBackend::Log,
            busy: Some(17),
            fault: Some(23),
            ..PinConfig::default()
        });
        let present = pins.into_pins().map(|p| p.is_some());
        assert_eq!(present, [true, false, false, true]);
    }

    #[test]
    fn the_backend_is_cdev_unless_set() {
        let c: PinConfig = toml::from_str("busy = 17").unwrap();
        assert_eq!(c.backend, PinBackend::Cdev);
        let c: PinConfig = toml::from_str("backend = \"log\"").unwrap();
        assert_eq!(c.backend, PinBackend::Log);
        assert!(toml::from_str::<PinConfig>("backend = \"sysfs\"").is_err());
        assert!(open_pins(&c).is_ok());
    }
}
