//! A picture of daemon runs, as one self-contained SVG file (plain SVG text: no script, no
//! external font, image or style sheet; any browser or image viewer shows it).
//!
//! One lane per run. In each lane, one mark per API call at the time it started: green when it
//! succeeded, red when it failed, and an amber bar behind it when the call waited (a held
//! `Retry-After`, a back-off, a slow token) for [`WAIT_MARK_SECS`] or more, as long as it waited.
//! Under the calls, the run's token requests, green (answered with a token) or red (failed),
//! with their status. Shaded bands across all lanes are the fault windows; the summary figures
//! sit in the top-right corner.
//!
//! `examples/daemon.rs` fills a [`Timeline`] from its runs (scripted demo, or a real run's
//! `--out` report) and `tests/demo.rs` parses what [`Timeline::to_svg`] writes.

use std::fmt::Write as _;

/// A call that took at least this long (seconds) is drawn as waiting, with a bar.
pub(crate) const WAIT_MARK_SECS: f64 = 0.25;

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 30.0;
const PLOT: f64 = WIDTH - LEFT - RIGHT;
const EM: f64 = 0.6; // average width of a sans-serif character, in ems, for layout
const LABEL_ROW: f64 = 16.0;
const MAX_LABEL_ROWS: usize = 4;
const LANE_TITLE: f64 = 22.0;
const CALL_ROW: f64 = 36.0;
const TOKEN_ROW: f64 = 36.0;
const LANE_GAP: f64 = 14.0;

const OK: &str = "#2e9d4f";
const FAILED: &str = "#d23c3c";
const WAIT: &str = "#f0a020";
const WINDOW: &str = "#ffd9cf";
const INK: &str = "#222";
const MUTED: &str = "#666";
const GRID: &str = "#e4e4e4";

/// What to draw.
#[derive(Debug, Clone, Default)]
pub(crate) struct Timeline {
    /// The title, top left.
    pub(crate) title: String,
    /// One line under the title.
    pub(crate) subtitle: String,
    /// How to read the picture, a line each, under the legend.
    pub(crate) notes: Vec<String>,
    /// The time axis runs from 0 to this many seconds (widened to fit every mark).
    pub(crate) span: f64,
    /// Shaded windows (faults, or stretches of failures), across all lanes.
    pub(crate) windows: Vec<Window>,
    /// What a shaded window is, for the legend (e.g. `fault window`).
    pub(crate) window_legend: String,
    /// One lane per run.
    pub(crate) lanes: Vec<Lane>,
    /// The summary figures, top right.
    pub(crate) summary: Table,
}

/// A shaded window, in seconds since the run started.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Window {
    pub(crate) start: f64,
    pub(crate) end: f64,
    pub(crate) label: String,
}

/// One run.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Lane {
    pub(crate) name: String,
    pub(crate) calls: Vec<Call>,
    pub(crate) tokens: Vec<TokenRequest>,
}

/// One API call as the daemon saw it, in seconds since the run started.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    pub(crate) start: f64,
    pub(crate) end: f64,
    pub(crate) ok: bool,
}

impl Call {
    /// Whether the call is drawn as waiting.
    pub(crate) fn waited(&self) -> bool {
        self.end - self.start >= WAIT_MARK_SECS
    }
}

/// One request to the identity provider.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TokenRequest {
    pub(crate) at: f64,
    pub(crate) ok: bool,
    /// Its outcome in a few characters, e.g. `200`, `503`, `error`.
    pub(crate) label: String,
}

/// A small table: a header row, then rows of cells (first cell left-aligned, others right).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Table {
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
}

/// Escapes text for SVG character data and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 does not allow: drawn as a replacement character.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Seconds as an axis or tooltip label: `12 s`, `2.5 s`, `4 min`, `1 h 30 min`.
pub(crate) fn fmt_secs(s: f64) -> String {
    if s < 60.0 {
        let scale = if s < 1.0 { 100.0 } else { 10.0 };
        let r = (s * scale).round() / scale;
        let text = format!("{r:.2}");
        format!("{} s", text.trim_end_matches('0').trim_end_matches('.'))
    } else if s < 3600.0 {
        let (m, sec) = ((s / 60.0).floor(), (s % 60.0).round());
        if sec == 0.0 {
            format!("{m:.0} min")
        } else {
            format!("{m:.0} min {sec:.0} s")
        }
    } else {
        let (h, m) = ((s / 3600.0).floor(), ((s % 3600.0) / 60.0).round());
        format!("{h:.0} h {m:.0} min")
    }
}

