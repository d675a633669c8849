//! The shared record of a rehearsal: events and spans, stamped with the time since the start.

use std::sync::Mutex;
use std::time::Instant;

use super::render::timeline_line;
use super::report::{Actor, Event, Lane, Span};

#[derive(Default)]
struct Record {
    events: Vec<Event>,
    open: Vec<(Lane, f64)>,
    spans: Vec<Span>,
}

/// Events and spans of one rehearsal, written from several threads.
pub struct Timeline {
    t0: Instant,
    live: bool,
    record: Mutex<Record>,
}

impl Timeline {
    /// Start the clock. With `live`, every event is printed on stderr as it happens.
    pub fn new(live: bool) -> Timeline {
        Timeline {
            t0: Instant::now(),
            live,
            record: Mutex::new(Record::default()),
        }
    }

    /// Milliseconds since the start.
    pub fn now_ms(&self) -> f64 {
        self.t0.elapsed().as_secs_f64() * 1000.0
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record an event now.
    pub fn event(&self, actor: Actor, kind: &str, detail: impl Into<String>) -> f64 {
        let mut r = self.record();
        let e = Event {
            t_ms: self.now_ms(),
            actor,
            kind: kind.to_string(),
            detail: detail.into(),
        };
        if self.live {
            say!("{}", timeline_line(&e));
        }
        let t = e.t_ms;
        r.events.push(e);
        t
    }

    /// Start a span on `lane` now (no-op when one is open).
    pub fn open(&self, lane: Lane) {
        let now = self.now_ms();
        let mut r = self.record();
        if !r.open.iter().any(|(l, _)| *l == lane) {
            r.open.push((lane, now));
        }
    }

    /// End the open span on `lane` now (no-op when none is open).
    pub fn close(&self, lane: Lane) {
        let now = self.now_ms();
        let mut r = self.record();
        if let Some(i) = r.open.iter().position(|(l, _)| *l == lane) {
            let (lane, from_ms) = r.open.remove(i);
            r.spans.push(Span {
                lane,
                from_ms,
                to_ms: now,
            });
        }
    }

    /// Close every open span and hand out what was recorded, events in time order.
    pub fn finish(&self) -> (Vec<Event>, Vec<Span>) {
        let now = self.now_ms();
        let mut r = self.record();
        let open = std::mem::take(&mut r.open);
        for (lane, from_ms) in open {
            r.spans.push(Span {
                lane,
                from_ms,
                to_ms: now,
            });
        }
        let mut events = std::mem::take(&mut r.events);
        events.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
        let mut spans = std::mem::take(&mut r.spans);
        spans.sort_by(|a, b| a.from_ms.total_cmp(&b.from_ms));
        (events, spans)
    }
}
