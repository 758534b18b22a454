//! Faults that tests inject at named points (the `fail` crate's fail points, compiled in
//! only with a service's `failpoints` feature): each point that fires is counted here,
//! so that a test can assert its fault really happened instead of passing by the normal
//! path. Nothing counts in a build without fail points.

use std::{collections::BTreeMap, sync::Mutex};

static FIRED: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

/// Records that the fault injected at `point` fired.
pub fn record(point: &'static str) {
    if let Ok(mut fired) = FIRED.lock() {
        *fired.entry(point).or_default() += 1;
    }
}

/// How many times the fault injected at `point` fired in this process.
pub fn fired(point: &str) -> u64 {
    FIRED.lock().map(|fired| fired.get(point).copied().unwrap_or(0)).unwrap_or(0)
}

/// A fail point named `$point` that, when a test configures it, runs `$fault` (given
/// the configured argument) and returns its value from the enclosing function, counted
/// in [`fired`]. The calling crate depends on `fail`.
#[macro_export]
macro_rules! fault {
    ($point:literal, $fault:expr) => {
        fail::fail_point!($point, |argument: Option<String>| {
            $crate::faults::record($point);
            ($fault)(argument)
        })
    };
}

/// A pause that tests inject at `$point` (`return(<ms>)`: the enclosing async code waits
/// that long there, counted in [`fired`]); nothing otherwise. The calling crate depends
/// on `fail` and `tokio`.
#[macro_export]
macro_rules! pause {
    ($point:literal) => {
        let ms: Option<u64> = (|| {
            fail::fail_point!($point, |argument: Option<String>| {
                $crate::faults::record($point);
                argument.and_then(|a| a.parse().ok())
            });
            None
        })();
        if let Some(ms) = ms {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    };
}
