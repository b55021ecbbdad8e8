//! The report's PNG plots, drawn with plotters into a memory buffer and encoded with `image`.
//!
//! Text is laid out and rasterised here with `ab_glyph` from the bundled DejaVu Sans subset
//! (`assets/`), through [`Canvas`], a bitmap backend whose text calls place each glyph at its
//! outline's offset (plotters' own `ab_glyph` text path drops the glyphs' side bearings, which
//! spaces letters unevenly) and need no system font.

use std::path::Path;
use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, Glyph, GlyphId, PxScale, ScaleFont};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters_backend::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendColor, BackendCoord, DrawingErrorKind};

use super::render::series_name;
use super::{MeanCi, Report, ReportError, Run, SizeBin};
use crate::score::{Scores, Task};

/// DejaVu Sans reduced to Latin-1 (see `assets/LICENSE-DejaVu.txt`).
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans-subset.ttf");
/// The family named in text styles (the backend draws every family with the bundled font).
const FONT: &str = "sans-serif";
/// Width of the legend panel at the right of each plot.
const LEGEND_W: u32 = 320;

type Area<'a> = DrawingArea<Canvas<'a>, Shift>;

fn font() -> Option<&'static FontRef<'static>> {
    static PARSED: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    PARSED
        .get_or_init(|| FontRef::try_from_slice(FONT_BYTES).ok())
        .as_ref()
}

fn font_error<E>() -> DrawingErrorKind<E>
where
    E: std::error::Error + Send + Sync,
{
    DrawingErrorKind::FontError(Box::new(std::io::Error::other(
        "the bundled font could not be parsed",
    )))
}

/// One line of text laid out from x = 0, its top at y = 0.
struct Line {
    glyphs: Vec<Glyph>,
    width: f32,
    height: f32,
}

fn layout(font: &FontRef<'static>, size: f64, text: &str) -> Line {
    let scale = PxScale::from(size as f32);
    let scaled = font.as_scaled(scale);
    let mut caret = 0.0f32;
    let mut prev: Option<GlyphId> = None;
    let mut glyphs = Vec::with_capacity(text.len());
    for c in text.chars().filter(|c| !c.is_control()) {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            caret += scaled.kern(p, id);
        }
        glyphs.push(id.with_scale_and_position(scale, point(caret, scaled.ascent())));
        caret += scaled.h_advance(id);
        prev = Some(id);
    }
    Line {
        glyphs,
        width: caret,
        height: scaled.ascent() - scaled.descent(),
    }
}

/// plotters' RGB bitmap backend with its own text drawing (see the module docs).
struct Canvas<'a> {
    inner: BitMapBackend<'a>,
}

impl<'a> DrawingBackend for Canvas<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<TStyle: plotters_backend::BackendTextStyle>(
        &self,
        text: &str,
        style: &TStyle,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let font = font().ok_or_else(font_error)?;
        let line = layout(font, style.size(), text);
        Ok((
            line.width.ceil().max(0.0) as u32,
            line.height.ceil().max(0.0) as u32,
        ))
    }

    fn draw_text<TStyle: plotters_backend::BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let font = font().ok_or_else(font_error)?;
        let line = layout(font, style.size(), text);
        let (w, h) = (line.width.round() as i32, line.height.round() as i32);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Center => -w / 2,
            HPos::Right => -w,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let transform = style.transform();
        let mut coverage: Vec<(i32, i32, f32)> = Vec::new();
        for glyph in line.glyphs {
            if let Some(outline) = font.outline_glyph(glyph) {
                let bounds = outline.px_bounds();
                let (bx, by) = (bounds.min.x as i32, bounds.min.y as i32);
                outline.draw(|x, y, c| coverage.push((bx + x as i32, by + y as i32, c)));
            }
        }
        for (x, y, c) in coverage {
            if c <= 0.0 {
                continue;
            }
            let (x, y) = transform.transform(x + dx, y + dy);
            let pixel = BackendColor {
                alpha: color.alpha * f64::from(c.min(1.0)),
                rgb: color.rgb,
            };
            self.inner.draw_pixel((pos.0 + x, pos.1 + y), pixel)?;
        }
        Ok(())
    }
}

