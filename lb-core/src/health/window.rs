//! [`ProbeWindow`]: Varnish's sliding window of probe results, sans-io.
//!
//! Reference: Varnish's backend poller (`bin/varnishd/cache/cache_backend_probe.c`), which
//! keeps the last probes as bits of a 64-bit word and calls a backend healthy when at least
//! `.threshold` of the last `.window` bits are set. Recording a result and reading the
//! verdict are O(1) (a shift, a mask and a popcount); the tracker is a few bytes, `Copy`, and
//! knows nothing of time or I/O, so the scheduler and the tests drive it by hand.

use super::config::{HealthCheckConfig, HealthConfigError, MAX_WINDOW, validate_window};

/// The low `n` bits set (all 64 for `n >= 64`).
const fn low_bits(n: u32) -> u64 {
    if n >= 64 { u64::MAX } else { (1 << n) - 1 }
}

/// The last `window` probe results of one server and the verdict they give.
///
/// # Initial state
///
/// A new window behaves as if `initial` passing probes had been recorded just before the
/// first real one, preceded by failures (Varnish's `.initial`). With the default `initial`
/// = `threshold` a new server is healthy, and stays so until `window - threshold + 1`
/// failures have pushed the assumed passes out; with `initial` 0 it is sick until
/// `threshold` probes pass.
///
/// # Changing the parameters
///
/// [`retune`](Self::retune) keeps the real results: the tracker remembers the last 64 of
/// them whatever the window, so shrinking the window keeps the most recent ones and growing
/// it brings older real results back into view. Slots older than the server's first probe
/// hold the *new* `initial` fill, so a retuned server is judged exactly as a server that
/// started under the new parameters and saw the same probes.
///
/// ```
/// use lb_core::health::ProbeWindow;
///
/// // Window 4, threshold 3, pre-filled with 3 passes: healthy from the start.
/// // Comments list the window newest first.
/// let mut w = ProbeWindow::with_params(4, 3, 3)?;
/// assert!(w.is_healthy());
/// assert!(w.record(false)); // F P P P: still 3 passes
/// assert!(!w.record(false)); // F F P P: 2 < 3, sick
/// assert!(!w.record(true)); // P F F P
/// assert!(!w.record(true)); // P P F F
/// assert!(w.record(true)); // P P P F: healthy again
/// assert_eq!((w.passed(), w.bits()), (3, 0b0111));
/// # Ok::<(), lb_core::health::HealthConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeWindow {
    /// Real results, newest in bit 0; a set bit is a pass. Only the low `probes` bits mean
    /// anything.
    history: u64,
    /// Real results recorded, saturating at 64.
    probes: u8,
    window: u8,
    threshold: u8,
    initial: u8,
}

impl ProbeWindow {
    /// An empty window with `config`'s `Window`, `Threshold` and `Initial`.
    pub fn new(config: &HealthCheckConfig) -> Self {
        let (window, threshold, initial) = narrow(config);
        Self {
            history: 0,
            probes: 0,
            window,
            threshold,
            initial,
        }
    }

    /// An empty window from raw parameters, validated as [`HealthCheckConfig::new`] does:
    /// `window` in 1..=64, `threshold` in 1..=`window`, `initial` at most `window`.
    pub fn with_params(
        window: u32,
        threshold: u32,
        initial: u32,
    ) -> Result<Self, HealthConfigError> {
        let (window, threshold, initial) = validate_window(window, threshold, initial)?;
        Ok(Self {
            history: 0,
            probes: 0,
            window,
            threshold,
            initial,
        })
    }

    /// Records one probe result (`true` = passed) and returns the verdict after it.
    #[inline]
    pub fn record(&mut self, passed: bool) -> bool {
        self.history = (self.history << 1) | u64::from(passed);
        self.probes = self.probes.saturating_add(1).min(MAX_WINDOW as u8);
        self.is_healthy()
    }

