//! The Pareto chart of policies: memory held for nothing (idle worker-hours) against cold
//! starts (the 75th percentile over keys of each key's cold-start rate), one point per policy,
//! the non-dominated points joined. Same style as the simulation chart.

use std::path::Path;

pub use super::pareto_points::ParetoPoint;
use super::report::percent_text;
use super::svg::{
    escape, fit, number_ticks, panel, sans_width, write_svg, Anchor, Svg, SvgError, COLOURS,
};

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 76.0;
const RIGHT: f64 = 24.0;
const PLOT_HEIGHT: f64 = 380.0;

/// Writes the Pareto chart of `points` to `path` as SVG.
pub fn render_pareto(path: &Path, title: &str, points: &[ParetoPoint]) -> Result<(), SvgError> {
    write_svg(path, &pareto_svg(title, points))
}

/// The indices of the points no other point beats on both axes (ties kept), by idle
/// worker-hours.
pub fn pareto_front(points: &[ParetoPoint]) -> Vec<usize> {
    let valid =
        |p: &ParetoPoint| p.idle_worker_hours.is_finite() && p.key_cold_start_pct_p75.is_finite();
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| valid(&points[i]))
        .filter(|&i| {
            let p = &points[i];
            !points.iter().any(|q| {
                valid(q)
                    && q.idle_worker_hours <= p.idle_worker_hours
                    && q.key_cold_start_pct_p75 <= p.key_cold_start_pct_p75
                    && (q.idle_worker_hours < p.idle_worker_hours
                        || q.key_cold_start_pct_p75 < p.key_cold_start_pct_p75)
            })
        })
        .collect();
    front.sort_by(|&a, &b| {
        points[a]
            .idle_worker_hours
            .total_cmp(&points[b].idle_worker_hours)
            .then(
                points[b]
                    .key_cold_start_pct_p75
                    .total_cmp(&points[a].key_cold_start_pct_p75),
            )
    });
    front
}

/// The Pareto chart of `points` as an SVG document: each point numbered, a legend outside the
/// plot naming each number's policy and figures, the frontier drawn dashed. Points with a
/// value that is not a finite number are left out and counted under the title.
pub fn pareto_svg(title: &str, points: &[ParetoPoint]) -> String {
    let valid: Vec<usize> = (0..points.len())
        .filter(|&i| {
            let p = &points[i];
            p.idle_worker_hours.is_finite()
                && p.key_cold_start_pct_p75.is_finite()
                && p.idle_worker_hours >= 0.0
                && p.key_cold_start_pct_p75 >= 0.0
        })
        .collect();
    let front = pareto_front(points);
    let mut svg = Svg::new(WIDTH);
    let mut subtitle = String::from(
        "lower left is better; in bold and joined by the dashed line: the policies no other beats on both axes",
    );
    let left_out = points.len() - valid.len();
    if left_out > 0 {
        subtitle.push_str(&format!("; {left_out} point(s) without a value left out"));
    }
    svg.heading(LEFT, WIDTH - LEFT - RIGHT, title, &subtitle);

    // The legend: one numbered entry per point, in columns, outside the plot.
    const SIZE: f64 = 12.0;
    const ROW: f64 = 20.0;
    let labels: Vec<String> = valid
        .iter()
        .map(|&i| {
            let p = &points[i];
            format!(
                "{}: {} idle worker-h, p75 cold starts {}",
                p.label,
                trim(p.idle_worker_hours),
                percent_text(p.key_cold_start_pct_p75)
            )
        })
        .collect();
    let columns = if labels.iter().any(|l| sans_width(l, SIZE) > 390.0) || labels.len() < 4 {
        1
    } else {
        2
    };
    let column_width = (WIDTH - LEFT - RIGHT - 16.0) / columns as f64;
    let legend_rows = labels.len().div_ceil(columns).max(1);
    let legend_top = 58.0;
    let legend_height = legend_rows as f64 * ROW + 8.0;
    svg.open_group("legend");
    svg.rect(
        None,
        LEFT,
        legend_top,
        WIDTH - LEFT - RIGHT,
        legend_height,
        "#fafafa",
        Some("#bbbbbb"),
    );
    let kinds = kinds(points);
    for (n, (&i, label)) in valid.iter().zip(&labels).enumerate() {
        let (row, column) = (n % legend_rows, n / legend_rows);
        let x = LEFT + 8.0 + column as f64 * column_width;
        let y = legend_top + 4.0 + ROW * row as f64 + ROW / 2.0;
        marker(&mut svg, x + 10.0, y, kinds[i], n + 1);
        let text = fit(label, SIZE, column_width - 40.0);
        svg.text(
            None,
            x + 26.0,
            y + SIZE * 0.35,
            SIZE,
            Anchor::Start,
            if front.contains(&i) {
                Some("bold")
            } else {
                None
            },
            None,
            &text,
        );
    }
    if valid.is_empty() {
        svg.text(
            None,
            LEFT + 8.0,
            legend_top + 18.0,
            SIZE,
            Anchor::Start,
            None,
            None,
            "no point to draw",
        );
    }
    svg.close_group();

    let top = legend_top + legend_height + 14.0;
    let x_peak = valid
        .iter()
        .map(|&i| points[i].idle_worker_hours)
        .fold(0.0, f64::max);
    let y_peak = valid
        .iter()
        .map(|&i| points[i].key_cold_start_pct_p75)
        .fold(0.0, f64::max);
    let x_ticks = number_ticks(x_peak * 1.08, 8, &trim);
    let y_ticks = number_ticks(y_peak * 1.08, 5, &|v| format!("{} %", trim(v)));
    let plot = panel(
        &mut svg,
        0,
        top,
        LEFT,
        WIDTH - LEFT - RIGHT,
        PLOT_HEIGHT,
        "p75 per-key cold-start rate (%) against idle worker-hours",
        "",
        &x_ticks,
        &y_ticks,
        "idle worker-hours (memory held for nothing)",
    );
    let frontier: Vec<(f64, f64)> = front
        .iter()
        .map(|&i| {
            (
                plot.px(points[i].idle_worker_hours),
                plot.py(points[i].key_cold_start_pct_p75),
            )
        })
        .collect();
    if frontier.len() > 1 {
        svg.polyline(&frontier, "#555555", 1.5, "6 4");
    }
    for (n, &i) in valid.iter().enumerate() {
        let p = &points[i];
        marker(
            &mut svg,
            plot.px(p.idle_worker_hours),
            plot.py(p.key_cold_start_pct_p75),
            kinds[i],
            n + 1,
        );
    }
    svg.finish(top + super::svg::HEADING + PLOT_HEIGHT + super::svg::BELOW + 12.0)
}

