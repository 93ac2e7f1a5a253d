//! Inline SVG line charts, drawn on the server: no chart library, no script
//! needed to see one. The overview's live chart is redrawn in the browser by
//! `assets/console.js` with the same geometry and classes.
//!
//! Owns: chart geometry. Series names are escaped like everything else.

use std::fmt::Write as _;

use super::html::{escape, timestamp};

/// Drawing area in SVG user units; the SVG scales to its container's width.
pub const WIDTH: f64 = 720.0;
pub const HEIGHT: f64 = 220.0;
/// Room for the y-axis labels on the left and the time labels below.
const LEFT: f64 = 64.0;
/// Room on the right so the newest point's marker is not cut by the edge.
const RIGHT: f64 = 8.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 8.0;
/// Series drawn at most (each gets a class s0..s7 for its colour).
pub const SERIES_MAX: usize = 8;

/// One line: its name and (time ms, value) points, oldest first.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: &'a [(i64, f64)],
}

/// A chart of up to [`SERIES_MAX`] series sharing a time axis, with `label`
/// as its accessible name and `format` for the y-axis values.
pub fn line_chart(label: &str, series: &[Series<'_>], format: fn(f64) -> String) -> String {
    let series = &series[..series.len().min(SERIES_MAX)];
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut t_min, mut t_max, mut v_max) = (i64::MAX, i64::MIN, 0.0f64);
    for (t, v) in all {
        t_min = t_min.min(*t);
        t_max = t_max.max(*t);
        v_max = v_max.max(*v);
    }
    let mut out = format!(
        "<figure class=\"chart\"><svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"{}\" preserveAspectRatio=\"none\">",
        escape(label)
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    // Axes and the top gridline with the scale's maximum.
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{y0}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{y0}\" x2=\"{x_end}\" y2=\"{y0}\"/>\
         <line class=\"grid\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{x_end}\" y2=\"{TOP}\"/>\
         <text class=\"tick\" x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{vmax}</text>\
         <text class=\"tick\" x=\"{lx}\" y=\"{y0}\" text-anchor=\"end\">0</text>",
        y0 = TOP + plot_h,
        x_end = LEFT + plot_w,
        lx = LEFT - 6.0,
        ty = TOP + 10.0,
        vmax = escape(&format(v_max)),
    );
    if t_min > t_max {
        out.push_str(&format!(
            "<text class=\"empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">No data yet</text>",
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        ));
    } else {
        let _ = write!(
            out,
            "<text class=\"tick\" x=\"{LEFT}\" y=\"{HEIGHT}\">{}</text>\
             <text class=\"tick\" x=\"{WIDTH}\" y=\"{HEIGHT}\" text-anchor=\"end\">{}</text>",
            escape(&timestamp(t_min)),
            escape(&timestamp(t_max))
        );
        let span_t = (t_max - t_min).max(1) as f64;
        let span_v = if v_max > 0.0 { v_max } else { 1.0 };
        for (i, s) in series.iter().enumerate() {
            let coords: Vec<String> = s
                .points
                .iter()
                .map(|(t, v)| {
                    let x = if t_max == t_min {
                        LEFT + plot_w
                    } else {
                        LEFT + (*t - t_min) as f64 / span_t * plot_w
                    };
                    let y = TOP + plot_h - v / span_v * plot_h;
                    format!("{x:.1},{y:.1}")
                })
                .collect();
            if coords.len() == 1 {
                let (x, y) = coords[0].split_once(',').unwrap_or(("0", "0"));
                let _ = write!(
                    out,
                    "<circle class=\"s{i}\" cx=\"{x}\" cy=\"{y}\" r=\"3\"/>"
                );
            } else {
                let _ = write!(
                    out,
                    "<polyline class=\"line s{i}\" points=\"{}\"/>",
                    coords.join(" ")
                );
            }
        }
    }
    out.push_str("</svg><figcaption class=\"legend\">");
    for (i, s) in series.iter().enumerate() {
        let last = s.points.last().map_or("–".to_string(), |(_, v)| format(*v));
        let _ = write!(
            out,
            "<span class=\"key s{i}\">{}: {}</span> ",
            escape(s.name),
            escape(&last)
        );
    }
    out.push_str("</figcaption></figure>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(v: f64) -> String {
        format!("{v}")
    }

    #[test]
    fn an_empty_chart_says_so() {
        let svg = line_chart("lag", &[], plain);
        assert!(svg.contains("No data yet"));
        assert!(svg.contains("role=\"img\" aria-label=\"lag\""));
    }

    #[test]
    fn points_span_the_plot_and_the_maximum_is_at_the_top() {
        let points = [(0, 0.0), (1_000, 10.0)];
        let svg = line_chart(
            "c",
            &[Series {
                name: "a",
                points: &points,
            }],
            plain,
        );
        let expected = format!(
            "points=\"{LEFT:.1},{:.1} {:.1},{TOP:.1}\"",
            HEIGHT - BOTTOM,
            WIDTH - RIGHT
        );
        assert!(svg.contains(&expected), "{svg}");
        assert!(svg.contains(">10</text>"));
        assert!(svg.contains("a: 10"));
    }

    #[test]
    fn a_single_point_is_a_dot_and_names_are_escaped() {
        let points = [(5, 3.0)];
        let svg = line_chart(
            "<x>",
            &[Series {
                name: "<g>",
                points: &points,
            }],
            plain,
        );
        assert!(svg.contains("<circle class=\"s0\""));
        assert!(svg.contains("&lt;g&gt;: 3"));
        assert!(!svg.contains("<g>"));
    }
}
