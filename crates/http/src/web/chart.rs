//! Small charts drawn on the server as inline SVG (no script, no chart library): a line of a
//! balance over time, with its lowest and highest value and its first and last date as axis
//! labels. Every chart has a title for screen readers and sits beside a table of the same
//! figures, which is the accessible form of the data.

/// Width and height of the drawing area, in SVG units (the SVG scales to its box).
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 200.0;
/// Room for the axis labels.
const LEFT: f64 = 90.0;
const BOTTOM: f64 = 24.0;

/// One point: when (microseconds), and the value (minor units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Point {
    pub(crate) at_micros: i64,
    pub(crate) value: i64,
}

/// The SVG of a step line through `points` (oldest first), `title` read by screen readers,
/// `label` formatting a value for the axis (money, a count). `None` without points.
pub(crate) fn step_line(
    points: &[Point],
    title: &str,
    label: impl Fn(i64) -> String,
    date: impl Fn(i64) -> String,
) -> Option<String> {
    let first = points.first()?;
    let last = points.last()?;
    let (low, high) = points.iter().fold((i64::MAX, i64::MIN), |(lo, hi), p| {
        (lo.min(p.value), hi.max(p.value))
    });
    // A flat line sits in the middle of a band of ±1 unit.
    let (low, high) = if low == high {
        (low.saturating_sub(1), high.saturating_add(1))
    } else {
        (low, high)
    };
    let span_t = (last.at_micros - first.at_micros).max(1) as f64;
    let span_v = (high - low) as f64;
    let x = |t: i64| LEFT + (t - first.at_micros) as f64 / span_t * (WIDTH - LEFT - 8.0);
    let y = |v: i64| 8.0 + (high - v) as f64 / span_v * (HEIGHT - BOTTOM - 16.0);
    let mut path = format!("M{:.1},{:.1}", x(first.at_micros), y(first.value));
    for pair in points.windows(2) {
        // A balance holds until the next transfer: across, then up or down.
        path.push_str(&format!(
            "H{:.1}V{:.1}",
            x(pair[1].at_micros),
            y(pair[1].value)
        ));
    }
    let esc = super::escape;
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-labelledby=\"chart-title\" class=\"chart\"><title id=\"chart-title\">{title}</title>\
         <line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{WIDTH}\" y2=\"{base}\" stroke=\"#9aa0a8\"/>\
         <line x1=\"{LEFT}\" y1=\"0\" x2=\"{LEFT}\" y2=\"{base}\" stroke=\"#9aa0a8\"/>\
         <text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\" font-size=\"12\" fill=\"#1b1d21\">{high_label}</text>\
         <text x=\"{lx}\" y=\"{by}\" text-anchor=\"end\" font-size=\"12\" fill=\"#1b1d21\">{low_label}</text>\
         <text x=\"{LEFT}\" y=\"{dy}\" font-size=\"12\" fill=\"#1b1d21\">{from}</text>\
         <text x=\"{WIDTH}\" y=\"{dy}\" text-anchor=\"end\" font-size=\"12\" fill=\"#1b1d21\">{to}</text>\
         <path d=\"{path}\" fill=\"none\" stroke=\"#1d4ed8\" stroke-width=\"2\"/></svg>",
        title = esc(title),
        base = HEIGHT - BOTTOM,
        lx = LEFT - 6.0,
        ty = y(high) + 4.0,
        by = y(low) + 4.0,
        dy = HEIGHT - 6.0,
        high_label = esc(&label(high)),
        low_label = esc(&label(low)),
        from = esc(&date(first.at_micros)),
        to = esc(&date(last.at_micros)),
    ))
}

