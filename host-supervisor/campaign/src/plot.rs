//! The report's SVG plots (plotters, SVG backend: text is emitted as SVG
//! `<text>`, so no font file or fontconfig is needed to draw or view them).

use crate::CampaignError;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn perr(file: &Path) -> impl Fn(String) -> CampaignError + '_ {
    move |what| CampaignError::Plot { file: file.display().to_string(), what }
}

/// Recovery-time CDF, one line per kind; x is logarithmic (ms).
///
/// # Errors
/// [`CampaignError::Plot`].
pub fn recovery_cdf(file: &Path, samples: &BTreeMap<String, Vec<u64>>) -> Result<(), CampaignError> {
    let e = perr(file);
    let all: Vec<f64> = samples.values().flatten().map(|us| (*us as f64 / 1000.0).max(0.01)).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).min(0.1);
    let hi = all.iter().copied().fold(0.0, f64::max).max(1.0) * 1.2;
    let root = SVGBackend::new(file, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Recovery time CDF per fault kind (fault -> first reply executed by the new instance)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("recovery time (ms, log scale)")
        .y_desc("fraction of faults")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, (kind, v)) in samples.iter().enumerate() {
        let mut ms: Vec<f64> = v.iter().map(|us| (*us as f64 / 1000.0).max(0.01)).collect();
        ms.sort_by(f64::total_cmp);
        let colour = COLOURS[i % COLOURS.len()];
        let pts = cdf_points(&ms);
        chart
            .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(format!("{kind} (n={})", v.len()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// Points of the empirical CDF of `sorted` (ascending): every sample up to
/// [`CDF_POINTS`], else that many evenly spaced ranks plus the last (a
/// million-fault run would otherwise put a million points in one SVG
/// polyline for a curve 800 pixels wide).
fn cdf_points(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len();
    let step = n.div_ceil(CDF_POINTS).max(1);
    let mut pts: Vec<(f64, f64)> = (0..n).step_by(step).map(|k| (sorted[k], (k + 1) as f64 / n as f64)).collect();
    if n > 0 && !(n - 1).is_multiple_of(step) {
        pts.push((sorted[n - 1], 1.0));
    }
    pts
}

/// Most points drawn per CDF curve.
const CDF_POINTS: usize = 2_000;

/// Throughput over time with every fault marked at the bottom, one colour per family.
///
/// # Errors
/// [`CampaignError::Plot`].
pub fn throughput(file: &Path, samples: &[(f64, f64)], faults: &[(f64, String)]) -> Result<(), CampaignError> {
    let e = perr(file);
    let t_max = samples.last().map_or(1.0, |s| s.0).max(faults.last().map_or(0.0, |f| f.0)).max(1.0);
    let y_max = samples.iter().map(|s| s.1).fold(0.0, f64::max).max(1.0) * 1.15;
    let root = SVGBackend::new(file, (1000, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Throughput of all clients over time; ticks below: faults (by family)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, -(y_max * 0.12)..y_max)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("time since the load started (s)")
        .y_desc("replies per second")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    chart
        .draw_series(LineSeries::new(samples.iter().copied(), COLOURS[0].stroke_width(2)))
        .map_err(|x| e(x.to_string()))?
        .label("replies/s (250 ms windows)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], COLOURS[0].stroke_width(2)));
    let mut families: Vec<&str> = faults.iter().map(|f| f.1.as_str()).collect();
    families.sort_unstable();
    families.dedup();
    for (i, fam) in families.iter().enumerate() {
        let colour = COLOURS[(i + 1) % COLOURS.len()];
        let band = -(y_max * 0.12) * (i as f64 + 0.5) / families.len() as f64;
        let h = y_max * 0.12 / families.len() as f64 * 0.4;
        // One tick per 1/800 of the time axis at most: a 40 000-fault run
        // would otherwise draw 40 000 elements (a 4 MB SVG) for 1000 pixels.
        let bucket = t_max / 800.0;
        let mut columns: Vec<i64> = faults.iter().filter(|f| f.1 == *fam).map(|f| (f.0 / bucket) as i64).collect();
        // Faults come in schedule order, which lanes interleave in time.
        columns.sort_unstable();
        columns.dedup();
        let ticks: Vec<_> = columns
            .into_iter()
            .map(|c| {
                let x = (c as f64 + 0.5) * bucket;
                PathElement::new(vec![(x, band - h), (x, band + h)], colour.stroke_width(1))
            })
            .collect();
        chart
            .draw_series(ticks)
            .map_err(|x| e(x.to_string()))?
            .label(format!("fault: {fam}"))
            .legend(move |(x, y)| PathElement::new(vec![(x + 9, y - 5), (x + 9, y + 5)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_svg_with_their_labels_as_text() {
        let dir = std::env::temp_dir().join(format!("reinc-campaign-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = BTreeMap::new();
        s.insert("segv".to_owned(), vec![900, 1500, 2100, 40_000]);
        s.insert("SIGKILL".to_owned(), vec![1200, 1300]);
        recovery_cdf(&dir.join("cdf.svg"), &s).unwrap();
        let svg = std::fs::read_to_string(dir.join("cdf.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<text") && svg.contains("segv (n=4)"), "{svg:.300}");
        throughput(&dir.join("tp.svg"), &[(0.25, 100.0), (0.5, 80.0)], &[(0.3, "inject".into())]).unwrap();
        let svg = std::fs::read_to_string(dir.join("tp.svg")).unwrap();
        assert!(svg.contains("fault: inject") && svg.contains("<polyline"), "{svg:.300}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_cdf_of_a_million_samples_is_drawn_with_at_most_two_thousand_points_ending_at_the_max() {
        let sorted: Vec<f64> = (0..1_000_000).map(f64::from).collect();
        let pts = cdf_points(&sorted);
        assert!(pts.len() <= CDF_POINTS + 1, "{}", pts.len());
        assert_eq!(pts.first(), Some(&(0.0, 1e-6)));
        assert_eq!(pts.last(), Some(&(999_999.0, 1.0)));
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        // A short series is drawn whole.
        assert_eq!(cdf_points(&[1.0, 2.0, 3.0]), [(1.0, 1.0 / 3.0), (2.0, 2.0 / 3.0), (3.0, 1.0)]);
        assert!(cdf_points(&[]).is_empty());
    }
}
