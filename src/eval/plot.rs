//! Figures as PNG and SVG: the confusion-matrix heatmap and training curves.
//!
//! Text is drawn with DejaVu Sans embedded through the `dejavu` crate and
//! registered with plotters, so no system font is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::eval::confusion::{ConfusionMatrix, names};

const FONT: &str = "sans-serif";

/// Registers the embedded font once per process.
pub fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TTF shipped by the crate; failure would be a packaging bug.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Width in pixels of `text` in the figures' font.
pub(crate) fn text_width(text: &str, size: f64) -> u32 {
    FontDesc::new(FontFamily::Name(FONT), size, FontStyle::Normal)
        .box_size(text)
        .map(|(w, _)| w)
        .unwrap_or((text.len() as f64 * size * 0.6) as u32)
}

fn draw_err<E: std::error::Error + Send + Sync + 'static>(
    e: DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

/// An image file being written: drawn to a temporary file beside `path`
/// (`NAME.tmp<pid>.EXT`, its extension kept: the backend picks the format
/// by it), created before anything is drawn, so that a path that cannot be
/// written is an error in the system's words ("writing F: No such file or
/// directory (os error 2)") where plotters' said "drawing failed: ...
/// ImageError(IoError(Os { code: 2, kind: NotFound, ... }))" once the
/// figure was drawn. [`ImageFile::keep`] renames the complete image into
/// place; dropped before it, the temporary file is removed, as a failed
/// run leaves no output it started. A killed run leaves no image cut short
/// (or empty) under the real name.
pub(crate) struct ImageFile<'a> {
    path: &'a Path,
    tmp: std::path::PathBuf,
    kept: bool,
}

impl<'a> ImageFile<'a> {
    pub(crate) fn create(path: &'a Path) -> Result<Self> {
        let stem = path.file_stem().unwrap_or_default();
        let mut name = stem.to_os_string();
        name.push(format!(".tmp{}", std::process::id()));
        if let Some(ext) = path.extension() {
            name.push(".");
            name.push(ext);
        }
        let tmp = path.with_file_name(name);
        let mut suffix = std::ffi::OsString::new();
        if let Some(ext) = path.extension() {
            suffix.push(".");
            suffix.push(ext);
        }
        crate::atomic_file::remove_stale_tmps(path, stem, &suffix);
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", path.display()))?;
        Ok(ImageFile {
            path,
            tmp,
            kept: false,
        })
    }

    /// Where the image is drawn.
    pub(crate) fn target(&self) -> &Path {
        &self.tmp
    }

