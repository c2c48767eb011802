//! Report outputs: text table, confusion text/CSV, metrics.json, PNG and SVG figures.

use traffic_moe::eval::plot::{self, History};
use traffic_moe::eval::report::EvalReport;

fn report() -> EvalReport {
    let classes = vec![
        "dns".to_string(),
        "http-web".to_string(),
        "video_stream".to_string(),
    ];
    let t = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2];
    let p = [0, 0, 1, 1, 2, 2, 2, 2, 2, 0];
    EvalReport::from_labels(classes, &t, &p).unwrap()
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn classification_report_lists_every_class_and_averages() {
    let r = report();
    let text = r.classification_report();
    // dns: tp 2, predicted 3, support 3 -> P 0.6667 R 0.6667
    let dns = text
        .lines()
        .find(|l| l.trim_start().starts_with("dns"))
        .unwrap();
    assert!(
        dns.contains("0.6667") && dns.trim_end().ends_with('3'),
        "{dns}"
    );
    assert!(
        text.contains("accuracy") && text.contains("macro avg") && text.contains("weighted avg")
    );
    let acc = text.lines().find(|l| l.contains("accuracy")).unwrap();
    assert!(
        acc.contains("0.7000") && acc.trim_end().ends_with("10"),
        "{acc}"
    );
}

#[test]
fn writes_all_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = report();
    r.info.insert("split".into(), "test".into());
    let written = r.write_all(dir.path(), "test split").unwrap();
    assert_eq!(written.len(), 6);

    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(j["samples"], 10);
    assert!((j["accuracy"].as_f64().unwrap() - 0.7).abs() < 1e-12);
    assert_eq!(j["info"]["split"], "test");
    assert_eq!(j["per_class"][2]["class"], "video_stream");
    assert_eq!(j["per_class"][2]["support"], 5);
    assert_eq!(
        j["confusion_matrix"]["counts"][2],
        serde_json::json!([1, 0, 4])
    );
    let macro_f1 = j["macro"]["f1"].as_f64().unwrap();
    assert!((macro_f1 - r.metrics.macro_f1).abs() < 1e-12);

    let csv = std::fs::read_to_string(dir.path().join("confusion.csv")).unwrap();
    assert_eq!(csv.lines().nth(3).unwrap(), "video_stream,1,0,4");
    let txt = std::fs::read_to_string(dir.path().join("confusion.txt")).unwrap();
    assert!(txt.contains("video_stream"));

    let png = std::fs::read(dir.path().join("confusion.png")).unwrap();
    let (w, h) = png_size(&png);
    assert!(w > 300 && h > 300, "{w}x{h}");
    let svg = std::fs::read_to_string(dir.path().join("confusion.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("video_stream") && svg.contains("\n4\n"));
}

#[test]
fn curves_render_to_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let h = History {
        train_loss: vec![1.9, 1.2, 0.8, 0.61, 0.5],
        val_loss: vec![1.7, 1.1, 0.9, 0.85, 0.88],
        val_macro_f1: vec![0.31, 0.55, 0.68, 0.72, 0.71],
        val_accuracy: vec![],
        first_epoch: None,
    };
    assert_eq!(
        h.panels()[0].series[0].points[0].0,
        1.0,
        "epochs count from 1"
    );
    // After a head fit (LP-FT) the log starts at epoch 0.
    let lp = History {
        first_epoch: Some(0),
        ..h.clone()
    };
    let xs: Vec<f64> = lp.panels()[1].series[0]
        .points
        .iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(xs, [0.0, 1.0, 2.0, 3.0, 4.0]);
    let png = dir.path().join("curves.png");
    plot::save_curves(&png, &h.panels()).unwrap();
    let (w, hgt) = png_size(&std::fs::read(&png).unwrap());
    assert_eq!((w, hgt), (1040, 400));
    let svg = dir.path().join("curves.svg");
    plot::save_curves(&svg, &h.panels()).unwrap();
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(s.contains("val macro-F1") && s.contains("train loss"));
}

