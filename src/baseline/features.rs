//! Feature vectors of the classic baselines, from a flow's packet metadata
//! (`traffic::dataset::packet_meta`): sizes, directions and times of its first K
//! packets.

use crate::traffic::dataset::packet_meta::PacketSlot;

/// Statistics per packet-size series in AppScanner (Taylor et al., 2016):
/// min, max, mean, median absolute deviation, standard deviation, variance,
/// skew, kurtosis, the 10th..90th percentiles and the count.
pub const APPSCANNER_STATS: usize = 18;
/// Three series: packets from the responder, from the initiator, and both.
pub const APPSCANNER_FEATURES: usize = 3 * APPSCANNER_STATS;

/// AppScanner's 54 statistical features of a flow's packet sizes.
///
/// Over the first K packets that `<part>.pkts` keeps (`tokenize
/// --packets`, 10 by default), the packets the model sees, not over the
/// whole flow (a burst split by idle time) as in the paper: the count
/// saturates at K, and the statistics describe the flow's opening only.
pub fn appscanner(pkts: &[PacketSlot]) -> Vec<f64> {
    let size = |p: &PacketSlot| f64::from(p.size);
    let incoming: Vec<f64> = pkts
        .iter()
        .filter(|p| p.from_responder == 1)
        .map(size)
        .collect();
    let outgoing: Vec<f64> = pkts
        .iter()
        .filter(|p| p.from_responder == 0)
        .map(size)
        .collect();
    let both: Vec<f64> = pkts.iter().map(size).collect();
    let mut out = Vec::with_capacity(APPSCANNER_FEATURES);
    for s in [incoming, outgoing, both] {
        out.extend(series_stats(s));
    }
    out
}

