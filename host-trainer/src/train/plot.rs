//! `curves.png`: the training curves drawn by hand into an RGB buffer and encoded with the
//! `png` crate. Text uses a built-in 5×7 bitmap font, so nothing depends on system fonts
//! (no fontconfig or freetype).

use std::path::Path;

use strokeseg_io::atomic::write_atomically;

use super::log::EpochRecord;
use crate::error::TrainError;

/// An RGB colour.
pub type Rgb = [u8; 3];

const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [20, 20, 20];
const GREY: Rgb = [215, 215, 215];
const BLUE: Rgb = [31, 119, 180];
const ORANGE: Rgb = [255, 127, 14];
const GREEN: Rgb = [44, 160, 44];
const RED: Rgb = [214, 39, 40];
const PURPLE: Rgb = [148, 103, 189];

/// A `width × height` RGB image.
#[derive(Debug, Clone)]
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

/// Rows of a 5×7 glyph, bit 4 = leftmost column. Lowercase letters draw as uppercase;
/// unknown characters as a blank.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        _ => [0; 7],
    }
}

impl Canvas {
    /// A white canvas.
    pub fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            pixels: WHITE.repeat(width * height),
        }
    }

    /// Sets one pixel (ignored outside the canvas).
    pub fn put(&mut self, x: i64, y: i64, color: Rgb) {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height {
            return;
        }
        let i = 3 * (y as usize * self.width + x as usize);
        if let Some(px) = self.pixels.get_mut(i..i + 3) {
            px.copy_from_slice(&color);
        }
    }

    /// A filled rectangle.
    pub fn fill_rect(&mut self, x0: i64, y0: i64, w: i64, h: i64, color: Rgb) {
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                self.put(x, y, color);
            }
        }
    }

    /// A line `thickness` pixels wide (Bresenham with a square pen).
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), thickness: i64, color: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        let half = thickness / 2;
        loop {
            self.fill_rect(
                x - half,
                y - half,
                thickness.max(1),
                thickness.max(1),
                color,
            );
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text with its top-left corner at `(x, y)`, each font pixel `scale × scale`.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, color: Rgb) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c);
            let gx = x + i as i64 * 6 * scale;
            for (row, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        self.fill_rect(
                            gx + col * scale,
                            y + row as i64 * scale,
                            scale,
                            scale,
                            color,
                        );
                    }
                }
            }
        }
    }

    /// Width in pixels of `text` at `scale`.
    pub fn text_width(text: &str, scale: i64) -> i64 {
        (text.chars().count() as i64 * 6 - 1).max(0) * scale
    }

    /// Encodes the canvas as an 8-bit RGB PNG.
    pub fn to_png(&self, path: &Path) -> Result<Vec<u8>, TrainError> {
        let png_err = |source| TrainError::Png {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut bytes, self.width as u32, self.height as u32);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().map_err(png_err)?;
            writer.write_image_data(&self.pixels).map_err(png_err)?;
            writer.finish().map_err(png_err)?;
        }
        Ok(bytes)
    }
}

/// One curve.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Colour.
    pub color: Rgb,
    /// `(x, y)` points; non-finite ones are skipped.
    pub points: Vec<(f64, f64)>,
}

