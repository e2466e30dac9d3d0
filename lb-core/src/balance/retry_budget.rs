//! A retry budget: retries may add at most a share of the recent traffic, so a failing
//! server cannot turn failover into a retry storm.
//!
//! Reference: Finagle's `RetryBudget` and tower's `retry::budget::TpsBudget` (which ports it):
//! every request deposits, every retry withdraws, and a retry is allowed while the balance
//! over the last [`WINDOW`] covers it. With the defaults ([`RetryBudgetConfig::default`]),
//! retries may add 20% to the requests of the last ten seconds, plus 10 per second so that a
//! backend with little traffic can still fail over. Envoy's retry budget (a share of the
//! active requests, 20% by default) caps the same thing by concurrency rather than by rate.
//!
//! # Accounting
//!
//! In units of 1/100 retry: a request deposits `Percent` units, a retry withdraws 100. The
//! window is [`SLOTS`] slots of one second each; a deposit or withdrawal lands in the slot of
//! its second, and slots older than the window stop counting (so a withdrawal is forgotten
//! after the window too, which is what refills the per-second minimum). A retry is allowed
//! when
//!
//! ```text
//! MinPerSecond × 10 s × 100 + Σ over the window (deposits − withdrawals) ≥ 100
//! ```
//!
//! so over any ten seconds, retries ≤ `Percent`% of the requests + `MinPerSecond` × 10.
//!
//! # Cost
//!
//! Sans-io and lock-free: the caller passes the time in, nothing is allocated after
//! [`RetryBudget::new`]. Each slot is one `AtomicU64` holding the slot's second (32 bits)
//! and its balance (32 bits, saturating), so rolling a slot over to a new second and adding
//! to it is a single compare-and-swap: a deposit is one CAS on one slot (unlike tower's,
//! which takes a mutex to expire slots). A withdrawal reads the ten slots and CASes the
//! current one; a concurrent deposit or withdrawal in the same second makes the CAS fail
//! and the check run again, so withdrawals within one second never overdraw the budget.
//! Only around a slot boundary can two threads that read different seconds each spend the
//! same last unit (at most one retry per thread that races there).
//!
//! The parameters are atomics too: [`RetryBudget::set_config`] changes them in place, so a
//! backend's budget (and its history and refusal count) survives a configuration change.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many one-second slots the window has.
pub const SLOTS: usize = 10;

/// How long a deposit or a withdrawal counts: [`SLOTS`] seconds.
pub const WINDOW: Duration = Duration::from_secs(SLOTS as u64);

/// What one retry costs, in units (a request deposits `percent` units).
const RETRY_COST: i64 = 100;

/// The highest `Percent`: ten retries per request, more than any predicate can make
/// ([`MAX_ATTEMPTS`](crate::config::failover::MAX_ATTEMPTS) is 10 attempts in all), so this
/// value turns the share limit off.
pub const MAX_PERCENT: u32 = 1000;

/// A backend's retry budget parameters (`Settings.RetryBudget`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RetryBudgetConfig {
    /// Retries allowed as a percentage of the requests of the last [`WINDOW`], 0 to
    /// [`MAX_PERCENT`]. Default 20.
    pub percent: u32,
    /// Retries allowed per second on top of the percentage, so that low traffic can still
    /// fail over. Default 10.
    pub min_per_second: u32,
}

impl Default for RetryBudgetConfig {
    /// 20% of the recent requests plus 10 retries per second (Finagle's and tower's
    /// defaults).
    fn default() -> Self {
        Self {
            percent: 20,
            min_per_second: 10,
        }
    }
}

