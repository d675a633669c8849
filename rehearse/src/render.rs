//! How a rehearsal is shown: the live timeline line, the text summary, the comparison table,
//! and the picture (SVG, or a self-contained HTML page around it).

use std::fmt::Write as _;

use super::report::{Actor, Event, Lane, Report};

/// One line of the live timeline on stderr.
pub fn timeline_line(e: &Event) -> String {
    format!(
        "{:>9.3} s  {:<10} {:<18} {}",
        e.t_ms / 1000.0,
        e.actor.name(),
        e.kind,
        e.detail
    )
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 10_000.0 => format!("{:.1} s", v / 1000.0),
        Some(v) => format!("{v:.0} ms"),
        None => "-".into(),
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn disk(b: u64) -> String {
    if b >= 1_000_000_000 {
        format!("{:.2} GB", b as f64 / 1e9)
    } else {
        format!("{:.0} MB", b as f64 / 1e6)
    }
}

/// The human summary printed at the end of a rehearsal.
pub fn text_summary(r: &Report) -> String {
    let s = &r.summary;
    let mut o = String::new();
    let strategy = if r.settings.requested_strategy != r.strategy {
        format!(
            "{} (asked for '{}')",
            r.strategy, r.settings.requested_strategy
        )
    } else {
        r.strategy.clone()
    };
    let _ = writeln!(
        o,
        "rehearsal of a {strategy} update, {} Supervisor",
        r.settings.supervisor
    );
    let downtime = match s.downtime_ms {
        Some(d) => format!("{} in {} outage(s)", ms(Some(d)), s.outages),
        None => "not measured (no --probe)".into(),
    };
    let rows: Vec<(&str, String)> = vec![
        ("downtime", downtime),
        (
            "blocked by locks",
            format!(
                "{} ({} lock attempts)",
                ms(Some(s.blocked_by_lock_ms)),
                s.lock_attempts
            ),
        ),
        ("hand-over latency", ms(s.handover_latency_ms)),
        ("update took", ms(s.update_ms)),
        ("download", ms(Some(s.download_ms))),
        ("peak processes", s.peak_processes.to_string()),
        ("peak memory", mib(s.peak_memory_bytes)),
        ("peak disk (images)", disk(s.peak_disk_bytes)),
        (
            "old version ended",
            s.old_exit.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "new version running",
            if s.new_running {
                "yes".into()
            } else {
                "no".into()
            },
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(o, "  {k:<20} {v}");
    }
    if let Some(w) = s.reboot_blocked_ms {
        let _ = writeln!(o, "  {:<20} {}", "reboot waited", ms(Some(w)));
    }
    for p in &r.problems {
        let _ = writeln!(o, "problem: {p}");
    }
    for n in &r.notes {
        let _ = writeln!(o, "note: {n}");
    }
    for e in &r.expectations {
        let actual = e
            .actual
            .map(|a| format!("{a:.0}"))
            .unwrap_or_else(|| "nothing".into());
        let _ = writeln!(
            o,
            "{} {}: {} (measured {actual})",
            e.name,
            e.limit,
            if e.met { "met" } else { "NOT met" }
        );
    }
    let _ = write!(o, "result: {}", if r.ok { "ok" } else { "FAILED" });
    o
}

/// The rows of the comparison: strategy first, result last.
fn compare_rows(rs: &[Report]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let head = vec![
        "strategy",
        "downtime",
        "blocked",
        "hand-over",
        "update",
        "procs",
        "memory",
        "disk",
        "result",
    ];
    let rows = rs
        .iter()
        .map(|r| {
            let s = &r.summary;
            vec![
                r.strategy.clone(),
                ms(s.downtime_ms),
                ms(Some(s.blocked_by_lock_ms)),
                ms(s.handover_latency_ms),
                ms(s.update_ms),
                s.peak_processes.to_string(),
                mib(s.peak_memory_bytes),
                disk(s.peak_disk_bytes),
                if r.ok { "ok".into() } else { "FAILED".into() },
            ]
        })
        .collect();
    (head, rows)
}

/// The `--compare` table: one row per strategy.
pub fn compare_table(rs: &[Report]) -> String {
    let (head, rows) = compare_rows(rs);
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    format!("{c:<w$}", w = width[i])
                } else {
                    format!("{c:>w$}", w = width[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut o = line(head.clone());
    for r in &rows {
        o.push('\n');
        o.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    o
}

/// Escape text for XML and HTML.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

fn lane_colour(l: Lane) -> &'static str {
    match l {
        Lane::OldRunning => "#7a9cc6",
        Lane::NewRunning => "#5fae6e",
        Lane::Download => "#b59bd1",
        Lane::SupervisorLock => "#e0a040",
        Lane::AppLock => "#d0c040",
        Lane::BlockedByLock => "#c87f5a",
        Lane::Down => "#d33b3b",
        Lane::RebootWaiting => "#888888",
    }
}

/// The marker of an "update is waiting" moment.
const UPDATE_WAITING_COLOUR: &str = "#e67e22";

fn actor_lane(a: Actor) -> Option<Lane> {
    match a {
        Actor::Old => Some(Lane::OldRunning),
        Actor::New => Some(Lane::NewRunning),
        Actor::Supervisor => Some(Lane::SupervisorLock),
        Actor::Download => Some(Lane::Download),
        Actor::Probe => Some(Lane::Down),
        Actor::Reboot => Some(Lane::RebootWaiting),
        Actor::Rehearsal => None,
    }
}

/// A tick step giving 5 to 12 ticks over `total` ms.
fn tick_step(total_ms: f64) -> f64 {
    let steps = [
        100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10_000.0, 20_000.0, 60_000.0, 120_000.0,
        300_000.0,
    ];
    steps
        .iter()
        .copied()
        .find(|s| total_ms / s <= 12.0)
        .unwrap_or(600_000.0)
}

/// The picture: one block per rehearsal, one row per lane, a shared time axis in seconds and
/// a marker (with a tooltip) per event.
pub fn svg(rs: &[Report]) -> String {
    const LEFT: f64 = 140.0;
    const WIDTH: f64 = 1000.0;
    const ROW: f64 = 18.0;
    const TITLE: f64 = 24.0;
    const AXIS: f64 = 28.0;
    let plot = WIDTH - LEFT - 20.0;
    let total = rs
        .iter()
        .map(|r| {
            r.summary
                .total_ms
                .max(r.spans.iter().map(|s| s.to_ms).fold(0.0, f64::max))
        })
        .fold(1.0, f64::max);
    let x = |t: f64| LEFT + (t.max(0.0) / total) * plot;
    let block = TITLE + ROW * Lane::ALL.len() as f64 + 10.0;
    // The legend: one line per lane and one for the event markers, two columns.
    let legend_rows = (Lane::ALL.len() + 3).div_ceil(2);
    let legend = 16.0 * legend_rows as f64 + 8.0;
    let height = block * rs.len() as f64 + AXIS + legend + 10.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        o,
        r#"<rect width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    let step = tick_step(total);
    let axis_y = block * rs.len() as f64 + 4.0;
    let mut t = 0.0;
    while t <= total + 0.5 {
        let xt = x(t);
        let _ = writeln!(
            o,
            r##"<line x1="{xt:.1}" y1="0" x2="{xt:.1}" y2="{axis_y:.1}" stroke="#e4e4e4"/><text x="{xt:.1}" y="{:.1}" text-anchor="middle">{} s</text>"##,
            axis_y + 14.0,
            t / 1000.0
        );
        t += step;
    }
    for (i, r) in rs.iter().enumerate() {
        let top = block * i as f64;
        let _ = writeln!(
            o,
            r#"<text x="4" y="{:.1}" font-weight="bold" font-size="13">{} ({} Supervisor){}</text>"#,
            top + 16.0,
            esc(&r.strategy),
            esc(&r.settings.supervisor),
            if r.ok { "" } else { ": FAILED" }
        );
        for (j, lane) in Lane::ALL.iter().enumerate() {
            let y = top + TITLE + ROW * j as f64;
            let _ = writeln!(
                o,
                r#"<text x="4" y="{:.1}">{}</text>"#,
                y + 12.0,
                esc(lane.label())
            );
            for s in r.spans.iter().filter(|s| s.lane == *lane) {
                let (x0, x1) = (x(s.from_ms), x(s.to_ms));
                let _ = writeln!(
                    o,
                    r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {:.3} s to {:.3} s</title></rect>"#,
                    y + 2.0,
                    (x1 - x0).max(1.0),
                    ROW - 4.0,
                    lane_colour(*lane),
                    esc(lane.label()),
                    s.from_ms / 1000.0,
                    s.to_ms / 1000.0
                );
            }
            for e in r
                .events
                .iter()
                .filter(|e| actor_lane(e.actor) == Some(*lane))
            {
                let fill = if e.kind == "update-waiting" {
                    UPDATE_WAITING_COLOUR
                } else {
                    "#222"
                };
                let _ = writeln!(
                    o,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{fill}"><title>t={:.3} s  {}  {}: {}</title></circle>"##,
                    x(e.t_ms),
                    y + ROW / 2.0,
                    e.t_ms / 1000.0,
                    e.actor.name(),
                    esc(&e.kind),
                    esc(&e.detail)
                );
            }
        }
    }
    // Legend below the axis: what each bar and each dot means.
    let legend_top = axis_y + AXIS;
    let mut items: Vec<(Option<&str>, String)> = Lane::ALL
        .iter()
        .map(|l| {
            (
                Some(lane_colour(*l)),
                format!("{}: {}", l.label(), l.meaning()),
            )
        })
        .collect();
    items.push((
        None,
        "a dot: an event (hover over it for the time, who and what)".into(),
    ));
    items.push((
        Some("dot"),
        "an orange dot: an update is waiting (the holder can hear of the Supervisor's attempt)"
            .into(),
    ));
    for (k, (colour, text)) in items.iter().enumerate() {
        let (col, row) = (k % 2, k / 2);
        let lx = 4.0 + col as f64 * (WIDTH / 2.0);
        let ly = legend_top + 16.0 * row as f64;
        match colour {
            Some("dot") => {
                let _ = writeln!(
                    o,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{UPDATE_WAITING_COLOUR}"/>"##,
                    lx + 7.0,
                    ly - 4.0
                );
            }
            Some(c) => {
                let _ = writeln!(
                    o,
                    r#"<rect x="{lx:.1}" y="{:.1}" width="14" height="10" fill="{c}"/>"#,
                    ly - 9.0
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#222"/>"##,
                    lx + 7.0,
                    ly - 4.0
                );
            }
        }
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{ly:.1}">{}</text>"#,
            lx + 20.0,
            esc(text)
        );
    }
    o.push_str("</svg>\n");
    o
}

/// A self-contained HTML page: the picture, the comparison (several rehearsals), and per
/// rehearsal its summary and events.
pub fn html(rs: &[Report]) -> String {
    let mut o = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>update-lock rehearsal</title>\n<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:13px}pre{background:#f6f6f6;padding:8px}</style></head><body>\n<h1>update-lock rehearsal</h1>\n",
    );
    o.push_str(&svg(rs));
    if rs.len() > 1 {
        let (head, rows) = compare_rows(rs);
        o.push_str("<h2>Comparison</h2>\n<table><tr>");
        for h in head {
            let _ = write!(o, "<th>{}</th>", esc(h));
        }
        o.push_str("</tr>\n");
        for r in rows {
            o.push_str("<tr>");
            for c in r {
                let _ = write!(o, "<td>{}</td>", esc(&c));
            }
            o.push_str("</tr>\n");
        }
        o.push_str("</table>\n");
    }
    for r in rs {
        let _ = writeln!(
            o,
            "<h2>{}</h2>\n<pre>{}</pre>",
            esc(&r.strategy),
            esc(&text_summary(r))
        );
        o.push_str("<table><tr><th>t (s)</th><th>actor</th><th>event</th><th>detail</th></tr>\n");
        for e in &r.events {
            let _ = writeln!(
                o,
                "<tr><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e.t_ms / 1000.0,
                e.actor.name(),
                esc(&e.kind),
                esc(&e.detail)
            );
        }
        o.push_str("</table>\n");
    }
    o.push_str("</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::super::report::{Settings, Span, Summary};
    use super::*;

    fn sample(ok: bool) -> Report {
        Report {
            schema: 1,
            strategy: "hand-over".into(),
            settings: Settings {
                requested_strategy: "hand-over".into(),
                supervisor: "documented".into(),
                namespaces: true,
                supervisor_uid_65534: true,
                handover_timeout_ms: 60_000,
                stop_grace_ms: 10_000,
                force: false,
                old_image_bytes: 1,
                new_image_bytes: 1,
                probe: None,
                reboot: false,
                api_address: "http://127.0.0.1:1".into(),
            },
            events: vec![Event {
                t_ms: 12.5,
                actor: Actor::New,
                kind: "started".into(),
                detail: "a <b> & \"c\" 'd'".into(),
            }],
            spans: vec![Span {
                lane: Lane::Down,
                from_ms: 10.0,
                to_ms: 20.0,
            }],
            summary: Summary {
                downtime_ms: Some(10.0),
                total_ms: 30.0,
                ..Summary::default()
            },
            problems: if ok {
                vec![]
            } else {
                vec!["the new version ended".into()]
            },
            notes: vec![],
            expectations: vec![],
            ok,
        }
    }

    #[test]
    fn svg_escapes_text_and_draws_every_lane() {
        let s = svg(&[sample(true)]);
        assert!(s.starts_with("<svg"));
        assert!(s.contains("a &lt;b&gt; &amp; &quot;c&quot; &#39;d&#39;"));
        assert!(!s.contains("<b>"));
        for l in Lane::ALL {
            assert!(s.contains(&format!(">{}</text>", l.label())), "{l:?}");
            // The legend says what each lane's bars mean.
            assert!(
                s.contains(&format!(">{}: {}</text>", l.label(), esc(l.meaning()))),
                "{l:?}"
            );
        }
        assert!(s.contains("a dot: an event"));
    }

    #[test]
    fn html_holds_the_picture_the_table_and_the_events() {
        let h = html(&[sample(true), sample(false)]);
        assert!(h.contains("<svg") && h.contains("<h2>Comparison</h2>"));
        assert!(h.contains("<td>0.013</td>"), "events table");
        assert!(!h.contains("<b>"));
    }

    #[test]
    fn summary_and_table_show_the_result() {
        let t = text_summary(&sample(false));
        assert!(t.contains("problem: the new version ended"));
        assert!(t.ends_with("result: FAILED"));
        assert!(t.contains("10 ms in 0 outage(s)"));
        let c = compare_table(&[sample(true), sample(false)]);
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("strategy"));
        assert!(lines[2].ends_with("FAILED"));
    }
}