    /// The image is complete: it goes in place.
    pub(crate) fn keep(mut self) -> Result<()> {
        std::fs::rename(&self.tmp, self.path)
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for ImageFile<'_> {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Image format chosen by the file extension.
fn is_svg(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
}

/// White -> dark blue (matplotlib's "Blues" end points), `v` in [0, 1].
fn blues(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let lo = (247.0, 251.0, 255.0);
    let hi = (8.0, 48.0, 107.0);
    let mix = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
    RGBColor(mix(lo.0, hi.0), mix(lo.1, hi.1), mix(lo.2, hi.2))
}

const TITLE_SIZE: f64 = 20.0;

/// Up to this many classes every cell shows its count; past it a 0 is left
/// blank (its colour says it): nDPI's 344 classes wrote 118,000 zeros, a
/// 28 MB SVG in which the few counts that matter were hard to find.
const ZEROS_WRITTEN_UP_TO: usize = 30;

/// The cells of a class without test samples: grey, not the colour of a 0
/// share (white, as if every sample had gone to other classes' columns).
const NO_SAMPLES: RGBColor = RGBColor(210, 210, 210);

struct HeatmapLayout {
    cell: i32,
    left: i32,
    /// Where the rotated "true class" is centred.
    axis_x: i32,
    top: i32,
    width: u32,
    height: u32,
    label_size: f64,
    count_size: f64,
}

fn heatmap_layout(labels: &[String], title: &str, widest_count: u64) -> HeatmapLayout {
    let n = labels.len().max(1) as i32;
    let cell = (720 / n).clamp(24, 72);
    let label_size = (cell as f64 * 0.45).clamp(11.0, 16.0);
    let widest = labels
        .iter()
        .map(|l| text_width(l, label_size))
        .max()
        .unwrap_or(0) as i32;
    let left = widest + 50; // names + rotated axis title
    let top = 50; // title
    let grid = cell * n;
    let bar = 90; // colour bar and its ticks
    // The counts fit their cells: six digits in the 30-pixel cells of 24
    // classes ran into their neighbours.
    let mut count_size = (cell as f64 * 0.32).clamp(8.0, 16.0);
    let count_width = text_width(&widest_count.to_string(), count_size) as f64;
    let room = (cell - 4) as f64;
    if count_width > room {
        count_size *= room / count_width;
    }
    // The title fits the image: over two or three classes the grid is
    // narrower than eval's title, which was cut off at both ends.
    let title_width = FontDesc::new(FontFamily::Name(FONT), TITLE_SIZE, FontStyle::Bold)
        .box_size(title)
        .map_or(0, |(w, _)| w as i32);
    let content = left + grid + bar + 20;
    let width = content.max(title_width + 40);
    HeatmapLayout {
        cell,
        // The grid centred under a wider title.
        left: left + (width - content) / 2,
        axis_x: 16 + (width - content) / 2,
        top,
        width: width as u32,
        height: (top + grid + widest + 50) as u32,
        label_size,
        count_size,
    }
}

/// Draws the heatmap: cells coloured by the row-normalised share (recall per
/// true class), the raw count written in each cell (but zeros past
/// 30 classes), class names on both axes.
pub fn draw_confusion<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    cm: &ConfusionMatrix,
    classes: &[String],
    title: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let labels = names(classes, cm.n_classes);
    let l = heatmap_layout(&labels, title, cm.counts.iter().copied().max().unwrap_or(0));
    let n = cm.n_classes as i32;
    let share = cm.row_normalised();
    let zeros_written = cm.n_classes <= ZEROS_WRITTEN_UP_TO;
    root.fill(&WHITE).map_err(draw_err)?;
    let title_style = TextStyle::from((FONT, TITLE_SIZE).into_font().style(FontStyle::Bold))
        .pos(Pos::new(HPos::Center, VPos::Center));
    root.draw_text(title, &title_style, (l.width as i32 / 2, l.top / 2))
        .map_err(draw_err)?;

    // The grid in the colour of a 0 share, a class without test samples
    // (no share to colour by) as one grey row, then only the cells with a
    // share: the same picture as a rectangle a cell, in far fewer (an SVG
    // of 344 classes held 118,000 of them).
    let grid = l.cell * n;
    let (right, bottom) = (l.left + grid, l.top + grid);
    root.draw(&Rectangle::new(
        [(l.left, l.top), (right, bottom)],
        blues(0.0).filled(),
    ))
    .map_err(draw_err)?;
    for t in 0..n {
        let y0 = l.top + t * l.cell;
        if cm.row_sum(t as usize) == 0 {
            root.draw(&Rectangle::new(
                [(l.left, y0), (right, y0 + l.cell)],
                NO_SAMPLES.filled(),
            ))
            .map_err(draw_err)?;
        }
        for p in 0..n {
            let v = share[(t * n + p) as usize];
            let x0 = l.left + p * l.cell;
            if v > 0.0 {
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + l.cell, y0 + l.cell)],
                    blues(v).filled(),
                ))
                .map_err(draw_err)?;
            }
            let count = cm.get(t as usize, p as usize);
            if count == 0 && !zeros_written {
                continue;
            }
            let ink = if v > 0.5 { WHITE } else { BLACK };
            let style = TextStyle::from((FONT, l.count_size).into_font())
                .color(&ink)
                .pos(Pos::new(HPos::Center, VPos::Center));
            root.draw_text(
                &count.to_string(),
                &style,
                (x0 + l.cell / 2, y0 + l.cell / 2),
            )
            .map_err(draw_err)?;
        }
    }
    root.draw(&Rectangle::new(
        [(l.left, l.top), (right, bottom)],
        BLACK.stroke_width(1),
    ))
    .map_err(draw_err)?;

    // Row labels (true class), right-aligned against the grid.
    let label_font = (FONT, l.label_size).into_font();
    for (t, name) in labels.iter().enumerate() {
        let style = TextStyle::from(label_font.clone()).pos(Pos::new(HPos::Right, VPos::Center));
        root.draw_text(
            name,
            &style,
            (l.left - 6, l.top + t as i32 * l.cell + l.cell / 2),
        )
        .map_err(draw_err)?;
    }
    // Column labels (predicted class), rotated to read bottom-up.
    for (p, name) in labels.iter().enumerate() {
        let style = TextStyle::from(label_font.clone().transform(FontTransform::Rotate270))
            .pos(Pos::new(HPos::Right, VPos::Center));
        root.draw_text(
            name,
            &style,
            (l.left + p as i32 * l.cell + l.cell / 2, l.top + grid + 6),
        )
        .map_err(draw_err)?;
    }
    let axis = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw_text(
        "predicted class",
        &axis,
        (l.left + grid / 2, l.height as i32 - 18),
    )
    .map_err(draw_err)?;
    root.draw_text(
        "true class",
        &axis.transform(FontTransform::Rotate270),
        (l.axis_x, l.top + grid / 2),
    )
    .map_err(draw_err)?;

    // Colour bar: share of the true class's samples.
    let bx = l.left + grid + 20;
    let steps = 64;
    for i in 0..steps {
        let v = 1.0 - i as f64 / steps as f64;
        let y0 = l.top + grid * i / steps;
        let y1 = l.top + grid * (i + 1) / steps;
        root.draw(&Rectangle::new(
            [(bx, y0), (bx + 16, y1)],
            blues(v).filled(),
        ))
        .map_err(draw_err)?;
    }
    root.draw(&Rectangle::new(
        [(bx, l.top), (bx + 16, l.top + grid)],
        BLACK.stroke_width(1),
    ))
    .map_err(draw_err)?;
    let tick = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (v, label) in [(1.0, "1.0"), (0.5, "0.5"), (0.0, "0.0")] {
        let y = l.top + ((1.0 - v) * grid as f64) as i32;
        root.draw_text(label, &tick, (bx + 22, y))
            .map_err(draw_err)?;
    }
    root.draw_text(
        "row share",
        &tick
            .transform(FontTransform::Rotate270)
            .pos(Pos::new(HPos::Center, VPos::Center)),
        (bx + 62, l.top + grid / 2),
    )
    .map_err(draw_err)?;
    let note = TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let mut y = l.top + grid + 10;
    if !zeros_written {
        root.draw(&Rectangle::new(
            [(bx, y), (bx + 16, y + 16)],
            BLACK.stroke_width(1),
        ))
        .map_err(draw_err)?;
        root.draw_text("blank: 0", &note, (bx + 22, y + 8))
            .map_err(draw_err)?;
        y += 24;
    }
    if (0..cm.n_classes).any(|t| cm.row_sum(t) == 0) {
        root.draw(&Rectangle::new(
            [(bx, y), (bx + 16, y + 16)],
            NO_SAMPLES.filled(),
        ))
        .map_err(draw_err)?;
        root.draw_text("no samples", &note, (bx + 22, y + 8))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Writes the confusion heatmap to `path` (`.svg` -> SVG, otherwise PNG).
pub fn save_confusion(
    path: &Path,
    cm: &ConfusionMatrix,
    classes: &[String],
    title: &str,
) -> Result<()> {
    let file = ImageFile::create(path)?;
    register_fonts();
    let labels = names(classes, cm.n_classes);
    let l = heatmap_layout(&labels, title, cm.counts.iter().copied().max().unwrap_or(0));
    let size = (l.width, l.height);
    if is_svg(path) {
        let root = SVGBackend::new(file.target(), size).into_drawing_area();
        draw_confusion(&root, cm, classes, title)?;
        root.present().map_err(draw_err)
    } else {
        let root = BitMapBackend::new(file.target(), size).into_drawing_area();
        draw_confusion(&root, cm, classes, title)?;
        root.present().map_err(draw_err)
    }
    .with_context(|| format!("writing {}", path.display()))
    .and_then(|()| file.keep())
}

/// The slots of n bars (study's macro-F1 chart, `bench chart`), one per
/// bar, as a discrete axis for plotters' segmented coordinates
/// (`bar_slots(n).into_segmented()`): bar i spans `Exact(i)` to
/// [`bar_end`], its label sits at `CenterOf(i)`. A plain `0..n` made one
/// segment per value, its end included (an empty slot after n bars), and
/// `0..n - 1` cannot hold one bar: plotters maps a range of one value to
/// no pixel range, so a single bar kept `0..1` and an empty slot beside it,
/// the bar and its label off-centre.
#[derive(Clone, Debug)]
pub(crate) struct BarSlots(usize);

pub(crate) fn bar_slots(n: usize) -> BarSlots {
    BarSlots(n.max(1))
}

impl plotters::coord::ranged1d::Ranged for BarSlots {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = usize;

    /// Slot i's start; the segmented coordinates pass a limit that ends
    /// one slot short of the axis's end (the last slot's start).
    fn map(&self, value: &usize, limit: (i32, i32)) -> i32 {
        if self.0 <= 1 {
            return limit.0;
        }
        let t = *value as f64 / (self.0 - 1) as f64;
        limit.0 + (f64::from(limit.1 - limit.0) * t).round() as i32
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<usize> {
        let step = self.0.div_ceil(hint.max_num_points().max(1)).max(1);
        (0..self.0).step_by(step).collect()
    }

    fn range(&self) -> std::ops::Range<usize> {
        0..self.0 - 1
    }
}

impl plotters::coord::ranged1d::DiscreteRanged for BarSlots {
    fn size(&self) -> usize {
        self.0
    }

    fn index_of(&self, value: &usize) -> Option<usize> {
        (*value < self.0).then_some(*value)
    }

    fn from_index(&self, index: usize) -> Option<usize> {
        (index < self.0).then_some(index)
    }
}

/// Where bar `i` of `n` ends: the next slot's start, or the axis's end for
/// the last bar (its slot has no value after it).
pub(crate) fn bar_end(i: usize, n: usize) -> plotters::coord::ranged1d::SegmentValue<usize> {
    use plotters::coord::ranged1d::SegmentValue;
    if i + 1 >= n {
        SegmentValue::Last
    } else {
        SegmentValue::Exact(i + 1)
    }
}

/// The margin on each side of a bar in a slot `slot` pixels wide: at least
/// `min`, more where the bar would be wider than `widest` (a lone bar
/// filled a slot as wide as the whole plot).
pub(crate) fn bar_margin(slot: i32, widest: i32, min: i32) -> u32 {
    ((slot - widest) / 2).max(min).max(0) as u32
}

/// One line of a curve plot.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    /// (x, y); non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
}

/// One chart of a curve figure.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub y_axis: YAxis,
}