/// A short tick label: three significant digits, scientific notation for very small or large
/// magnitudes.
fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-2..1e4).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Draws one panel with axes, ticks, a title and a legend into `rect = (x, y, w, h)`.
pub fn draw_panel(
    canvas: &mut Canvas,
    rect: (i64, i64, i64, i64),
    title: &str,
    x_label: &str,
    series: &[Series],
) {
    let (px, py, pw, ph) = rect;
    let (left, right, top, bottom) = (70, 12, 46, 40);
    let (x0, y0, w, h) = (px + left, py + top, pw - left - right, ph - top - bottom);
    canvas.text(px + left, py + 6, title, 2, BLACK);
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let (mut xmin, mut xmax, mut ymin, mut ymax) = points.iter().fold(
        (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ),
        |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    if points.is_empty() {
        (xmin, xmax, ymin, ymax) = (0.0, 1.0, 0.0, 1.0);
    }
    if xmax - xmin <= 0.0 {
        xmax = xmin + 1.0;
    }
    if ymax - ymin <= 0.0 {
        let pad = if ymax == 0.0 { 1.0 } else { ymax.abs() * 0.1 };
        (ymin, ymax) = (ymin - pad, ymax + pad);
    } else {
        let pad = 0.05 * (ymax - ymin);
        (ymin, ymax) = (ymin - pad, ymax + pad);
    }
    let to_px = |x: f64, y: f64| {
        (
            x0 + ((x - xmin) / (xmax - xmin) * w as f64).round() as i64,
            y0 + h - ((y - ymin) / (ymax - ymin) * h as f64).round() as i64,
        )
    };
    // Grid and ticks: five on y; on x whole numbers when every x is one (epochs).
    for i in 0..=4 {
        let fy = ymin + (ymax - ymin) * f64::from(i) / 4.0;
        let (_, ty) = to_px(xmin, fy);
        canvas.line((x0, ty), (x0 + w, ty), 1, GREY);
        let label = tick_label(fy);
        canvas.text(
            x0 - 6 - Canvas::text_width(&label, 1),
            ty - 3,
            &label,
            1,
            BLACK,
        );
    }
    let integer_x = points.iter().all(|(x, _)| x.fract() == 0.0);
    let x_ticks: Vec<f64> = if integer_x {
        let step = ((xmax - xmin) / 5.0).ceil().max(1.0);
        let mut ticks = Vec::new();
        let mut t = xmin;
        while t <= xmax + 1e-9 {
            ticks.push(t);
            t += step;
        }
        ticks
    } else {
        (0..=4)
            .map(|i| xmin + (xmax - xmin) * f64::from(i) / 4.0)
            .collect()
    };
    for fx in x_ticks {
        let (tx, _) = to_px(fx, ymin);
        canvas.line((tx, y0), (tx, y0 + h), 1, GREY);
        let label = if integer_x {
            format!("{fx:.0}")
        } else {
            tick_label(fx)
        };
        canvas.text(
            tx - Canvas::text_width(&label, 1) / 2,
            y0 + h + 6,
            &label,
            1,
            BLACK,
        );
    }
    canvas.text(
        x0 + w / 2 - Canvas::text_width(x_label, 1) / 2,
        y0 + h + 20,
        x_label,
        1,
        BLACK,
    );
    canvas.line((x0, y0), (x0, y0 + h), 1, BLACK);
    canvas.line((x0, y0 + h), (x0 + w, y0 + h), 1, BLACK);
    // Curves, with a marker at every point (a single epoch still shows).
    for s in series {
        let pts: Vec<(i64, i64)> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| to_px(x, y))
            .collect();
        for pair in pts.windows(2) {
            if let [a, b] = pair {
                canvas.line(*a, *b, 2, s.color);
            }
        }
        for &(x, y) in &pts {
            canvas.fill_rect(x - 2, y - 2, 5, 5, s.color);
        }
    }
    // Legend: one row between the title and the plot.
    let mut lx = x0;
    for s in series {
        canvas.fill_rect(lx, py + 31, 14, 3, s.color);
        canvas.text(lx + 18, py + 29, &s.label, 1, BLACK);
        lx += 18 + Canvas::text_width(&s.label, 1) + 14;
    }
}

/// Renders the curves of `records`: loss (train, held-out), held-out Dice / precision / recall,
/// and the learning rate, side by side.
pub fn render_curves(records: &[EpochRecord]) -> Canvas {
    let (panel_w, panel_h) = (420, 330);
    let mut canvas = Canvas::new(3 * panel_w as usize, panel_h as usize);
    let series = |label: &str, color, f: &dyn Fn(&EpochRecord) -> Option<f64>| Series {
        label: label.to_owned(),
        color,
        points: records
            .iter()
            .filter_map(|r| f(r).map(|y| (f64::from(r.epoch), y)))
            .collect(),
    };
    draw_panel(
        &mut canvas,
        (0, 0, panel_w, panel_h),
        "LOSS",
        "EPOCH",
        &[
            series("TRAIN", BLUE, &|r| Some(r.train_loss)),
            series("HELD-OUT", ORANGE, &|r| r.val.map(|v| v.loss)),
        ],
    );
    draw_panel(
        &mut canvas,
        (panel_w, 0, panel_w, panel_h),
        "HELD-OUT CASES",
        "EPOCH",
        &[
            series("DICE", GREEN, &|r| r.val.map(|v| v.dice)),
            series("PRECISION", RED, &|r| r.val.map(|v| v.precision)),
            series("RECALL", PURPLE, &|r| r.val.map(|v| v.recall)),
        ],
    );
    draw_panel(
        &mut canvas,
        (2 * panel_w, 0, panel_w, panel_h),
        "LEARNING RATE",
        "EPOCH",
        &[series("LR", BLUE, &|r| Some(r.lr))],
    );
    canvas
}

/// Writes [`render_curves`] of `records` to `path` as PNG, atomically.
pub fn write_curves(path: &Path, records: &[EpochRecord]) -> Result<(), TrainError> {
    let bytes = render_curves(records).to_png(path)?;
    Ok(write_atomically(path, &bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_encode_as_a_png() {
        let records: Vec<EpochRecord> = (1..=3)
            .map(|e| EpochRecord {
                epoch: e,
                global_step: u64::from(e) * 10,
                train_loss: 1.0 / f64::from(e),
                lr: 1e-3,
                grad_norm: 1.0,
                train_slices: 80,
                train_time_s: 2.0,
                slices_per_s: 40.0,
                val: None,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        write_curves(&path, &records).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(tick_label(0.0005), "5.0e-4");
        assert_eq!(tick_label(0.25), "0.250");
    }
}
