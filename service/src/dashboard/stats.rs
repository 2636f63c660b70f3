//! The arithmetic of the figures: small-number suppression, the mean change
//! of paired scores with its 95% confidence interval, rounding.

use super::Figure;

/// Hides every number of a figure derived from more than none and fewer
/// than `min` people: the value, its parts and the count itself (showing
/// `n` would tell the small number the suppression hides). A figure of
/// nobody is not suppressed: there is nothing to disclose.
pub fn suppress(f: &mut Figure, min: i64) {
    if let Some(n) = f.n {
        if n > 0 && n < min {
            f.suppressed = true;
            f.n = None;
            f.value = None;
            f.numerator = None;
            f.denominator = None;
            f.extra.clear();
        }
    }
}

/// Two-sided 97.5% quantiles of Student's t, for 1 to 30 degrees of
/// freedom, then 40, 60 and 120.
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// t(0.975, df); between tabulated values the one for the next smaller df
/// (slightly wider, never narrower, than the exact interval).
pub fn t975(df: i64) -> f64 {
    match df {
        d if d < 1 => f64::NAN,
        d if d <= 30 => T975[(d - 1) as usize],
        d if d < 60 => 2.021,
        d if d < 120 => 2.000,
        d if d < 1000 => 1.980,
        _ => 1.960,
    }
}

/// Mean, sample standard deviation and 95% confidence interval of a mean
/// from the count, sum and sum of squares of the differences.
pub struct MeanCi {
    pub mean: f64,
    pub sd: Option<f64>,
    pub ci: Option<(f64, f64)>,
}

pub fn mean_ci(n: i64, sum: f64, sum_sq: f64) -> Option<MeanCi> {
    if n < 1 {
        return None;
    }
    let nf = n as f64;
    let mean = sum / nf;
    if n < 2 {
        return Some(MeanCi {
            mean,
            sd: None,
            ci: None,
        });
    }
    let var = ((sum_sq - sum * sum / nf) / (nf - 1.0)).max(0.0);
    let sd = var.sqrt();
    let half = t975(n - 1) * sd / nf.sqrt();
    Some(MeanCi {
        mean,
        sd: Some(sd),
        ci: Some((mean - half, mean + half)),
    })
}

/// Figures are given to four decimal places: enough for a chart, and the
/// same on both databases whatever their floating-point summation order.
pub fn round(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_interval_of_a_known_sample() {
        // Differences 1, 2, 3, 4, 5: mean 3, sd √2.5, t(4) 2.776.
        let m = mean_ci(5, 15.0, 55.0).unwrap();
        assert_eq!(m.mean, 3.0);
        let half = 2.776 * 2.5f64.sqrt() / 5f64.sqrt();
        let (lo, hi) = m.ci.unwrap();
        assert!((lo - (3.0 - half)).abs() < 1e-12 && (hi - (3.0 + half)).abs() < 1e-12);
        assert!(mean_ci(1, 2.0, 4.0).unwrap().ci.is_none());
        assert!(mean_ci(0, 0.0, 0.0).is_none());
    }

    #[test]
    fn t_quantiles_never_narrow_the_interval() {
        assert_eq!(t975(1), 12.706);
        assert_eq!(t975(30), 2.042);
        assert_eq!(t975(45), 2.021);
        assert_eq!(t975(5000), 1.960);
    }

    #[test]
    fn small_groups_lose_every_number() {
        let mut f = Figure::count("g", 3, 3);
        f.extra.insert("p90".into(), 1.0.into());
        suppress(&mut f, 5);
        assert!(f.suppressed && f.n.is_none() && f.value.is_none() && f.extra.is_empty());
        let mut f = Figure::count("g", 0, 0);
        suppress(&mut f, 5);
        assert!(!f.suppressed && f.value == Some(0.0));
        let mut f = Figure::count("g", 5, 5);
        suppress(&mut f, 5);
        assert!(!f.suppressed);
    }
}