/// A retry budget shared by every request to one backend. See the [module docs](self).
///
/// ```
/// use std::time::{Duration, Instant};
/// use lb_core::balance::{RetryBudget, RetryBudgetConfig};
///
/// let t0 = Instant::now(); // the caller's clock; the budget never reads one
/// let budget = RetryBudget::new(RetryBudgetConfig { percent: 20, min_per_second: 0 }, t0);
/// for _ in 0..10 {
///     budget.deposit(t0); // ten requests ...
/// }
/// assert!(budget.try_withdraw(t0)); // ... pay for two retries
/// assert!(budget.try_withdraw(t0));
/// assert!(!budget.try_withdraw(t0));
/// assert_eq!(budget.refused(), 1);
/// // Ten seconds later the requests no longer count, and neither do the retries.
/// assert!(!budget.try_withdraw(t0 + Duration::from_secs(10)));
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    /// Seconds are counted from here.
    epoch: Instant,
    /// `(second << 32) | balance as u32`, slot `second % SLOTS`.
    slots: [AtomicU64; SLOTS],
    percent: AtomicU32,
    min_per_second: AtomicU32,
    refused: AtomicU64,
}

fn pack(second: u32, balance: i32) -> u64 {
    (u64::from(second) << 32) | u64::from(balance as u32)
}

fn unpack(slot: u64) -> (u32, i32) {
    ((slot >> 32) as u32, slot as u32 as i32)
}

/// Whether `second` is at most `SLOTS - 1` seconds before `now` (and not after it), with
/// wrapping arithmetic so the 32-bit second may roll over.
fn in_window(second: u32, now: u32) -> bool {
    (now.wrapping_sub(second) as usize) < SLOTS
}