/// The 18 statistics of one series (all zero when it is empty), defined as
/// NumPy's and SciPy's defaults, which AppScanner's reimplementations call
/// (checked against numpy 2.4 / scipy 1.17 on the IoT Sentinel flows: 5e-15
/// relative at most):
/// - variance and standard deviation over `n` (population, `np.var`,
///   `np.std`; not `n - 1` as pandas or `statistics.variance`);
/// - skew: biased Fisher-Pearson `m3 / m2^1.5` (`scipy.stats.skew`);
/// - kurtosis: excess (Fisher, normal = 0), biased `m4 / m2^2 - 3`
///   (`scipy.stats.kurtosis`);
/// - median absolute deviation: median of `|x - median|`, unscaled
///   (`scipy.stats.median_abs_deviation`, scale 1; not 1.4826);
/// - percentiles: linear interpolation between order statistics
///   (`np.percentile`'s default, Hyndman-Fan type 7).
///
/// Deliberate differences from SciPy: a constant series (one packet
/// included) has skew and kurtosis 0 where SciPy gives NaN, and an empty
/// series (no packet in that direction) is 18 zeros, count 0 included,
/// where NumPy raises: the forest takes no NaN.
fn series_stats(mut v: Vec<f64>) -> [f64; APPSCANNER_STATS] {
    let mut out = [0.0; APPSCANNER_STATS];
    if v.is_empty() {
        return out;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    let (skew, kurt) = if std > 0.0 {
        let m3 = v.iter().map(|x| ((x - mean) / std).powi(3)).sum::<f64>() / n;
        let m4 = v.iter().map(|x| ((x - mean) / std).powi(4)).sum::<f64>() / n;
        (m3, m4 - 3.0)
    } else {
        (0.0, 0.0)
    };
    let med = percentile(&v, 50.0);
    let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    out[..8].copy_from_slice(&[
        v[0],
        v[v.len() - 1],
        mean,
        percentile(&dev, 50.0),
        std,
        var,
        skew,
        kurt,
    ]);
    for (i, p) in (10..=90).step_by(10).enumerate() {
        out[8 + i] = percentile(&v, p as f64);
    }
    out[17] = n;
    out
}

/// Linear-interpolated percentile of sorted, non-empty `v` (NumPy's default).
fn percentile(v: &[f64], p: f64) -> f64 {
    let pos = p / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// The k-NN's view of a flow: per packet of the first `k`, its size (in
/// units of 1,500 bytes), direction (+1 initiator, -1 responder) and
/// inter-arrival time (log microseconds, scaled to about 1); zeros where the
/// flow has fewer packets.
pub fn first_packets(pkts: &[PacketSlot], k: usize) -> Vec<f64> {
    let mut out = vec![0.0; 3 * k];
    let mut prev = 0u32;
    for (i, p) in pkts.iter().take(k).enumerate() {
        let iat = p.offset_us.saturating_sub(prev);
        prev = p.offset_us;
        out[3 * i] = f64::from(p.size) / 1500.0;
        out[3 * i + 1] = if p.from_responder == 1 { -1.0 } else { 1.0 };
        out[3 * i + 2] = (1.0 + f64::from(iat)).ln() / 16.0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(size: u16, from_responder: u8, offset_us: u32) -> PacketSlot {
        PacketSlot {
            size,
            from_responder,
            reserved: 0,
            offset_us,
        }
    }

    #[test]
    fn appscanner_statistics_of_known_series() {
        // Responder sends 100, 300; initiator 60, 60, 60.
        let f = appscanner(&[
            slot(60, 0, 0),
            slot(100, 1, 5),
            slot(60, 0, 9),
            slot(300, 1, 12),
            slot(60, 0, 20),
        ]);
        assert_eq!(f.len(), APPSCANNER_FEATURES);
        let incoming = &f[..18];
        assert_eq!(&incoming[..3], &[100.0, 300.0, 200.0], "min max mean");
        assert_eq!(incoming[3], 100.0, "median absolute deviation");
        assert_eq!((incoming[4], incoming[5]), (100.0, 10_000.0), "std, var");
        assert_eq!(incoming[6], 0.0, "two points: no skew");
        assert_eq!(incoming[8], 120.0, "10th percentile, interpolated");
        assert_eq!(incoming[17], 2.0, "count");
        let outgoing = &f[18..36];
        assert_eq!((outgoing[4], outgoing[7]), (0.0, 0.0), "constant series");
        assert_eq!(f[53], 5.0, "both directions: 5 packets");
        assert!(appscanner(&[]).iter().all(|&x| x == 0.0));
    }

    #[test]
    fn appscanner_statistics_equal_numpy_and_scipy() {
        // np/scipy on [60, 1500, 52, 60, 300, 100] (all from the initiator).
        let sizes = [60, 1500, 52, 60, 300, 100];
        let pkts: Vec<_> = sizes.iter().map(|&s| slot(s, 0, 0)).collect();
        let f = appscanner(&pkts);
        let want = [
            (0, 52.0, "min"),
            (1, 1500.0, "max"),
            (2, 2072.0 / 6.0, "mean"),
            (3, 24.0, "median_abs_deviation"),
            (4, 274_062.222_222_222_2f64.sqrt(), "np.std"),
            (5, 274_062.222_222_222_2, "np.var"),
            (6, 1.687_766_174_660_684_2, "scipy.stats.skew"),
            (7, 0.998_256_140_245_048_5, "scipy.stats.kurtosis"),
            (8, 56.0, "10th"),
            (12, 80.0, "50th"),
            (15, 300.0, "80th"),
            (16, 900.0, "90th"),
            (17, 6.0, "count"),
        ];
        for (i, v, what) in want {
            let got = f[18 + i];
            assert!(
                (got - v).abs() <= 1e-12 * v.abs().max(1.0),
                "{what}: {got} vs {v}"
            );
            assert_eq!(f[36 + i], got, "{what}: both directions = initiator's");
        }
        assert!(f[..18].iter().all(|&x| x == 0.0), "no responder packet");
        // One packet: SciPy's NaN skew and kurtosis are 0 here.
        let one = appscanner(&[slot(77, 1, 0)]);
        assert_eq!(
            &one[..18],
            &[
                77.0, 77.0, 77.0, 0.0, 0.0, 0.0, 0.0, 0.0, 77.0, 77.0, 77.0, 77.0, 77.0, 77.0,
                77.0, 77.0, 77.0, 1.0
            ]
        );
    }

    #[test]
    fn first_packets_layout() {
        let f = first_packets(&[slot(1500, 0, 0), slot(750, 1, 99)], 3);
        assert_eq!(f.len(), 9);
        assert_eq!(&f[..3], &[1.0, 1.0, 0.0]);
        assert_eq!(f[3], 0.5);
        assert_eq!(f[4], -1.0);
        assert!((f[5] - 100f64.ln() / 16.0).abs() < 1e-12);
        assert_eq!(&f[6..], &[0.0; 3], "absent third packet");
    }
}
