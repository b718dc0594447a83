//! The drawing kit the simulator's charts share: an SVG writer, one style (colour-blind-safe
//! colours, a dash pattern and a width per series, fonts), axes with readable ticks, and panels.
//!
//! Every box a reader must see whole carries an `id` (`title`, `subtitle`, `legend`,
//! `heading-N`, `plot-N`, `table`), so that a test can ask a renderer where each one landed and
//! check that no legend or title covers a plot.

use std::fmt::Write as _;
use std::path::Path;

use super::report::clock_time;

/// A chart that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {file}: {message}")]
pub struct SvgError {
    /// The file.
    pub file: String,
    /// Why.
    pub message: String,
}

/// Writes `svg` to `path`.
pub(crate) fn write_svg(path: &Path, svg: &str) -> Result<(), SvgError> {
    std::fs::write(path, svg).map_err(|e| SvgError {
        file: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The Okabe–Ito colours, which readers with any common colour-vision deficiency tell apart,
/// without its yellow (too faint on white), and a mid grey as the eighth, so that eight series
/// have eight colours (and colour with dash pattern tells 24 apart).
pub(crate) const COLOURS: [&str; 8] = [
    "#0072B2", // blue
    "#E69F00", // orange
    "#009E73", // bluish green
    "#D55E00", // vermilion
    "#CC79A7", // reddish purple
    "#56B4E9", // sky blue
    "#000000", // black
    "#8C8C8C", // grey
];

/// Dash patterns, one per series, so that series stay apart without colour, and a line drawn
/// over an equal one leaves it visible. Drawn with round caps: `0.5 7` is a row of dots.
pub(crate) const DASHES: [&str; 6] = ["", "12 8", "0.5 7", "16 6 0.5 6", "6 6", "0.5 4"];

/// The style of series `index` of `count`: colour, dash pattern, and width. Earlier series
/// are drawn wider, so each later (narrower, dashed) line drawn over an equal one leaves it
/// showing on both sides.
pub(crate) fn series_style(index: usize, count: usize) -> (&'static str, &'static str, f64) {
    let colour = COLOURS[index % COLOURS.len()];
    let dash = DASHES[index % DASHES.len()];
    let width = if count <= 1 {
        3.0
    } else {
        let spread = (count - 1) as f64;
        7.0 - 4.0 * (index as f64 / spread).min(1.0)
    };
    (colour, dash, width)
}

/// The sans-serif font stack.
pub(crate) const SANS: &str = "DejaVu Sans, Verdana, Arial, Helvetica, sans-serif";
/// The monospace font stack (tables).
pub(crate) const MONO: &str = "DejaVu Sans Mono, Menlo, Consolas, monospace";

/// A generous estimate of the width of `c` in the sans-serif font, in em (DejaVu Sans and
/// Verdana, the widest of the stack): narrow letters and marks, most characters, capitals,
/// the widest letters, and East Asian wide characters and emoji.
fn sans_em(c: char) -> f64 {
    match c {
        'i' | 'j' | 'l' | 'I' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' | ' ' | '(' | ')'
        | '[' | ']' => 0.42,
        'W' | 'M' | 'm' | 'w' | '@' | '%' | '—' | '…' => 1.05,
        'A'..='Z' | '&' | '#' => 0.8,
        c if (c as u32) >= 0x1100 => 1.1,
        _ => 0.66,
    }
}

/// A generous estimate of the width of `text` in the sans-serif font at `size` px.
pub(crate) fn sans_width(text: &str, size: f64) -> f64 {
    text.chars().map(sans_em).sum::<f64>() * size
}

/// The width of `text` in the monospace font at `size` px (0.6 em a character).
pub(crate) fn mono_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.61
}

/// `text` cut in its middle with `…` to fit `width` px in the sans-serif font at `size`.
pub(crate) fn fit(text: &str, size: f64, width: f64) -> String {
    if sans_width(text, size) <= width {
        return text.to_string();
    }
    // Characters from both ends, alternately, while they and the `…` fit.
    let chars: Vec<char> = text.chars().collect();
    let mut room = width / size - sans_em('…');
    let (mut head, mut tail) = (0, 0);
    while head + tail < chars.len() {
        let from_head = head <= tail;
        let next = if from_head {
            chars[head]
        } else {
            chars[chars.len() - 1 - tail]
        };
        room -= sans_em(next);
        if room < 0.0 {
            break;
        }
        if from_head {
            head += 1;
        } else {
            tail += 1;
        }
    }
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// Escapes text for XML.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A number for an SVG attribute: two decimals at most, no `-0`.
fn n(value: f64) -> String {
    let value = if value.is_finite() { value } else { 0.0 };
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" || text.is_empty() {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// How text is anchored at its x.
#[derive(Clone, Copy)]
pub(crate) enum Anchor {
    Start,
    Middle,
    End,
}

/// An SVG document being written.
pub(crate) struct Svg {
    pub width: f64,
    body: String,
}

impl Svg {
    pub fn new(width: f64) -> Svg {
        Svg {
            width,
            body: String::new(),
        }
    }

    /// The finished document, `height` px tall.
    pub fn finish(self, height: f64) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"{SANS}\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>\n{body}</svg>\n",
            w = n(self.width),
            h = n(height.ceil()),
            body = self.body
        )
    }

    pub fn raw(&mut self, element: &str) {
        self.body.push_str(element);
        self.body.push('\n');
    }

    pub fn open_group(&mut self, id: &str) {
        let _ = writeln!(self.body, "<g id=\"{}\">", escape(id));
    }

    pub fn close_group(&mut self) {
        self.body.push_str("</g>\n");
    }

    /// A chart's bold title and its subtitle below it, from `x`, each cut to `width` px.
    pub fn heading(&mut self, x: f64, width: f64, title: &str, subtitle: &str) {
        self.text(
            Some("title"),
            x,
            26.0,
            17.0,
            Anchor::Start,
            Some("bold"),
            None,
            &fit(title, 17.0, width),
        );
        self.text(
            Some("subtitle"),
            x,
            46.0,
            12.0,
            Anchor::Start,
            None,
            None,
            &fit(subtitle, 12.0, width),
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub fn text(
        &mut self,
        id: Option<&str>,
        x: f64,
        y: f64,
        size: f64,
        anchor: Anchor,
        weight: Option<&str>,
        family: Option<&str>,
        text: &str,
    ) {
        let anchor = match anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        };
        let _ = write!(self.body, "<text");
        if let Some(id) = id {
            let _ = write!(self.body, " id=\"{}\"", escape(id));
        }
        let _ = write!(
            self.body,
            " x=\"{}\" y=\"{}\" font-size=\"{}\" text-anchor=\"{anchor}\" fill=\"#222222\"",
            n(x),
            n(y),
            n(size)
        );
        if let Some(weight) = weight {
            let _ = write!(self.body, " font-weight=\"{weight}\"");
        }
        if let Some(family) = family {
            let _ = write!(self.body, " font-family=\"{family}\"");
        }
        let _ = writeln!(self.body, ">{}</text>", escape(text));
    }

    #[allow(clippy::too_many_arguments)]
    pub fn rect(
        &mut self,
        id: Option<&str>,
        x: f64,
        y: f64,
        w: f64,
        h: f64,
        fill: &str,
        stroke: Option<&str>,
    ) {
        let _ = write!(self.body, "<rect");
        if let Some(id) = id {
            let _ = write!(self.body, " id=\"{}\"", escape(id));
        }
        let _ = write!(
            self.body,
            " x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\"",
            n(x),
            n(y),
            n(w.max(0.0)),
            n(h.max(0.0))
        );
        if let Some(stroke) = stroke {
            let _ = write!(self.body, " stroke=\"{stroke}\" stroke-width=\"1\"");
        }
        self.body.push_str("/>\n");
    }

    #[allow(clippy::too_many_arguments)]
    pub fn line(
        &mut self,
        x1: f64,
        y1: f64,
        x2: f64,
        y2: f64,
        stroke: &str,
        width: f64,
        dash: &str,
    ) {
        let _ = write!(
            self.body,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{stroke}\" stroke-width=\"{}\"",
            n(x1),
            n(y1),
            n(x2),
            n(y2),
            n(width)
        );
        if !dash.is_empty() {
            let _ = write!(
                self.body,
                " stroke-dasharray=\"{dash}\" stroke-linecap=\"round\""
            );
        }
        self.body.push_str("/>\n");
    }

    /// A polyline through `points` (already in pixels).
    pub fn polyline(&mut self, points: &[(f64, f64)], stroke: &str, width: f64, dash: &str) {
        if points.is_empty() {
            return;
        }
        let _ = write!(self.body, "<polyline fill=\"none\" stroke=\"{stroke}\" stroke-width=\"{}\" stroke-linejoin=\"round\"", n(width));
        if !dash.is_empty() {
            let _ = write!(
                self.body,
                " stroke-dasharray=\"{dash}\" stroke-linecap=\"round\""
            );
        }
        self.body.push_str(" points=\"");
        for (i, (x, y)) in points.iter().enumerate() {
            if i > 0 {
                self.body.push(' ');
            }
            let _ = write!(self.body, "{},{}", n(*x), n(*y));
        }
        self.body.push_str("\"/>\n");
    }

    /// A sample of series style `(colour, dash, width)`, `length` px long, at `(x, y)`.
    pub fn sample(&mut self, x: f64, y: f64, length: f64, style: (&str, &str, f64)) {
        let (colour, dash, width) = style;
        self.line(x, y, x + length, y, colour, width.min(4.0), dash);
    }
}

/// Legend entries laid out in rows under the title, outside every plot, boxed. Returns the y
/// below the legend.
pub(crate) fn legend(
    svg: &mut Svg,
    top: f64,
    left: f64,
    right: f64,
    entries: &[(String, (&str, &str, f64))],
) -> f64 {
    const SIZE: f64 = 12.0;
    const ROW: f64 = 20.0;
    const SAMPLE: f64 = 40.0;
    const PAD: f64 = 8.0;
    if entries.is_empty() {
        return top;
    }
    let available = right - left - 2.0 * PAD;
    let mut rows: Vec<Vec<(f64, usize, String)>> = vec![Vec::new()];
    let mut x = 0.0;
    for (i, (label, _)) in entries.iter().enumerate() {
        let label = fit(label, SIZE, available - SAMPLE - 8.0);
        let width = SAMPLE + 8.0 + sans_width(&label, SIZE);
        if x > 0.0 && x + width > available {
            rows.push(Vec::new());
            x = 0.0;
        }
        if let Some(row) = rows.last_mut() {
            row.push((x, i, label));
        }
        x += width + 24.0;
    }
    let height = rows.len() as f64 * ROW + PAD;
    svg.open_group("legend");
    svg.rect(
        None,
        left,
        top,
        right - left,
        height,
        "#fafafa",
        Some("#bbbbbb"),
    );
    for (r, row) in rows.iter().enumerate() {
        let y = top + PAD / 2.0 + ROW * r as f64 + ROW / 2.0;
        for (x, i, label) in row {
            let x = left + PAD + x;
            svg.sample(x, y, SAMPLE, entries[*i].1);
            svg.text(
                None,
                x + SAMPLE + 8.0,
                y + SIZE * 0.35,
                SIZE,
                Anchor::Start,
                None,
                None,
                label,
            );
        }
    }
    svg.close_group();
    top + height
}

/// Tick positions and labels on one axis.
pub(crate) struct Ticks {
    /// The axis' top (or right) end, at or above the data's maximum.
    pub max: f64,
    /// `(value, label)` of each tick.
    pub ticks: Vec<(f64, String)>,
}

/// Whole-number ticks from 0 up to at least `peak`, about `target` of them.
pub(crate) fn integer_ticks(peak: f64, target: usize) -> Ticks {
    let peak = peak.max(1.0);
    let step = nice_step(peak / target.max(1) as f64).max(1.0).round();
    let max = (peak / step).ceil() * step;
    let count = (max / step).round() as usize;
    Ticks {
        max,
        ticks: (0..=count)
            .map(|i| {
                let v = i as f64 * step;
                (v, format!("{}", v as u64))
            })
            .collect(),
    }
}

/// Ticks from 0 up to at least `peak` at 1, 2 or 5 times a power of ten, labelled by `label`.
pub(crate) fn number_ticks(peak: f64, target: usize, label: &dyn Fn(f64) -> String) -> Ticks {
    let peak = if peak.is_finite() && peak > 0.0 {
        peak
    } else {
        1.0
    };
    let step = nice_step(peak / target.max(1) as f64);
    let max = (peak / step).ceil() * step;
    let count = (max / step).round() as usize;
    Ticks {
        max,
        ticks: (0..=count)
            .map(|i| {
                let v = i as f64 * step;
                (v, label(v))
            })
            .collect(),
    }
}

/// The smallest of 1, 2, 5 × 10^k at or above `raw`.
fn nice_step(raw: f64) -> f64 {
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * magnitude >= raw * (1.0 - 1e-9) {
            return m * magnitude;
        }
    }
    10.0 * magnitude
}

/// Durations a time axis steps by, seconds.
const TIME_STEPS: [f64; 22] = [
    0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
    3600.0, 7200.0, 10_800.0, 14_400.0, 21_600.0, 43_200.0, 86_400.0,
];

/// The smallest of [`TIME_STEPS`] at or above `raw` seconds.
pub(crate) fn nice_duration(raw: f64) -> f64 {
    TIME_STEPS
        .iter()
        .copied()
        .find(|s| *s >= raw)
        .unwrap_or_else(|| (raw / 86_400.0).ceil() * 86_400.0)
}

/// Time ticks over `[0, window]`: `h:mm` when the window reaches an hour, else `m:ss`.
pub(crate) fn time_ticks(window: f64, target: usize) -> Ticks {
    let window = if window.is_finite() && window > 0.0 {
        window
    } else {
        1.0
    };
    let step = nice_duration(window / target.max(1) as f64);
    let count = (window / step + 1e-9).floor() as usize;
    let hours = window >= 3600.0;
    Ticks {
        max: window,
        ticks: (0..=count)
            .map(|i| {
                let v = i as f64 * step;
                (v, axis_time(v, hours))
            })
            .collect(),
    }
}

/// `h:mm` or `m:ss` (with tenths under a second's step).
pub(crate) fn axis_time(secs: f64, hours: bool) -> String {
    if hours {
        let minutes = (secs / 60.0).round() as u64;
        format!("{}:{:02}", minutes / 60, minutes % 60)
    } else {
        let text = clock_time(secs);
        // `0:06:00` → `6:00`
        let rest = text.strip_prefix("0:").unwrap_or(&text);
        rest.strip_prefix('0')
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            .unwrap_or(rest)
            .to_string()
    }
}

/// The plot area of a panel, in pixels, with its axes' ranges.
#[derive(Clone, Copy)]
pub(crate) struct Plot {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub x_max: f64,
    pub y_max: f64,
}

impl Plot {
    pub fn px(&self, x: f64) -> f64 {
        self.x + self.w * (x / self.x_max).clamp(0.0, 1.0)
    }

    pub fn py(&self, y: f64) -> f64 {
        self.y + self.h - self.h * (y / self.y_max).clamp(0.0, 1.0)
    }
}

/// Space a panel takes besides its plot: the heading above, the tick labels below.
pub(crate) const HEADING: f64 = 22.0;
pub(crate) const BELOW: f64 = 34.0;

/// Draws a panel: its heading (left) and note (right) above the plot, the plot area (id
/// `plot-N`), grid lines, and the tick labels. The caller draws the data into the returned
/// plot.
#[allow(clippy::too_many_arguments)]
pub(crate) fn panel(
    svg: &mut Svg,
    index: usize,
    top: f64,
    left: f64,
    width: f64,
    height: f64,
    heading: &str,
    note: &str,
    x: &Ticks,
    y: &Ticks,
    x_caption: &str,
) -> Plot {
    let plot = Plot {
        x: left,
        y: top + HEADING,
        w: width,
        h: height,
        x_max: x.max,
        // Headroom above the top tick, so that a line at the top stays off the frame.
        y_max: y.max * 1.06,
    };
    let note_width = sans_width(note, 11.0);
    let heading = fit(heading, 13.0, width - note_width - 16.0);
    svg.text(
        Some(&format!("heading-{index}")),
        left,
        top + 15.0,
        13.0,
        Anchor::Start,
        Some("bold"),
        None,
        &heading,
    );
    if !note.is_empty() {
        svg.text(
            Some(&format!("note-{index}")),
            left + width,
            top + 15.0,
            11.0,
            Anchor::End,
            None,
            None,
            note,
        );
    }
    svg.rect(
        Some(&format!("plot-{index}")),
        plot.x,
        plot.y,
        plot.w,
        plot.h,
        "#ffffff",
        Some("#888888"),
    );
    for (value, label) in &y.ticks {
        let py = plot.py(*value);
        if *value > 0.0 {
            svg.line(plot.x, py, plot.x + plot.w, py, "#e4e4e4", 1.0, "");
        }
        svg.text(
            None,
            plot.x - 6.0,
            py + 4.0,
            11.0,
            Anchor::End,
            None,
            None,
            label,
        );
    }
    let last = x.ticks.len().saturating_sub(1);
    for (i, (value, label)) in x.ticks.iter().enumerate() {
        let px = plot.px(*value);
        if *value > 0.0 && *value < x.max {
            svg.line(px, plot.y, px, plot.y + plot.h, "#eeeeee", 1.0, "");
        }
        // Keep the last label inside the plot's width.
        let anchor = if i == last && px + sans_width(label, 11.0) / 2.0 > plot.x + plot.w {
            Anchor::End
        } else {
            Anchor::Middle
        };
        svg.text(
            None,
            px,
            plot.y + plot.h + 15.0,
            11.0,
            anchor,
            None,
            None,
            label,
        );
    }
    if !x_caption.is_empty() {
        svg.text(
            None,
            plot.x + plot.w / 2.0,
            plot.y + plot.h + 29.0,
            11.0,
            Anchor::Middle,
            None,
            None,
            x_caption,
        );
    }
    plot
}

/// A small table: a header row and rows of cells, in the monospace font, with a colour sample
/// before each column's header. Returns the y below it.
pub(crate) fn table(
    svg: &mut Svg,
    top: f64,
    left: f64,
    headers: &[(String, (&str, &str, f64))],
    rows: &[(String, Vec<String>)],
) -> f64 {
    const SIZE: f64 = 11.0;
    const ROW: f64 = 16.0;
    const SAMPLE: f64 = 26.0;
    let label_width = rows
        .iter()
        .map(|(l, _)| mono_width(l, SIZE))
        .fold(mono_width("summary", SIZE), f64::max);
    let widths: Vec<f64> = headers
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            rows.iter()
                .filter_map(|(_, cells)| cells.get(i))
                .map(|c| mono_width(c, SIZE))
                .fold(mono_width(h, SIZE) + SAMPLE + 4.0, f64::max)
        })
        .collect();
    svg.open_group("table");
    let mut y = top + SIZE;
    svg.text(
        None,
        left,
        y,
        SIZE,
        Anchor::Start,
        Some("bold"),
        Some(MONO),
        "summary",
    );
    // A table wider than the chart (many policies) widens the image rather than run past it.
    let right_edge = left + label_width + widths.iter().map(|w| 18.0 + w).sum::<f64>();
    svg.width = svg.width.max((right_edge + 12.0).ceil());
    let mut x = left + label_width + 18.0;
    let mut column_right = Vec::new();
    for ((header, style), w) in headers.iter().zip(&widths) {
        let right = x + w;
        svg.sample(
            right - mono_width(header, SIZE) - SAMPLE - 4.0,
            y - SIZE * 0.35,
            SAMPLE,
            *style,
        );
        svg.text(
            None,
            right,
            y,
            SIZE,
            Anchor::End,
            Some("bold"),
            Some(MONO),
            header,
        );
        column_right.push(right);
        x = right + 18.0;
    }
    for (label, cells) in rows {
        y += ROW;
        svg.text(None, left, y, SIZE, Anchor::Start, None, Some(MONO), label);
        for (cell, right) in cells.iter().zip(&column_right) {
            svg.text(None, *right, y, SIZE, Anchor::End, None, Some(MONO), cell);
        }
    }
    svg.close_group();
    y + 8.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ticks_are_whole_numbers() {
        let ticks = integer_ticks(4.0, 5);
        let labels: Vec<&str> = ticks.ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, vec!["0", "1", "2", "3", "4"]);
        let ticks = integer_ticks(335.0, 5);
        assert!(ticks.ticks.iter().all(|(v, _)| v.fract() == 0.0));
        assert!(ticks.max >= 335.0);
        assert!(ticks.ticks.len() <= 6, "{}", ticks.ticks.len());
    }

    #[test]
    fn time_ticks_read_as_hours_or_minutes() {
        let hour = time_ticks(3810.0, 8);
        let labels: Vec<&str> = hour.ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            labels,
            vec!["0:00", "0:10", "0:20", "0:30", "0:40", "0:50", "1:00"]
        );
        let short = time_ticks(630.0, 8);
        let labels: Vec<&str> = short.ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            labels,
            vec!["0:00", "2:00", "4:00", "6:00", "8:00", "10:00"]
        );
        let day = time_ticks(86_745.0, 8);
        assert_eq!(day.ticks.last().map(|(_, l)| l.as_str()), Some("24:00"));
    }

    #[test]
    fn fit_cuts_long_text_in_the_middle() {
        let cut = fit(&"x".repeat(200), 10.0, 100.0);
        assert!(sans_width(&cut, 10.0) <= 100.0, "{cut}");
        assert!(cut.contains('…'));
        assert_eq!(fit("short", 10.0, 100.0), "short");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