#[test]
fn unwritable_output_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let e = report().write_all(&blocker.join("sub"), "t").unwrap_err();
    assert!(format!("{e:#}").contains("file/sub"), "{e:#}");
}

/// Hundreds of classes without samples or predictions (nDPI's labels over
/// a small test split) are named up to a dozen and counted past it.
#[test]
fn the_averaging_note_names_a_dozen_left_out_classes_and_counts_the_rest() {
    let classes: Vec<String> = (0..40).map(|i| format!("c{i:02}")).collect();
    let r = EvalReport::from_labels(classes, &[0, 1], &[0, 1]).unwrap();
    let note = r.averaging_note();
    let named: Vec<String> = (2..14).map(|i| format!("c{i:02}")).collect();
    assert!(
        note.contains(&format!(
            "the 2 of 40 classes with samples or predictions (left out: {} and 26 more with support 0 and no predictions in the table)",
            named.join(", ")
        )),
        "{note}"
    );
}

/// The table lists every class, but the averages leave out a class with
/// neither samples nor predictions (sklearn's label set) and count 0/0 as 0:
/// the report says so, or its "macro avg" is not the mean of the rows shown.
#[test]
fn classification_report_says_which_classes_the_averages_cover() {
    let classes: Vec<String> = ["dns", "http-web", "ssh", "video_stream"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // ssh: no samples, never predicted. video_stream: predicted, no samples.
    // dns: tp 1, predicted 3, support 2 -> P 1/3, R 1/2, F1 0.4; http-web: never
    // predicted -> 0; video_stream: 0. Macro-F1 over 3 classes = 0.4 / 3 = 0.1333
    // (0.1 over 4).
    let r = EvalReport::from_labels(classes, &[0, 0, 1, 1], &[0, 3, 0, 0]).unwrap();
    assert!((r.metrics.macro_f1 - 0.4 / 3.0).abs() < 1e-12);
    let text = r.classification_report();
    let macro_line = text.lines().find(|l| l.contains("macro avg")).unwrap();
    assert!(macro_line.contains("0.1333"), "{macro_line}");
    assert!(
        text.contains("the 3 of 4 classes with samples or predictions (left out: ssh)")
            && text.contains("0/0 counts as 0 (scikit-learn's zero_division=0)"),
        "{text}"
    );
    let j = r.to_json();
    assert!(
        j["averaging"].as_str().unwrap().contains("left out: ssh"),
        "{j}"
    );
    assert!(
        report()
            .classification_report()
            .contains("Averages over all 3 classes;")
    );
}

/// A training log's first epoch is read as any number: one past usize
/// (`1e300` saturates to `usize::MAX`) overflowed the epoch axis, a panic.
#[test]
fn curves_take_a_first_epoch_past_usize() {
    let h = History {
        train_loss: vec![1.0, 0.5],
        val_loss: vec![],
        val_macro_f1: vec![0.3, 0.4],
        val_accuracy: vec![],
        first_epoch: Some(usize::MAX),
    };
    let xs: Vec<f64> = h.panels()[0].series[0].points.iter().map(|p| p.0).collect();
    assert_eq!(xs, [usize::MAX as f64, usize::MAX as f64 + 1.0]);
    let dir = tempfile::tempdir().unwrap();
    plot::save_curves(&dir.path().join("curves.png"), &h.panels()).unwrap();
}

/// Losses at the ends of f64 (a damaged log) made the axis span overflow to
/// infinity, and drawing it never ended: the curves are drawn, in time.
#[test]
fn curves_of_values_at_the_ends_of_f64_are_drawn() {
    let h = History {
        train_loss: vec![1e308, -1e308, 1.0],
        val_loss: vec![f64::MAX, 0.5],
        val_macro_f1: vec![0.3, -f64::MAX],
        val_accuracy: vec![],
        first_epoch: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("curves.png");
    let (tx, rx) = std::sync::mpsc::channel();
    let (p, panels) = (png.clone(), h.panels());
    std::thread::spawn(move || tx.send(plot::save_curves(&p, &panels).map_err(|e| e.to_string())));
    let done = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("drawing the curves hung (or panicked)");
    done.unwrap();
    assert!(std::fs::metadata(&png).unwrap().len() > 0);
}

/// Width in pixels of `text` in the figures' font (DejaVu Sans).
fn text_width(text: &str, size: f64, style: plotters::style::FontStyle) -> f64 {
    use plotters::style::{FontDesc, FontFamily};
    plot::register_fonts();
    FontDesc::new(FontFamily::Name("sans-serif"), size, style)
        .box_size(text)
        .unwrap()
        .0 as f64
}

/// The `<text>` elements of an SVG: (font size in points, content).
fn svg_texts(svg: &str) -> Vec<(f64, String)> {
    svg.split("<text ")
        .skip(1)
        .map(|t| {
            let size = t.split("font-size=\"").nth(1).unwrap();
            let size: f64 = size[..size.find('"').unwrap()].parse().unwrap();
            let body = &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()];
            // plotters writes points / 1.24 as the SVG font size.
            (size * 1.24, body.trim().to_string())
        })
        .collect()
}

/// eval's title fits the confusion figure however few the classes: over
/// two, the grid made the image narrower than the title, cut at both ends.
#[test]
fn confusion_title_fits_the_image() {
    use traffic_moe::eval::confusion::ConfusionMatrix;
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("confusion.svg");
    let mut cm = ConfusionMatrix::new(2);
    cm.counts = vec![1234, 5, 17, 988];
    let title = "test split: accuracy 0.990, macro-F1 0.990";
    plot::save_confusion(&svg, &cm, &["a".into(), "b".into()], title).unwrap();
    let s = std::fs::read_to_string(&svg).unwrap();
    let width: f64 = s
        .split("width=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (size, _) = svg_texts(&s).into_iter().find(|(_, t)| t == title).unwrap();
    let needed = text_width(title, size, plotters::style::FontStyle::Bold);
    assert!(width >= needed, "image {width} px wide, title {needed} px");
}

/// Every count fits its cell: 24 classes get 30-pixel cells, where a
/// six-digit count (at 9.6 points) ran into its neighbours.
#[test]
fn confusion_counts_fit_their_cells() {
    use traffic_moe::eval::confusion::ConfusionMatrix;
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("confusion.svg");
    let n = 24;
    let mut cm = ConfusionMatrix::new(n);
    for t in 0..n {
        cm.counts[t * n + t] = 123_456;
        cm.counts[t * n + (t + 1) % n] = 45_678;
    }
    plot::save_confusion(&svg, &cm, &[], "many flows").unwrap();
    let s = std::fs::read_to_string(&svg).unwrap();
    // The cells are the grid's squares (the colour bar's steps are 16 wide).
    let cell: f64 = s
        .split("<rect ")
        .filter_map(|r| {
            let w: f64 = r
                .split("width=\"")
                .nth(1)?
                .split('"')
                .next()?
                .parse()
                .ok()?;
            let h: f64 = r
                .split("height=\"")
                .nth(1)?
                .split('"')
                .next()?
                .parse()
                .ok()?;
            (w == h && w < 100.0).then_some(w)
        })
        .next()
        .unwrap();
    let (size, text) = svg_texts(&s)
        .into_iter()
        .find(|(_, t)| t == "123456")
        .unwrap();
    let w = text_width(&text, size, plotters::style::FontStyle::Normal);
    assert!(w <= cell - 2.0, "{text} is {w} px wide in a {cell} px cell");
}

/// The rectangles of an SVG in drawing order: (x, y, width, height, fill,
/// stroke).
fn svg_rects(svg: &str) -> Vec<(f64, f64, f64, f64, String, String)> {
    svg.split("<rect ")
        .skip(1)
        .map(|r| {
            // This element's attributes only (a text after it has an x too).
            let r = format!(" {}", &r[..r.find("/>").unwrap()]);
            let attr = |name: &str| {
                r.split(&format!(" {name}=\""))
                    .nth(1)
                    .and_then(|v| v.split('"').next())
                    .unwrap_or("")
                    .to_string()
            };
            let num = |name: &str| attr(name).parse::<f64>().unwrap();
            let (x, y, w, h) = (num("x"), num("y"), num("width"), num("height"));
            (x, y, w, h, attr("fill"), attr("stroke"))
        })
        .collect()
}

/// What a confusion SVG shows in cell (t, p) of its n x n grid: the fill
/// of the last rectangle drawn over the cell's corner (as a viewer paints
/// them), however the grid was cut into rectangles.
fn confusion_cell_fills(svg: &str, n: usize) -> Vec<Vec<String>> {
    let rects = svg_rects(svg);
    // The grid's outline: the widest square drawn with a black stroke.
    let &(left, top, size, ..) = rects
        .iter()
        .filter(|r| r.5 == "#000000" && r.2 == r.3)
        .max_by(|a, b| a.2.total_cmp(&b.2))
        .expect("a grid outline");
    let cell = size / n as f64;
    (0..n)
        .map(|t| {
            (0..n)
                .map(|p| {
                    let (x, y) = (left + p as f64 * cell + 2.0, top + t as f64 * cell + 2.0);
                    rects
                        .iter()
                        .rev()
                        .find(|r| {
                            r.4 != "none" && r.0 <= x && x < r.0 + r.2 && r.1 <= y && y < r.1 + r.3
                        })
                        .expect("a filled cell")
                        .4
                        .clone()
                })
                .collect()
        })
        .collect()
}

/// A class without test samples has no row share: its cells are not
/// coloured as a share of 0 (the white of a class whose samples all went to
/// other columns), and the key says what their colour means.
#[test]
fn confusion_rows_without_samples_are_not_drawn_as_a_zero_share() {
    use traffic_moe::eval::confusion::ConfusionMatrix;
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("confusion.svg");
    let mut cm = ConfusionMatrix::new(3);
    cm.counts = vec![5, 0, 0, 0, 0, 0, 0, 2, 3];
    let classes = ["a".to_string(), "empty".to_string(), "c".to_string()];
    plot::save_confusion(&svg, &cm, &classes, "t").unwrap();
    let s = std::fs::read_to_string(&svg).unwrap();
    let fills = confusion_cell_fills(&s, 3);
    let zero_share = &fills[0][1]; // row a, column empty: 0 of 5
    assert_eq!(zero_share, "#F7FBFF", "{fills:?}");
    for f in &fills[1] {
        assert_ne!(
            f, zero_share,
            "the empty row is drawn as a 0 share: {fills:?}"
        );
    }
    // Every share darker than none: row a's 5 of 5, row c's 2 and 3 of 5.
    for (t, p) in [(0, 0), (2, 1), (2, 2)] {
        assert_ne!(&fills[t][p], zero_share, "({t}, {p}): {fills:?}");
    }
    assert_ne!(
        fills[2][1], fills[2][2],
        "2 of 5 and 3 of 5 alike: {fills:?}"
    );
    assert!(s.contains("no samples"));
}

/// Past 30 classes a zero count is left blank (the key says so), and the
/// grid is not one rectangle a cell: 344 nDPI classes made a 28 MB SVG of
/// 118,000 zeros and as many rectangles. Up to 30 every count is written.
#[test]
fn confusion_of_many_classes_leaves_zeros_blank() {
    use traffic_moe::eval::confusion::ConfusionMatrix;
    let dir = tempfile::tempdir().unwrap();
    let draw = |n: usize| {
        let mut cm = ConfusionMatrix::new(n);
        for t in 0..n - 1 {
            cm.counts[t * n + t] = 7;
        }
        cm.counts[n] = 3; // class 1 taken for class 0 three times
        let svg = dir.path().join(format!("c{n}.svg"));
        plot::save_confusion(&svg, &cm, &[], "t").unwrap();
        let s = std::fs::read_to_string(&svg).unwrap();
        let texts = svg_texts(&s);
        let zeros = texts.iter().filter(|(_, t)| t == "0").count();
        let sevens = texts.iter().filter(|(_, t)| t == "7").count();
        (s, zeros, sevens)
    };
    let (small, zeros, sevens) = draw(30);
    assert_eq!((zeros, sevens), (30 * 30 - 30, 29), "30 classes");
    assert!(!small.contains("blank: 0"));
    let (large, zeros, sevens) = draw(31);
    assert_eq!((zeros, sevens), (0, 30), "31 classes");
    assert!(large.contains("blank: 0") && large.contains("no samples"));
    // A grid, a grey row, a rectangle a share (30 diagonal, one confusion):
    // not one a cell.
    assert!(
        svg_rects(&large).len() < 200,
        "{} rectangles",
        svg_rects(&large).len()
    );
    let fills = confusion_cell_fills(&large, 31);
    assert_ne!(fills[1][0], fills[1][1], "3 of 10 and 7 of 10 alike");
}

/// Each routing heatmap says how many tokens it was counted on, after the
/// class's name and clear of it, with 24 classes and long names: a class
/// seen in 30 tokens looked as sure as one seen in 30,000.
#[test]
fn routing_heatmaps_give_each_class_its_token_count() {
    use traffic_moe::eval::plot_routing::{ShareGrid, save_share_grids};
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("routing.svg");
    let panels: Vec<ShareGrid> = (0..24)
        .map(|i| ShareGrid {
            title: format!("com.example.application-{i}"),
            tokens: if i % 2 == 0 { 30 } else { 30_000 },
            shares: vec![vec![0.125; 8]; 4],
        })
        .collect();
    save_share_grids(&svg, &panels).unwrap();
    let s = std::fs::read_to_string(&svg).unwrap();
    // (x, anchor, size, content)
    let texts: Vec<(f64, String, f64, String)> = s
        .split("<text ")
        .skip(1)
        .map(|t| {
            let attr = |name: &str| {
                t.split(&format!("{name}=\""))
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_string()
            };
            let body = &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()];
            (
                attr("x").parse().unwrap(),
                attr("text-anchor"),
                attr("font-size").parse::<f64>().unwrap() * 1.24,
                body.trim().to_string(),
            )
        })
        .collect();
    for (i, p) in panels.iter().enumerate() {
        let want = if i % 2 == 0 {
            "30 tokens"
        } else {
            "30,000 tokens"
        };
        let title = texts.iter().find(|t| t.3 == p.title).expect("the title");
        // Titles and counts in the order of the panels.
        let count = texts
            .iter()
            .filter(|t| t.3.ends_with("tokens") && !t.3.contains('%'))
            .nth(i)
            .unwrap_or_else(|| panic!("no count for {}", p.title));
        assert_eq!(count.3, want);
        assert_eq!(count.1, "end", "the count ends at the grid's right");
        let title_end = title.0 + text_width(&title.3, title.2, plotters::style::FontStyle::Normal);
        let count_start =
            count.0 - text_width(&count.3, count.2, plotters::style::FontStyle::Normal);
        assert!(
            title_end + 6.0 <= count_start,
            "{}: the name ends at {title_end}, its count starts at {count_start}",
            p.title
        );
    }
}

/// routing.json says how many tokens each class's shares were counted on.
#[test]
fn routing_json_gives_each_class_its_token_count() {
    use traffic_moe::eval::routing::{RoutingCounts, write_routing};
    let dir = tempfile::tempdir().unwrap();
    // 1 layer, 2 experts, k = 1; 2 rows of 3 tokens, the last one padding.
    let mut c = RoutingCounts::new(1, 2, 2);
    c.add(
        &[0, 1, 1, 0, 0, 1],
        &[1, 1, 1, 1, 1, 0],
        3,
        &[Some(0), Some(1)],
    );
    write_routing(dir.path(), &c, &["a".into(), "b".into()]).unwrap();
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("routing.json")).unwrap())
            .unwrap();
    assert_eq!(j["per_class"][0]["tokens"], 3);
    assert_eq!(j["per_class"][1]["tokens"], 2);
    assert_eq!(j["tokens"], 5);
}