/// A tick step giving at most 12 ticks over `span` seconds.
fn tick_step(span: f64) -> f64 {
    const STEPS: [f64; 16] = [
        0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
        7200.0, 21600.0,
    ];
    STEPS
        .into_iter()
        .find(|step| span / step <= 12.0)
        .unwrap_or(86400.0)
}

/// `s`, shortened to fit `width` at `px` (by a narrower estimate than [`text_width`], which
/// errs on the wide side for layout).
fn fit(s: &str, width: f64, px: f64) -> String {
    shorten(s, (width / (0.56 * px)).max(8.0) as usize)
}

fn text_width(s: &str, px: f64) -> f64 {
    s.chars().count() as f64 * EM * px
}

impl Timeline {
    /// The span actually drawn: at least `span`, and every mark inside it.
    fn drawn_span(&self) -> f64 {
        let mut span = self.span;
        for lane in &self.lanes {
            for c in &lane.calls {
                span = span.max(c.end).max(c.start);
            }
            for t in &lane.tokens {
                span = span.max(t.at);
            }
        }
        for w in &self.windows {
            span = span.max(w.end);
        }
        if span.is_finite() && span > 0.0 {
            span
        } else {
            1.0
        }
    }

    /// The picture as SVG text.
    pub(crate) fn to_svg(&self) -> String {
        let span = self.drawn_span();
        let x = |t: f64| LEFT + t.clamp(0.0, span) / span * PLOT;
        let mut svg = String::new();

        // Header: title, subtitle and legend on the left, summary table on the right.
        let table = self.table_svg();
        let header_h = (124.0 + self.notes.len() as f64 * 16.0).max(table.1 + 22.0);

        // Window labels, stacked in rows so that they do not overlap.
        let mut rows_end: Vec<f64> = Vec::new();
        let mut labels = Vec::new();
        for w in &self.windows {
            let (x0, wdt) = (x(w.start), text_width(&w.label, 12.0) + 10.0);
            let row = match rows_end.iter().position(|&end| end <= x0) {
                Some(r) => Some(r),
                None if rows_end.len() < MAX_LABEL_ROWS => {
                    rows_end.push(f64::MIN);
                    Some(rows_end.len() - 1)
                }
                None => None,
            };
            if let Some(r) = row {
                rows_end[r] = x0 + wdt;
            }
            labels.push(row);
        }
        let plot_top = header_h + 18.0 + rows_end.len() as f64 * LABEL_ROW;
        let lane_h = LANE_TITLE + CALL_ROW + TOKEN_ROW + LANE_GAP;
        let plot_bottom = plot_top + self.lanes.len() as f64 * lane_h;
        let height = plot_bottom + 46.0;

        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{height:.0}" viewBox="0 0 {WIDTH:.0} {height:.0}" font-family="DejaVu Sans, Verdana, Arial, sans-serif" font-size="12">"#
        );
        let _ = write!(svg, "\n<title>{}</title>", esc(&self.title));
        let _ = write!(
            svg,
            "\n<rect x=\"0\" y=\"0\" width=\"{WIDTH:.0}\" height=\"{height:.0}\" fill=\"#fff\"/>"
        );
        let _ = write!(
            svg,
            "\n<text x=\"20\" y=\"30\" font-size=\"18\" font-weight=\"bold\" fill=\"{INK}\">{}</text>",
            esc(&fit(&self.title, table.2 - 40.0, 18.0))
        );
        let _ = write!(
            svg,
            "\n<text x=\"20\" y=\"52\" font-size=\"13\" fill=\"{MUTED}\">{}</text>",
            esc(&fit(&self.subtitle, table.2 - 40.0, 13.0))
        );
        svg.push_str(&legend(20.0, 78.0, &self.window_legend));
        for (k, note) in self.notes.iter().enumerate() {
            let _ = write!(
                svg,
                "\n<text x=\"20\" y=\"{:.1}\" fill=\"{MUTED}\">{}</text>",
                130.0 + k as f64 * 16.0,
                esc(note)
            );
        }
        svg.push_str(&table.0);

