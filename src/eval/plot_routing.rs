//! Heatmaps of expert shares (layer x expert), one small grid per panel, for
//! `eval --routing` (`routing.png`, `routing-per-class.png`).

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::plot::{ImageFile, register_fonts, text_width};

const CELL: i32 = 26;
const PANEL_GAP: i32 = 24;
const COLUMNS: usize = 4;
/// The colour key under the panels.
const KEY_WIDTH: i32 = 420;
const KEY_HEIGHT: i32 = 56;

/// White -> dark orange, `v` in [0, 1].
fn oranges(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let (lo, hi) = ((255.0, 245.0, 235.0), (127.0, 39.0, 4.0));
    let mix = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
    RGBColor(mix(lo.0, hi.0), mix(lo.1, hi.1), mix(lo.2, hi.2))
}

/// One heatmap: its title (a class, or all of them), the real tokens its
/// shares were counted on, and `shares[layer][expert]`.
#[derive(Clone, Debug)]
pub struct ShareGrid {
    pub title: String,
    pub tokens: u64,
    pub shares: Vec<Vec<f64>>,
}

/// `12345` -> "12,345 tokens".
fn tokens_label(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out} token{}", if n == 1 { "" } else { "s" })
}

const TITLE_SIZE: f64 = 14.0;
const CAPTION: &str = "expert ->   % of the layer's routed tokens";
const COUNT_SIZE: f64 = 12.0;

/// Writes the grids to `path` (`.svg` -> SVG, otherwise PNG). Colour: the
/// share relative to twice the uniform share (saturated above), the
/// percentage in each cell; each title has its token count at the grid's
/// right (a class seen in 30 tokens looked as sure as one in 30,000).
pub fn save_share_grids(path: &Path, panels: &[ShareGrid]) -> Result<()> {
    let file = ImageFile::create(path)?;
    register_fonts();
    let layers = panels
        .iter()
        .map(|p| p.shares.len())
        .max()
        .unwrap_or(1)
        .max(1) as i32;
    let experts = panels
        .iter()
        .flat_map(|p| p.shares.iter().map(Vec::len))
        .max()
        .unwrap_or(1)
        .max(1) as i32;
    let cols = panels.len().clamp(1, COLUMNS) as i32;
    let rows = panels.len().div_ceil(COLUMNS).max(1) as i32;
    // The title line: the name, then its count ending where the grid
    // ends; panels widen where a long name leaves no room for both.
    let inner = panels
        .iter()
        .map(|p| {
            (text_width(&p.title, TITLE_SIZE)
                + 12
                + text_width(&tokens_label(p.tokens), COUNT_SIZE)) as i32
        })
        .max()
        .unwrap_or(0)
        .max(36 + experts * CELL);
    // Title, expert numbers, the grid, its caption (which two experts'
    // grid ran into the next panel).
    let pw = inner.max(36 + text_width(CAPTION, 10.0) as i32) + 24;
    let ph = 54 + layers * CELL + 20;
    let size = (
        ((cols * (pw + PANEL_GAP) + PANEL_GAP).max(KEY_WIDTH + 2 * PANEL_GAP)) as u32,
        (rows * (ph + PANEL_GAP) + PANEL_GAP + KEY_HEIGHT) as u32,
    );
    let layout = Layout {
        layers,
        experts,
        inner,
        pw,
        ph,
        rows,
    };
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
    {
        draw(
            SVGBackend::new(file.target(), size).into_drawing_area(),
            panels,
            &layout,
        )
    } else {
        draw(
            BitMapBackend::new(file.target(), size).into_drawing_area(),
            panels,
            &layout,
        )
    }
    .map_err(|e| anyhow::anyhow!("{e}"))
    .with_context(|| format!("writing {}", path.display()))
    .and_then(|()| file.keep())
}