/// A panel's y range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YAxis {
    /// Fitted to the points, padded: for a curve read by its shape (a
    /// training loss falling over epochs), whose values are compared with
    /// each other, not with zero.
    Fitted,
    /// From zero (for quantities compared by their ratio, such as
    /// throughput, latency, memory and a loss against its baselines: an
    /// axis fitted to the data drew a 2 % difference as a gap across the
    /// whole panel). Fitted where a point is negative.
    FromZero,
    /// 0 to 1 whatever the points: a score in [0, 1] (macro-F1), on its
    /// whole scale (0.93 against 0.95 filled a fitted panel's height).
    Unit,
}

impl Panel {
    /// The y axis's range: fitted to the points, padded, from zero or 0..1
    /// as the panel asks.
    fn y_range(&self) -> (f64, f64) {
        let ys = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1))
        };
        match self.y_axis {
            YAxis::Fitted => range_of(ys()),
            YAxis::FromZero => {
                let (y0, y1) = range_of(ys().chain(Some(0.0)));
                if ys().filter(|y| y.is_finite()).all(|y| y >= 0.0) {
                    (0.0, y1)
                } else {
                    (y0, y1)
                }
            }
            YAxis::Unit => (0.0, 1.0),
        }
    }
}

/// Values beyond this are drawn at it: a span as wide as f64 allows
/// (`-1e308..1e308` in a damaged log) overflows to infinity, and plotters'
/// ticks over an infinite range never end.
const EDGE: f64 = 1e300;