    /// Whether at least `threshold` of the last `window` results passed.
    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.passed() >= u32::from(self.threshold)
    }

    /// How many of the last `window` results passed (assumed initial passes included).
    #[inline]
    pub fn passed(&self) -> u32 {
        self.bits().count_ones()
    }

    /// The last `window` results as bits, newest in bit 0, a set bit for a pass (assumed
    /// initial results included), like the `Happy` column of `varnishadm backend.list -p`.
    pub fn bits(&self) -> u64 {
        let probes = u32::from(self.probes);
        let real = self.history & low_bits(probes);
        // `checked_shl` is `None` only once 64 real results fill the word: no fill left.
        let fill = low_bits(u32::from(self.initial))
            .checked_shl(probes)
            .unwrap_or(0);
        (real | fill) & low_bits(u32::from(self.window))
    }

    /// How many real results have been recorded, up to 64 (the tracker forgets older ones).
    pub fn recorded(&self) -> u32 {
        u32::from(self.probes)
    }

    /// The window size.
    pub fn window(&self) -> u32 {
        u32::from(self.window)
    }

    /// The passes needed for a healthy verdict.
    pub fn threshold(&self) -> u32 {
        u32::from(self.threshold)
    }

    /// The passing results assumed before the first real probe.
    pub fn initial(&self) -> u32 {
        u32::from(self.initial)
    }

    /// Takes `config`'s `Window`, `Threshold` and `Initial`, keeping the recorded results
    /// (see [Changing the parameters](Self#changing-the-parameters)). Returns the verdict
    /// under the new parameters.
    pub fn retune(&mut self, config: &HealthCheckConfig) -> bool {
        (self.window, self.threshold, self.initial) = narrow(config);
        self.is_healthy()
    }
}

