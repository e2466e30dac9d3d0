//! [`HealthCheckConfig`]: a backend's validated `Settings.HealthCheck`.
//!
//! The configuration model parses vulcand's JSON into a [`HealthCheckSettings`] (every field
//! optional, durations already converted from Go-style strings, `ExpectedStatus` parsed with
//! [`StatusSet`]'s `FromStr`) and calls [`HealthCheckConfig::new`], which fills in the
//! defaults and validates. Errors name the JSON field at fault.

use std::time::Duration;

use super::status_set::{ParseStatusError, StatusSet};

/// The largest `Window`: the probe history is one 64-bit mask, as in Varnish.
pub const MAX_WINDOW: u32 = 64;

/// Default `Path`.
pub const DEFAULT_PATH: &str = "/";
/// Default `Interval` (Varnish's `.interval`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Default `Timeout` (Varnish's `.timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default `Window` (Varnish's `.window`).
pub const DEFAULT_WINDOW: u32 = 8;
/// Default `Threshold` (Varnish's `.threshold`), lowered to `Window` when `Window` is smaller.
pub const DEFAULT_THRESHOLD: u32 = 3;

/// Why a `Settings.HealthCheck` is invalid. Each message starts with the JSON field at fault
/// (also available as [`HealthConfigError::field`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HealthConfigError {
    /// `Window` is not in 1..=64.
    #[error("Window must be between 1 and 64, got {window}")]
    Window {
        /// The value given.
        window: u32,
    },
    /// `Threshold` is 0 or larger than `Window`.
    #[error("Threshold must be between 1 and Window ({window}), got {threshold}")]
    Threshold {
        /// The value given.
        threshold: u32,
        /// The window it must fit in.
        window: u32,
    },
    /// `Initial` is larger than `Window`.
    #[error("Initial must be at most Window ({window}), got {initial}")]
    Initial {
        /// The value given.
        initial: u32,
        /// The window it must fit in.
        window: u32,
    },
    /// `Interval` is zero.
    #[error("Interval must be greater than zero")]
    Interval,
    /// `Timeout` is zero.
    #[error("Timeout must be greater than zero")]
    Timeout,
    /// `Path` does not start with `/`, or contains whitespace or control characters (which
    /// cannot appear in a request line).
    #[error(
        "Path must start with '/' and contain no whitespace or control characters, got {path:?}"
    )]
    Path {
        /// The value given.
        path: String,
    },
    /// `ExpectedStatus` is not a valid status list.
    #[error("ExpectedStatus: {0}")]
    ExpectedStatus(#[from] ParseStatusError),
}

impl HealthConfigError {
    /// The JSON field of `Settings.HealthCheck` at fault, e.g. `"Window"`.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Window { .. } => "Window",
            Self::Threshold { .. } => "Threshold",
            Self::Initial { .. } => "Initial",
            Self::Interval => "Interval",
            Self::Timeout => "Timeout",
            Self::Path { .. } => "Path",
            Self::ExpectedStatus(_) => "ExpectedStatus",
        }
    }
}

/// `Settings.HealthCheck` as written: every field optional. Turn it into a
/// [`HealthCheckConfig`] with [`HealthCheckConfig::new`], which supplies the defaults.
///
/// Build it with `..Default::default()` so that fields added later do not break callers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthCheckSettings {
    /// `Path`: the request path (and query) probed. Default `/`.
    pub path: Option<String>,
    /// `Interval`: time between the starts of two probes of a server. Default 5s.
    pub interval: Option<Duration>,
    /// `Timeout`: how long a probe may take before it counts as failed. Default 2s.
    pub timeout: Option<Duration>,
    /// `Window`: how many recent probes the verdict looks at, 1..=64. Default 8.
    pub window: Option<u32>,
    /// `Threshold`: how many of the last `Window` probes must have passed for the server to
    /// be healthy, 1..=`Window`. Default 3, or `Window` if that is smaller.
    pub threshold: Option<u32>,
    /// `Initial`: how many passing probes a new server's window is pre-filled with
    /// (Varnish's `.initial`), 0..=`Window`. Default `Threshold`, so new servers start
    /// healthy.
    pub initial: Option<u32>,
    /// `ExpectedStatus`: the statuses that make a probe pass. Default `200-399`.
    pub expected_status: Option<StatusSet>,
}