/// A marker for kind `kind` (colour and shape), numbered `number`.
fn marker(svg: &mut Svg, x: f64, y: f64, kind: usize, number: usize) {
    let colour = COLOURS[kind % COLOURS.len()];
    let r = 9.0;
    let shape = match kind % 4 {
        0 => format!(
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{r}\" fill=\"{colour}\" stroke=\"#ffffff\"/>"
        ),
        1 => format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{}\" height=\"{}\" fill=\"{colour}\" stroke=\"#ffffff\"/>",
            x - r,
            y - r,
            2.0 * r,
            2.0 * r
        ),
        2 => format!(
            "<polygon points=\"{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\" fill=\"{colour}\" stroke=\"#ffffff\"/>",
            y - r * 1.2,
            x + r * 1.1,
            y + r * 0.8,
            x - r * 1.1,
            y + r * 0.8
        ),
        _ => format!(
            "<polygon points=\"{x:.1},{:.1} {:.1},{y:.1} {x:.1},{:.1} {:.1},{y:.1}\" fill=\"{colour}\" stroke=\"#ffffff\"/>",
            y - r * 1.2,
            x + r * 1.2,
            y + r * 1.2,
            x - r * 1.2
        ),
    };
    svg.raw(&shape);
    svg.raw(&format!(
        "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\" font-weight=\"bold\" text-anchor=\"middle\" fill=\"#ffffff\">{}</text>",
        y + 3.5,
        escape(&number.to_string())
    ));
}

/// Each point's kind index: points whose labels start with the same word share a colour and
/// a shape.
fn kinds(points: &[ParetoPoint]) -> Vec<usize> {
    let mut seen: Vec<&str> = Vec::new();
    points
        .iter()
        .map(|p| {
            let kind = p.label.split_whitespace().next().unwrap_or("");
            match seen.iter().position(|k| *k == kind) {
                Some(i) => i,
                None => {
                    seen.push(kind);
                    seen.len() - 1
                }
            }
        })
        .collect()
}

fn trim(v: f64) -> String {
    let text = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(label: &str, x: f64, y: f64) -> ParetoPoint {
        ParetoPoint {
            label: label.to_string(),
            idle_worker_hours: x,
            key_cold_start_pct_p75: y,
            on_front: false,
        }
    }

    #[test]
    fn the_front_holds_the_points_no_other_beats_on_both_axes() {
        let points = [
            point("noop", 10.0, 0.0),
            point("keep-alive ttl=1m", 1.0, 20.0),
            point("keep-alive ttl=5m", 3.0, 5.0),
            point("keep-alive ttl=10m", 4.0, 6.0), // beaten by ttl=5m
            point("broken", f64::NAN, 1.0),
        ];
        assert_eq!(pareto_front(&points), vec![1, 2, 0]);
    }
}