struct Layout {
    layers: i32,
    experts: i32,
    /// The title line's width: the count ends there.
    inner: i32,
    pw: i32,
    ph: i32,
    rows: i32,
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    panels: &[ShareGrid],
    l: &Layout,
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let Layout {
        layers,
        experts,
        inner,
        pw,
        ph,
        rows,
    } = *l;
    root.fill(&WHITE)?;
    let uniform = 1.0 / experts as f64;
    let count_style = TextStyle::from(("sans-serif", COUNT_SIZE).into_font())
        .color(&RGBColor(80, 80, 80))
        .pos(Pos::new(HPos::Right, VPos::Top));
    for (i, panel) in panels.iter().enumerate() {
        let x0 = PANEL_GAP + (i % COLUMNS) as i32 * (pw + PANEL_GAP);
        let y0 = PANEL_GAP + (i / COLUMNS) as i32 * (ph + PANEL_GAP);
        root.draw_text(
            &panel.title,
            &("sans-serif", TITLE_SIZE).into_font().color(&BLACK),
            (x0, y0),
        )?;
        root.draw_text(
            &tokens_label(panel.tokens),
            &count_style,
            (x0 + inner, y0 + 2),
        )?;
        for e in 0..experts {
            root.draw_text(
                &e.to_string(),
                &("sans-serif", 10).into_font().color(&BLACK),
                (x0 + 36 + e * CELL + 9, y0 + 24),
            )?;
        }
        for (l, row) in panel.shares.iter().enumerate() {
            let y = y0 + 38 + l as i32 * CELL;
            root.draw_text(
                &format!("L{l}"),
                &("sans-serif", 11).into_font().color(&BLACK),
                (x0, y + 7),
            )?;
            for (e, &share) in row.iter().enumerate() {
                let x = x0 + 36 + e as i32 * CELL;
                let fill = oranges(share / (2.0 * uniform));
                root.draw(&Rectangle::new(
                    [(x, y), (x + CELL, y + CELL)],
                    fill.filled(),
                ))?;
                let ink = if share / (2.0 * uniform) > 0.6 {
                    WHITE
                } else {
                    BLACK
                };
                root.draw_text(
                    &format!("{:.0}", share * 100.0),
                    &("sans-serif", 10).into_font().color(&ink),
                    (x + 5, y + 8),
                )?;
            }
        }
        let y = y0 + 38 + layers * CELL + 4;
        root.draw_text(
            CAPTION,
            &("sans-serif", 10).into_font().color(&BLACK),
            (x0 + 36, y),
        )?;
    }
    // The colour key: white at 0 %, darkest at twice the uniform
    // share and above (25 % of 8 experts: 25 % and 47 % look alike).
    let (kx, ky) = (PANEL_GAP, rows * (ph + PANEL_GAP) + PANEL_GAP);
    let (kw, steps) = (240, 48);
    for i in 0..steps {
        let v = i as f64 / steps as f64;
        root.draw(&Rectangle::new(
            [
                (kx + kw * i / steps, ky + 18),
                (kx + kw * (i + 1) / steps, ky + 32),
            ],
            oranges(v).filled(),
        ))?;
    }
    root.draw(&Rectangle::new(
        [(kx, ky + 18), (kx + kw, ky + 32)],
        BLACK.stroke_width(1),
    ))?;
    let small = ("sans-serif", 10).into_font().color(&BLACK);
    root.draw_text(
        "colour: % of the layer's routed tokens",
        &small,
        (kx, ky + 4),
    )?;
    let pct = |v: f64| {
        let p = v * 100.0 / experts as f64;
        if (p - p.round()).abs() < 1e-9 {
            format!("{p:.0} %")
        } else {
            format!("{p:.1} %")
        }
    };
    for (at, label, h) in [
        (0, "0 %".to_string(), HPos::Left),
        (kw / 2, format!("{} (uniform)", pct(1.0)), HPos::Center),
        (kw, format!("{} and above", pct(2.0)), HPos::Center),
    ] {
        root.draw(&PathElement::new(
            vec![(kx + at, ky + 32), (kx + at, ky + 36)],
            BLACK.stroke_width(1),
        ))?;
        let style = small.clone().pos(Pos::new(h, VPos::Top));
        root.draw_text(&label, &style, (kx + at, ky + 38))?;
    }
    root.present()?;
    Ok(())
}
