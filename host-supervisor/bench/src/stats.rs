//! Pure statistics over samples: percentiles and a least-squares line.

use std::time::Duration;

/// Percentiles of a set of durations, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

/// The `q`-quantile (0..=1) of sorted `v` by the nearest-rank method.
fn nearest_rank(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Percentiles of `samples` (nearest rank). NaN for an empty set.
#[must_use]
pub fn percentiles(samples: &[Duration]) -> Percentiles {
    let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    v.sort_by(f64::total_cmp);
    Percentiles {
        n: v.len(),
        p50_us: nearest_rank(&v, 0.50),
        p99_us: nearest_rank(&v, 0.99),
        max_us: v.last().copied().unwrap_or(f64::NAN),
    }
}

/// Runs of each throughput measurement, its floors' and peers' alternating
/// with it, that a row's [`median`] is taken over.
pub const THROUGHPUT_RUNS: usize = 5;

/// The median of `v` (the upper one of an even count); NaN for none.
///
/// Throughput rows report the median of several alternating runs: one run
/// of a transfer lasts tens of milliseconds, at the mercy of whatever else
/// the machine does in them.
/// [`THROUGHPUT_RUNS`] runs each.
#[must_use]
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A fitted line `y = intercept + slope·x` and its coefficient of
/// determination.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Line {
    /// Intercept.
    pub intercept: f64,
    /// Slope.
    pub slope: f64,
    /// R² (1 = every point on the line).
    pub r2: f64,
}

/// Least-squares fit of `points` (`x`, `y`). `None` with fewer than two
/// distinct `x`.
#[must_use]
pub fn fit_line(points: &[(f64, f64)]) -> Option<Line> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let ss_tot: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    let ss_res: f64 = points.iter().map(|p| (p.1 - intercept - slope * p.0).powi(2)).sum();
    let r2 = if ss_tot == 0.0 { 1.0 } else { 1.0 - ss_res / ss_tot };
    Some(Line { intercept, slope, r2 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_sample_whatever_the_order() {
        assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let p = percentiles(&s);
        assert_eq!((p.n, p.p50_us, p.p99_us, p.max_us), (100, 50.0, 99.0, 100.0));
        let one = percentiles(&[Duration::from_micros(7)]);
        assert_eq!((one.p50_us, one.p99_us), (7.0, 7.0));
    }

    #[test]
    fn percentiles_of_nothing_are_nan_not_a_panic() {
        let p = percentiles(&[]);
        assert_eq!(p.n, 0);
        assert!(p.p50_us.is_nan() && p.p99_us.is_nan());
    }

    #[test]
    fn line_fit_recovers_slope_and_flags_curvature() {
        let exact = fit_line(&[(100.0, 1.5), (1000.0, 10.5), (10_000.0, 100.5)]).unwrap();
        assert!((exact.slope - 0.01).abs() < 1e-12 && (exact.intercept - 0.5).abs() < 1e-9);
        assert!((exact.r2 - 1.0).abs() < 1e-12);
        let quadratic = fit_line(&[(1.0, 1.0), (2.0, 4.0), (3.0, 9.0), (4.0, 16.0), (10.0, 100.0)]).unwrap();
        assert!(quadratic.r2 < 0.99, "{quadratic:?}");
        assert!(fit_line(&[(1.0, 1.0)]).is_none());
        assert!(fit_line(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
    }
}
