//! How many threads tract runs the model on: `--threads N` or `[segment] threads = N`, by
//! default the box's available cores (one study is segmented at a time, so its model may
//! use them all). One thread runs tract single-threaded; more install a rayon pool as
//! tract's process-wide executor (`tract_linalg::multithread`, feature `multithread-mm`),
//! which splits matrix products, packing, element-wise ops, pooling and direct
//! convolutions over it. The count in effect goes into `report.json` (`timings.threads`).

use std::path::Path;
use std::sync::Mutex;

use tract_linalg::multithread::{Executor, set_default_executor};

use crate::EdgeError;

/// The most threads accepted (a larger count is a typo, not a machine).
pub const MAX_THREADS: usize = 256;

/// The threads tract's executor was last set to (1 before any call of [`set_threads`]).
static CURRENT: Mutex<usize> = Mutex::new(1);

/// The cores this process may run on (`std::thread::available_parallelism`, cgroup quotas
/// and affinity included); 1 when the OS does not say.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The thread count for `requested` (`None`: [`available_cores`]); 0 or more than
/// [`MAX_THREADS`] is refused, naming `source` (the config file or `command line`).
pub fn resolve_threads(requested: Option<usize>, source: &Path) -> Result<usize, EdgeError> {
    match requested {
        None => Ok(available_cores().min(MAX_THREADS)),
        Some(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        Some(n) => Err(EdgeError::Settings {
            path: source.to_path_buf(),
            reason: format!("threads = {n}: give 1 to {MAX_THREADS} (1 is single-threaded)"),
        }),
    }
}

/// Makes tract run on `threads` threads from now on (process-wide, every model); a count
/// already in effect changes nothing. `threads` is a [`resolve_threads`] result; 0 counts
/// as 1.
pub fn set_threads(threads: usize) {
    let threads = threads.clamp(1, MAX_THREADS);
    let mut current = CURRENT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *current == threads {
        return;
    }
    set_default_executor(if threads == 1 {
        Executor::SingleThread
    } else {
        Executor::multithread_with_name(threads, "strokeseg-tract")
    });
    *current = threads;
}

/// The thread count tract runs on now (what [`set_threads`] last set; 1 before).
pub fn current_threads() -> usize {
    *CURRENT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_are_resolved_and_bad_ones_refused() {
        let src = Path::new("edge.toml");
        assert_eq!(resolve_threads(Some(2), src).unwrap(), 2);
        assert_eq!(resolve_threads(None, src).unwrap(), available_cores());
        for bad in [0, MAX_THREADS + 1] {
            let err = resolve_threads(Some(bad), src).unwrap_err().to_string();
            assert!(
                err.contains("edge.toml") && err.contains("threads"),
                "{err}"
            );
        }
    }

    #[test]
    fn setting_threads_is_remembered() {
        set_threads(2);
        assert_eq!(current_threads(), 2);
        set_threads(1);
        assert_eq!(current_threads(), 1);
    }
}
