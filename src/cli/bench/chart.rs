//! The kernel benchmark as a picture: one horizontal bar per kernel, its share
//! of the bandwidth roof (the measured device copy when the report has it, else
//! the spec peak), with the 70 % goal marked.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::eval::plot::{ImageFile, bar_end, bar_margin, bar_slots, register_fonts, text_width};

/// One bar: kernel name and its percentage of the roof.
pub struct Bar {
    pub kernel: String,
    pub pct: f64,
}

const GOAL_PCT: f64 = 70.0;

/// Bars one chart draws at most (a `bench kernels` report has a few dozen):
/// the image is 26 pixels high per bar, so a report of 100,000 results made
/// a 2.6-million-pixel-high bitmap (an overflow in plotters, a panic).
pub const MAX_BARS: usize = 500;

/// Writes the bars to `path` (`.svg` -> SVG, otherwise PNG). `roof` names what
/// 100 % means (e.g. "device copy 4310 GB/s").
pub fn save_bars(path: &Path, title: &str, roof: &str, bars: &[Bar]) -> Result<()> {
    anyhow::ensure!(!bars.is_empty(), "no GPU results to draw");
    anyhow::ensure!(
        bars.len() <= MAX_BARS,
        "{} results with GPU figures: a chart draws at most {MAX_BARS} (one bar each)",
        bars.len()
    );
    let file = ImageFile::create(path)?;
    register_fonts();
    // Room for the longest kernel name (190 pixels cut longer ones), the
    // image wider by what it takes beyond them.
    let label_area = bars
        .iter()
        .map(|b| text_width(&b.kernel, 13.0) + 12)
        .max()
        .unwrap_or(0)
        .max(190);
    let size = (710 + label_area, 120 + 26 * bars.len() as u32);
    let x_max = bars.iter().map(|b| b.pct).fold(100.0f64, f64::max) * 1.05;
    fn draw<DB: DrawingBackend>(
        root: DrawingArea<DB, plotters::coord::Shift>,
        title: &str,
        roof: &str,
        bars: &[Bar],
        x_max: f64,
        label_area: u32,
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let err = |e| anyhow!("drawing failed: {e:?}");
        root.fill(&WHITE).map_err(err)?;
        let n = bars.len();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(label_area)
            .build_cartesian_2d(0.0..x_max, bar_slots(n).into_segmented())
            .map_err(err)?;
        let label = |v: &SegmentValue<usize>| match v {
            // Key points are the bars' slots; Last (the axis's end) has none.
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => n
                .checked_sub(1 + *i)
                .and_then(|j| bars.get(j))
                .map_or(String::new(), |b| b.kernel.clone()),
            SegmentValue::Last => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_labels(11)
            .light_line_style(RGBColor(235, 235, 235))
            .y_labels(n)
            .y_label_formatter(&label)
            // The goal line explained here, not in a legend box, which
            // sat over the lowest bars and their values.
            .x_desc(format!(
                "% of {roof}; red line: the {GOAL_PCT:.0} % goal (green bars reach it)"
            ))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        // At most 20 pixels thick, as in a chart of many (a lone bar filled
        // the whole plot's height).
        let (_, ys) = chart.plotting_area().get_pixel_range();
        let margin = bar_margin((ys.end - ys.start) / n as i32, 20, 3);
        // First kernel at the top.
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let row = n - 1 - i;
                let color = if b.pct >= GOAL_PCT {
                    RGBColor(46, 139, 87)
                } else {
                    RGBColor(70, 110, 180)
                };
                let mut r = Rectangle::new(
                    [(0.0, SegmentValue::Exact(row)), (b.pct, bar_end(row, n))],
                    color.filled(),
                );
                r.set_margin(margin, margin, 0, 0);
                r
            }))
            .map_err(err)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                Text::new(
                    format!("{:.1}", b.pct),
                    (b.pct + x_max * 0.005, SegmentValue::CenterOf(n - 1 - i)),
                    // Beside the bar's middle (the default anchor, the
                    // text's top left, hung it below).
                    TextStyle::from(("sans-serif", 12).into_font())
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                )
            }))
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                [
                    (GOAL_PCT, SegmentValue::Exact(0)),
                    (GOAL_PCT, SegmentValue::Last),
                ],
                RED.stroke_width(2),
            ))
            .map_err(err)?;
        root.present().map_err(err)
    }
    if path.extension().is_some_and(|e| e == "svg") {
        draw(
            SVGBackend::new(file.target(), size).into_drawing_area(),
            title,
            roof,
            bars,
            x_max,
            label_area,
        )
    } else {
        draw(
            BitMapBackend::new(file.target(), size).into_drawing_area(),
            title,
            roof,
            bars,
            x_max,
            label_area,
        )
    }
    .with_context(|| format!("writing {}", path.display()))
    .and_then(|()| file.keep())
}