fn text_err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Draws with `draw` on a white `w x h` canvas and writes it to `path` as PNG.
fn render(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<(), String>,
) -> Result<(), ReportError> {
    let plot_err = |message: String| ReportError::Plot {
        path: path.to_path_buf(),
        message,
    };
    if font().is_none() {
        return Err(plot_err("the bundled font could not be parsed".to_string()));
    }
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let canvas = Canvas {
            inner: BitMapBackend::with_buffer(&mut buf, (w, h)),
        };
        let root = canvas.into_drawing_area();
        root.fill(&WHITE).map_err(text_err).map_err(plot_err)?;
        draw(&root).map_err(plot_err)?;
        root.present().map_err(text_err).map_err(plot_err)?;
    }
    let image = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| plot_err("the pixel buffer has the wrong size".to_string()))?;
    image
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| plot_err(e.to_string()))
}

/// The colour of series `i`: matplotlib's `tab10`, then plotters' 99-colour palette.
fn color(i: usize) -> RGBAColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    match TAB10.get(i) {
        Some(&(r, g, b)) => RGBColor(r, g, b).to_rgba(),
        None => Palette99::pick(i).to_rgba(),
    }
}

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
enum Swatch {
    Box,
    Line,
}

/// A legend in its own panel: one swatch and name per series, top to bottom.
fn legend(area: &Area<'_>, items: &[(String, RGBAColor)], swatch: Swatch) -> Result<(), String> {
    let style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (name, c)) in items.iter().enumerate() {
        let y = 50 + 24 * i as i32;
        match swatch {
            Swatch::Box => area
                .draw(&Rectangle::new([(8, y - 7), (22, y + 7)], c.filled()))
                .map_err(text_err)?,
            Swatch::Line => area
                .draw(&PathElement::new(vec![(4, y), (26, y)], c.stroke_width(3)))
                .map_err(text_err)?,
        }
        area.draw(&Text::new(name.clone(), (32, y), style.clone()))
            .map_err(text_err)?;
    }
    Ok(())
}

fn bin_of(x: f64) -> Option<SizeBin> {
    SizeBin::ALL
        .into_iter()
        .find(|b| (x - (*b as usize as f64 + 0.5)).abs() < 0.25)
}

/// Grouped bars: per size bin, one bar per series: each model's accuracy without the crop
/// (from its first run, in report order), then each run's accuracy with the crop.
pub(super) fn size_plot(report: &Report, task: Task, path: &Path) -> Result<(), ReportError> {
    let metric = report.metric_set().primary(task);
    let value = |s: Option<&Scores>| s.and_then(|s| s.get(metric));
    let runs: Vec<&Run> = report
        .runs()
        .iter()
        .filter(|r| r.task == task && r.by_size.iter().any(|c| c.n > 0))
        .collect();
    let mut series: Vec<(String, Vec<Option<f64>>)> = Vec::new();
    let mut models: Vec<&str> = Vec::new();
    for r in &runs {
        if !models.contains(&r.model.as_str()) {
            models.push(&r.model);
            let v = r
                .by_size
                .iter()
                .map(|c| value(c.no_crop.as_ref()))
                .collect();
            series.push((format!("{} no crop", r.model), v));
        }
        if r.has_crop() {
            let v = r.by_size.iter().map(|c| value(c.crop.as_ref())).collect();
            series.push((series_name(r), v));
        }
    }
    let k = series.len().max(1);
    let caption = format!("Accuracy by answer-box size: {task} ({metric})");
    render(path, (1100, 560), |root| {
        let (plot_area, legend_area) = root.split_horizontally(1100 - LEGEND_W);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(&caption, (FONT, 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(
                // ticks every half bin: the group edges (unlabelled) and centres (named)
                (0f64..3f64).step(0.5),
                0f64..108f64,
            )
            .map_err(text_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(7)
            .x_label_formatter(&|x| bin_of(*x).map_or_else(String::new, |b| b.label().to_string()))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .y_desc("accuracy (%)")
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 16))
            .bold_line_style(BLACK.mix(0.15))
            .light_line_style(BLACK.mix(0.04))
            .draw()
            .map_err(text_err)?;
        let bw = 0.8 / k as f64;
        let value_style =
            TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        for (i, (_, values)) in series.iter().enumerate() {
            let c = color(i);
            for (b, v) in values.iter().enumerate() {
                let Some(v) = *v else { continue };
                let x0 = b as f64 + 0.1 + i as f64 * bw;
                let x1 = x0 + bw * 0.9;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x0, 0.0), (x1, v)],
                        c.filled(),
                    )))
                    .map_err(text_err)?;
                if k <= 8 {
                    chart
                        .draw_series(std::iter::once(Text::new(
                            format!("{v:.1}"),
                            ((x0 + x1) / 2.0, v + 0.8),
                            value_style.clone(),
                        )))
                        .map_err(text_err)?;
                }
            }
        }
        let items: Vec<(String, RGBAColor)> = series
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.clone(), color(i)))
            .collect();
        legend(&legend_area, &items, Swatch::Box)
    })
}

