//! SVG figures with plotters' SVG backend: text is written as SVG `<text>` elements, so no font
//! library is needed. Latency over time (from a load's 100 ms series, with marked instants such
//! as a cutover) and copy rate against size.

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// Series colours, distinguishable in print.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];
const SIZE: (u32, u32) = (900, 420);
const FONT: &str = "sans-serif";

/// One named line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub label: String,
    /// (x, y) points in x order.
    pub points: Vec<(f64, f64)>,
}

/// A vertical marker with a label (a cutover, a phase change).
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub x: f64,
    pub label: String,
}

/// Latency (ms) over time (s): one line per series, a dashed vertical line per marker.
pub fn latency_over_time(
    title: &str,
    y_label: &str,
    lines: &[Line],
    markers: &[Marker],
) -> Result<String> {
    let x_max = max_of(lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)))
        .max(max_of(markers.iter().map(|m| m.x)))
        .max(0.1);
    let y_max = max_of(lines.iter().flat_map(|l| l.points.iter().map(|p| p.1))).max(0.01) * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("seconds since measuring started")
            .y_desc(y_label)
            .light_line_style(WHITE)
            .draw()
            .map_err(plot_error)?;
        draw_lines(&mut chart, lines)?;
        for marker in markers {
            let style = BLACK.stroke_width(1);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(marker.x, 0.0), (marker.x, y_max)],
                    6,
                    4,
                    style,
                ))
                .map_err(plot_error)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    marker.label.clone(),
                    (marker.x, y_max * 0.97),
                    (FONT, 12),
                )))
                .map_err(plot_error)?;
        }
        draw_legend(&mut chart)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// Events per second against events copied, on a logarithmic size axis.
pub fn rate_vs_size(title: &str, lines: &[Line]) -> Result<String> {
    let xs = || lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let x_min = xs().fold(f64::INFINITY, f64::min).max(1.0);
    let x_max = max_of(xs()).max(x_min * 10.0);
    let y_max = max_of(lines.iter().flat_map(|l| l.points.iter().map(|p| p.1))).max(1.0) * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((x_min / 1.5..x_max * 1.5).log_scale(), 0f64..y_max)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("events copied (log scale)")
            .y_desc("events per second")
            .x_label_formatter(&|x| crate::table::thousands(*x))
            .y_label_formatter(&|y| crate::table::thousands(*y))
            .light_line_style(WHITE)
            .draw()
            .map_err(plot_error)?;
        for (i, line) in lines.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    line.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(line.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    line.points
                        .iter()
                        .map(|p| Circle::new(*p, 4, color.filled())),
                )
                .map_err(plot_error)?;
        }
        draw_legend(&mut chart)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn draw_lines<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    lines: &[Line],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    for (i, line) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(1),
            ))
            .map_err(plot_error)?
            .label(line.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    Ok(())
}

fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()
        .map_err(plot_error)
}

fn max_of(values: impl Iterator<Item = f64>) -> f64 {
    values.filter(|v| v.is_finite()).fold(0.0, f64::max)
}

fn plot_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow!("drawing the figure failed: {error:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_plot_has_lines_labels_and_markers() {
        let lines = vec![
            Line {
                label: "direct".into(),
                points: vec![(0.0, 1.0), (0.1, 2.0), (0.2, 1.5)],
            },
            Line {
                label: "evshift".into(),
                points: vec![(0.0, 2.0), (0.1, 9.0), (0.2, 2.5)],
            },
        ];
        let markers = vec![Marker {
            x: 0.1,
            label: "cutover".into(),
        }];
        let svg = latency_over_time("p99 latency", "ms", &lines, &markers).unwrap();
        assert!(svg.starts_with("<svg"));
        for text in ["direct", "evshift", "cutover", "p99 latency"] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(svg.contains("<polyline"));
    }

    #[test]
    fn rate_plot_has_a_log_axis() {
        let lines = vec![Line {
            label: "evshift bulk copy".into(),
            points: vec![(1e5, 50_000.0), (1e6, 56_000.0), (1e7, 55_000.0)],
        }];
        let svg = rate_vs_size("copy rate", &lines).unwrap();
        assert!(svg.contains("evshift bulk copy") && svg.contains("1,000,000"));
    }
}