/// A backend's validated active health check (`Settings.HealthCheck`).
///
/// A server is healthy when at least [`threshold`](Self::threshold) of its last
/// [`window`](Self::window) probes passed (Varnish's rule). A probe passes when the server
/// answers `GET <path>` within [`timeout`](Self::timeout) with a status in
/// [`expected_status`](Self::expected_status). See the [module docs](super) for the
/// initial state and what a change of configuration keeps.
///
/// ```
/// use std::time::Duration;
/// use lb_core::health::{HealthCheckConfig, HealthCheckSettings, HealthConfigError};
///
/// let config = HealthCheckConfig::new(HealthCheckSettings {
///     path: Some("/health".into()),
///     interval: Some(Duration::from_secs(3)),
///     window: Some(10),
///     threshold: Some(8),
///     ..Default::default()
/// })?;
/// assert_eq!(config.timeout(), Duration::from_secs(2)); // default
/// assert_eq!(config.initial(), 8); // defaults to the threshold: new servers start healthy
///
/// let err = HealthCheckConfig::new(HealthCheckSettings {
///     window: Some(4),
///     threshold: Some(5),
///     ..Default::default()
/// })
/// .unwrap_err();
/// assert_eq!(err.field(), "Threshold");
/// # Ok::<(), HealthConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HealthCheckConfig {
    path: String,
    interval: Duration,
    timeout: Duration,
    window: u8,
    threshold: u8,
    initial: u8,
    expected_status: StatusSet,
}

impl HealthCheckConfig {
    /// Validates `settings` and fills in the defaults for absent fields: `Path` `/`,
    /// `Interval` 5s, `Timeout` 2s, `Window` 8, `Threshold` 3 (or `Window` if smaller),
    /// `Initial` = `Threshold`, `ExpectedStatus` `200-399`.
    ///
    /// Rejects `Window` outside 1..=64, `Threshold` outside 1..=`Window`, `Initial` above
    /// `Window`, a zero `Interval` or `Timeout`, and a `Path` that does not start with `/` or
    /// holds whitespace or control characters. A `Timeout` longer than the `Interval` is
    /// allowed: probes of a server never overlap, so the next probe then starts as soon as
    /// the slow one ends.
    pub fn new(settings: HealthCheckSettings) -> Result<Self, HealthConfigError> {
        let window = settings.window.unwrap_or(DEFAULT_WINDOW);
        let threshold = settings
            .threshold
            .unwrap_or_else(|| DEFAULT_THRESHOLD.min(window));
        let initial = settings.initial.unwrap_or(threshold);
        let (window, threshold, initial) = validate_window(window, threshold, initial)?;

        let interval = settings.interval.unwrap_or(DEFAULT_INTERVAL);
        if interval.is_zero() {
            return Err(HealthConfigError::Interval);
        }
        let timeout = settings.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            return Err(HealthConfigError::Timeout);
        }
        let path = settings.path.unwrap_or_else(|| DEFAULT_PATH.to_owned());
        if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(HealthConfigError::Path { path });
        }
        Ok(Self {
            path,
            interval,
            timeout,
            window,
            threshold,
            initial,
            expected_status: settings.expected_status.unwrap_or_default(),
        })
    }

    /// The request path (and query) probed, starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Time between the starts of two consecutive probes of a server.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How long a probe may take before it counts as failed.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How many recent probes the verdict looks at (1..=64).
    pub fn window(&self) -> u32 {
        u32::from(self.window)
    }

    /// How many of the last [`window`](Self::window) probes must have passed (1..=window).
    pub fn threshold(&self) -> u32 {
        u32::from(self.threshold)
    }

    /// How many passing results a new server's window starts with (0..=window).
    pub fn initial(&self) -> u32 {
        u32::from(self.initial)
    }

    /// The statuses that make a probe pass.
    pub fn expected_status(&self) -> &StatusSet {
        &self.expected_status
    }
}

impl Default for HealthCheckConfig {
    /// Every default: `Path` `/`, `Interval` 5s, `Timeout` 2s, `Window` 8, `Threshold` 3,
    /// `Initial` 3, `ExpectedStatus` `200-399`.
    fn default() -> Self {
        Self {
            path: DEFAULT_PATH.to_owned(),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            window: DEFAULT_WINDOW as u8,
            threshold: DEFAULT_THRESHOLD as u8,
            initial: DEFAULT_THRESHOLD as u8,
            expected_status: StatusSet::default(),
        }
    }
}