fn saturating_i32(value: i64) -> i32 {
    value.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

impl RetryBudget {
    /// An empty budget (no deposits yet: only the per-second minimum is available) whose
    /// seconds count from `now`.
    pub fn new(config: RetryBudgetConfig, now: Instant) -> Self {
        Self {
            epoch: now,
            // Second 0's slot starts current and empty; the others start with a second
            // outside every window that can be asked about before they are written.
            slots: std::array::from_fn(|i| {
                AtomicU64::new(pack((i as u32).wrapping_sub(SLOTS as u32), 0))
            }),
            percent: AtomicU32::new(config.percent.min(MAX_PERCENT)),
            min_per_second: AtomicU32::new(config.min_per_second),
            refused: AtomicU64::new(0),
        }
    }

    /// The parameters in force.
    pub fn config(&self) -> RetryBudgetConfig {
        RetryBudgetConfig {
            percent: self.percent.load(Ordering::Relaxed),
            min_per_second: self.min_per_second.load(Ordering::Relaxed),
        }
    }

    /// Changes the parameters; the recorded requests and retries stay.
    pub fn set_config(&self, config: RetryBudgetConfig) {
        self.percent
            .store(config.percent.min(MAX_PERCENT), Ordering::Relaxed);
        self.min_per_second
            .store(config.min_per_second, Ordering::Relaxed);
    }

    /// Records a request (call once per request, not per attempt).
    pub fn deposit(&self, now: Instant) {
        let amount = i64::from(self.percent.load(Ordering::Relaxed));
        if amount == 0 {
            return;
        }
        let second = self.second(now);
        let slot = &self.slots[second as usize % SLOTS];
        // The closure always returns `Some`, so this cannot fail.
        let _ = slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            let (at, balance) = self.current(current, second);
            Some(pack(at, saturating_i32(i64::from(balance) + amount)))
        });
    }

    /// Takes one retry out of the budget at `now`, or returns false (and counts a refusal)
    /// when the budget cannot pay for it.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let second = self.second(now);
        let index = second as usize % SLOTS;
        let reserve =
            i64::from(self.min_per_second.load(Ordering::Relaxed)) * SLOTS as i64 * RETRY_COST;
        let mut current = self.slots[index].load(Ordering::Acquire);
        loop {
            let (at, here) = self.current(current, second);
            let others: i64 = self
                .slots
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != index)
                .map(|(_, slot)| unpack(slot.load(Ordering::Acquire)))
                .filter(|&(at, _)| in_window(at, second))
                .map(|(_, balance)| i64::from(balance))
                .sum();
            if reserve + others + i64::from(here) < RETRY_COST {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            let next = pack(at, saturating_i32(i64::from(here) - RETRY_COST));
            match self.slots[index].compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// How many retries the budget refused since it was created.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// How many retries the budget would allow at `now` if none were made meanwhile.
    pub fn available(&self, now: Instant) -> u64 {
        let second = self.second(now);
        let reserve =
            i64::from(self.min_per_second.load(Ordering::Relaxed)) * SLOTS as i64 * RETRY_COST;
        let window: i64 = self
            .slots
            .iter()
            .map(|slot| unpack(slot.load(Ordering::Acquire)))
            .filter(|&(at, _)| in_window(at, second))
            .map(|(_, balance)| i64::from(balance))
            .sum();
        u64::try_from((reserve + window) / RETRY_COST).unwrap_or(0)
    }

    /// Whole seconds since the epoch (a `now` before it counts as the epoch), wrapping at
    /// 2^32 seconds (136 years).
    fn second(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_secs() as u32
    }

    /// The slot `current` as the slot of `second`: its balance if it already is (or, for a
    /// thread whose clock ran ahead, a later second: never roll a slot back), else empty.
    fn current(&self, current: u64, second: u32) -> (u32, i32) {
        let (at, balance) = unpack(current);
        if (second.wrapping_sub(at) as i32) <= 0 {
            (at, balance)
        } else {
            (second, 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    fn config(percent: u32, min_per_second: u32) -> RetryBudgetConfig {
        RetryBudgetConfig {
            percent,
            min_per_second,
        }
    }

    fn withdraw_all(budget: &RetryBudget, now: Instant) -> u64 {
        let mut n = 0;
        while budget.try_withdraw(now) {
            n += 1;
            assert!(n <= 1_000_000, "the budget never runs out");
        }
        n
    }

    #[test]
    fn defaults_are_twenty_percent_and_ten_per_second() {
        assert_eq!(RetryBudgetConfig::default(), config(20, 10));
    }

    #[test]
    fn an_idle_budget_allows_the_per_second_minimum_over_the_window() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(config(20, 10), t0);
        assert_eq!(budget.available(t0), 100);
        assert_eq!(withdraw_all(&budget, t0), 100);
        assert_eq!(budget.refused(), 1);
        // Spent withdrawals keep counting until the window has passed.
        assert!(!budget.try_withdraw(t0 + Duration::from_millis(9_999)));
        assert_eq!(budget.available(t0 + WINDOW), 100);
    }

    #[test]
    fn each_request_pays_for_its_percentage_of_a_retry() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(config(20, 0), t0);
        assert!(!budget.try_withdraw(t0), "nothing deposited yet");
        for _ in 0..4 {
            budget.deposit(t0);
        }
        assert!(!budget.try_withdraw(t0), "four requests pay for 0.8 retry");
        budget.deposit(t0);
        assert!(budget.try_withdraw(t0), "five pay for one");
        for _ in 0..1000 {
            budget.deposit(t0 + Duration::from_millis(500));
        }
        assert_eq!(withdraw_all(&budget, t0 + Duration::from_secs(1)), 200);
        assert_eq!(budget.refused(), 3);
    }

    #[test]
    fn deposits_and_withdrawals_leave_the_window_after_ten_seconds() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(config(100, 0), t0);
        for s in 0..10 {
            budget.deposit(t0 + Duration::from_secs(s));
        }
        assert_eq!(budget.available(t0 + Duration::from_millis(9_900)), 10);
        // At 10 s the deposit of second 0 is out of the window.
        assert_eq!(budget.available(t0 + Duration::from_secs(10)), 9);
        assert_eq!(budget.available(t0 + Duration::from_secs(15)), 4);
        assert!(budget.try_withdraw(t0 + Duration::from_secs(15)));
        assert_eq!(budget.available(t0 + Duration::from_secs(15)), 3);
        assert_eq!(budget.available(t0 + Duration::from_secs(19)), 0);
        // After a long idle time every slot is stale; a write rolls its slot over.
        let later = t0 + Duration::from_secs(1000);
        assert_eq!(budget.available(later), 0);
        budget.deposit(later);
        assert_eq!(budget.available(later), 1);
        assert!(budget.try_withdraw(later));
        assert!(!budget.try_withdraw(later));
    }

    #[test]
    fn a_spent_reserve_refills_as_its_withdrawals_age_out() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(config(0, 2), t0);
        assert_eq!(withdraw_all(&budget, t0), 20);
        assert_eq!(withdraw_all(&budget, t0 + Duration::from_secs(5)), 0);
        assert_eq!(withdraw_all(&budget, t0 + Duration::from_secs(10)), 20);
    }

    #[test]
    fn zero_percent_and_zero_minimum_refuse_every_retry() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(config(0, 0), t0);
        for _ in 0..100 {
            budget.deposit(t0);
        }
        assert!(!budget.try_withdraw(t0));
        assert_eq!(budget.refused(), 1);
    }

    #[test]
    fn a_new_config_applies_at_once_and_keeps_the_history() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(config(20, 0), t0);
        for _ in 0..10 {
            budget.deposit(t0);
        }
        assert_eq!(budget.available(t0), 2);
        budget.set_config(config(50, 1));
        assert_eq!(budget.config(), config(50, 1));
        // The old deposits stay; the minimum adds 1 × 10 s.
        assert_eq!(budget.available(t0), 12);
        budget.deposit(t0);
        budget.deposit(t0);
        assert_eq!(budget.available(t0), 13);
        budget.set_config(config(5000, 0));
        assert_eq!(budget.config().percent, MAX_PERCENT, "capped");
    }

    #[test]
    fn a_clock_before_the_epoch_counts_as_the_epoch() {
        let t0 = Instant::now() + Duration::from_secs(60);
        let budget = RetryBudget::new(config(100, 0), t0);
        let early = t0 - Duration::from_secs(30);
        budget.deposit(early);
        assert!(budget.try_withdraw(t0));
    }

    #[test]
    fn huge_traffic_saturates_instead_of_overflowing() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(config(MAX_PERCENT, u32::MAX), t0);
        let slot = &budget.slots[0];
        slot.store(pack(0, i32::MAX - 10), Ordering::Relaxed);
        budget.deposit(t0);
        assert_eq!(unpack(slot.load(Ordering::Relaxed)), (0, i32::MAX));
        assert!(budget.try_withdraw(t0));
        slot.store(pack(0, i32::MIN + 10), Ordering::Relaxed);
        assert!(budget.try_withdraw(t0), "the reserve still pays");
        assert_eq!(unpack(slot.load(Ordering::Relaxed)), (0, i32::MIN));
    }

    /// Four threads each try `tries` withdrawals at `now` (depositing before every
    /// other try when `deposit` is set); returns how many were granted.
    fn race(budget: &Arc<RetryBudget>, now: Instant, tries: usize, deposit: bool) -> u64 {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = Arc::clone(budget);
                std::thread::spawn(move || {
                    let mut granted = 0u64;
                    for i in 0..tries {
                        if deposit && i % 2 == 0 {
                            budget.deposit(now);
                        }
                        if budget.try_withdraw(now) {
                            granted += 1;
                        }
                    }
                    granted
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("thread")).sum()
    }

    #[test]
    fn concurrent_withdrawals_in_one_second_never_overdraw() {
        let t0 = Instant::now();
        let budget = Arc::new(RetryBudget::new(config(10, 0), t0));
        for _ in 0..1000 {
            budget.deposit(t0);
        }
        // 1000 requests at 10%: exactly 100 retries, however the threads interleave.
        let now = t0 + Duration::from_millis(500);
        assert_eq!(race(&budget, now, 200, false), 100);
        assert_eq!(budget.refused(), 700);
        assert_eq!(budget.available(now), 0);

        // With deposits racing the withdrawals, every unit is spent at most once: what was
        // granted plus what is left is exactly what was deposited.
        let budget = Arc::new(RetryBudget::new(config(10, 0), t0));
        for _ in 0..1000 {
            budget.deposit(t0);
        }
        let granted = race(&budget, now, 200, true);
        assert!((100..=140).contains(&granted), "{granted}");
        assert_eq!(granted + budget.available(now), 140);
        assert_eq!(budget.refused(), 800 - granted);
    }
}