        // Grid and axis.
        let step = tick_step(span);
        let _ = write!(svg, "\n<g class=\"axis\">");
        let mut k = 0u32;
        loop {
            let t = f64::from(k) * step;
            if t > span + 1e-9 {
                break;
            }
            let xt = x(t);
            let _ = write!(
                svg,
                "\n<line x1=\"{xt:.1}\" y1=\"{plot_top:.1}\" x2=\"{xt:.1}\" y2=\"{:.1}\" stroke=\"{GRID}\"/>\
                 <text x=\"{xt:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{MUTED}\">{}</text>",
                plot_bottom + 4.0,
                plot_bottom + 18.0,
                esc(&fmt_secs(t))
            );
            k += 1;
        }
        let _ = write!(
            svg,
            "\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{MUTED}\">time since start</text></g>",
            LEFT + PLOT,
            plot_bottom + 36.0
        );

        // Fault windows: a band across all lanes, its label above the lanes.
        for (w, row) in self.windows.iter().zip(&labels) {
            let (x0, x1) = (x(w.start), x(w.end));
            let _ = write!(
                svg,
                "\n<g class=\"window\"><title>{}: {} to {}</title><rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{WINDOW}\" fill-opacity=\"0.75\"/>",
                esc(&w.label),
                esc(&fmt_secs(w.start)),
                esc(&fmt_secs(w.end)),
                plot_top - 4.0,
                (x1 - x0).max(1.0),
                plot_bottom - plot_top + 4.0
            );
            if let Some(r) = row {
                let y = header_h + 15.0 + *r as f64 * LABEL_ROW;
                let _ = write!(
                    svg,
                    "<line x1=\"{x0:.1}\" y1=\"{:.1}\" x2=\"{x0:.1}\" y2=\"{:.1}\" stroke=\"#c0705a\"/><text x=\"{:.1}\" y=\"{y:.1}\" fill=\"#9a3a22\">{}</text>",
                    y - 10.0,
                    plot_top - 4.0,
                    x0 + 3.0,
                    esc(&w.label)
                );
            }
            svg.push_str("</g>");
        }

        // Lanes.
        let radius = self.mark_radius();
        for (i, lane) in self.lanes.iter().enumerate() {
            let top = plot_top + i as f64 * lane_h;
            svg.push_str(&lane_svg(lane, top, radius, &x));
        }
        svg.push_str("\n</svg>\n");
        svg
    }

    /// Dots small enough not to overlap when calls are dense.
    fn mark_radius(&self) -> f64 {
        let most = self.lanes.iter().map(|l| l.calls.len()).max().unwrap_or(0);
        (PLOT / most.max(1) as f64 * 0.38).clamp(1.2, 4.5)
    }

    /// The summary table as SVG, right-aligned in the top-right corner, its bottom and its left
    /// edge.
    fn table_svg(&self) -> (String, f64, f64) {
        let t = &self.summary;
        let cols = t
            .rows
            .iter()
            .chain(std::iter::once(&t.header))
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        if cols == 0 {
            return (String::new(), 0.0, WIDTH - RIGHT);
        }
        let mut widths = vec![0.0_f64; cols];
        for row in t.rows.iter().chain(std::iter::once(&t.header)) {
            for (c, cell) in row.iter().enumerate() {
                widths[c] = widths[c].max(text_width(cell, 12.0) + 14.0);
            }
        }
        let total: f64 = widths.iter().sum();
        let (x0, y0, row_h) = (WIDTH - RIGHT - total, 14.0, 16.0);
        let height = (t.rows.len() + 1) as f64 * row_h + 10.0;
        let mut s = format!(
            "\n<g class=\"summary\"><rect x=\"{:.1}\" y=\"{y0:.1}\" width=\"{:.1}\" height=\"{height:.1}\" fill=\"#f7f7f7\" stroke=\"#ccc\"/>",
            x0 - 8.0,
            total + 8.0
        );
        let all = std::iter::once((true, &t.header)).chain(t.rows.iter().map(|r| (false, r)));
        for (r, (is_header, row)) in all.enumerate() {
            let y = y0 + 17.0 + r as f64 * row_h;
            let mut cx = x0;
            for (c, cell) in row.iter().enumerate() {
                let (anchor, tx) = if c == 0 {
                    ("start", cx)
                } else {
                    ("end", cx + widths[c] - 4.0)
                };
                let weight = if is_header {
                    " font-weight=\"bold\""
                } else {
                    ""
                };
                let _ = write!(
                    s,
                    "<text x=\"{tx:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" fill=\"{INK}\"{weight}>{}</text>",
                    esc(cell)
                );
                cx += widths[c];
            }
        }
        s.push_str("</g>");
        (s, y0 + height, x0 - 8.0)
    }
}

