//! `--plot FILE.svg`: the latency of the main figure over the measured window, one point per second (p50,
//! p99 and max lines, log-scale latency), drawn from the report's timeline with plotters' SVG backend.
//!
//! Pure: it renders a string and never touches the file system (the caller writes it).

use plotters::prelude::*;

use crate::report::Report;
use crate::stats::{format_us, SecondRow};

/// The SVG's size in pixels.
const WIDTH_PX: u32 = 1000;
const HEIGHT_PX: u32 = 560;

/// Which value of a second a line draws.
type Percentile = fn(&SecondRow) -> u64;

#[derive(Debug, thiserror::Error)]
#[error("cannot draw the plot: {0}")]
pub struct PlotError(String);

/// The latency-over-time plot of `report` as an SVG document. A report without a timeline (`expiry`) gives
/// an empty chart that says so.
pub fn latency_svg(report: &Report) -> Result<String, PlotError> {
    let mut svg = String::new();
    draw(report, &mut svg).map_err(|e| PlotError(e.to_string()))?;
    Ok(svg)
}

fn draw(report: &Report, svg: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "{} on {}: latency per second",
        report.workload, report.server
    );
    let rows: Vec<_> = report.timeline.iter().filter(|r| r.count > 0).collect();
    // A log axis needs a positive range: from the decade under the best second's p50 (at least 1 µs) to
    // twice the worst second's max, room for the legend.
    let low_us = rows.iter().map(|r| r.p50_us).min().unwrap_or(1).max(1) as f64;
    let bottom_us = 10f64.powf(low_us.log10().floor());
    let top_us = rows.iter().map(|r| r.max_us).max().unwrap_or(1000).max(10) as f64 * 2.0;
    let seconds = report.timeline.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(&title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..seconds, (bottom_us..top_us).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("second of the measured window")
        .y_desc("latency")
        .y_label_formatter(&|us| format_us(us.round() as u64))
        .draw()?;
    chart.draw_series(std::iter::once(Text::new(
        report.description.clone(),
        (0.02 * seconds, top_us / 1.6),
        ("sans-serif", 14),
    )))?;
    if rows.is_empty() {
        chart.draw_series(std::iter::once(Text::new(
            "no per-second timeline for this workload",
            (0.3 * seconds, top_us.sqrt()),
            ("sans-serif", 18),
        )))?;
    }
    // Each second's point sits in the middle of its second; a value under the axis (0 µs, below the
    // histogram's resolution) is drawn on its floor.
    let lines: [(&str, RGBColor, Percentile); 3] = [
        ("p50", BLUE, |r| r.p50_us),
        ("p99", RGBColor(230, 120, 0), |r| r.p99_us),
        ("max", RED, |r| r.max_us),
    ];
    for (name, color, value) in lines {
        let points = rows
            .iter()
            .map(|r| (r.second as f64 + 0.5, (value(r) as f64).max(bottom_us)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::sysstat::CpuReport;

    fn report(timeline: Vec<SecondRow>) -> Report {
        Report {
            workload: "ops".into(),
            description: "set, 32 sessions × 1 in flight, closed loop".into(),
            server: "127.0.0.1:2181".into(),
            root: None,
            window_s: timeline.len() as f64,
            rates: vec![],
            latencies: vec![],
            figures: vec![],
            errors: BTreeMap::new(),
            error_total: 0,
            cpu: CpuReport {
                wall_s: 1.0,
                cores: 2,
                generator_cpu_s: 0.1,
                generator_pct: 10.0,
                machine_busy_pct: None,
                server_cpu_s: None,
                server_pct: None,
                others_pct: None,
            },
            server_rss_kib: None,
            timeline,
            notes: vec![],
        }
    }

    fn second(second: usize, p50_us: u64, p99_us: u64, max_us: u64) -> SecondRow {
        SecondRow {
            second,
            count: 1000,
            p50_us,
            p99_us,
            max_us,
        }
    }

    /// The text of every `<text>` element.
    fn texts(svg: &str) -> Vec<&str> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>')?.1.split("</text>").next())
            .map(str::trim)
            .collect()
    }

    #[test]
    fn svg_has_a_line_per_percentile_with_a_point_per_second() {
        let svg = latency_svg(&report(vec![
            second(0, 120, 450, 900),
            second(1, 130, 500, 15_000),
            second(2, 0, 480, 2_000),
        ]))
        .expect("a plot");
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        let texts = texts(&svg);
        assert!(texts.contains(&"ops on 127.0.0.1:2181: latency per second"));
        assert!(texts.contains(&"set, 32 sessions × 1 in flight, closed loop"));
        for name in ["p50", "p99", "max"] {
            assert!(texts.contains(&name), "legend {name}: {texts:?}");
        }
        for tick in ["10µs", "100µs", "1.00ms", "10.0ms"] {
            assert!(texts.contains(&tick), "y tick {tick}: {texts:?}");
        }
        // One polyline per series, each with the three seconds (x = 0.5, 1.5, 2.5).
        let lines: Vec<&str> = svg
            .split("<polyline")
            .skip(1)
            .filter(|l| l.contains("stroke-width=\"2\""))
            .collect();
        assert!(lines.len() >= 3, "{svg}");
        for l in &lines[..3] {
            let points = l
                .split("points=\"")
                .nth(1)
                .expect("points")
                .split('"')
                .next();
            assert_eq!(points.expect("points").split_whitespace().count(), 3, "{l}");
        }
    }

    #[test]
    fn a_report_without_timeline_still_gives_a_chart() {
        let svg = latency_svg(&report(vec![])).expect("a plot");
        assert!(svg.contains("no per-second timeline for this workload"));
    }
}