fn range_of(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .map(|v| v.clamp(-EDGE, EDGE))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(hi.abs().max(1e-3) * 0.02);
    (lo - pad, hi + pad)
}

/// An x tick's label: [`trim_number`], or none between whole numbers when
/// every point's x is whole (epochs, batch sizes: a lone batch of 8 got a
/// "7.9" tick beside "8").
fn x_tick(x: f64, whole_x: bool) -> String {
    if whole_x && (x - x.round()).abs() >= 1e-9 {
        return String::new();
    }
    trim_number(x)
}

/// `3.0` -> "3", `2.5` -> "2.5" (epoch axes).
fn trim_number(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}").trim_end_matches('0').to_string()
    }
}

/// The legend box in pixels: a row of 13-point text per series, the key
/// and padding beside it.
fn legend_size(panel: &Panel) -> (f64, f64) {
    let widest = panel
        .series
        .iter()
        .map(|s| text_width(&s.label, 13.0))
        .max()
        .unwrap_or(0);
    (
        f64::from(widest) + 50.0,
        panel.series.len() as f64 * 19.0 + 14.0,
    )
}

/// The corner of the plot whose legend box covers no point of the curves
/// (each line sampled along its segments): upper right, then lower right,
/// upper left, lower left. None where every corner covers one: the legend
/// then goes beside the plot ([`legend_beside`]). Looking only at where the
/// curves end put the legend over one that ended low beside one that ended
/// high, and a flat line along the top and another along the bottom (the
/// budget chart's unigram and Traffic-MoE) left no corner free at all.
fn legend_corner(panel: &Panel, y0: f64, y1: f64) -> Option<SeriesLabelPosition> {
    let (x0, x1) = range_of(
        panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0)),
    );
    // The box's share of a 520 x 400 panel's plot (about 436 x 300 pixels).
    let (w, h) = legend_size(panel);
    let (w, h) = (w / 436.0, h / 300.0);
    let mut samples = Vec::new();
    for s in &panel.series {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0)))
            .collect();
        samples.extend(pts.first().copied());
        for pair in pts.windows(2) {
            let ((ax, ay), (bx, by)) = (pair[0], pair[1]);
            samples.extend((1..=32).map(|i| {
                let t = f64::from(i) / 32.0;
                (ax + (bx - ax) * t, ay + (by - ay) * t)
            }));
        }
    }
    let free = |right: bool, upper: bool| {
        !samples.iter().any(|&(u, v)| {
            (if right { u >= 1.0 - w } else { u <= w })
                && (if upper { v >= 1.0 - h } else { v <= h })
        })
    };
    [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerLeft, false, false),
    ]
    .into_iter()
    .find(|(_, right, upper)| free(*right, *upper))
    .map(|c| c.0)
}