fn legend(x0: f64, y: f64, window: &str) -> String {
    let items = [
        "call ok",
        "call failed",
        "call waited (bar: how long)",
        "token request ok",
        "token request failed",
        window,
    ];
    let mut s = String::from("\n<g class=\"legend\">");
    let mut x = x0;
    let mut y = y;
    for (k, text) in items.into_iter().enumerate() {
        if k == 3 {
            (x, y) = (x0, y + 20.0);
        }
        let dot = |fill: &str| {
            format!(
                "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"4.5\" fill=\"{fill}\"/>",
                x + 5.0
            )
        };
        s.push_str(&match k {
            0 => dot(OK),
            1 => dot(FAILED),
            2 => format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"22\" height=\"8\" rx=\"3\" fill=\"{WAIT}\"/>{}",
                x + 5.0,
                y - 4.0,
                dot(OK)
            ),
            3 => token_mark(x + 5.0, y, true, 5.0),
            4 => token_mark(x + 5.0, y, false, 5.0),
            _ => format!(
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{WINDOW}\"/>",
                y - 6.0
            ),
        });
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{INK}\">{}</text>",
            x + if k == 2 { 32.0 } else { 16.0 },
            y + 4.0,
            esc(text)
        );
        x += 18.0 + text_width(text, 12.0) + 18.0 + if k == 2 { 16.0 } else { 0.0 };
    }
    s.push_str("</g>");
    s
}

/// A token request: a triangle pointing up (ok) or down (failed).
fn token_mark(x: f64, y: f64, ok: bool, size: f64) -> String {
    let (fill, d) = if ok {
        (
            OK,
            format!(
                "M{x:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z",
                y - size,
                x + size,
                y + size * 0.8,
                x - size,
                y + size * 0.8
            ),
        )
    } else {
        (
            FAILED,
            format!(
                "M{x:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z",
                y + size,
                x + size,
                y - size * 0.8,
                x - size,
                y - size * 0.8
            ),
        )
    };
    format!("<path d=\"{d}\" fill=\"{fill}\"/>")
}

