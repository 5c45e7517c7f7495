//! PNG line charts for bench reports (plotters' bitmap backend, text drawn with ab_glyph
//! from a TrueType font found at run time: [`register_font`]).

use std::path::{Path, PathBuf};

use super::BenchError;

/// Fonts tried first, in order.
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Folders searched (four levels deep) for any `.ttf` when no candidate loads.
pub const FONT_DIRS: &[&str] = &[
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "/Library/Fonts",
    "/System/Library/Fonts",
    "C:\\Windows\\Fonts",
];

fn find_ttfs(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if depth > 0 {
                find_ttfs(&path, depth - 1, out);
            }
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("ttf"))
        {
            out.push(path);
        }
    }
}

/// Registers the plots' font as "sans-serif" (the family plotters' text defaults to):
/// `explicit`, else the first candidate or `.ttf` found that loads.
pub fn register_font(explicit: Option<&Path>) -> Result<(), BenchError> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => {
            let mut v: Vec<PathBuf> = FONT_CANDIDATES.iter().map(PathBuf::from).collect();
            if let Some(home) = std::env::var_os("HOME") {
                let home = PathBuf::from(home);
                for sub in [".fonts", ".local/share/fonts"] {
                    find_ttfs(&home.join(sub), 4, &mut v);
                }
            }
            for dir in FONT_DIRS {
                find_ttfs(Path::new(dir), 4, &mut v);
            }
            v
        }
    };
    for path in candidates {
        if let Ok(bytes) = std::fs::read(&path) {
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(
                "sans-serif",
                plotters::style::FontStyle::Normal,
                bytes,
            )
            .is_ok()
            {
                return Ok(());
            }
        }
    }
    let searched = match explicit {
        Some(p) => p.display().to_string(),
        None => format!(
            "{}, and any .ttf under {}, ~/.fonts, ~/.local/share/fonts",
            FONT_CANDIDATES.join(", "),
            FONT_DIRS.join(", ")
        ),
    };
    Err(BenchError::NoFont { searched })
}

/// One line of a chart: a label and its (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart's titles.
#[derive(Debug, Clone, Copy)]
pub struct Axes<'a> {
    pub title: &'a str,
    pub x: &'a str,
    pub y: &'a str,
}

/// Draws `series` as lines with points on a log2 x axis (concurrency levels) and a linear y
/// axis from zero. Call [`register_font`] first.
pub fn line_chart(path: &Path, axes: Axes<'_>, series: &[Series]) -> Result<(), BenchError> {
    draw(path, axes, series).map_err(|reason| BenchError::Plot {
        path: path.to_path_buf(),
        reason,
    })
}

fn draw(path: &Path, axes: Axes<'_>, series: &[Series]) -> Result<(), String> {
    use plotters::prelude::*;

    let points = series.iter().flat_map(|s| s.points.iter());
    let (x_hi, y_hi) = points.fold((1.0f64, 0.0f64), |(x, y), &(px, py)| (x.max(px), y.max(py)));
    if y_hi <= 0.0 {
        return Err("nothing to draw".into());
    }
    let log_hi = x_hi.max(2.0).log2();
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(axes.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(-0.1..log_hi + 0.1, 0.0..y_hi * 1.15)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(axes.x)
        .y_desc(axes.y)
        .x_labels(2 * (log_hi.ceil() as usize + 1))
        // Labels only at the powers of two (the grid keeps its finer lines).
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-6 {
                format!("{:.0}", v.round().exp2())
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|&(x, y)| (x.max(1.0).log2(), y))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