/// Checks `Window`, `Threshold` and `Initial` and narrows them to the stored width.
pub(crate) fn validate_window(
    window: u32,
    threshold: u32,
    initial: u32,
) -> Result<(u8, u8, u8), HealthConfigError> {
    let narrow = |n: u32| u8::try_from(n).unwrap_or(u8::MAX);
    if !(1..=MAX_WINDOW).contains(&window) {
        return Err(HealthConfigError::Window { window });
    }
    if !(1..=window).contains(&threshold) {
        return Err(HealthConfigError::Threshold { threshold, window });
    }
    if initial > window {
        return Err(HealthConfigError::Initial { initial, window });
    }
    Ok((narrow(window), narrow(threshold), narrow(initial)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HealthCheckSettings {
        HealthCheckSettings::default()
    }

    #[test]
    fn absent_fields_take_varnish_defaults() {
        let config = HealthCheckConfig::new(settings()).unwrap();
        assert_eq!(config, HealthCheckConfig::default());
        assert_eq!(config.path(), "/");
        assert_eq!(config.interval(), Duration::from_secs(5));
        assert_eq!(config.timeout(), Duration::from_secs(2));
        assert_eq!(
            (config.window(), config.threshold(), config.initial()),
            (8, 3, 3)
        );
        assert_eq!(*config.expected_status(), StatusSet::default());
    }

    #[test]
    fn default_threshold_shrinks_to_a_small_window() {
        let config = HealthCheckConfig::new(HealthCheckSettings {
            window: Some(2),
            ..settings()
        })
        .unwrap();
        assert_eq!((config.threshold(), config.initial()), (2, 2));
    }

    #[test]
    fn initial_defaults_to_the_threshold() {
        let config = HealthCheckConfig::new(HealthCheckSettings {
            window: Some(10),
            threshold: Some(8),
            ..settings()
        })
        .unwrap();
        assert_eq!(config.initial(), 8);
    }

    #[test]
    fn window_edges_are_accepted() {
        for (window, threshold, initial) in [(1, 1, 0), (1, 1, 1), (64, 64, 64), (64, 1, 0)] {
            let config = HealthCheckConfig::new(HealthCheckSettings {
                window: Some(window),
                threshold: Some(threshold),
                initial: Some(initial),
                ..settings()
            });
            assert!(config.is_ok(), "{window}/{threshold}/{initial}");
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: [(HealthCheckSettings, &str); 9] = [
            (
                HealthCheckSettings {
                    window: Some(0),
                    ..settings()
                },
                "Window",
            ),
            (
                HealthCheckSettings {
                    window: Some(65),
                    ..settings()
                },
                "Window",
            ),
            (
                HealthCheckSettings {
                    threshold: Some(0),
                    ..settings()
                },
                "Threshold",
            ),
            (
                HealthCheckSettings {
                    threshold: Some(9),
                    ..settings()
                },
                "Threshold",
            ),
            (
                HealthCheckSettings {
                    initial: Some(9),
                    ..settings()
                },
                "Initial",
            ),
            (
                HealthCheckSettings {
                    interval: Some(Duration::ZERO),
                    ..settings()
                },
                "Interval",
            ),
            (
                HealthCheckSettings {
                    timeout: Some(Duration::ZERO),
                    ..settings()
                },
                "Timeout",
            ),
            (
                HealthCheckSettings {
                    path: Some("health".into()),
                    ..settings()
                },
                "Path",
            ),
            (
                HealthCheckSettings {
                    path: Some("/he alth".into()),
                    ..settings()
                },
                "Path",
            ),
        ];
        for (settings, field) in cases {
            let err = HealthCheckConfig::new(settings.clone()).unwrap_err();
            assert_eq!(err.field(), field, "{settings:?}");
            assert!(err.to_string().starts_with(field), "{err}");
        }
    }

    #[test]
    fn status_parse_errors_convert_into_a_named_config_error() {
        fn parse(s: &str) -> Result<StatusSet, HealthConfigError> {
            Ok(s.parse::<StatusSet>()?)
        }
        let err = parse("abc").unwrap_err();
        assert_eq!(err.field(), "ExpectedStatus");
        assert!(err.to_string().starts_with("ExpectedStatus: "), "{err}");
    }
}