/// The SVG of a bar chart of `(label, count)` (in order), `title` read by screen readers;
/// `None` without bars. Each bar carries its own `<title>` (label and count).
pub(crate) fn bars(values: &[(String, i64)], title: &str) -> Option<String> {
    if values.is_empty() {
        return None;
    }
    let high = values.iter().map(|(_, v)| *v).max().unwrap_or(1).max(1);
    let slot = (WIDTH - LEFT) / values.len() as f64;
    let width = (slot * 0.7).max(1.0);
    let esc = super::escape;
    let mut body = String::new();
    for (i, (label, value)) in values.iter().enumerate() {
        let h = *value as f64 / high as f64 * (HEIGHT - BOTTOM - 16.0);
        let x = LEFT + i as f64 * slot + (slot - width) / 2.0;
        body.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{width:.1}\" height=\"{h:.1}\" fill=\"#1d4ed8\">\
             <title>{}: {value}</title></rect>",
            HEIGHT - BOTTOM - h,
            esc(label),
        ));
    }
    let (first, last) = (&values[0].0, &values[values.len() - 1].0);
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-labelledby=\"chart-title\" class=\"chart\"><title id=\"chart-title\">{title}</title>\
         <line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{WIDTH}\" y2=\"{base}\" stroke=\"#9aa0a8\"/>\
         <text x=\"{lx}\" y=\"16\" text-anchor=\"end\" font-size=\"12\" fill=\"#1b1d21\">{high}</text>\
         <text x=\"{lx}\" y=\"{base}\" text-anchor=\"end\" font-size=\"12\" fill=\"#1b1d21\">0</text>\
         <text x=\"{LEFT}\" y=\"{dy}\" font-size=\"12\" fill=\"#1b1d21\">{first}</text>\
         <text x=\"{WIDTH}\" y=\"{dy}\" text-anchor=\"end\" font-size=\"12\" fill=\"#1b1d21\">{last}</text>\
         {body}</svg>",
        title = esc(title),
        base = HEIGHT - BOTTOM,
        lx = LEFT - 6.0,
        dy = HEIGHT - 6.0,
        first = esc(first),
        last = esc(last),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(at_micros: i64, value: i64) -> Point {
        Point { at_micros, value }
    }

    #[test]
    fn the_line_steps_through_every_point_within_the_box() {
        let points = [p(0, 0), p(10, 500), p(20, 200), p(40, 200)];
        let svg = step_line(
            &points,
            "Balance <EUR>",
            |v| format!("{v}"),
            |t| format!("t{t}"),
        )
        .expect("a chart");
        assert!(
            svg.contains("<title id=\"chart-title\">Balance &lt;EUR&gt;</title>"),
            "{svg}"
        );
        let d = svg
            .split("<path d=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("path");
        // Moves: the start, then one across-and-up/down per later point.
        assert_eq!(d.matches('H').count(), 3, "{d}");
        assert_eq!(d.matches('V').count(), 3, "{d}");
        assert!(d.starts_with(&format!("M{LEFT:.1},")), "{d}");
        // The highest value is drawn at the top margin, the lowest on the bottom band.
        assert!(d.contains("V8.0"), "{d}");
        assert!(
            d.ends_with(&format!(
                "H{:.1}V{:.1}",
                WIDTH - 8.0,
                8.0 + 300.0 / 500.0 * (HEIGHT - BOTTOM - 16.0)
            )),
            "{d}"
        );
        for label in [">500<", ">0<", ">t0<", ">t40<"] {
            assert!(svg.contains(label), "{label}: {svg}");
        }
    }

    #[test]
    fn bars_scale_to_the_highest_and_name_each_day() {
        let days = [("2026-12-01".to_string(), 2), ("2026-12-02".to_string(), 4)];
        let svg = bars(&days, "Paid sales per day").expect("a chart");
        assert_eq!(svg.matches("<rect ").count(), 2, "{svg}");
        assert!(
            svg.contains("<title>2026-12-01: 2</title>")
                && svg.contains("<title>2026-12-02: 4</title>")
        );
        let full = HEIGHT - BOTTOM - 16.0;
        assert!(
            svg.contains(&format!("height=\"{full:.1}\"")),
            "the highest bar is full: {svg}"
        );
        assert!(
            svg.contains(&format!("height=\"{:.1}\"", full / 2.0)),
            "half: {svg}"
        );
        assert_eq!(bars(&[], "x"), None);
    }

    #[test]
    fn one_point_or_none() {
        assert_eq!(
            step_line(&[], "x", |v| v.to_string(), |t| t.to_string()),
            None
        );
        let svg = step_line(&[p(5, 100)], "x", |v| v.to_string(), |t| t.to_string())
            .expect("one point is a flat line");
        assert!(svg.contains(">101<") && svg.contains(">99<"), "{svg}");
    }
}
