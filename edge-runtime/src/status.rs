//! Status pins beside the scanner: busy, done, alert and fault lines, generic over
//! `embedded_hal::digital::OutputPin` (embedded-hal 1.0), driven by the segmenter and the
//! watch daemon.
//!
//! Pin sequences (each line is one `set_*` call, in this order):
//! - [`StatusSink::reset`] (daemon start, study rolled back): busy, done, alert, fault low.
//! - [`StatusSink::start`] (a study begins): done low, alert low, fault low, busy high.
//! - [`StatusSink::succeed`] (outputs published): alert high when the lesion volume ≥ the
//!   alert threshold (else low), done high, busy low.
//! - [`StatusSink::fail`] (the study went to `failed/` or the run failed): fault high, busy
//!   low.
//!
//! A pin that is not configured is skipped; without any pins the component is a no-op.
//! On Linux, [`open_cdev_pins`] opens the lines of a GPIO character device (cargo feature
//! `gpio-cdev`).

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

/// Where the status lines are: a GPIO character device and one line offset per pin.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PinConfig {
    /// The GPIO chip, e.g. `/dev/gpiochip0`.
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

/// Opens the configured lines of `config.chip` as outputs (initially low) and returns them
/// as a boxed sink; with no lines configured, a no-op sink.
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
            reason: "status pins are configured but this build has no GPIO support; rebuild with --features gpio-cdev".into(),
        });
    }
    Ok(Box::new(NoStatus))
}