/// The pixels a panel is widened by to hold its legend beside the plot
/// (none where a corner of the plot is free for it).
fn legend_beside(panel: &Panel) -> u32 {
    let (y0, y1) = panel.y_range();
    beside_width(panel, legend_corner(panel, y0, y1).is_some())
}

/// [`legend_beside`] for a panel whose legend corner is known (found or not).
fn beside_width(panel: &Panel, corner_found: bool) -> u32 {
    if corner_found {
        0
    } else {
        legend_size(panel).0 as u32 + 16
    }
}

/// Tableau 10: distinct colours for up to ten series (the budget chart has
/// eight).
const PALETTE: [RGBColor; 10] = [
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

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let points = || panel.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = range_of(points().map(|p| p.0));
    let (y0, y1) = panel.y_range();
    let whole_x = points().all(|p| !p.0.is_finite() || p.0.fract() == 0.0);
    let corner = legend_corner(panel, y0, y1);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 18).into_font().style(FontStyle::Bold))
        .margin(12)
        .margin_right(12 + beside_width(panel, corner.is_some()))
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err)?;
    let most_points = panel
        .series
        .iter()
        .map(|s| s.points.len())
        .max()
        .unwrap_or(0);
    chart
        .configure_mesh()
        .x_labels(most_points.clamp(5, 10))
        .x_label_formatter(&|x| x_tick(*x, whole_x))
        .x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 14))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(draw_err)?;
    for (i, s) in panel.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            // Within the axes (the ends of `range_of`'s clamp): a point far
            // outside overflows plotters' pixel arithmetic.
            .map(|(x, y)| (x.clamp(x0, x1), y.clamp(y0, y1)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(draw_err)?
            .label(&s.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        // Markers only where points are few enough to read (epochs, not steps).
        if pts.len() <= 60 {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(draw_err)?;
        }
    }
    if let Some(corner) = corner {
        chart
            .configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(corner)
            .draw()
            .map_err(draw_err)?;
        return Ok(());
    }
    // Beside the plot, at its top: drawn on the panel, since plotters
    // clips a legend placed outside the plotting area.
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let base = area.get_base_pixel();
    let (x, y) = (xs.end - base.0 + 12, ys.start - base.1);
    let (w, h) = legend_size(panel);
    area.draw(&Rectangle::new(
        [(x, y), (x + w as i32, y + h as i32)],
        BLACK.mix(0.4).stroke_width(1),
    ))
    .map_err(draw_err)?;
    let label = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, s) in panel.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let row = y + 16 + i as i32 * 19;
        area.draw(&PathElement::new(
            vec![(x + 8, row), (x + 26, row)],
            color.stroke_width(2),
        ))
        .map_err(draw_err)?;
        area.draw_text(&s.label, &label, (x + 34, row))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Writes panels side by side to `path` (`.svg` -> SVG, otherwise PNG).
pub fn save_curves(path: &Path, panels: &[Panel]) -> Result<()> {
    let file = ImageFile::create(path)?;
    register_fonts();
    // 520 pixels a panel, and room beside the plot for a legend that no
    // corner of it has.
    let widths: Vec<u32> = panels.iter().map(|p| 520 + legend_beside(p)).collect();
    let size = (widths.iter().sum::<u32>().max(520), 400);
    fn draw_all<DB: DrawingBackend>(
        root: DrawingArea<DB, Shift>,
        panels: &[Panel],
        widths: &[u32],
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE).map_err(draw_err)?;
        let breaks: Vec<i32> = widths
            .iter()
            .scan(0, |x, &w| {
                *x += w as i32;
                Some(*x)
            })
            .collect();
        let areas = root.split_by_breakpoints(&breaks, [] as [i32; 0]);
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel(area, panel)?;
        }
        root.present().map_err(draw_err)
    }
    if is_svg(path) {
        draw_all(
            SVGBackend::new(file.target(), size).into_drawing_area(),
            panels,
            &widths,
        )
    } else {
        draw_all(
            BitMapBackend::new(file.target(), size).into_drawing_area(),
            panels,
            &widths,
        )
    }
    .with_context(|| format!("writing {}", path.display()))
    .and_then(|()| file.keep())
}

