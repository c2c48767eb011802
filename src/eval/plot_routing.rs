//! Heatmaps of expert shares (layer x expert), one small grid per panel, for
//! `eval --routing` (`routing.png`, `routing-per-class.png`).

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::plot::{ImageFile, register_fonts};

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

/// `panels`: (title, `shares[layer][expert]`). Colour: the share relative to
/// twice the uniform share (saturated above), the percentage in each cell.
pub fn save_share_grids(path: &Path, panels: &[(String, Vec<Vec<f64>>)]) -> Result<()> {
    let file = ImageFile::create(path)?;
    register_fonts();
    let layers = panels.iter().map(|p| p.1.len()).max().unwrap_or(1).max(1) as i32;
    let experts = panels
        .iter()
        .flat_map(|p| p.1.iter().map(Vec::len))
        .max()
        .unwrap_or(1)
        .max(1) as i32;
    let cols = panels.len().clamp(1, COLUMNS) as i32;
    let rows = panels.len().div_ceil(COLUMNS).max(1) as i32;
    // Title, expert numbers, the grid, its caption.
    let (pw, ph) = (60 + experts * CELL, 54 + layers * CELL + 20);
    let size = (
        ((cols * (pw + PANEL_GAP) + PANEL_GAP).max(KEY_WIDTH + 2 * PANEL_GAP)) as u32,
        (rows * (ph + PANEL_GAP) + PANEL_GAP + KEY_HEIGHT) as u32,
    );
    let root = BitMapBackend::new(path, size).into_drawing_area();
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        let uniform = 1.0 / experts as f64;
        for (i, (title, shares)) in panels.iter().enumerate() {
            let x0 = PANEL_GAP + (i % COLUMNS) as i32 * (pw + PANEL_GAP);
            let y0 = PANEL_GAP + (i / COLUMNS) as i32 * (ph + PANEL_GAP);
            root.draw_text(
                title,
                &("sans-serif", 14).into_font().color(&BLACK),
                (x0, y0),
            )?;
            for e in 0..experts {
                root.draw_text(
                    &e.to_string(),
                    &("sans-serif", 10).into_font().color(&BLACK),
                    (x0 + 36 + e * CELL + 9, y0 + 24),
                )?;
            }
            for (l, row) in shares.iter().enumerate() {
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
                "expert ->   % of the layer's routed tokens",
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
    };
    draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("writing {}", path.display()))
        .map(|()| file.keep())
}
