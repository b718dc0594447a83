//! Workers over time per key, one line per policy, drawn with plotters.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use super::report::SimRun;

/// The plot could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {file}: {message}")]
pub struct SvgError {
    /// The file.
    pub file: String,
    /// Why.
    pub message: String,
}

/// Keys drawn at most; the rest are left out (and named in the last panel's caption).
const MAX_PANELS: usize = 8;

/// Writes an SVG to `path`: one panel per key (pool/model), workers over time as step lines,
/// one line per policy.
pub fn render_svg(path: &Path, runs: &[SimRun]) -> Result<(), SvgError> {
    let fail = |e: &dyn std::fmt::Display| SvgError {
        file: path.display().to_string(),
        message: e.to_string(),
    };
    let mut keys: BTreeMap<(String, String), ()> = BTreeMap::new();
    for run in runs {
        for p in &run.timeline {
            keys.insert((p.pool.clone(), p.model.clone()), ());
        }
    }
    let keys: Vec<(String, String)> = keys.into_keys().collect();
    let shown = keys.len().clamp(1, MAX_PANELS);
    let end = runs
        .iter()
        .map(|r| r.summary.end_secs)
        .fold(1.0f64, f64::max);
    let peak = runs
        .iter()
        .flat_map(|r| r.timeline.iter().map(|p| p.workers))
        .max()
        .unwrap_or(1)
        .max(1);

    let root = SVGBackend::new(path, (960, 260 * shown as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let panels = root.split_evenly((shown, 1));
    for (index, panel) in panels.iter().enumerate() {
        let caption = match keys.get(index) {
            Some((pool, model)) if index + 1 == shown && keys.len() > shown => {
                format!(
                    "{pool}/{model} (and {} more keys not drawn)",
                    keys.len() - shown
                )
            }
            Some((pool, model)) => format!("{pool}/{model}"),
            None => "no workers".to_string(),
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..end * 1.02, 0f64..(peak as f64 + 0.5))
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("workers")
            .draw()
            .map_err(|e| fail(&e))?;
        let Some((pool, model)) = keys.get(index) else {
            continue;
        };
        for (run_index, run) in runs.iter().enumerate() {
            let color = Palette99::pick(run_index).to_rgba();
            let mut points = vec![(0.0, 0.0)];
            let mut last = 0.0;
            for p in run
                .timeline
                .iter()
                .filter(|p| &p.pool == pool && &p.model == model)
            {
                points.push((p.at_secs, last));
                last = p.workers as f64;
                points.push((p.at_secs, last));
            }
            points.push((run.summary.end_secs.max(end), last));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| fail(&e))?
                .label(run.policy.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