/// Per-epoch training history: what `finetune` records and `save_curves` draws.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct History {
    /// Mean training loss per epoch.
    pub train_loss: Vec<f64>,
    /// Validation loss per epoch (may be empty).
    #[serde(default)]
    pub val_loss: Vec<f64>,
    /// Validation macro-F1 per epoch.
    pub val_macro_f1: Vec<f64>,
    /// Validation accuracy per epoch (may be empty).
    #[serde(default)]
    pub val_accuracy: Vec<f64>,
    /// The first entry's epoch: 1, or 0 where the head was fitted first
    /// (`finetune --head-epochs`).
    #[serde(default)]
    pub first_epoch: Option<usize>,
}

fn by_epoch(label: &str, ys: &[f64], first: usize) -> Option<Series> {
    (!ys.is_empty()).then(|| Series {
        label: label.to_string(),
        points: ys
            .iter()
            .enumerate()
            // In f64: a log's epoch can be any number (`usize::MAX` as
            // read), and `i + first` in usize overflowed.
            .map(|(i, &y)| (i as f64 + first as f64, y))
            .collect(),
    })
}

impl History {
    /// Loss panel (train, val) and score panel (val macro-F1, accuracy).
    pub fn panels(&self) -> Vec<Panel> {
        let first = self.first_epoch.unwrap_or(1);
        let by_epoch = |label: &str, ys: &[f64]| by_epoch(label, ys, first);
        let loss: Vec<Series> = [
            by_epoch("train loss", &self.train_loss),
            by_epoch("val loss", &self.val_loss),
        ]
        .into_iter()
        .flatten()
        .collect();
        let score: Vec<Series> = [
            by_epoch("val macro-F1", &self.val_macro_f1),
            by_epoch("val accuracy", &self.val_accuracy),
        ]
        .into_iter()
        .flatten()
        .collect();
        vec![
            Panel {
                title: "Loss".into(),
                x_label: "epoch".into(),
                y_label: "cross entropy".into(),
                series: loss,
                y_axis: YAxis::Fitted,
            },
            Panel {
                title: "Validation".into(),
                x_label: "epoch".into(),
                y_label: "score".into(),
                series: score,
                y_axis: YAxis::Fitted,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::{Panel, Series, YAxis, legend_beside, legend_corner, x_tick};
    use plotters::prelude::SeriesLabelPosition;

    /// bench model's panels start at zero: MoE at 1,010 flows/s and dense at
    /// 1,000 filled the panel's height as if one were twice the other.
    #[test]
    fn a_panel_from_zero_starts_its_y_axis_at_zero() {
        let panel = |y_axis| Panel {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            series: vec![Series {
                label: String::new(),
                points: vec![(8.0, 1000.0), (16.0, 1010.0)],
            }],
            y_axis,
        };
        let (y0, y1) = panel(YAxis::FromZero).y_range();
        assert_eq!(y0, 0.0);
        assert!(y1 > 1010.0 && y1 < 1100.0, "{y1}");
        assert!(panel(YAxis::Fitted).y_range().0 > 900.0);
    }

    /// A score panel spans 0..1 whatever its points: pretrained at 0.93
    /// and scratch at 0.95 filled a fitted panel's height.
    #[test]
    fn a_score_panel_spans_zero_to_one() {
        let panel = Panel {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            series: vec![Series {
                label: String::new(),
                points: vec![(5.0, 0.93), (100.0, 0.95)],
            }],
            y_axis: YAxis::Unit,
        };
        assert_eq!(panel.y_range(), (0.0, 1.0));
    }

    /// One curve ends high and one low: the legend goes where no curve is
    /// (upper left here), not over the low one's end (lower right, where
    /// only the curves' ends were looked at).
    #[test]
    fn the_legend_goes_to_a_corner_no_curve_crosses() {
        let series = |label: &str, end: f64| Series {
            label: label.into(),
            points: vec![(0.0, 0.5), (5.0, 0.5), (10.0, end)],
        };
        let panel = Panel {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            series: vec![series("rising", 1.0), series("falling", 0.0)],
            y_axis: YAxis::Fitted,
        };
        let (y0, y1) = panel.y_range();
        assert_eq!(
            legend_corner(&panel, y0, y1),
            Some(SeriesLabelPosition::UpperLeft)
        );
    }

    /// A flat line along the top and one along the bottom (the budget
    /// chart's unigram and Traffic-MoE loss) leave no corner free: the
    /// legend goes beside the plot, which is widened for it.
    #[test]
    fn a_legend_no_corner_has_room_for_goes_beside_the_plot() {
        let flat = |label: &str, y: f64| Series {
            label: label.into(),
            points: vec![(1000.0, y), (3000.0, y)],
        };
        let panel = Panel {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            series: vec![
                flat("model", 0.6),
                flat("bigram", 1.4),
                flat("unigram", 5.5),
            ],
            y_axis: YAxis::Fitted,
        };
        let (y0, y1) = panel.y_range();
        assert_eq!(legend_corner(&panel, y0, y1), None);
        assert!(legend_beside(&panel) > 50);
    }

    #[test]
    fn whole_number_axes_label_only_whole_ticks() {
        assert_eq!(x_tick(8.0, true), "8");
        assert_eq!(x_tick(7.9, true), "");
        assert_eq!(x_tick(7.9, false), "7.9");
        assert_eq!(x_tick(2.5, false), "2.5");
    }

    /// An image's temporary file a killed run left (`STEM.tmp<pid>.EXT` of a
    /// process that is gone) is removed when the image is drawn again; a
    /// live process's stays.
    #[test]
    fn a_killed_run_s_temporary_image_goes_when_it_is_drawn_again() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let dead = crate::atomic_file::tests::dead_pid();
        let stale = d.join(format!("curves.tmp{dead}.png"));
        let live = d.join("curves.tmp1.png"); // pid 1 lives as long as the system
        std::fs::write(&stale, b"").unwrap();
        std::fs::write(&live, b"").unwrap();
        let path = d.join("curves.png");
        let file = super::ImageFile::create(&path).unwrap();
        assert!(
            !stale.exists(),
            "the dead run's temporary image is still there"
        );
        assert!(live.exists());
        drop(file);
    }
}