/// A validated config's window parameters, already known to fit in a `u8`.
fn narrow(config: &HealthCheckConfig) -> (u8, u8, u8) {
    let narrow = |n: u32| u8::try_from(n).unwrap_or(u8::MAX);
    (
        narrow(config.window()),
        narrow(config.threshold()),
        narrow(config.initial()),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::health::HealthCheckSettings;
    use proptest::prelude::*;

    fn window(window: u32, threshold: u32, initial: u32) -> ProbeWindow {
        ProbeWindow::with_params(window, threshold, initial).unwrap()
    }

    fn config(window: u32, threshold: u32, initial: u32) -> HealthCheckConfig {
        HealthCheckConfig::new(HealthCheckSettings {
            window: Some(window),
            threshold: Some(threshold),
            initial: Some(initial),
            ..Default::default()
        })
        .unwrap()
    }

    fn record_all(w: &mut ProbeWindow, results: &[bool]) -> Vec<bool> {
        results.iter().map(|&r| w.record(r)).collect()
    }

    #[test]
    fn default_config_goes_sick_after_six_failures_and_back_after_three_passes() {
        let mut w = ProbeWindow::new(&HealthCheckConfig::default());
        assert!(w.is_healthy() && w.passed() == 3);
        // 8/3: the three assumed passes leave the window only after six failures.
        assert_eq!(
            record_all(&mut w, &[false; 6]),
            [true, true, true, true, true, false]
        );
        assert_eq!(record_all(&mut w, &[true; 3]), [false, false, true]);
    }

    #[test]
    fn window_of_one_follows_the_last_probe() {
        let mut w = window(1, 1, 1);
        assert!(w.is_healthy());
        assert_eq!(
            record_all(&mut w, &[false, true, false, false, true]),
            [false, true, false, false, true]
        );
        let mut pessimist = window(1, 1, 0);
        assert!(!pessimist.is_healthy());
        assert!(pessimist.record(true));
    }

    #[test]
    fn threshold_equal_to_window_needs_every_probe_to_pass() {
        let mut w = window(4, 4, 4);
        assert!(w.is_healthy());
        assert!(!w.record(false), "one failure is enough");
        assert_eq!(
            record_all(&mut w, &[true, true, true, true]),
            [false, false, false, true]
        );
    }

    #[test]
    fn initial_zero_starts_sick_until_threshold_passes() {
        let mut w = window(8, 3, 0);
        assert!(!w.is_healthy());
        assert_eq!(w.passed(), 0);
        assert_eq!(
            record_all(&mut w, &[true, true, true]),
            [false, false, true]
        );
    }

    #[test]
    fn initial_below_threshold_starts_sick() {
        let mut w = window(8, 3, 2);
        assert!(!w.is_healthy());
        assert!(w.record(true), "one pass plus two assumed passes");
    }

    #[test]
    fn full_window_initial_counts_every_slot() {
        let mut w = window(4, 4, 4);
        assert_eq!(w.bits(), 0b1111);
        w.record(true);
        assert_eq!(w.bits(), 0b1111);
        w.record(false);
        assert_eq!(w.bits(), 0b1110);
    }

    #[test]
    fn bits_put_the_newest_result_in_bit_zero() {
        let mut w = window(4, 1, 0);
        record_all(&mut w, &[true, false, false]);
        assert_eq!(w.bits(), 0b0100);
        w.record(true);
        assert_eq!(w.bits(), 0b1001);
        w.record(false);
        assert_eq!(w.bits(), 0b0010, "the oldest pass slid out");
    }

    #[test]
    fn sixty_four_results_leave_no_initial_fill() {
        let mut w = window(64, 64, 64);
        assert_eq!(w.bits(), u64::MAX);
        record_all(&mut w, &[false; 64]);
        assert_eq!((w.bits(), w.recorded()), (0, 64));
        w.record(true);
        assert_eq!((w.bits(), w.recorded()), (1, 64));
    }

    #[test]
    fn shrinking_keeps_the_most_recent_results() {
        let mut w = window(8, 1, 0);
        record_all(&mut w, &[true, true, true, false, false]);
        assert_eq!(w.passed(), 3);
        assert!(!w.retune(&config(2, 1, 0)), "the two newest are failures");
        assert_eq!(w.bits(), 0b00);
    }

    #[test]
    fn growing_brings_back_older_real_results() {
        let mut w = window(8, 1, 0);
        record_all(&mut w, &[true, true, false, false]);
        w.retune(&config(2, 1, 0));
        assert_eq!(w.passed(), 0);
        w.retune(&config(8, 2, 0));
        assert_eq!(w.passed(), 2);
        assert!(w.is_healthy());
    }

    #[test]
    fn growing_a_young_window_fills_with_the_new_initial() {
        // Two real passes under 8/3/3, then retuned to 20/15 (initial defaults to 15): judged
        // as a new 20/15/15 server that passed two probes, i.e. healthy, not sick.
        let mut w = window(8, 3, 3);
        record_all(&mut w, &[true, true]);
        assert!(w.retune(&config(20, 15, 15)));
        assert_eq!(w.passed(), 17);
        // With initial 0 the same history gives the pessimistic verdict.
        assert!(!w.retune(&config(20, 15, 0)));
        assert_eq!(w.passed(), 2);
    }

    fn model_verdict(results: &[bool], window: usize, threshold: usize, initial: usize) -> bool {
        // The window as a queue, newest at the front: assumed passes then failures behind the
        // real results.
        let mut slots: VecDeque<bool> = results.iter().rev().copied().collect();
        slots.extend(std::iter::repeat_n(true, initial));
        slots.extend(std::iter::repeat_n(false, window));
        slots.iter().take(window).filter(|&&p| p).count() >= threshold
    }

    proptest! {
        #[test]
        fn verdict_matches_a_queue_of_the_last_window_results(
            (window, threshold, initial) in (1u32..=64)
                .prop_flat_map(|w| (Just(w), 1..=w, 0..=w)),
            results in proptest::collection::vec(any::<bool>(), 0..100),
        ) {
            let mut w = ProbeWindow::with_params(window, threshold, initial).unwrap();
            for (i, &r) in results.iter().enumerate() {
                let verdict = w.record(r);
                let (win, thr, ini) = (window as usize, threshold as usize, initial as usize);
                prop_assert_eq!(verdict, model_verdict(&results[..=i], win, thr, ini), "after {}", i + 1);
            }
        }

        #[test]
        fn retune_equals_a_fresh_window_that_saw_the_same_probes(
            results in proptest::collection::vec(any::<bool>(), 0..80),
            (from, to) in ((1u32..=64).prop_flat_map(|w| (Just(w), 1..=w, 0..=w)),
                           (1u32..=64).prop_flat_map(|w| (Just(w), 1..=w, 0..=w))),
        ) {
            let mut retuned = ProbeWindow::with_params(from.0, from.1, from.2).unwrap();
            let mut fresh = ProbeWindow::with_params(to.0, to.1, to.2).unwrap();
            for &r in &results {
                retuned.record(r);
                fresh.record(r);
            }
            retuned.retune(&config(to.0, to.1, to.2));
            prop_assert_eq!(retuned, fresh);
        }
    }
}
