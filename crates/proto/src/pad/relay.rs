//! The relay's schedule (SPEC P5; `docs/protocols/pads.md`, Mailboxes and the relay): messages
//! posted to mailboxes are released in batches, so that which incoming message became which
//! outgoing one is hard to tell from the timing.
//!
//! ```text
//! window   w = ⌊taken_at / W⌋                                   W = 10 s
//! delay    δ_w = HMAC-SHA256(relay key, "tally/pad-relay/v1" 0x00 ‖ w)[0..8] mod D   D = 20 s
//! release  (w + 1) · W + δ_w
//! order    by (release, message id); ids are 16 random bytes
//! ```
//!
//! Every message of a window is released at the same instant, after the window has closed,
//! and is collected in the order of its random id: within a batch of `k`, each arrival is
//! equally likely to come out at any position, whatever the arrival times. The delay is the
//! same on every node of a database (the relay key derives from `pad.key`) and needs no
//! state. What it hides, and what not: `pads.md`, Guarantee.

use tally_kernel::Timestamp;
use tally_kernel::crypto::kdf::HmacSha256Key;

/// Seconds of a window by default.
pub const WINDOW_S: i64 = 10;
/// The largest delay after a window's end by default, seconds (exclusive).
pub const DELAY_MAX_S: i64 = 20;

/// The relay's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Seconds of a window (1 or more).
    pub window_s: i64,
    /// The largest delay after a window's end, seconds (exclusive; 1 or more).
    pub delay_max_s: i64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            window_s: WINDOW_S,
            delay_max_s: DELAY_MAX_S,
        }
    }
}
/// Domain of the delay's HMAC.
pub const DOMAIN: &[u8] = b"tally/pad-relay/v1\0";

impl Schedule {
    /// When a message taken at `taken_at` is released, under the node's relay key.
    pub fn release_at(&self, key: &HmacSha256Key, taken_at: Timestamp) -> Timestamp {
        let window_us = self.window_s.max(1) * 1_000_000;
        let window = taken_at.0.div_euclid(window_us);
        let mac = key.mac_parts(&[DOMAIN, &window.to_be_bytes()]);
        let draw = u64::from_be_bytes(mac[..8].try_into().expect("8 bytes"));
        let delay = (draw % (self.delay_max_s.max(1) as u64 * 1_000_000)) as i64;
        Timestamp((window + 1) * window_us + delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_kernel::crypto::kdf::sha256;

    fn key() -> HmacSha256Key {
        HmacSha256Key::new(&[5; 32])
    }

    /// 10 000 messages arriving at random over 200 windows, each with a random id: none is
    /// released before its window closed; all of a window together; within a batch, the
    /// position of each arrival is uniform (χ² over positions scaled to eight bins, p > 0.001)
    /// and its rank correlation with the arrival order is below 0.05.
    #[test]
    fn batches_hide_the_arrival_order() {
        let start = 1_800_000_000_000_000i64;
        let rand = |i: u64, what: &[u8]| {
            let mut input = i.to_be_bytes().to_vec();
            input.extend_from_slice(what);
            u64::from_be_bytes(sha256(&input)[..8].try_into().expect("8"))
        };
        let span = 200 * WINDOW_S * 1_000_000;
        let mut messages: Vec<(i64, u64, Timestamp)> = (0..10_000u64)
            .map(|i| {
                let at = start + (rand(i, b"arrival") % span as u64) as i64;
                (
                    at,
                    rand(i, b"id"),
                    Schedule::default().release_at(&key(), Timestamp(at)),
                )
            })
            .collect();
        messages.sort_by_key(|m| m.0);
        let mut batches: std::collections::BTreeMap<i64, Vec<(i64, u64)>> = Default::default();
        for (at, id, release) in &messages {
            let window_end = (at.div_euclid(WINDOW_S * 1_000_000) + 1) * WINDOW_S * 1_000_000;
            assert!(release.0 >= window_end, "released before its window closed");
            assert!(release.0 < window_end + DELAY_MAX_S * 1_000_000);
            batches.entry(release.0).or_default().push((*at, *id));
        }
        assert_eq!(batches.len(), 200, "one release per window");
        let (mut bins, mut rho_sum, mut n) = ([0u64; 8], 0.0f64, 0.0f64);
        for batch in batches.values() {
            let k = batch.len();
            // Arrival order is the vector's order; release order is by id.
            let mut by_id: Vec<usize> = (0..k).collect();
            by_id.sort_by_key(|&j| batch[j].1);
            let mut position = vec![0usize; k];
            for (p, &j) in by_id.iter().enumerate() {
                position[j] = p;
            }
            for (j, &p) in position.iter().enumerate() {
                bins[p * 8 / k] += 1;
                let _ = j;
            }
            // Spearman's ρ between arrival rank j and release rank position[j].
            let d2: f64 = position
                .iter()
                .enumerate()
                .map(|(j, &p)| (j as f64 - p as f64).powi(2))
                .sum();
            let kf = k as f64;
            rho_sum += (1.0 - 6.0 * d2 / (kf * (kf * kf - 1.0))) * kf;
            n += kf;
        }
        let expected = 10_000.0 / 8.0;
        let chi2: f64 = bins
            .iter()
            .map(|&o| (o as f64 - expected).powi(2) / expected)
            .sum();
        // χ² with 7 degrees of freedom: p = 0.001 at 24.32.
        assert!(
            chi2 < 24.32,
            "positions not uniform: χ² = {chi2}, bins {bins:?}"
        );
        let rho = rho_sum / n;
        assert!(rho.abs() < 0.05, "arrival and release correlate: ρ = {rho}");
    }

    /// The delay is the key's: another key (another database) gives other delays; the same
    /// key on another node the same.
    #[test]
    fn the_delay_is_shared_by_the_nodes_of_a_database() {
        let t = Timestamp(1_800_000_000_123_456);
        let s = Schedule::default();
        assert_eq!(
            s.release_at(&key(), t),
            s.release_at(&HmacSha256Key::new(&[5; 32]), t)
        );
        let others = (0..8)
            .filter(|i| s.release_at(&HmacSha256Key::new(&[*i; 32]), t) != s.release_at(&key(), t))
            .count();
        assert!(others >= 7);
    }
}