fn lane_svg(lane: &Lane, top: f64, r: f64, x: &dyn Fn(f64) -> f64) -> String {
    let mut s = format!("\n<g class=\"lane\" data-run=\"{}\">", esc(&lane.name));
    let (ok, failed, waited) = lane.calls.iter().fold((0, 0, 0), |(o, f, w), c| {
        (
            o + usize::from(c.ok),
            f + usize::from(!c.ok),
            w + usize::from(c.waited()),
        )
    });
    let _ = write!(
        s,
        "\n<text x=\"20\" y=\"{:.1}\" font-size=\"14\" font-weight=\"bold\" fill=\"{INK}\">{}</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{MUTED}\">{}: {ok} ok, {failed} failed, {waited} waited; {}</text>",
        top + 15.0,
        esc(&lane.name),
        20.0 + text_width(&lane.name, 14.0) + 14.0,
        top + 15.0,
        plural(lane.calls.len(), "call"),
        plural(lane.tokens.len(), "token request")
    );
    let calls_y = top + LANE_TITLE + CALL_ROW / 2.0;
    let tokens_y = top + LANE_TITLE + CALL_ROW + TOKEN_ROW / 2.0 - 6.0;
    let _ = write!(
        s,
        "\n<text x=\"40\" y=\"{:.1}\" fill=\"{MUTED}\">API calls</text><line x1=\"{LEFT:.1}\" y1=\"{calls_y:.1}\" x2=\"{:.1}\" y2=\"{calls_y:.1}\" stroke=\"#ccc\"/>\
         <text x=\"40\" y=\"{:.1}\" fill=\"{MUTED}\">token requests</text><line x1=\"{LEFT:.1}\" y1=\"{tokens_y:.1}\" x2=\"{:.1}\" y2=\"{tokens_y:.1}\" stroke=\"#ccc\"/>",
        calls_y + 4.0,
        LEFT + PLOT,
        tokens_y + 4.0,
        LEFT + PLOT
    );
    for (n, c) in lane.calls.iter().enumerate() {
        let (x0, x1) = (x(c.start), x(c.end));
        let outcome = if c.ok { "ok" } else { "failed" };
        let class = if c.waited() {
            format!("call {outcome} waited")
        } else {
            format!("call {outcome}")
        };
        let _ = write!(
            s,
            "\n<g class=\"{class}\"><title>call {} at {}: {outcome} after {:.2} s</title>",
            n + 1,
            esc(&fmt_secs(c.start)),
            (c.end - c.start).max(0.0)
        );
        if c.waited() {
            let _ = write!(
                s,
                "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"8\" rx=\"3\" fill=\"{WAIT}\"/>",
                calls_y - 4.0,
                (x1 - x0).max(1.0)
            );
        }
        let _ = write!(
            s,
            "<circle cx=\"{x0:.1}\" cy=\"{calls_y:.1}\" r=\"{r:.1}\" fill=\"{}\"/></g>",
            if c.ok { OK } else { FAILED }
        );
    }
    let mut last_label = f64::MIN;
    for t in &lane.tokens {
        let xt = x(t.at);
        let outcome = if t.ok { "ok" } else { "failed" };
        let _ = write!(
            s,
            "\n<g class=\"token {outcome}\"><title>token request at {}: {}</title>{}",
            esc(&fmt_secs(t.at)),
            esc(&t.label),
            token_mark(xt, tokens_y, t.ok, 5.5)
        );
        let w = text_width(&t.label, 11.0);
        if xt - w / 2.0 >= last_label + 1.5 {
            let _ = write!(
                s,
                "<text x=\"{xt:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"{}\">{}</text>",
                tokens_y + 18.0,
                if t.ok { MUTED } else { FAILED },
                esc(&t.label)
            );
            last_label = xt + w / 2.0;
        }
        s.push_str("</g>");
    }
    s.push_str("\n</g>");
    s
}

