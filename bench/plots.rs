//! The charts next to results.md (SVG, drawn with plotters): a cold mutate against its
//! floor and containerd, the latency distribution of the warm steps, and the fan-out.

use std::path::Path;

use plotters::prelude::*;

use crate::inproc::{self, Report};
use crate::R;

const FONT: &str = "sans-serif";

/// One bar: its label, seconds, and whether it is a floor (drawn grey).
pub struct Bar {
    pub label: String,
    pub secs: f64,
    pub floor: bool,
}

/// [`bars`] on a logarithmic scale: for values from milliseconds to seconds.
pub fn log_bars(path: &Path, title: &str, bars: &[Bar]) -> R<()> {
    let height = 90 + 30 * bars.len() as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let min = bars
        .iter()
        .map(|b| b.secs)
        .filter(|s| *s > 0.0)
        .fold(f64::MAX, f64::min)
        .min(1e-3)
        / 2.0;
    let max = bars.iter().map(|b| b.secs).fold(min, f64::max) * 40.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 16))
        .margin(12)
        .x_label_area_size(36)
        .build_cartesian_2d((min..max).log_scale(), 0f64..bars.len() as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("seconds (median, log scale)")
        .x_label_formatter(&|x| dur(*x))
        .draw()?;
    for (i, b) in bars.iter().enumerate() {
        let y = (bars.len() - 1 - i) as f64;
        let colour = if b.label.contains("containerd (ctr)") {
            RGBColor(214, 96, 77)
        } else if b.label.contains("artifact") {
            RGBColor(67, 147, 195)
        } else {
            RGBColor(146, 197, 222)
        };
        chart.draw_series(std::iter::once(Rectangle::new(
            [(min, y + 0.15), (b.secs.max(min), y + 0.85)],
            colour.filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{}: {}", b.label, dur(b.secs)),
            (b.secs.max(min) * 1.15, y + 0.62),
            (FONT, 12),
        )))?;
    }
    root.present()?;
    Ok(())
}

/// Horizontal bars, one per line, the value written after each.
pub fn bars(path: &Path, title: &str, bars: &[Bar]) -> R<()> {
    let height = 90 + 34 * bars.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = bars.iter().map(|b| b.secs).fold(0.0, f64::max) * 1.45;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(36)
        .build_cartesian_2d(0f64..max.max(1e-6), 0f64..bars.len() as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("seconds (median)")
        .x_label_formatter(&|x| format!("{x:.2}"))
        .draw()?;
    for (i, b) in bars.iter().enumerate() {
        // The first bar at the top.
        let y = (bars.len() - 1 - i) as f64;
        let colour = if b.floor {
            RGBColor(160, 160, 160)
        } else if b.label.starts_with("containerd") {
            RGBColor(214, 96, 77)
        } else {
            RGBColor(67, 147, 195)
        };
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, y + 0.15), (b.secs, y + 0.85)],
            colour.filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{}: {}", b.label, dur(b.secs)),
            (b.secs + max * 0.01, y + 0.62),
            (FONT, 13),
        )))?;
    }
    root.present()?;
    Ok(())
}

/// Cumulative distributions of single-call latencies (log scale).
fn cdf(path: &Path, title: &str, series: &[(&str, &[f64])]) -> R<()> {
    let root = SVGBackend::new(path, (900, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let all = series.iter().flat_map(|(_, v)| v.iter().copied());
    let (lo, hi) = all.fold((f64::INFINITY, 0f64), |(a, b), x| (a.min(x), b.max(x)));
    let (lo, hi) = ((lo * 1e6 * 0.8).max(1.0), (hi * 1e6 * 1.25).max(10.0));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("latency of one call (µs, log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("fraction of calls at most")
        .draw()?;
    let colours = [
        RGBColor(67, 147, 195),
        RGBColor(214, 96, 77),
        RGBColor(90, 174, 97),
        RGBColor(153, 112, 171),
        RGBColor(224, 130, 20),
    ];
    for ((name, v), colour) in series.iter().zip(colours.iter().cycle()) {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let points: Vec<(f64, f64)> = v
            .iter()
            .enumerate()
            .map(|(i, x)| (x * 1e6, (i + 1) as f64 / n))
            .collect();
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Wall time of N concurrent mutates against N, with the line of N one-by-one calls.
fn fanout(path: &Path, points: &[(usize, f64)], single: Option<f64>) -> R<()> {
    let root = SVGBackend::new(path, (900, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_n = points.iter().map(|(n, _)| *n).max().unwrap_or(1) as f64;
    let serial = |n: f64| single.map(|s| s * n * 1e3);
    let max_ms = points
        .iter()
        .map(|(_, w)| w * 1e3)
        .chain(serial(max_n))
        .fold(0f64, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Fan-out: N threads, one warm mutate each, one handle",
            (FONT, 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_n * 1.05, 0f64..max_ms.max(1.0))?;
    chart
        .configure_mesh()
        .x_desc("threads (N)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("wall time until the last returns (ms, median)")
        .draw()?;
    let blue = RGBColor(67, 147, 195);
    let line: Vec<(f64, f64)> = points.iter().map(|(n, w)| (*n as f64, w * 1e3)).collect();
    chart
        .draw_series(LineSeries::new(line.clone(), blue.stroke_width(2)))?
        .label("imv, N threads at once")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue));
    chart.draw_series(line.iter().map(|p| Circle::new(*p, 4, blue.filled())))?;
    if let Some(s) = single {
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 0.0), (max_n, s * max_n * 1e3)],
                grey.stroke_width(1),
            ))?
            .label("N × one warm mutate alone (median)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn dur(secs: f64) -> String {
    if secs < 1e-3 {
        format!("{:.0} µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.1} ms", secs * 1e3)
    } else {
        format!("{secs:.2} s")
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The warm and fan-out charts of the in-process figures, into `dir`; the cold chart is
/// drawn by the report, which also has the command-line rows.
pub fn draw(dir: &Path, ip: &Report) -> R<()> {
    let series: Vec<(&str, &[f64])> = [
        inproc::WARM,
        inproc::REUSE,
        inproc::CLEANUP,
        inproc::RELEASE,
    ]
    .iter()
    .filter_map(|name| ip.get(name).map(|v| (*name, v)))
    .filter(|(_, v)| !v.is_empty())
    .collect();
    // A chart with nothing to draw is left out: an empty range would not end plotters'
    // mesh loop.
    if !series.is_empty() {
        cdf(
            &dir.join("warm.svg"),
            "Warm steps in process: latency distribution",
            &series,
        )?;
    }
    let points: Vec<(usize, f64)> = ip.fanout.iter().map(|(n, v)| (*n, median(v))).collect();
    if !points.is_empty() {
        fanout(
            &dir.join("fanout.svg"),
            &points,
            ip.get(inproc::WARM).map(median),
        )?;
    }
    Ok(())
}