/// The band's edges of a layer: the interval, or the mean when there is none (n < 2).
fn band(s: &MeanCi) -> (f64, f64) {
    (s.low.unwrap_or(s.mean), s.high.unwrap_or(s.mean))
}

/// Lines of the mean attention ratio per layer with their 95% bands, one per run of `task`
/// with attention ratios, and a grey line at 1.
pub(super) fn attention_plot(report: &Report, task: Task, path: &Path) -> Result<(), ReportError> {
    let runs: Vec<(&Run, &[MeanCi])> = report
        .runs()
        .iter()
        .filter(|r| r.task == task)
        .filter_map(|r| r.attention.as_ref().map(|a| (r, a.all.as_slice())))
        .collect();
    let layers = runs.iter().map(|(_, s)| s.len()).max().unwrap_or(1).max(1);
    let top = runs
        .iter()
        .flat_map(|(_, s)| s.iter().map(|m| band(m).1.max(m.mean)))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max);
    let bottom = runs
        .iter()
        .flat_map(|(_, s)| s.iter().map(|m| band(m).0.min(m.mean)))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::min);
    let span = (top - bottom).max(0.1);
    let (y0, y1) = (bottom - 0.02 * span, top + 0.08 * span);
    let x1 = layers as f64 - 0.5;
    let caption = format!("Attention ratio per layer: {task} (mean, 95% CI)");
    render(path, (1100, 560), |root| {
        let (plot_area, legend_area) = root.split_horizontally(1100 - LEGEND_W);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(&caption, (FONT, 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..x1, y0..y1)
            .map_err(text_err)?;
        chart
            .configure_mesh()
            .x_labels(layers.min(17))
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 && *x >= 0.0 {
                    format!("{x:.0}")
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| format!("{y:.1}"))
            .x_desc("LLM layer")
            .y_desc("attention ratio")
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 16))
            .bold_line_style(BLACK.mix(0.15))
            .light_line_style(BLACK.mix(0.04))
            .draw()
            .map_err(text_err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(-0.5, 1.0), (x1, 1.0)],
                BLACK.mix(0.6).stroke_width(2),
            )))
            .map_err(text_err)?;
        let mut items = Vec::new();
        for (i, (r, stats)) in runs.iter().enumerate() {
            let c = color(i);
            let mut outline: Vec<(f64, f64)> = stats
                .iter()
                .enumerate()
                .map(|(k, s)| (k as f64, band(s).1))
                .collect();
            outline.extend(
                stats
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(k, s)| (k as f64, band(s).0)),
            );
            chart
                .draw_series(std::iter::once(Polygon::new(outline, c.mix(0.2).filled())))
                .map_err(text_err)?;
            let line: Vec<(f64, f64)> = stats
                .iter()
                .enumerate()
                .map(|(k, s)| (k as f64, s.mean))
                .collect();
            chart
                .draw_series(std::iter::once(PathElement::new(line, c.stroke_width(2))))
                .map_err(text_err)?;
            let n = r.attention.as_ref().map_or(0, |a| a.n);
            items.push((format!("{} (n={n})", series_name(r)), c));
        }
        legend(&legend_area, &items, Swatch::Line)
    })
}