/// The timeline of a real run from its `--out` report (JSON lines: a `start` event, one object
/// per iteration, an `end` event): one lane; each iteration's call (token acquisition plus API
/// call); token requests where the cache's counters rose (drawn at the iteration that saw them,
/// so a background refresh shows at the next call); stretches of failed calls shaded and
/// labelled with the first failure's cause; the run's figures in the corner.
///
/// # Errors
/// A line that is not JSON, or a report without a single iteration.
pub(crate) fn from_report(text: &str) -> Result<Timeline, String> {
    use serde_json::Value;

    let mut start: Option<Value> = None;
    let mut end: Option<Value> = None;
    let mut iterations = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("report line {}: {e}", n + 1))?;
        match v["event"].as_str() {
            Some("start") => start = Some(v),
            Some("end") => end = Some(v),
            _ => iterations.push(v),
        }
    }
    let f = |v: &Value, k: &str| v[k].as_f64();
    let t0 = start
        .as_ref()
        .and_then(|s| f(s, "ts"))
        .or_else(|| iterations.first().and_then(|i| f(i, "ts")))
        .ok_or("the report has no iteration")?;

    let mut lane = Lane {
        name: start
            .as_ref()
            .and_then(|s| s["mode"].as_str())
            .map_or("this run".into(), |m| format!("--mode {m}")),
        ..Lane::default()
    };
    let mut windows: Vec<Window> = Vec::new();
    let mut failing: Option<Window> = None;
    let (mut requests, mut failures) = (0u64, 0u64);
    let mut longest = 0.0_f64;
    let mut token_marks = |lane: &mut Lane, at: f64, v: &Value| {
        let (r, fl) = (v["token_requests"].as_u64(), v["token_failures"].as_u64());
        if let (Some(r), Some(fl)) = (r, fl) {
            let new_failures = fl.saturating_sub(failures);
            for k in 0..r.saturating_sub(requests) {
                let ok = k >= new_failures;
                lane.tokens.push(TokenRequest {
                    at,
                    ok,
                    label: if ok { "ok" } else { "failed" }.into(),
                });
            }
            (requests, failures) = (r.max(requests), fl.max(failures));
        }
    };
    for v in &iterations {
        let Some(ts) = f(v, "ts") else { continue };
        let at = ts - t0;
        let took = f(v, "acquire_s").unwrap_or(0.0) + f(v, "api_s").unwrap_or(0.0);
        longest = longest.max(took);
        let ok = v["api"].as_str() == Some("ok");
        lane.calls.push(Call {
            start: at,
            end: at + took,
            ok,
        });
        token_marks(&mut lane, at, v);
        if ok {
            windows.extend(failing.take());
        } else {
            let why = match (v["acquire_err"].as_str(), v["api"].as_str()) {
                (Some(e), _) => format!("token: {e}"),
                (None, Some(api)) => match v["api_err"].as_str() {
                    Some(e) => format!("API {api}: {e}"),
                    None => format!("API {api}"),
                },
                (None, None) => "failed".into(),
            };
            let w = failing.get_or_insert(Window {
                start: at,
                end: at,
                label: shorten(&why, 70),
            });
            w.end = at + took.max(0.1);
        }
    }
    windows.extend(failing.take());
    let last = end
        .as_ref()
        .and_then(|e| f(e, "ts"))
        .map(|ts| ts - t0)
        .unwrap_or_default();
    if let Some(e) = &end {
        token_marks(&mut lane, last, e);
    }

    let (ok, failed) = lane.calls.iter().fold((0u64, 0u64), |(o, fl), c| {
        (o + u64::from(c.ok), fl + u64::from(!c.ok))
    });
    let span = lane.calls.iter().map(|c| c.end).fold(last, f64::max);
    let interval = start.as_ref().and_then(|s| f(s, "interval_s"));
    let text = |s: &Option<Value>, k: &str| {
        s.as_ref()
            .and_then(|v| v[k].as_str())
            .unwrap_or("?")
            .to_string()
    };
    Ok(Timeline {
        title: format!(
            "resilient-auth daemon: {} ({})",
            text(&start, "mode"),
            text(&start, "source")
        ),
        subtitle: format!(
            "scope {}, API {}; {} calls{} over {}",
            text(&start, "scope"),
            text(&start, "api"),
            lane.calls.len(),
            interval.map_or(String::new(), |i| format!(", one every {}", fmt_secs(i))),
            fmt_secs(span)
        ),
        notes: vec![
            "One dot per call (token plus API call), where it started; an amber bar: it took that long.".into(),
            "Triangles: requests to the identity provider, drawn at the call that saw them.".into(),
            "Shaded: stretches of failed calls, labelled with the first failure's cause.".into(),
        ],
        span,
        windows,
        window_legend: "stretch of failures".into(),
        summary: Table {
            header: vec!["summary".into(), "this run".into()],
            rows: vec![
                vec!["API calls ok".into(), ok.to_string()],
                vec!["API calls failed".into(), failed.to_string()],
                vec!["token requests sent".into(), requests.to_string()],
                vec!["token requests failed".into(), failures.to_string()],
                vec!["longest call".into(), format!("{longest:.1} s")],
            ],
        },
        lanes: vec![lane],
    })
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// At most `max` characters, with an ellipsis when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}
